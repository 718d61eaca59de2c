package keys

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
)

func TestInitOpenRotate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	d, err := Init(dir, InitOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{RootFile, FleetKeyFile, TokenFile, BrokerFile} {
		info, err := os.Stat(filepath.Join(dir, f))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, info.Mode().Perm(), err)
		}
	}
	if _, err := Init(dir, InitOptions{}); !errors.Is(err, ErrExists) {
		t.Errorf("second Init: %v, want ErrExists", err)
	}
	id, priv, err := d.SigningKey(now)
	if err != nil || id != 1 {
		t.Fatalf("SigningKey = %d, %v", id, err)
	}
	d2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, TokenFile))
	if !d2.CheckToken(string(tok[:64])) || d2.CheckToken("nope") || !d2.FleetPublic().Equal(d.FleetPublic()) {
		t.Error("reopened directory differs")
	}

	later := now.Add(30 * 24 * time.Hour)
	kr, err := d2.Rotate(later, 0, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if kr.Version() != 2 || len(kr.Keys()) != 2 {
		t.Fatalf("rotated keyring: version %d, %d keys", kr.Version(), len(kr.Keys()))
	}
	id, priv2, _ := d2.SigningKey(later)
	if id != 2 || priv2.Equal(priv) {
		t.Errorf("after rotation the signing key is %d", id)
	}
	old, _ := kr.Lookup(1)
	if !old.NotAfter.Equal(later.Add(48 * time.Hour)) {
		t.Errorf("old key ends %s, want %s", old.NotAfter, later.Add(48*time.Hour))
	}
	// The rotation is on disk, and a credential from key 1 still verifies.
	d3, err := Open(dir)
	if err != nil || d3.Keyring().Version() != 2 {
		t.Fatalf("reopen after rotation: %v", err)
	}
	if _, err := paycode.LoadKeyring(filepath.Join(dir, KeyringFile)); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesBadFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, RootFile), 0o644)
	if _, err := Open(dir); !errors.Is(err, ErrMissing) {
		t.Errorf("world-readable root secret: %v", err)
	}
	os.Chmod(filepath.Join(dir, RootFile), 0o600)
	// A keyring from another installation is refused.
	other := filepath.Join(t.TempDir(), "other")
	if _, err := Init(other, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(other, KeyringFile))
	os.WriteFile(filepath.Join(dir, KeyringFile), data, 0o644)
	if _, err := Open(dir); err == nil {
		t.Error("opened a keyring that does not derive from the root secret")
	}
	if _, err := Open(t.TempDir()); !errors.Is(err, ErrMissing) {
		t.Errorf("empty directory: %v", err)
	}
}

// TestReplaceToken: a replaced operator token file is read again by an
// open Dir (the old token refused, the new one taken), and a file it
// cannot read lets no operator token in until it can.
func TestReplaceToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	d, err := Init(dir, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, TokenFile)
	read := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	old := read()
	if !d.CheckToken(old) {
		t.Fatal("the token init wrote is refused")
	}
	if p, err := ReplaceToken(dir); err != nil || p != path {
		t.Fatalf("ReplaceToken: %q, %v", p, err)
	}
	fresh := read()
	recheck := func() { d.tokMu.Lock(); d.tokChecked = time.Time{}; d.tokMu.Unlock() }
	recheck()
	if d.CheckToken(old) || !d.CheckToken(fresh) || fresh == old {
		t.Errorf("after ReplaceToken: old taken %v, new taken %v", d.CheckToken(old), d.CheckToken(fresh))
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the new token file: %v, %v", info, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	recheck()
	if d.CheckToken(fresh) {
		t.Error("a token file readable by others is taken")
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	recheck()
	if !d.CheckToken(fresh) {
		t.Error("the token file made private again is not taken")
	}
	if d.CheckToken("") {
		t.Error("an empty token is taken")
	}
	// A FIFO in the file's place: no token, and no check waiting on it
	// for a writer (every bearer request hung).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	recheck()
	if d.CheckToken(fresh) {
		t.Error("a FIFO's token is taken")
	}
	if _, err := ReplaceToken(t.TempDir()); err == nil {
		t.Error("ReplaceToken in a directory without a token file made one")
	}
}

// TestTokenReplacedWhileOpening: a token file replaced while a server
// opens its key directory (token revoke init as it starts) is read again:
// the old token refused, the new one taken. The file was noted after its
// token was read, so the replaced file passed for the one read, and the
// old token stayed good until the file changed again.
func TestTokenReplacedWhileOpening(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, TokenFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old := strings.TrimSpace(string(b))
	afterTokenRead = func() {
		if _, err := ReplaceToken(dir); err != nil {
			t.Error(err)
		}
	}
	d, err := Open(dir)
	afterTokenRead = nil
	if err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fresh := strings.TrimSpace(string(b))
	d.tokMu.Lock()
	d.tokChecked = time.Time{}
	d.tokMu.Unlock()
	if d.CheckToken(old) || !d.CheckToken(fresh) {
		t.Errorf("token file replaced while opening: old taken %v, new taken %v", d.CheckToken(old), d.CheckToken(fresh))
	}
}

// TestReplaceTokenKeepsItsOwner: run as root (a plain sudo), the new
// token file is still the service user's, who must read it: it was
// root's, and no operator token was taken at all.
func TestReplaceTokenKeepsItsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("gives a file to another user: needs root")
	}
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, TokenFile)
	const uid, gid = 4242, 4343
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := ReplaceToken(dir); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	if st.Uid != uid || st.Gid != gid || info.Mode().Perm() != 0o600 {
		t.Errorf("the new token file: owner %d:%d mode %v, want %d:%d 0600", st.Uid, st.Gid, info.Mode().Perm(), uid, gid)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".operator.token.*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}
