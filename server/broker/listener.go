package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/internal/clientaddr"
	"github.com/farego/farego/sync/ratelog"
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
	queues  *sendQueues   // shared by the Broker's listeners
	// maxConns bounds the connections open on all the Broker's listeners
	// together (open counts them); negative: no bound.
	maxConns int
	open     *atomic.Int64
	// pending counts the connections not yet logged in by client address
	// (shared by the Broker's listeners).
	pending *pendingAddrs
	limit   *ratelog.Limiter // the refusals' log lines

	mu    sync.Mutex
	ln    net.Listener
	log   *slog.Logger
	conns map[*clientConn]struct{} // open connections
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
	l.ln, l.log, l.conns = ln, log, map[*clientConn]struct{}{}
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
		if l.maxConns >= 0 && l.open.Add(1) > int64(l.maxConns) {
			l.open.Add(-1)
			conn.Close()
			continue
		}
		remote := conn.RemoteAddr().String()
		key, site := clientaddr.Key(remote), clientaddr.Site(remote)
		if !l.pending.take(key, site) {
			conn.Close()
			l.release()
			if ok, n := l.limit.Allow(key); ok {
				l.log.Warn("broker: connection refused: too many from one address (or its IPv6 site) not logged in", "listener", l.id,
					"address", key, "limit", l.pending.max, "suppressed", n)
			}
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(l.timeout))
		l.mu.Lock()
		if l.end.Load() {
			l.mu.Unlock()
			conn.Close()
			l.pending.give(key, site)
			l.release()
			return
		}
		cc := newClientConn(conn, l.write, l.queues)
		cc.giveBack = func() { l.pending.give(key, site) }
		l.conns[cc] = struct{}{}
		l.serving.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.serving.Done()
			defer func() {
				// What is queued is written (a refused CONNACK, a
				// DISCONNECT) within WriteTimeout, unless Close aborts it.
				cc.Close()
				<-cc.done
				cc.loggedIn()
				l.mu.Lock()
				delete(l.conns, cc)
				l.mu.Unlock()
				l.release()
			}()
			if err := cc.readFirst(); err != nil {
				if cert, why := refusedClientCert(err); cert != nil {
					l.certRefused(remote, cert, why)
					return
				}
				l.log.Debug("broker: client connection ended before its CONNECT", "listener", l.id, "remote", conn.RemoteAddr().String(), "err", err)
				return
			}
			if err := establish(l.id, cc); err != nil {
				l.log.Debug("broker: client connection ended", "listener", l.id, "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// certRefused logs a client certificate the TLS handshake refused, at most
// once a minute per certificate name (a device retries every few seconds
// for as long as it runs): a device whose certificate expired, or made by
// another fleet's CA, is otherwise only "offline" on the server, and the
// device alone says why.
//
// Only a certificate this server's CA issued is logged by its name: anyone
// reaching the port can make one up, with any name (each new one got a
// line, of up to the name's 16 KiB and more), so another's is logged once
// a minute an address, its name cut.
func (l *listener) certRefused(remote string, cert *x509.Certificate, why error) {
	name := record.Printable(cert.Subject.CommonName, maxLoggedCertName)
	ours := l.issuedHere(cert)
	key := "client-cert:" + name
	if !ours {
		key = "client-cert-foreign:" + clientaddr.Key(remote)
	}
	ok, n := l.limit.Allow(key)
	if !ok {
		return
	}
	msg := "a client certificate was refused"
	fix := "provision the device again (farego-provision device --force, same flags) and install its new bundle"
	now := time.Now()
	if l.tls.Time != nil {
		now = l.tls.Time()
	}
	if !ours {
		msg = "a client certificate not issued by this server's CA was refused"
		fix = "a device of this fleet: provision it again against this server (farego-provision device --force) and install its new bundle; else someone else's client"
	} else if now.After(cert.NotAfter) {
		msg = "a client certificate has expired: the device cannot connect"
	} else if now.Before(cert.NotBefore) {
		msg = "a client certificate is not valid yet: the device cannot connect"
		fix = "check this server's clock; else " + fix
	}
	l.log.Warn(msg, "identity", name, "remote", remote,
		"not_before", cert.NotBefore.UTC().Format(time.RFC3339), "not_after", cert.NotAfter.UTC().Format(time.RFC3339),
		"err", why, "fix", fix, "suppressed", n)
}

// maxLoggedCertName bounds a refused certificate's name in the log.
const maxLoggedCertName = 128

// issuedHere reports whether cert was issued by one of the CAs the
// listener takes client certificates of (its dates aside: it was refused
// maybe for them).
func (l *listener) issuedHere(cert *x509.Certificate) bool {
	if l.tls == nil || l.tls.ClientCAs == nil {
		return false
	}
	_, err := cert.Verify(x509.VerifyOptions{Roots: l.tls.ClientCAs, CurrentTime: cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}

// release gives back a connection's place under maxConns.
func (l *listener) release() {
	if l.maxConns >= 0 {
		l.open.Add(-1)
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
		c.abort(nil)
	}
	l.mu.Unlock()
	l.serving.Wait()
}
