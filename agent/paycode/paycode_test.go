package paycode

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vector is testdata/paycode/vector.json, the worked vector of the design.
type vector struct {
	IssuerRootSecret string `json:"issuer_root_secret"`
	IssuerKeyID      uint32 `json:"issuer_key_id"`
	IssuerPublicKey  string `json:"issuer_public_key"`
	TokenSeed        string `json:"token_seed"`
	RiderPublicKey   string `json:"rider_public_key"`
	Account          uint64 `json:"account"`
	Serial           uint32 `json:"serial"`
	NotBefore        uint32 `json:"not_before"`
	NotAfter         uint32 `json:"not_after"`
	Profile          uint8  `json:"profile"`
	CodeTime         int64  `json:"code_time"`
	Counter          uint16 `json:"counter"`
	VerifyAt         int64  `json:"verify_at"`
	TextPrefix       string `json:"text_prefix"`
	TextSuffix       string `json:"text_suffix"`
	CodeHex          string `json:"code_hex"`
	Text             string `json:"text"`
}

const testdataDir = "../../testdata/paycode"

func loadVector(tb testing.TB) vector {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(testdataDir, "vector.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(data, &v); err != nil {
		tb.Fatal(err)
	}
	return v
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fixture is the worked vector's issuer, rider and keyring, for tests that
// need a valid code to start from.
type fixture struct {
	v       vector
	issuer  ed25519.PrivateKey
	rider   ed25519.PrivateKey
	cred    []byte
	keyring *Keyring
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	v := loadVector(tb)
	ik, err := IssuerKey(mustHex(tb, v.IssuerRootSecret), v.IssuerKeyID)
	if err != nil {
		tb.Fatal(err)
	}
	rk, err := RiderKey(mustHex(tb, v.TokenSeed))
	if err != nil {
		tb.Fatal(err)
	}
	c := Credential{KeyID: v.IssuerKeyID, Account: v.Account, Serial: v.Serial,
		NotBefore: v.NotBefore, NotAfter: v.NotAfter, Profile: Profile(v.Profile)}
	copy(c.RiderKey[:], rk.Public().(ed25519.PublicKey))
	cred, err := IssueCredential(ik, c)
	if err != nil {
		tb.Fatal(err)
	}
	kr, err := LoadKeyring(filepath.Join(testdataDir, "keyring.json"))
	if err != nil {
		tb.Fatal(err)
	}
	return &fixture{v: v, issuer: ik, rider: rk, cred: cred, keyring: kr}
}

func (f *fixture) code(tb testing.TB, t int64, counter uint16) string {
	tb.Helper()
	b, err := MakeCode(f.cred, f.rider, time.Unix(t, 0), counter)
	if err != nil {
		tb.Fatal(err)
	}
	return EncodeText(b)
}

func TestWorkedVector(t *testing.T) {
	v := loadVector(t)
	ik, err := IssuerKey(mustHex(t, v.IssuerRootSecret), v.IssuerKeyID)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(ik.Public().(ed25519.PublicKey)); got != v.IssuerPublicKey {
		t.Errorf("issuer public key = %s, want %s", got, v.IssuerPublicKey)
	}
	rk, err := RiderKey(mustHex(t, v.TokenSeed))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(rk.Public().(ed25519.PublicKey)); got != v.RiderPublicKey {
		t.Errorf("rider public key = %s, want %s", got, v.RiderPublicKey)
	}
	f := newFixture(t)
	text := f.code(t, v.CodeTime, v.Counter)
	if !strings.HasPrefix(text, v.TextPrefix) || !strings.HasSuffix(text, v.TextSuffix) {
		t.Errorf("text = %s, want prefix %s and suffix %s", text, v.TextPrefix, v.TextSuffix)
	}
	if text != v.Text {
		t.Errorf("text = %s\nwant   %s", text, v.Text)
	}
	if len(text) != TextSize || TextSize != 295 {
		t.Errorf("len(text) = %d, TextSize = %d, want 295", len(text), TextSize)
	}
	c, err := ParseText(text)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(c.Bytes()); got != v.CodeHex {
		t.Errorf("code bytes = %s, want %s", got, v.CodeHex)
	}
	want := ID{Account: v.Account, Serial: v.Serial, Time: uint32(v.CodeTime), Counter: v.Counter}
	if c.ID() != want || c.Profile != Child || c.KeyID != 7 || c.NotBefore != v.NotBefore || c.NotAfter != v.NotAfter {
		t.Errorf("parsed %+v, want id %+v, child, key 7", c, want)
	}
	d := Verify(text, time.Unix(v.VerifyAt, 0), f.keyring, Policy{})
	if !d.Accepted || d.Reason != "" {
		t.Errorf("Verify at %d = %+v, want accepted", v.VerifyAt, d)
	}
	for _, r := range text {
		if !strings.ContainsRune(base45Alphabet+"FG1:", r) {
			t.Errorf("text holds %q, outside the QR alphanumeric set", r)
		}
	}
}

// tamper returns the text of the code b with byte i xor-ed with x.
func tamper(b []byte, i int, x byte) string {
	c := append([]byte(nil), b...)
	c[i] ^= x
	return EncodeText(c)
}

func TestVerifyReasons(t *testing.T) {
	f := newFixture(t)
	v := f.v
	now := time.Unix(v.VerifyAt, 0)
	good := f.code(t, v.CodeTime, v.Counter)
	goodBytes, _ := ParseText(good)
	raw := goodBytes.Bytes()

	otherIssuer, _ := IssuerKey(make([]byte, 32), 7)
	forged := func() string { // a credential for key 7 signed by another root
		c, _ := ParseCredential(f.cred)
		cred, _ := IssueCredential(otherIssuer, c)
		b, _ := MakeCode(cred, f.rider, time.Unix(v.CodeTime, 0), 1)
		return EncodeText(b)
	}()
	withCred := func(mod func(*Credential)) string {
		c, _ := ParseCredential(f.cred)
		mod(&c)
		cred, err := IssueCredential(f.issuer, c)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := MakeCode(cred, f.rider, time.Unix(v.CodeTime, 0), 1)
		return EncodeText(b)
	}
	otherVersion := append([]byte(nil), raw...)
	otherVersion[0] = 2
	// A credential whose issuer set flags (0 in version 1; readers ignore
	// them, DESIGN: a newer issuer may use them without new readers).
	flagged := func() string {
		c, _ := ParseCredential(f.cred)
		c.Flags = 5
		b := make([]byte, CredentialSize)
		c.marshal(b)
		copy(b[60:], ed25519.Sign(f.issuer, credentialMessage(b)))
		code, _ := MakeCode(b, f.rider, time.Unix(v.CodeTime, 0), 1)
		return EncodeText(code)
	}()
	produced := map[Reason]bool{}

	for _, tc := range []struct {
		name string
		text string
		at   time.Time
		kr   *Keyring
		want Reason
	}{
		{"accepted", good, now, f.keyring, ""},
		{"credential flags ignored", flagged, now, f.keyring, ""},
		{"empty", "", now, f.keyring, ReasonMalformed},
		{"no prefix", good[4:], now, f.keyring, ReasonMalformed},
		{"lower-case prefix", "fg1:" + good[4:], now, f.keyring, ReasonMalformed},
		{"trailing CR", good + "\r", now, f.keyring, ReasonMalformed},
		{"trailing space", good + " ", now, f.keyring, ReasonMalformed},
		{"truncated", good[:len(good)-3], now, f.keyring, ReasonMalformed},
		{"bad base45", good[:100] + "a" + good[101:], now, f.keyring, ReasonMalformed},
		{"base45 overflow", good[:4] + ":::" + good[7:], now, f.keyring, ReasonMalformed},
		{"FG2 prefix", "FG2:" + good[4:], now, f.keyring, ReasonUnsupportedVersion},
		{"FG0 prefix short", "FG0:AB", now, f.keyring, ReasonUnsupportedVersion},
		{"version byte 2", EncodeText(otherVersion), now, f.keyring, ReasonUnsupportedVersion},
		{"unknown key id", withCred(func(c *Credential) { c.KeyID = 8 }), now, f.keyring, ReasonUnknownIssuerKey},
		{"empty keyring", good, now, &Keyring{}, ReasonUnknownIssuerKey},
		{"nil keyring", good, now, nil, ReasonUnknownIssuerKey},
		{"key window over", good, time.Date(2027, 1, 1, 0, 0, 30, 0, time.UTC), f.keyring, ReasonUnknownIssuerKey},
		{"key window not begun", good, time.Date(2025, 11, 30, 23, 59, 29, 0, time.UTC), f.keyring, ReasonUnknownIssuerKey},
		{"forged credential", forged, now, f.keyring, ReasonBadCredentialSignature},
		{"credential byte changed", tamper(raw, 10, 1), now, f.keyring, ReasonBadCredentialSignature},
		{"credential flags changed", tamper(raw, 27, 1), now, f.keyring, ReasonBadCredentialSignature},
		{"credential not yet valid", withCred(func(c *Credential) { c.NotBefore = uint32(v.VerifyAt + 31) }), now, f.keyring, ReasonCredentialNotYetValid},
		{"credential expired", withCred(func(c *Credential) { c.NotAfter = uint32(v.VerifyAt - 31) }), now, f.keyring, ReasonCredentialExpired},
		{"code time changed", tamper(raw, 127, 1), now, f.keyring, ReasonBadCodeSignature},
		{"counter changed", tamper(raw, 129, 1), now, f.keyring, ReasonBadCodeSignature},
		{"rider signature changed", tamper(raw, 193, 0x80), now, f.keyring, ReasonBadCodeSignature},
		{"code from future", f.code(t, v.VerifyAt+31, 1), now, f.keyring, ReasonCodeFromFuture},
		{"code expired", f.code(t, v.VerifyAt-121, 1), now, f.keyring, ReasonCodeExpired},
	} {
		produced[tc.want] = true
		t.Run(tc.name, func(t *testing.T) {
			for _, ver := range []*Verifier{NewVerifier(-1), NewVerifier(0)} {
				d := ver.Verify(tc.text, tc.at, tc.kr, Policy{})
				if d.Reason != tc.want || d.Accepted != (tc.want == "") {
					t.Errorf("Verify = {accepted %v, reason %q}, want reason %q", d.Accepted, d.Reason, tc.want)
				}
				parsed := tc.want != ReasonMalformed && tc.want != ReasonUnsupportedVersion
				if (d.Code != nil) != parsed {
					t.Errorf("Decision.Code = %v, want parsed = %v", d.Code, parsed)
				}
			}
		})
	}
	// Every reason Verify can give was produced above.
	for _, r := range Reasons {
		if !produced[r] {
			t.Errorf("no case produces reason %q", r)
		}
	}
}

func TestVerifyBoundaries(t *testing.T) {
	f := newFixture(t)
	ct := f.v.CodeTime
	code := f.code(t, ct, 1)
	c, _ := ParseCredential(f.cred)
	nb, na := int64(c.NotBefore), int64(c.NotAfter)
	for _, tc := range []struct {
		name string
		text string
		now  int64
		p    Policy
		want Reason
	}{
		{"exactly at max age", code, ct + 120, Policy{}, ""},
		{"one second past max age", code, ct + 121, Policy{}, ReasonCodeExpired},
		{"exactly at custom max age", code, ct + 60, Policy{MaxAge: 60 * time.Second}, ""},
		{"past custom max age", code, ct + 61, Policy{MaxAge: 60 * time.Second}, ReasonCodeExpired},
		{"fraction of max age ignored", code, ct + 61, Policy{MaxAge: 60*time.Second + 900*time.Millisecond}, ReasonCodeExpired},
		{"code time exactly skew ahead", code, ct - 30, Policy{}, ""},
		{"code time one past skew ahead", code, ct - 31, Policy{}, ReasonCodeFromFuture},
		{"no skew: code one second ahead", code, ct - 1, Policy{Skew: -1}, ReasonCodeFromFuture},
		{"no skew: code time now", code, ct, Policy{Skew: -1}, ""},
		{"credential: exactly skew before not before", f.code(t, nb-30, 1), nb - 30, Policy{}, ""},
		{"credential: one past skew before not before", f.code(t, nb-31, 1), nb - 31, Policy{}, ReasonCredentialNotYetValid},
		{"credential: exactly skew after not after", f.code(t, na, 1), na + 30, Policy{}, ""},
		{"credential: one past skew after not after", f.code(t, na, 1), na + 31, Policy{}, ReasonCredentialExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Verify(tc.text, time.Unix(tc.now, 999_000_000), f.keyring, tc.p)
			if d.Reason != tc.want || d.Accepted != (tc.want == "") {
				t.Errorf("Verify at %d = {accepted %v, reason %q}, want %q", tc.now, d.Accepted, d.Reason, tc.want)
			}
		})
	}
	// The keyring window, ± skew, at its edges.
	kr := f.keyring
	key, _ := kr.Lookup(7)
	for _, tc := range []struct {
		at   time.Time
		want Reason
	}{
		{key.NotAfter.Add(30 * time.Second), ""},
		{key.NotAfter.Add(31 * time.Second), ReasonUnknownIssuerKey},
		{key.NotBefore.Add(-30 * time.Second), ""},
		{key.NotBefore.Add(-31 * time.Second), ReasonUnknownIssuerKey},
	} {
		// A credential and code that are valid at tc.at, so only the key window decides.
		cr := Credential{KeyID: 7, Account: 1, Serial: 1, NotBefore: uint32(tc.at.Unix() - 100), NotAfter: uint32(tc.at.Unix() + 100)}
		copy(cr.RiderKey[:], f.rider.Public().(ed25519.PublicKey))
		cred, _ := IssueCredential(f.issuer, cr)
		b, _ := MakeCode(cred, f.rider, tc.at, 1)
		if d := Verify(EncodeText(b), tc.at, kr, Policy{}); d.Reason != tc.want {
			t.Errorf("key window: Verify at %s = %q, want %q", tc.at.Format(time.RFC3339), d.Reason, tc.want)
		}
	}
}

func TestVerifierCache(t *testing.T) {
	f := newFixture(t)
	now := time.Unix(f.v.VerifyAt, 0)
	ver := NewVerifier(2)
	good := f.code(t, f.v.CodeTime, 1)
	if d := ver.Verify(good, now, f.keyring, Policy{}); !d.Accepted {
		t.Fatalf("first verify: %+v", d)
	}
	if d := ver.Verify(f.code(t, f.v.CodeTime, 2), now, f.keyring, Policy{}); !d.Accepted {
		t.Fatalf("second verify: %+v", d)
	}
	if hits, misses := ver.CacheStats(); hits != 1 || misses != 1 {
		t.Errorf("cache hits, misses = %d, %d, want 1, 1", hits, misses)
	}
	// With the credential cached, every single-bit change of every
	// credential byte is still refused.
	c, _ := ParseText(good)
	raw := c.Bytes()
	for i := 1; i < CredentialSize; i++ { // byte 0 is the version
		for bit := range 8 {
			text := tamper(raw, i, 1<<bit)
			if d := ver.Verify(text, now, f.keyring, Policy{}); d.Accepted {
				t.Fatalf("credential byte %d bit %d changed: accepted", i, bit)
			}
		}
	}
	// The same credential bytes under a different public key for the same id
	// (a keyring update) are verified afresh.
	other, _ := IssuerKey(make([]byte, 32), 7)
	kr2, _ := NewKeyring(2, []Key{{ID: 7, Public: other.Public().(ed25519.PublicKey), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}})
	if d := ver.Verify(good, now, kr2, Policy{}); d.Reason != ReasonBadCredentialSignature {
		t.Errorf("cached credential under another key: %q, want %q", d.Reason, ReasonBadCredentialSignature)
	}
	// Bounded: many credentials leave at most 2 entries.
	for i := range 10 {
		cr := Credential{KeyID: 7, Account: uint64(100 + i), Serial: 1, NotBefore: f.v.NotBefore, NotAfter: f.v.NotAfter}
		copy(cr.RiderKey[:], f.rider.Public().(ed25519.PublicKey))
		cred, _ := IssueCredential(f.issuer, cr)
		b, _ := MakeCode(cred, f.rider, time.Unix(f.v.CodeTime, 0), 1)
		if d := ver.Verify(EncodeText(b), now, f.keyring, Policy{}); !d.Accepted {
			t.Fatalf("account %d: %+v", 100+i, d)
		}
	}
	ver.mu.Lock()
	n := ver.lru.Len()
	ver.mu.Unlock()
	if n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
}

func TestIssueAndMakeRefuseBadInput(t *testing.T) {
	f := newFixture(t)
	c, _ := ParseCredential(f.cred)
	for name, mod := range map[string]func(*Credential){
		"reserved profile": func(c *Credential) { c.Profile = 4 },
		"empty window":     func(c *Credential) { c.NotAfter = c.NotBefore },
		"flags":            func(c *Credential) { c.Flags = 1 },
	} {
		cc := c
		mod(&cc)
		if _, err := IssueCredential(f.issuer, cc); !errors.Is(err, ErrInvalidField) {
			t.Errorf("%s: IssueCredential err = %v, want ErrInvalidField", name, err)
		}
	}
	other, _ := RiderKey(make([]byte, 32))
	if _, err := MakeCode(f.cred, other, time.Unix(f.v.CodeTime, 0), 1); !errors.Is(err, ErrBadKey) {
		t.Errorf("MakeCode with a foreign rider key: err = %v, want ErrBadKey", err)
	}
	if _, err := MakeCode(f.cred[:100], f.rider, time.Unix(f.v.CodeTime, 0), 1); !errors.Is(err, ErrMalformed) {
		t.Errorf("MakeCode with a short credential: err = %v, want ErrMalformed", err)
	}
	if _, err := RiderKey(make([]byte, 31)); !errors.Is(err, ErrBadKey) {
		t.Errorf("RiderKey(31 bytes): err = %v, want ErrBadKey", err)
	}
	if _, err := IssuerKey(make([]byte, 16), 1); !errors.Is(err, ErrBadKey) {
		t.Errorf("IssuerKey(16 bytes): err = %v, want ErrBadKey", err)
	}
}

func TestKeyringFile(t *testing.T) {
	kr, err := LoadKeyring(filepath.Join(testdataDir, "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	if kr.Version() != 1 || len(kr.Keys()) != 1 {
		t.Fatalf("keyring = version %d, %d keys, want 1, 1", kr.Version(), len(kr.Keys()))
	}
	path := filepath.Join(t.TempDir(), "keyring.json")
	if err := kr.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	again, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	a, b := kr.Keys()[0], again.Keys()[0]
	if a.ID != b.ID || !a.Public.Equal(b.Public) || !a.NotBefore.Equal(b.NotBefore) || !a.NotAfter.Equal(b.NotAfter) || again.Version() != 1 {
		t.Errorf("round trip: got %+v, want %+v", b, a)
	}

	const pub = `"e19bc0780d68bf4e6529a2ba5a9816483bb78bda1ece81956f8e4f41115aa61b"`
	key := func(id, pk, nb, na string) string {
		return `{"id":` + id + `,"public_key":` + pk + `,"not_before":"` + nb + `","not_after":"` + na + `"}`
	}
	ok := key("7", pub, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
	for name, data := range map[string]string{
		"not json":          `version: 1`,
		"missing version":   `{"keys":[` + ok + `]}`,
		"unknown field":     `{"version":1,"keys":[],"extra":1}`,
		"trailing data":     `{"version":1,"keys":[]} {}`,
		"short key":         `{"version":1,"keys":[` + key("7", `"e19b"`, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z") + `]}`,
		"non-hex key":       `{"version":1,"keys":[` + key("7", `"`+strings.Repeat("zz", 32)+`"`, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z") + `]}`,
		"bad time":          `{"version":1,"keys":[` + key("7", pub, "2026-01-01", "2027-01-01T00:00:00Z") + `]}`,
		"empty window":      `{"version":1,"keys":[` + key("7", pub, "2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z") + `]}`,
		"duplicate id":      `{"version":1,"keys":[` + ok + `,` + ok + `]}`,
		"negative id":       `{"version":1,"keys":[` + key("-1", pub, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z") + `]}`,
		"missing id":        `{"version":1,"keys":[{"public_key":` + pub + `,"not_before":"2026-01-01T00:00:00Z","not_after":"2027-01-01T00:00:00Z"}]}`,
		"negative version":  `{"version":-1,"keys":[]}`,
		"too large to read": `{"version":1,"keys":[],"x":"` + strings.Repeat("a", MaxKeyringFileSize) + `"}`,
	} {
		if _, err := ParseKeyring([]byte(data)); !errors.Is(err, ErrKeyring) {
			t.Errorf("%s: ParseKeyring err = %v, want ErrKeyring", name, err)
		}
	}
	// A missing file is no keyring, not an invalid one ("paycode: invalid
	// keyring: open …: no such file" sent a technician to the contents).
	missing := filepath.Join(t.TempDir(), "missing.json")
	if _, err := LoadKeyring(missing); !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrKeyring) ||
		!strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: err = %v, want not-exist naming the file", err)
	}
}

func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	now := time.Unix(fx.v.VerifyAt, 0)
	good := fx.code(f, fx.v.CodeTime, fx.v.Counter)
	goodCode, _ := ParseText(good)
	raw := goodCode.Bytes()
	f.Add(good, 0, byte(0))
	f.Add(good, 60, byte(1))
	f.Add(good, 129, byte(0x80))
	f.Add("FG1:", 0, byte(0))
	f.Add("FG2:"+good[4:], 0, byte(0))
	f.Add("FG1:GGW", 0, byte(0))
	f.Add(good[:200], 3, byte(7))
	ver := NewVerifier(16)
	f.Fuzz(func(t *testing.T, text string, at int, x byte) {
		// Arbitrary text: never panics, and is accepted only if it is the
		// genuine code (Base45 is canonical, so no other text decodes to it).
		d := ver.Verify(text, now, fx.keyring, Policy{})
		if d.Accepted && text != good {
			c, _ := ParseText(text)
			if c == nil || string(c.Bytes()) != string(raw) {
				t.Fatalf("accepted a text that is not the genuine code: %q", text)
			}
		}
		if !d.Accepted && d.Reason == "" {
			t.Fatalf("rejected without a reason: %q", text)
		}
		// The genuine code with one byte changed is never accepted, cached or not.
		if x != 0 {
			i := at % CodeSize
			if i < 0 {
				i = -i
			}
			bad := tamper(raw, i, x)
			for _, v := range []*Verifier{ver, uncached} {
				if d := v.Verify(bad, now, fx.keyring, Policy{}); d.Accepted {
					t.Fatalf("byte %d ^ %#x accepted", i, x)
				}
			}
		}
	})
}

func FuzzBase45(f *testing.F) {
	for _, s := range []string{"BB8", "%69 VD92EX0", "UJCLQE7W581", "QED8WEX0", "GGW", "A", "", "::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := Base45Decode(s)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same text: Base45 is canonical.
		if got := Base45Encode(b); got != s {
			t.Fatalf("Base45Encode(Base45Decode(%q)) = %q", s, got)
		}
	})
}

// A small-order public key lets anyone sign: for the identity key 01‖0³¹,
// the "signature" 01‖0⁶³ verifies on any message. CheckPublicKey refuses
// every small-order point, non-canonical encodings and wrong sizes, and
// accepts real keys.
func TestCheckPublicKey(t *testing.T) {
	identity := append([]byte{1}, make([]byte, 31)...)
	forged := append([]byte{1}, make([]byte, 63)...)
	if !ed25519.Verify(identity, []byte("batch of taps"), forged) {
		t.Fatal("the forged signature does not verify: the reason for CheckPublicKey is gone?")
	}
	bad := map[string]string{
		"identity":               "0100000000000000000000000000000000000000000000000000000000000000",
		"order 4 (y = 0)":        "0000000000000000000000000000000000000000000000000000000000000000",
		"order 4, sign bit":      "0000000000000000000000000000000000000000000000000000000000000080",
		"order 2 (y = -1)":       "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"order 8":                "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
		"order 8, other":         "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
		"order 8, sign bit":      "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
		"non-canonical y = p":    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"non-canonical identity": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"not on the curve":       "0200000000000000000000000000000000000000000000000000000000000000",
		"short":                  "01",
	}
	for name, h := range bad {
		pub, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckPublicKey(pub); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: CheckPublicKey = %v, want ErrBadKey", name, err)
		}
	}
	for i := range 64 {
		seed := make([]byte, 32)
		seed[0] = byte(i)
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		if err := CheckPublicKey(pub); err != nil {
			t.Errorf("real key %x: %v", pub, err)
		}
	}
	// A keyring naming a small-order key is refused.
	doc := `{"version":1,"keys":[{"id":7,"public_key":"0100000000000000000000000000000000000000000000000000000000000000",` +
		`"not_before":"2025-12-01T00:00:00Z","not_after":"2026-12-31T23:59:59Z"}]}`
	if _, err := ParseKeyring([]byte(doc)); !errors.Is(err, ErrKeyring) || !strings.Contains(err.Error(), "small order") {
		t.Errorf("keyring with the identity key: %v", err)
	}
}

// FuzzKeyring: a keyring file (the provisioning bundle's, the device's)
// either parses or fails with ErrKeyring, never panics; a keyring that
// parses has only keys CheckPublicKey accepts, unique ids and non-empty
// windows, and survives writing it out and reading it back unchanged.
func FuzzKeyring(f *testing.F) {
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	good := `{"version": 3, "keys": [{"id": 7, "public_key": "` + hex.EncodeToString(pub) +
		`", "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00+08:00"}]}`
	f.Add([]byte(good))
	f.Add([]byte(`{"version": 1, "keys": []}`))
	f.Add([]byte(strings.Replace(good, `"id": 7`, `"id": 4294967296`, 1)))
	f.Add([]byte(strings.Replace(good, "2027", "2025", 1)))
	f.Add([]byte(`{"version": 1, "keys": [{"id": 1, "public_key": "01` + strings.Repeat("0", 62) + `"}]}`))
	f.Add([]byte(good + " {}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeyring(data)
		if err != nil {
			if !errors.Is(err, ErrKeyring) {
				t.Fatalf("error %v is not ErrKeyring", err)
			}
			return
		}
		keys := k.Keys()
		for i, key := range keys {
			if CheckPublicKey(key.Public) != nil || !key.NotAfter.After(key.NotBefore) || (i > 0 && keys[i-1].ID >= key.ID) {
				t.Fatalf("accepted key %+v", key)
			}
		}
		out, err := k.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseKeyring(out)
		if err != nil {
			t.Fatalf("written keyring does not parse: %v\n%s", err, out)
		}
		if again.Version() != k.Version() || len(again.Keys()) != len(keys) {
			t.Fatalf("round trip changed the keyring: %s", out)
		}
		for i, key := range again.Keys() {
			if key.ID != keys[i].ID || !key.Public.Equal(keys[i].Public) || !key.NotBefore.Equal(keys[i].NotBefore.Truncate(time.Second)) ||
				!key.NotAfter.Equal(keys[i].NotAfter.Truncate(time.Second)) {
				t.Fatalf("round trip changed key %d: %+v, was %+v", i, key, keys[i])
			}
		}
	})
}

// TestKeyringValidAt: a keyring verifies codes while one of its keys'
// windows, give or take the skew, holds the time, as VerifyCode takes it.
func TestKeyringValidAt(t *testing.T) {
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	pub := make([]byte, 32)
	pub[0] = 9
	kr, err := NewKeyring(3, []Key{{ID: 1, Public: pub, NotBefore: start, NotAfter: start.AddDate(0, 1, 0)},
		{ID: 2, Public: pub, NotBefore: start.AddDate(0, 2, 0), NotAfter: start.AddDate(0, 3, 0)}})
	if err != nil {
		t.Fatal(err)
	}
	p := Policy{Skew: 30 * time.Second}
	for _, c := range []struct {
		at   time.Time
		want bool
	}{
		{start.Add(-31 * time.Second), false}, {start.Add(-30 * time.Second), true}, {start.AddDate(0, 1, 0).Add(30 * time.Second), true},
		{start.AddDate(0, 1, 0).Add(31 * time.Second), false}, // between the two keys
		{start.AddDate(0, 2, 1), true}, {start.AddDate(0, 3, 0).Add(time.Minute), false},
	} {
		if got := kr.ValidAt(c.at, p); got != c.want {
			t.Errorf("ValidAt(%s) = %v, want %v", c.at, got, c.want)
		}
	}
	if (*Keyring)(nil).ValidAt(start, p) {
		t.Error("a nil keyring is valid")
	}
	if from, to := kr.Span(); !from.Equal(start) || !to.Equal(start.AddDate(0, 3, 0)) || kr.Len() != 2 {
		t.Errorf("Span = %s to %s, Len = %d; want %s to %s, 2", from, to, kr.Len(), start, start.AddDate(0, 3, 0))
	}
	empty, err := NewKeyring(4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if from, to := empty.Span(); !from.IsZero() || !to.IsZero() || empty.Len() != 0 || (*Keyring)(nil).Len() != 0 {
		t.Errorf("empty keyring: Span = %s to %s, Len = %d", from, to, empty.Len())
	}
}

// ValidUntil: the run of key windows from now, carried on by a renewed
// key that begins before it ends (not by one after a gap); zero when no
// key holds now.
func TestKeyringValidUntil(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	day := 24 * time.Hour
	key := func(id uint32, from, to time.Duration) Key {
		pub, _, _ := ed25519.GenerateKey(nil)
		return Key{ID: id, Public: pub, NotBefore: now.Add(from), NotAfter: now.Add(to)}
	}
	for _, c := range []struct {
		name string
		keys []Key
		want time.Time
	}{
		{"one", []Key{key(1, -day, 5*day)}, now.Add(5 * day)},
		{"renewed, not active yet", []Key{key(1, -day, 5*day), key(2, day, 365*day)}, now.Add(365 * day)},
		{"renewed twice, listed last first", []Key{key(3, 300*day, 700*day), key(1, -day, 5*day), key(2, 4*day, 365*day)}, now.Add(700 * day)},
		{"a renewal beginning as the key ends", []Key{key(1, -day, 5*day), key(2, 5*day, 365*day)}, now.Add(365 * day)},
		{"a gap", []Key{key(1, -day, 5*day), key(2, 6*day, 365*day)}, now.Add(5 * day)},
		{"none valid now", []Key{key(1, day, 5*day)}, time.Time{}},
	} {
		kr, err := NewKeyring(1, c.keys)
		if err != nil {
			t.Fatal(err)
		}
		if got := kr.ValidUntil(now); !got.Equal(c.want) {
			t.Errorf("%s: ValidUntil = %v, want %v", c.name, got, c.want)
		}
	}
	if got := (*Keyring)(nil).ValidUntil(now); !got.IsZero() {
		t.Errorf("nil keyring: %v", got)
	}
}
