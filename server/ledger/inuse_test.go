package ledger

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// TestRestoredRefusedWhileServed: 'farego-settlement restored' must run
// with no server on the ledger (a server started before it keeps serving
// without the restore window, and hands out ids the restore moves past);
// it used to run beside one without a word. Servers hold the ledger
// shared, so several serve one ledger; Exclusive is refused while any
// does, and a server does not start while Exclusive holds it. Closing
// releases either.
func TestRestoredRefusedWhileServed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		open := func() *Store { return openClosable(t, db) }
		a, b, c := open(), open(), open()
		if err := a.Serve(ctx); err != nil {
			t.Fatalf("first server: %v", err)
		}
		if err := b.Serve(ctx); err != nil {
			t.Fatalf("a second server beside it: %v", err)
		}
		if err := c.Exclusive(ctx); !errors.Is(err, ErrInUse) {
			t.Fatalf("Exclusive while two serve: %v; want ErrInUse", err)
		}
		a.Close()
		if err := c.Exclusive(ctx); !errors.Is(err, ErrInUse) {
			t.Fatalf("Exclusive while one serves: %v; want ErrInUse", err)
		}
		b.Close()
		if err := c.Exclusive(ctx); err != nil {
			t.Fatalf("Exclusive once no server runs: %v", err)
		}
		d := open()
		if err := d.Serve(ctx); !errors.Is(err, ErrInUse) {
			t.Fatalf("a server while Exclusive holds the ledger: %v; want ErrInUse", err)
		}
		c.Close()
		if err := d.Serve(ctx); err != nil {
			t.Fatalf("a server once Exclusive released: %v", err)
		}
	})
}

// A server's PostgreSQL session ends under it (the database restarted, a
// connection killed): its hold takes the lock again on a new connection,
// so restored is refused again once it has.
func TestServingLockTakenAgain(t *testing.T) {
	if os.Getenv(postgresEnv) == "" {
		t.Skip(postgresEnv + " not set")
	}
	// Restored after the stores are closed (cleanups run last first).
	t.Cleanup(func(d time.Duration) func() { return func() { holdRecheck = d } }(holdRecheck))
	holdRecheck = 50 * time.Millisecond
	ctx := context.Background()
	db := newPostgresDB(t)
	open := func() *Store { return openClosable(t, db) }
	srv, other := open(), open()
	if err := srv.Serve(ctx); err != nil {
		t.Fatal(err)
	}
	killed := 0
	if err := other.db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND classid = $1 AND objid = hashtext(current_schema())::oid AND pid <> pg_backend_pid()`,
		servingLockKey).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d sessions holding the serving lock, %v; want 1", killed, err)
	}
	// Until the hold notices, the ledger may look free; within a few
	// rechecks it is held again (bounded).
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := other.Exclusive(ctx)
		if errors.Is(err, ErrInUse) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		other.dropHold()
		if time.Now().After(deadline) {
			t.Fatal("the serving lock was not taken again after its session ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openClosable opens a Store the test may close before its end (db.open's
// cleanup checks the invariants on it).
func openClosable(t *testing.T, db *testDB) *Store {
	t.Helper()
	s, err := Open(context.Background(), db.dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
