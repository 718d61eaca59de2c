package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func sampleManifest(version, arch string) *Manifest {
	sum := sha256.Sum256([]byte("binary " + version + arch))
	return &Manifest{Version: version, Arch: arch, Size: 1234, SHA256: hex.EncodeToString(sum[:]),
		Date: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func sampleRollout(tb testing.TB, version string, archs ...string) *Rollout {
	tb.Helper()
	r := &Rollout{Version: version, Percent: 10}
	for _, a := range archs {
		m, sig, err := SignManifest(sampleManifest(version, a), fuzzKey)
		if err != nil {
			tb.Fatal(err)
		}
		r.Builds = append(r.Builds, Build{Manifest: m, Signature: sig})
	}
	return r
}

func TestManifestSignAndVerify(t *testing.T) {
	m := sampleManifest("1.4.0", "armv7")
	b, sig, err := SignManifest(m, fuzzKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyManifest(b, sig, pub(fuzzKey))
	if err != nil || *got != *m {
		t.Fatalf("VerifyManifest = %+v, %v; want %+v", got, err, m)
	}
	other := newKey(t)
	if _, err := VerifyManifest(b, sig, pub(other)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("another key: %v, want ErrBadSignature", err)
	}
	changed := bytes.Replace(b, []byte(`"size":1234`), []byte(`"size":1235`), 1)
	if _, err := VerifyManifest(changed, sig, pub(fuzzKey)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("changed size: %v, want ErrBadSignature", err)
	}
	// A signature of the same bytes in another context (a wire envelope)
	// is not a manifest signature.
	env, _ := Seal(TypeDownlink, b, false, fuzzKey)
	if _, err := VerifyManifest(b, env[len(env)-64:], pub(fuzzKey)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("envelope signature: %v, want ErrBadSignature", err)
	}
}

func TestParseManifestRejects(t *testing.T) {
	good := `{"version":"1.4.0","arch":"armv7","size":10,"sha256":"` + strings.Repeat("ab", 32) + `","date":"2026-03-01T12:00:00Z"}`
	if _, err := ParseManifest([]byte(good)); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	for name, p := range map[string]string{
		"not json":      `nope`,
		"trailing":      good + `{}`,
		"unknown field": strings.Replace(good, `"size"`, `"evil":1,"size"`, 1),
		"bad version":   strings.Replace(good, `1.4.0`, `latest`, 1),
		"bad arch":      strings.Replace(good, `armv7`, `ARM/7`, 1),
		"zero size":     strings.Replace(good, `"size":10`, `"size":0`, 1),
		"huge size":     strings.Replace(good, `"size":10`, fmt.Sprintf(`"size":%d`, MaxBinarySize+1), 1),
		"short sha":     strings.Replace(good, strings.Repeat("ab", 32), "abcd", 1),
		"upper sha":     strings.Replace(good, strings.Repeat("ab", 32), strings.Repeat("AB", 32), 1),
		"no date":       strings.Replace(good, `,"date":"2026-03-01T12:00:00Z"`, ``, 1),
		"too large":     good + strings.Repeat(" ", MaxManifestSize),
	} {
		if _, err := ParseManifest([]byte(p)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		cmp  int
		ok   bool
	}{
		{"1.4.0", "1.10.0", -1, true},
		{"v2.0.0", "1.9.9", 1, true},
		{"1.4.0", "v1.4.0", 0, true},
		{"1.4.0-rc.1", "1.4.0", -1, true},
		{"dev", "1.0.0", 0, false},
	} {
		cmp, ok := CompareVersions(c.a, c.b)
		if cmp != c.cmp || ok != c.ok {
			t.Errorf("CompareVersions(%q, %q) = %d, %t; want %d, %t", c.a, c.b, cmp, ok, c.cmp, c.ok)
		}
	}
}

func TestRollout(t *testing.T) {
	r := sampleRollout(t, "1.4.0", "armv7", "arm64")
	r.Devices = []string{"bus-7"}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRollout(b)
	if err != nil {
		t.Fatal(err)
	}
	m, err := got.For("arm64", pub(fuzzKey))
	if err != nil || m.Arch != "arm64" || m.Version != "1.4.0" {
		t.Fatalf("For(arm64) = %+v, %v", m, err)
	}
	if _, err := got.For("riscv64", pub(fuzzKey)); !errors.Is(err, ErrNoBuild) || !strings.Contains(err.Error(), "release add --arch riscv64") {
		t.Errorf("For(riscv64): %v, want ErrNoBuild naming release add --arch riscv64", err)
	}
	if _, err := got.For("armv7", pub(newKey(t))); !errors.Is(err, ErrBadSignature) {
		t.Errorf("For with another fleet key: %v, want ErrBadSignature", err)
	}
	// A manifest of another version slipped into the rollout.
	bad := sampleRollout(t, "1.4.0", "armv7")
	bad.Builds = append(sampleRollout(t, "1.3.0", "arm64").Builds, bad.Builds...)
	if _, err := bad.For("arm64", pub(fuzzKey)); !errors.Is(err, ErrMalformed) {
		t.Errorf("manifest of another version: %v, want ErrMalformed", err)
	}

	// Percent: about that share of a fleet, and growing the percentage
	// keeps the devices already in.
	in10, in50 := 0, 0
	for i := range 10000 {
		id := fmt.Sprintf("dev-%d", i)
		r.Percent = 10
		a := r.Includes(id)
		r.Percent = 50
		b := r.Includes(id)
		if a && !b {
			t.Fatalf("%s in at 10%% and out at 50%%", id)
		}
		if a {
			in10++
		}
		if b {
			in50++
		}
	}
	if in10 < 800 || in10 > 1200 || in50 < 4700 || in50 > 5300 {
		t.Errorf("10%% took %d and 50%% took %d of 10000 devices", in10, in50)
	}
	r.Percent = 0
	if !r.Includes("bus-7") || r.Includes("bus-8") {
		t.Errorf("device list: bus-7 %t, bus-8 %t", r.Includes("bus-7"), r.Includes("bus-8"))
	}

	for name, mut := range map[string]func(*Rollout){
		"no builds":   func(r *Rollout) { r.Builds = nil },
		"bad version": func(r *Rollout) { r.Version = "one" },
		"percent":     func(r *Rollout) { r.Percent = 101 },
		"device id":   func(r *Rollout) { r.Devices = []string{"a/b"} },
		"signature":   func(r *Rollout) { r.Builds[0].Signature = r.Builds[0].Signature[:10] },
	} {
		x := sampleRollout(t, "1.4.0", "armv7")
		mut(x)
		if _, err := x.Marshal(); err == nil {
			t.Errorf("%s: Marshal accepted it", name)
		}
	}
}

// FuzzRelease feeds arbitrary bytes to the release decoders: no panics,
// and whatever decodes re-encodes to something that decodes the same.
func FuzzRelease(f *testing.F) {
	m, _ := sampleManifest("1.4.0", "armv7").Marshal()
	r, _ := sampleRollout(f, "1.4.0", "armv7", "arm64").Marshal()
	for _, p := range [][]byte{m, r, {}, []byte(`{}`), []byte(`{"version":"1.0.0"}`)} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if m, err := ParseManifest(p); err == nil {
			again, err := m.Marshal()
			if err != nil {
				t.Fatalf("decoded manifest does not re-encode: %v", err)
			}
			m2, err := ParseManifest(again)
			if err != nil || !m2.Date.Equal(m.Date) || m2.SHA256 != m.SHA256 || m2.Size != m.Size || m2.Version != m.Version {
				t.Fatalf("re-encoded manifest: %+v, %v; want %+v", m2, err, m)
			}
		}
		if r, err := ParseRollout(p); err == nil {
			again, err := r.Marshal()
			if err != nil && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("decoded rollout does not re-encode: %v", err)
			}
			if err == nil {
				if _, err := ParseRollout(again); err != nil {
					t.Fatalf("re-encoded rollout does not decode: %v", err)
				}
			}
			r.For("armv7", pub(fuzzKey))
			r.Includes("d")
		}
		VerifyManifest(p, make([]byte, 64), pub(fuzzKey))
	})
}

// TestManifestSum: a binary matches its manifest only with its size and
// SHA-256; a longer one is read one byte past the size, no further.
func TestManifestSum(t *testing.T) {
	bin := []byte("a validator binary")
	sum := sha256.Sum256(bin)
	m := &Manifest{Version: "1.4.0", Arch: "armv7", Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}
	for name, tc := range map[string]struct {
		bin     []byte
		size    int64
		matches bool
	}{
		"the binary":     {bin, int64(len(bin)), true},
		"a byte flipped": {append([]byte("A"), bin[1:]...), int64(len(bin)), false},
		"cut short":      {bin[:len(bin)-1], int64(len(bin) - 1), false},
		"longer":         {append(bytes.Clone(bin), bytes.Repeat([]byte("x"), 1000)...), int64(len(bin) + 1), false},
	} {
		s, err := m.Sum(bytes.NewReader(tc.bin))
		if err != nil || s.Size != tc.size || m.Matches(s) != tc.matches {
			t.Errorf("%s: %+v, %v; matches %v, want size %d, matches %v", name, s, err, m.Matches(s), tc.size, tc.matches)
		}
	}
}
