package ledger

import (
	"context"
	"errors"
	"testing"
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
		open := func() *Store {
			s, err := Open(ctx, db.dsn, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
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
