package ledger

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/farego/farego/agent/paycode"
)

// readerEnv passes the ledger file to the child process of
// TestOtherProcessReadingKeepsTheWAL.
const readerEnv = "FAREGO_LEDGER_READER_PATH"

// A backup or a query of the SQLite ledger by another process while the
// server runs (the README's sqlite3 ledger.db ".backup …", a sqlite3 shell,
// Litestream) must not take the server's -wal away. The server's own
// fsync of the files at open closed a descriptor of ledger.db, which drops
// every POSIX lock this process holds on it, SQLite's shared lock
// included: the sqlite3 shell, closing, took itself for the last
// connection, checkpointed and deleted -wal and -shm, and the server went
// on committing into the deleted -wal: no other process (a backup, verify,
// account topup) saw those commits, and a kill or a power cut lost them,
// acked taps included. The other process checks that the server holds
// SQLite's shared lock on the file; with the sqlite3 shell installed, it
// reads the ledger too, as the README's backup does.
func TestOtherProcessReadingKeepsTheWAL(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := Open(ctx, "sqlite:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLedgerLockChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), readerEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("other process: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("shared lock held by %d", os.Getpid()); !strings.Contains(string(out), want) {
		t.Fatalf("the server holds no SQLite shared lock on the ledger file (another SQLite client closing would delete its -wal); the other process said:\n%s", out)
	}
	sqlite3, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Log("no sqlite3 shell: the README's backup not run")
		return
	}
	if out, err := exec.Command(sqlite3, path, "SELECT count(*) FROM accounts").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("sqlite3: %v: %s", err, out)
	}
	// The server commits again after the sqlite3 shell closed.
	if _, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Errorf("the server's -wal is gone once the sqlite3 shell read the ledger: %v", err)
	}
	if out, err := exec.Command(sqlite3, path, "SELECT count(*) FROM accounts").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "2" {
		t.Fatalf("sqlite3 counts %s accounts after the server's second commit, want 2 (%v): the server commits into a -wal no one else sees", strings.TrimSpace(string(out)), err)
	}
}

// TestLedgerLockChild is the other process of
// TestOtherProcessReadingKeepsTheWAL: it asks the kernel who holds a lock
// on the bytes of the ledger file where SQLite's connections take their
// shared lock (PENDING_BYTE+2, 510 bytes), the lock a SQLite client closing
// the file tries to take whole to know whether it is the last connection.
func TestLedgerLockChild(t *testing.T) {
	path := os.Getenv(readerEnv)
	if path == "" {
		t.Skip("the child process of TestOtherProcessReadingKeepsTheWAL")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0x40000000 + 2, Len: 510}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
		t.Fatal(err)
	}
	if lk.Type == unix.F_UNLCK {
		fmt.Println("no shared lock")
		return
	}
	fmt.Printf("shared lock held by %d\n", lk.Pid)
}
