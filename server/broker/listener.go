package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// listener is a TCP (optionally TLS) listener for mochi that, unlike
// mochi's own, gives every connection a deadline for its TLS handshake and
// CONNECT packet (mochi sets the keep-alive deadline after CONNECT; a
// client that never sends one would otherwise hold a goroutine for good),
// keeps accepting after a temporary error such as running out of file
// descriptors, and on Close also closes connections still in their
// handshake (mochi waits for every connection to end).
type listener struct {
	id      string
	addr    string
	tls     *tls.Config
	timeout time.Duration
	write   time.Duration // Config.WriteTimeout

	mu    sync.Mutex
	ln    net.Listener
	log   *slog.Logger
	conns map[net.Conn]struct{} // open connections
	end   atomic.Bool
	// serving counts the goroutines running mochi's establish: Close waits
	// for them, so none is still starting (mochi adds to its ClientsWg
	// there) when mochi waits for its clients.
	serving sync.WaitGroup
}

var _ listeners.Listener = (*listener)(nil)

func (l *listener) ID() string       { return l.id }
func (l *listener) Protocol() string { return "tcp" }

// Address returns the bound address once Init has run.
func (l *listener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init binds the address.
func (l *listener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.mu.Lock()
	l.ln, l.log, l.conns = ln, log, map[net.Conn]struct{}{}
	l.mu.Unlock()
	return nil
}

// Serve accepts connections until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	var wait time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if l.end.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: wait a little and go on.
			wait = min(max(2*wait, 5*time.Millisecond), time.Second)
			l.log.Warn("broker: accept failed; retrying", "listener", l.id, "err", err)
			time.Sleep(wait)
			continue
		}
		wait = 0
		_ = conn.SetDeadline(time.Now().Add(l.timeout))
		l.mu.Lock()
		if l.end.Load() {
			l.mu.Unlock()
			conn.Close()
			return
		}
		l.conns[conn] = struct{}{}
		l.serving.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.serving.Done()
			defer func() {
				l.mu.Lock()
				delete(l.conns, conn)
				l.mu.Unlock()
				conn.Close()
			}()
			if err := establish(l.id, &clientConn{Conn: conn, timeout: l.write}); err != nil {
				l.log.Debug("broker: client connection ended", "listener", l.id, "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// Close stops accepting and disconnects the listener's clients by closing
// their connections. It does not call mochi's closeClients: in mochi-mqtt
// v2.7.9 that goes through Clients.GetByListener, which takes the clients'
// read lock twice (it calls Len inside RLock), so a device connecting or
// leaving during shutdown (a writer waiting between the two) deadlocks the
// server's shutdown. Closing the connections ends each client's session
// the same way, wills included.
func (l *listener) Close(_ listeners.CloseFn) {
	l.mu.Lock()
	l.end.Store(true)
	if l.ln != nil {
		_ = l.ln.Close()
	}
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.serving.Wait()
}

// writeChunk is the most written to a client under one deadline.
const writeChunk = 32 << 10

// clientConn is a client's connection as mochi sees it. mochi writes to
// a client under the client's lock, which a delivery to it takes too, and
// sets no write deadline of its own (it refreshes one deadline, reads and
// writes, on every packet it reads: a client that keeps sending while it
// reads nothing would push it back for ever). A device that stopped
// reading would hold every publisher of a message it subscribed to — the
// settlement server's one client among them — for as long as it liked.
// So each chunk of a write has WriteTimeout to be taken; one that is not
// closes the connection (the client is disconnected, and its retained
// downlinks come again when it reconnects), and SetDeadline sets the read
// deadline only. A publisher can thus wait behind a device that reads
// nothing for at most WriteTimeout. Deliveries to a device that is slow
// but reading are not dropped (a test of that, dropping them once a write
// had waited a second, lost live deny-list shards on honest devices
// downloading the list over a slow link: the list would have stayed stale
// until the device's next connection).
type clientConn struct {
	net.Conn
	timeout time.Duration
}

func (c *clientConn) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
		m, err := c.Conn.Write(p[n:min(len(p), n+writeChunk)])
		n += m
		if err != nil {
			// A TLS connection is unusable after a timed-out write, and a
			// client that took nothing for WriteTimeout is gone.
			c.Conn.Close()
			return n, err
		}
	}
	return n, nil
}

// SetDeadline sets the read deadline (mochi's keep-alive); writes have
// their own.
func (c *clientConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }
