package ledger

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestOpenNamesUnwritableFile: a ledger file root made (init run as root
// on a service's data directory, then the service's user runs verify,
// token or the server) was refused with SQLite's "unable to open database
// file (14)", naming neither the file nor why. The refusal names the file,
// its owner and this user. Run as another user (uid 65534): the test
// binary again, as that user.
func TestOpenNamesUnwritableFile(t *testing.T) {
	if dsn := os.Getenv("FAREGO_TEST_LEDGER_OPEN_AS_USER"); dsn != "" {
		s, err := Open(context.Background(), dsn, &Options{MustExist: true})
		if err == nil {
			s.Close()
			fmt.Println("opened")
			return
		}
		fmt.Println(err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs itself as another user")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "ledger.db")
	s, err := Open(context.Background(), "sqlite:"+path, nil) // root's, 0600
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ledger.test")
	copyFile(t, self, bin)
	run := func() string {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^TestOpenNamesUnwritableFile$")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "FAREGO_TEST_LEDGER_OPEN_AS_USER=sqlite:"+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("as uid 65534: %v\n%s", err, out)
		}
		return string(out)
	}
	out := run()
	for _, want := range []string{"uid 65534", "cannot read and write " + path, "owned by uid 0", "chown"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
	// The file is the user's, the directory not: SQLite cannot make the
	// -wal and -shm beside it.
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if out := run(); !strings.Contains(out, "cannot make the ledger's -wal and -shm files in "+dir) {
		t.Errorf("a directory it cannot write:\n%s", out)
	}
	// Both the user's: it opens.
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if out := run(); !strings.Contains(out, "opened") {
		t.Errorf("the user's own ledger:\n%s", out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
