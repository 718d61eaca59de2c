package ledgertest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Relay is a TCP relay on loopback to a database (PostgreSQL): Cut closes
// it and every connection through it, as a database stopped or a network
// cut between it and its client. It is cut when the test ends.
type Relay struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// NewRelay starts a Relay to target (host:port).
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln}
	t.Cleanup(r.Cut)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, up)
			r.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return r
}

// Addr is the relay's address, to put in the DSN instead of target's.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Cut closes the relay and every connection through it.
func (r *Relay) Cut() {
	r.ln.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}
