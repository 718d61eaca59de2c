package powercut_test

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/server/ledger"
)

// killedWriterEnv names the SQLite file TestSQLiteKilledWriterChild writes.
const killedWriterEnv = "FAREGO_POWERCUT_KILLED_WRITER"

// TestLedgerOpenMakesAKilledServersCommitDurable: a settlement server
// killed (SIGKILL, the OOM killer, a crash) while it commits, after SQLite
// wrote the commit's frames to the -wal file and before their fsync
// returned: the frames are in the page cache, not on the disk. The next
// server opens the ledger, SQLite's recovery takes the commit as made, and
// the server answers for it — a batch the devices send again is found
// there whole, and acked; an all-duplicate batch writes nothing, so no
// fsync follows — and the devices delete the taps. A power cut before the
// next commit that syncs the -wal took them back: acked taps gone from the
// ledger. The ledger's Open now makes what it found durable.
func TestLedgerOpenMakesAKilledServersCommitDurable(t *testing.T) {
	d := powercut.Mount(t, nil)
	ctx := context.Background()
	dir := d.Path("srv")
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ledger.db")
	s, err := ledger.Open(ctx, "sqlite:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw := func(q string) {
		t.Helper()
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	raw("CREATE TABLE killed_writer (id INTEGER PRIMARY KEY)")

	// The killed server: its commit written to the -wal, never synced.
	cmd := exec.Command(os.Args[0], "-test.run=^TestSQLiteKilledWriterChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), killedWriterEnv+"="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the writer: %v\n%s", err, out)
	}

	// The next server opens the ledger and sees the commit.
	s, err = ledger.Open(ctx, "sqlite:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, path); n != 1 {
		t.Fatalf("the next server sees %d rows of the killed one's commit, want 1", n)
	}
	// The power goes.
	if err := d.Freeze(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rep, err := d.Cut(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cut: %+v", rep)
	if n := count(t, path); n != 1 {
		t.Errorf("after the power cut %d rows of the commit the server opened on and answered for, want 1", n)
	}
}

// count returns the rows of killed_writer.
func count(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM killed_writer").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSQLiteKilledWriterChild is the killed server of
// TestLedgerOpenMakesAKilledServersCommitDurable: it commits a row with
// its frames written to the -wal and not synced (what a SIGKILL before the
// commit's fsync leaves), and exits without closing anything.
func TestSQLiteKilledWriterChild(t *testing.T) {
	path := os.Getenv(killedWriterEnv)
	if path == "" {
		t.Skip("the child process of TestLedgerOpenMakesAKilledServersCommitDurable")
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO killed_writer (id) VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	os.Exit(0) // killed: nothing closed, no checkpoint
}
