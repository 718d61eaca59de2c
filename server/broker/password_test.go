package broker

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestPasswordHash(t *testing.T) {
	pw := NewPassword()
	if len(pw) != 64 {
		t.Fatalf("password %d characters", len(pw))
	}
	h := HashPassword(pw)
	if !strings.HasPrefix(h, "$7$101$") || HashPassword(pw) == h {
		t.Errorf("hash %q: want $7$101$ and a fresh salt each time", h)
	}
	for _, tc := range []struct {
		hash, pw string
		ok       bool
	}{{h, pw, true}, {h, pw + "x", false}, {h, "", false}} {
		if ok, err := CheckPassword(tc.hash, tc.pw); ok != tc.ok || err != nil {
			t.Errorf("CheckPassword(%q) = %t, %v, want %t", tc.pw, ok, err, tc.ok)
		}
	}
	for _, bad := range []string{"", "plain", "$6$1$AA==$AA==", "$7$x$AA==$AA==", "$7$101$!!$AA==", "$7$101$AAAA$AA=="} {
		if ok, err := CheckPassword(bad, pw); ok || err == nil {
			t.Errorf("CheckPassword on %q = %t, %v, want an error", bad, ok, err)
		}
	}
}

// The hashes are Mosquitto's own: a hash made by mosquitto_passwd checks
// here (and the broker tests log in to a real Mosquitto with ours).
func TestPasswordHashIsMosquittos(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		if os.Getenv("FAREGO_CI") != "" {
			t.Fatal("mosquitto_passwd not installed (FAREGO_CI is set)")
		}
		t.Skip("mosquitto_passwd not installed")
	}
	file := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command(bin, "-c", "-b", file, "bus-1", "s3cret-pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, hash, _ := strings.Cut(strings.TrimSpace(string(b)), ":")
	if ok, err := CheckPassword(hash, "s3cret-pw"); !ok || err != nil {
		t.Errorf("mosquitto_passwd's hash %q does not check: %t, %v", hash, ok, err)
	}
}
