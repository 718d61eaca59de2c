package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/sync/wire"
)

var (
	fleet = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	now   = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func TestAddRolloutServe(t *testing.T) {
	s := Open(filepath.Join(t.TempDir(), "releases"), fleet)
	bin := goBinary(t, "linux", "arm", "7")
	rel, err := s.Add(bytes.NewReader(bin), "1.4.0", "armv7", now)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Size != int64(len(bin)) || rel.Version != "1.4.0" {
		t.Fatalf("Add = %+v", rel)
	}
	if _, err := s.Add(bytes.NewReader(bin), "1.4.0", "armv7", now); !errors.Is(err, ErrExists) {
		t.Errorf("second Add: %v, want ErrExists", err)
	}
	for _, c := range []struct{ v, a string }{{"latest", "armv7"}, {"1.5.0", "../x"}, {"1.5.0", ""}} {
		if _, err := s.Add(bytes.NewReader(bin), c.v, c.a, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("Add(%q, %q): %v, want ErrInvalid", c.v, c.a, err)
		}
	}
	if _, err := s.Add(bytes.NewReader(nil), "1.5.0", "armv7", now); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty binary: %v, want ErrInvalid", err)
	}
	if _, err := s.Add(bytes.NewReader(goBinary(t, "linux", "arm64", "")), "1.3.0", "arm64", now); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 || list[0].Version != "1.4.0" || list[1].Version != "1.3.0" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if v, _, err := s.Document(); v != 0 || err != nil {
		t.Errorf("Document before a rollout: %d, %v", v, err)
	}
	if _, err := s.SetRollout("9.9.9", nil, 10, false, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("rollout of an unknown release: %v, want ErrNotFound", err)
	}
	if _, err := s.SetRollout("1.4.0", []string{"bad/id"}, 0, false, now); !errors.Is(err, ErrInvalid) {
		t.Errorf("rollout to a bad device id: %v, want ErrInvalid", err)
	}
	ro, err := s.SetRollout("1.4.0", []string{"bus-1"}, 10, false, now)
	if err != nil || ro.Seq != 1 {
		t.Fatalf("SetRollout = %+v, %v", ro, err)
	}
	if ro, _ = s.SetRollout("1.4.0", nil, 50, false, now); ro.Seq != 2 {
		t.Errorf("second rollout seq %d, want 2", ro.Seq)
	}
	v, body, err := s.Document()
	if err != nil || v != 2 {
		t.Fatalf("Document = %d, %v", v, err)
	}
	r, err := wire.ParseRollout(body)
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.For("armv7", fleet.Public().(ed25519.PublicKey))
	if err != nil || m.SHA256 != rel.SHA256 || r.Percent != 50 {
		t.Fatalf("rollout %+v: %+v, %v", r, m, err)
	}

	// A tampered manifest is not published.
	mf := filepath.Join(s.dir, "1.4.0", "armv7", ManifestFile)
	orig, _ := os.ReadFile(mf)
	size := fmt.Sprintf(`"size":%d`, len(bin))
	if !bytes.Contains(orig, []byte(size)) {
		t.Fatalf("manifest %s without %s", orig, size)
	}
	os.WriteFile(mf, bytes.Replace(orig, []byte(size), []byte(fmt.Sprintf(`"size":%d`, len(bin)+1)), 1), 0o644)
	if _, _, err := s.Document(); !errors.Is(err, wire.ErrBadSignature) {
		t.Errorf("Document with a tampered manifest: %v, want a bad signature", err)
	}
	os.WriteFile(mf, orig, 0o644)

	// Served with Range.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeBinary(w, r, r.URL.Query().Get("v"), r.URL.Query().Get("a"))
	}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"?v=1.4.0&a=armv7", nil)
	req.Header.Set("Range", "bytes=100-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, bin[100:]) {
		t.Errorf("Range request: %s, %d bytes", resp.Status, len(got))
	}
	// Several ranges are served as none: anyone may ask, and a header of
	// thousands of one-byte ranges made a multipart answer some 150 times
	// their size, each part read from the file on its own.
	var many []string
	for i := range 3000 {
		many = append(many, fmt.Sprintf("%d-%d", 2*i, 2*i))
	}
	for _, ranges := range []string{"bytes=0-0,2-2", "bytes=" + strings.Join(many, ",")} {
		req.Header.Set("Range", ranges)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, bin) {
			t.Errorf("%d ranges: %s, %d bytes (%.40q…), want the whole binary", strings.Count(ranges, ",")+1, resp.Status, len(got), got)
		}
	}
	for _, q := range []string{"?v=1.4.0&a=arm64", "?v=../../etc&a=armv7", "?v=1.4.0&a=.."} {
		resp, err := http.Get(srv.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %s, want 404", q, resp.Status)
		}
	}
}

// TestAddGuards: one version under two spellings is refused; a version
// takes at most wire.MaxRolloutBuilds architectures; a build added to the
// version being rolled out moves the rollout's sequence number, so the
// devices that applied the rollout take the new document with it.
func TestAddGuards(t *testing.T) {
	s := Open(filepath.Join(t.TempDir(), "releases"), fleet)
	bin, arm := goBinary(t, "linux", "arm64", ""), goBinary(t, "linux", "arm", "7")
	if _, err := s.Add(bytes.NewReader(bin), "1.4.0", "arm64", now); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v1.4.0", "1.4.0+build.7"} {
		if _, err := s.Add(bytes.NewReader(bin), v, "armv7", now); !errors.Is(err, ErrExists) {
			t.Errorf("Add(%q) beside 1.4.0: %v, want ErrExists", v, err)
		}
	}
	ro, err := s.SetRollout("1.4.0", nil, 100, false, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(bytes.NewReader(arm), "1.4.0", "armv7", now); err != nil {
		t.Fatal(err)
	}
	seq, body, err := s.Document()
	if err != nil {
		t.Fatal(err)
	}
	r, err := wire.ParseRollout(body)
	if err != nil {
		t.Fatal(err)
	}
	if seq != ro.Seq+1 || len(r.Builds) != 2 {
		t.Errorf("after a build added to the rolled-out version: rollout %d with %d builds, want %d with 2", seq, len(r.Builds), ro.Seq+1)
	}
	// Six more architectures, stored as Add stores them (building six
	// more Go toolchains' worth of runtime for the test would take
	// minutes).
	for _, arch := range []string{"armv5", "armv6", "386", "amd64", "riscv64", "ppc64le"}[:wire.MaxRolloutBuilds-2] {
		storeBuild(t, s, "1.4.0", arch, bin)
	}
	if _, err := s.Add(bytes.NewReader(bin), "1.4.0", "s390x", now); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "architectures already") {
		t.Errorf("build %d of a version: %v, want ErrInvalid", wire.MaxRolloutBuilds+1, err)
	}
	if _, _, err := s.Document(); err != nil {
		t.Errorf("rollout document with %d builds: %v", wire.MaxRolloutBuilds, err)
	}
}

// storeBuild stores a build of version for arch as Add does (binary,
// signed manifest), without Add's check of what the binary was built for.
func storeBuild(t *testing.T, s *Store, version, arch string, bin []byte) {
	t.Helper()
	sum := sha256.Sum256(bin)
	m := &wire.Manifest{Version: version, Arch: arch, Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:]), Date: now.UTC().Truncate(time.Second)}
	mb, sig, err := wire.SignManifest(m, fleet)
	if err != nil {
		t.Fatal(err)
	}
	dir := s.relDir(version, arch)
	for name, b := range map[string][]byte{BinaryFile: bin, ManifestFile: mb, SigFile: sig} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRolloutOfADamagedBinary: a stored binary changed on disk after Add
// (one byte flipped, cut short, or longer) is refused by SetRollout with
// ErrDamaged, naming it, and nothing is rolled out; a stop (no device, 0
// percent) is taken, and the repaired binary rolls out.
func TestRolloutOfADamagedBinary(t *testing.T) {
	s := Open(filepath.Join(t.TempDir(), "releases"), fleet)
	bin := []byte("a validator binary")
	storeBuild(t, s, "1.4.0", "armv7", bin)
	name := filepath.Join(s.relDir("1.4.0", "armv7"), BinaryFile)
	for _, bad := range [][]byte{append([]byte("A"), bin[1:]...), bin[:len(bin)-1], append(bytes.Clone(bin), "longer"...)} {
		if err := os.WriteFile(name, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := s.SetRollout("1.4.0", []string{"bus-1"}, 10, false, now)
		if !errors.Is(err, ErrDamaged) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), name) {
			t.Errorf("rollout of a damaged binary: %v, want ErrDamaged naming %s", err, name)
		}
		if ro, err := s.Rollout(); ro != nil || err != nil {
			t.Errorf("after a refused rollout: %+v, %v; want none", ro, err)
		}
	}
	if ro, err := s.SetRollout("1.4.0", nil, 0, false, now); err != nil || ro.Seq != 1 {
		t.Errorf("stopping (nobody) with the binary damaged: %+v, %v", ro, err)
	}
	if err := os.WriteFile(name, bin, 0o644); err != nil {
		t.Fatal(err)
	}
	if ro, err := s.SetRollout("1.4.0", nil, 100, false, now); err != nil || ro.Seq != 2 {
		t.Errorf("rollout of the repaired binary: %+v, %v", ro, err)
	}
}
