package ledger

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// pgDoor is a loopback TCP proxy to the test's PostgreSQL that can be shut
// like a database stopped (new connections refused, open ones closed) and
// opened again on the same address.
type pgDoor struct {
	target, addr string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
}

func (d *pgDoor) open(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.ln, d.addr = ln, ln.Addr().String()
	d.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", d.target)
			if err != nil {
				c.Close()
				continue
			}
			d.mu.Lock()
			d.conns[c], d.conns[up] = true, true
			d.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

func (d *pgDoor) shut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ln.Close()
	for c := range d.conns {
		c.Close()
		delete(d.conns, c)
	}
}

// TestPostgresDownIsUnavailable: PostgreSQL is stopped under a running
// server (an operator's drill). A request that finds no database to
// connect to is Unavailable — the API's 503 with Retry-After, as the
// README promises for "the database down" — not an internal error: only a
// connection the database itself closed (57P01) was, and every request
// after it answered 500 and was logged at error level one by one. Once the
// database answers again the same top-up goes through once.
func TestPostgresDownIsUnavailable(t *testing.T) {
	dsn := ledgertest.PostgresSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	door := &pgDoor{target: u.Host, addr: "127.0.0.1:0", conns: map[net.Conn]bool{}}
	door.open(t)
	t.Cleanup(door.shut) // after the Store's cleanup (verify), registered later
	u.Host = door.addr
	s := (&testDB{backend: "postgres", dsn: u.String()}).open(t, nil)
	ctx := context.Background()
	a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TopUp(ctx, a.ID, 100, "before"); err != nil {
		t.Fatal(err)
	}
	door.shut()
	_, err = s.TopUp(ctx, a.ID, 100, "while-down")
	if err == nil || !Unavailable(err) {
		t.Errorf("a top-up with the database stopped: %v; want it Unavailable (503)", err)
	}
	if _, err := s.Account(ctx, a.ID); err == nil || !Unavailable(err) {
		t.Errorf("reading an account with the database stopped: %v; want it Unavailable (503)", err)
	}
	// database/sql pings a pooled connection idle for over a second
	// before it uses it again (pgx's ResetSession) and drops it if dead;
	// this test's calls come within one: drop the idle ones as that would.
	s.db.SetMaxIdleConns(0)
	s.db.SetMaxIdleConns(4)
	door.open(t)
	if _, err := s.TopUp(ctx, a.ID, 100, "while-down"); err != nil {
		t.Fatalf("the top-up again once the database is back: %v", err)
	}
	got, err := s.Account(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Balance != 200 {
		t.Errorf("balance %d after a top-up refused while the database was down and made again; want 200", got.Balance)
	}
}
