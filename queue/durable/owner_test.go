package durable

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestWriteFileKeepOwner: run as root (an operator's sudo), the new
// content keeps the old file's owner and group; a new file is the
// caller's.
func TestWriteFileKeepOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("gives a file to another user: needs root")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	if err := os.WriteFile(path, []byte("old"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileKeepOwner(path, []byte("new"), 0o640); err != nil {
		t.Fatal(err)
	}
	wantFile(t, path, "new", 4242, 4343, 0o640)
	fresh := filepath.Join(dir, "fresh")
	if err := WriteFileKeepOwner(fresh, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantFile(t, fresh, "new", 0, 0, 0o600)
	leftovers(t, dir, "fresh", "passwd")
}

// TestWriteFileKeepOwnerNotRoot: a user who is not root may replace its
// own file, and keeps another's group only where the mode gives that group
// something; a file it cannot keep the owner of (another user's, or a
// group it is not in that reads it) is refused and left as it was. Run as
// uid 65534: the test binary again, as that user.
func TestWriteFileKeepOwnerNotRoot(t *testing.T) {
	if dir := os.Getenv("FAREGO_TEST_DURABLE_KEEP_OWNER_AS_USER"); dir != "" {
		for _, c := range []struct {
			name string
			perm os.FileMode
		}{{"own-0600", 0o600}, {"own-0640", 0o640}, {"other", 0o644}, {"new", 0o600}} {
			err := WriteFileKeepOwner(filepath.Join(dir, c.name), []byte("new"), c.perm)
			os.Stdout.WriteString(c.name + ": " + errString(err) + "\n")
		}
		return
	}
	if os.Getenv("FAREGO_QEMU") != "" {
		t.Skip("starts another program; skipped under qemu-user emulation")
	}
	if os.Geteuid() != 0 {
		t.Skip("runs itself as another user: needs root")
	}
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name     string
		perm     os.FileMode
		uid, gid int
	}{{"own-0600", 0o600, 65534, 4242}, {"own-0640", 0o640, 65534, 4242}, {"other", 0o644, 4242, 4242}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, []byte("old"), f.perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, f.uid, f.gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "durable.test")
	copyExecutable(t, self, bin)
	cmd := exec.Command(bin, "-test.run=^TestWriteFileKeepOwnerNotRoot$")
	cmd.Dir = base
	cmd.Env = append(os.Environ(), "FAREGO_TEST_DURABLE_KEEP_OWNER_AS_USER="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
	for _, want := range []string{"own-0600: ok", "own-0640: durable: keep " + filepath.Join(dir, "own-0640") + "'s owner 65534:4242",
		"other: durable: keep " + filepath.Join(dir, "other") + "'s owner 4242:4242", "new: ok"} {
		if !strings.Contains(string(out), want+"\n") && !strings.Contains(string(out), want+" ") {
			t.Errorf("as uid 65534: no %q in\n%s", want, out)
		}
	}
	wantFile(t, filepath.Join(dir, "own-0600"), "new", 65534, 65534, 0o600) // the group read nothing
	wantFile(t, filepath.Join(dir, "own-0640"), "old", 65534, 4242, 0o640)
	wantFile(t, filepath.Join(dir, "other"), "old", 4242, 4242, 0o644)
	wantFile(t, filepath.Join(dir, "new"), "new", 65534, 65534, 0o600)
	leftovers(t, dir, "new", "other", "own-0600", "own-0640")
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func wantFile(t *testing.T, path, content string, uid, gid uint32, perm os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	st := info.Sys().(*syscall.Stat_t)
	if !bytes.Equal(data, []byte(content)) || st.Uid != uid || st.Gid != gid || info.Mode().Perm() != perm {
		t.Errorf("%s: %q, %d:%d %v; want %q, %d:%d %v", filepath.Base(path), data, st.Uid, st.Gid, info.Mode().Perm(),
			content, uid, gid, perm)
	}
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
