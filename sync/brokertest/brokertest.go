package brokertest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Options configures a Broker. The zero value (or nil) is a plain TCP broker
// that lets every client connect, publish and subscribe.
type Options struct {
	// TLS, if set, makes the broker serve TLS with this configuration (set
	// ClientAuth to tls.RequireAndVerifyClientCert for mutual TLS; see
	// PKI.ServerTLS).
	TLS *tls.Config

	// Users, if set, requires a username and password from every client:
	// username → password.
	Users map[string]string

	// MaxPacketSize, if not zero, is the largest MQTT packet the broker
	// takes from a client (a larger PUBLISH disconnects the client), as a
	// production broker's limit does.
	MaxPacketSize uint32

	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
}

// Broker is an in-process mochi-mqtt broker on a loopback port.
type Broker struct {
	tb   testing.TB
	opts Options
	addr string // host:port, fixed for the Broker's life
	auth *authHook

	mu       sync.Mutex
	srv      *mqtt.Server     // nil while stopped
	retained []packets.Packet // kept by Stop for the next start
}

// restartWait bounds how long Restart retries binding the same port.
const restartWait = 10 * time.Second

// Start starts a broker on a free port of 127.0.0.1 and stops it when the
// test ends. opts may be nil.
func Start(tb testing.TB, opts *Options) *Broker {
	tb.Helper()
	b := &Broker{tb: tb, auth: &authHook{refused: map[string]bool{}}}
	if opts != nil {
		b.opts = *opts
	}
	if b.opts.Logger == nil {
		b.opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b.auth.users = b.opts.Users
	srv, addr, err := b.serve("127.0.0.1:0")
	if err != nil {
		tb.Fatalf("brokertest: start: %v", err)
	}
	b.srv, b.addr = srv, addr
	tb.Cleanup(b.Stop)
	return b
}

// Addr returns the broker's host:port.
func (b *Broker) Addr() string { return b.addr }

// URL returns the broker's URL for an MQTT client: tcp://host:port, or
// ssl://host:port when it serves TLS.
func (b *Broker) URL() string {
	if b.opts.TLS != nil {
		return "ssl://" + b.addr
	}
	return "tcp://" + b.addr
}

// Server returns the running mochi server (nil while stopped), for tests
// that need more than the helpers here.
func (b *Broker) Server() *mqtt.Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.srv
}

// Running reports whether the broker is up.
func (b *Broker) Running() bool { return b.Server() != nil }

// Stop shuts the broker down: the listener closes and every client is
// disconnected (with a DISCONNECT where the protocol has one, so no last
// will is published). Its retained messages are kept for Restart. Stopping a
// stopped broker does nothing.
func (b *Broker) Stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	if srv != nil {
		b.retained = retainedOf(srv)
	}
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Restart stops the broker if it is running and starts a new one on the
// same address with the retained messages of the old one, like a broker
// with persistence coming back.
func (b *Broker) Restart() {
	b.tb.Helper()
	b.Stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	deadline := time.Now().Add(restartWait)
	for {
		srv, _, err := b.serve(b.addr, b.retained...)
		if err == nil {
			b.srv = srv
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			b.tb.Fatalf("brokertest: restart on %s: %v", b.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serve makes and starts a mochi server listening on addr.
func (b *Broker) serve(addr string, retained ...packets.Packet) (*mqtt.Server, string, error) {
	caps := mqtt.NewDefaultServerCapabilities()
	// The defaults drop QoS 1 messages silently under a backlog (DESIGN.md).
	caps.MaximumInflight = math.MaxUint16
	caps.MaximumClientWritesPending = 1 << 20
	caps.ReceiveMaximum = math.MaxUint16
	caps.MaximumPacketSize = b.opts.MaxPacketSize
	srv := mqtt.New(&mqtt.Options{
		Capabilities:             caps,
		Logger:                   b.opts.Logger,
		InlineClient:             true,
		ClientNetWriteBufferSize: 64 << 10,
		ClientNetReadBufferSize:  64 << 10,
		SysTopicResendInterval:   3600,
	})
	if err := srv.AddHook(b.auth, nil); err != nil {
		return nil, "", err
	}
	l := safeClose{listeners.NewTCP(listeners.Config{Type: listeners.TypeTCP, ID: "t1", Address: addr, TLSConfig: b.opts.TLS}), srv}
	if err := srv.AddListener(l); err != nil {
		return nil, "", err
	}
	for _, pk := range retained {
		srv.Topics.RetainMessage(pk)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, "", err
	}
	return srv, l.Address(), nil
}

// retainedOf returns the retained messages of srv, without $SYS topics.
func retainedOf(srv *mqtt.Server) []packets.Packet {
	var out []packets.Packet
	for topic, pk := range srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$") {
			out = append(out, pk.Copy(false))
		}
	}
	return out
}

// KillClient drops the connection of the client with this id without an
// MQTT DISCONNECT, as a lost network would: the broker publishes the
// client's last will. It reports whether such a client was connected.
func (b *Broker) KillClient(id string) bool {
	srv := b.Server()
	if srv == nil {
		return false
	}
	cl, ok := srv.Clients.Get(id)
	if !ok || cl.Closed() || cl.Net.Conn == nil {
		return false
	}
	// Close the network connection only, as a network failure would: the
	// broker's read fails and it publishes the will. (Client.Stop would
	// also mark the client closed, and a read loop that sees that first
	// ends as if the client had said goodbye, without the will.)
	_ = cl.Net.Conn.Close()
	return true
}

// Connected reports whether a client with this id is connected.
func (b *Broker) Connected(id string) bool {
	srv := b.Server()
	if srv == nil {
		return false
	}
	cl, ok := srv.Clients.Get(id)
	return ok && !cl.Closed()
}

// Refuse makes the broker refuse (or, with false, accept again) connections
// from this client id.
func (b *Broker) Refuse(clientID string, refuse bool) {
	b.auth.mu.Lock()
	defer b.auth.mu.Unlock()
	b.auth.refused[clientID] = refuse
}

// Retained returns the retained message on topic, if any.
func (b *Broker) Retained(topic string) ([]byte, bool) {
	srv := b.Server()
	if srv == nil {
		return nil, false
	}
	pk, ok := srv.Topics.Retained.Get(topic)
	if !ok || len(pk.Payload) == 0 {
		return nil, false
	}
	return bytes.Clone(pk.Payload), true
}

// Publish publishes a message through the broker's inline client, as a
// server process would (no network, no ACL).
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	srv := b.Server()
	if srv == nil {
		return errors.New("brokertest: broker stopped")
	}
	return srv.Publish(topic, payload, retain, qos)
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, for starting an external broker (such as mosquitto) in a test.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// authHook lets every client in, except refused client ids and, when users
// are configured, clients without the right username and password; every
// connected client may publish and subscribe to every topic.
type authHook struct {
	mqtt.HookBase
	users map[string]string // nil: no passwords

	mu      sync.Mutex
	refused map[string]bool
}

func (h *authHook) ID() string { return "brokertest-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h.mu.Lock()
	refused := h.refused[cl.ID]
	h.mu.Unlock()
	if refused {
		return false
	}
	if h.users == nil {
		return true
	}
	want, ok := h.users[string(pk.Connect.Username)]
	return ok && pk.Connect.PasswordFlag && string(pk.Connect.Password) == want
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool { return true }

// safeClose works around a deadlock in mochi-mqtt v2.7.9's Server.Close: it
// disconnects a listener's clients through Clients.GetByListener, which
// takes the clients' read lock twice (it calls Len inside RLock), so a client
// connecting or leaving at that moment (a writer waiting between the two)
// deadlocks the broker's shutdown. This listener disconnects its clients
// from a copy of the client map instead (GetAll takes the lock once).
type safeClose struct {
	*listeners.TCP
	srv *mqtt.Server
}

func (l safeClose) Close(_ listeners.CloseFn) {
	l.TCP.Close(func(id string) {
		for _, cl := range l.srv.Clients.GetAll() {
			if cl.Net.Listener == id && !cl.Closed() {
				_ = l.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	})
}
