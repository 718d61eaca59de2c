package ingest

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/farego/farego/sync/wire"
)

// runLogged runs an Ingest with cfg, logging to a lineCounter, until the end
// of the test.
func runLogged(t *testing.T, w *world, cfg Config) (*Ingest, *lineCounter) {
	t.Helper()
	logs := &lineCounter{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	in, err := New(cfg, w.store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Error("Run did not return after its context was cancelled")
		}
	})
	return in, logs
}

// TestConnectionLost: a dropped connection is logged once and the recovery
// once; the ingest subscribes again on a fresh client and acks batches.
func TestConnectionLost(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	in, logs := runLogged(t, w, cfg)
	waitFor(t, "the connection", in.Connected)
	if !w.broker.KillClient(cfg.ClientID) {
		t.Fatal("the ingest's client is not connected to the broker")
	}
	waitFor(t, "the recovery", func() bool { return logs.count("ingest reconnected") == 1 })
	waitFor(t, "the connection", in.Connected)
	if n := logs.count("connection lost"); n != 1 {
		t.Errorf("%d lines about the lost connection, want 1: %q", n, logs.lines)
	}
	if n := logs.count("cannot connect"); n != 0 {
		t.Errorf("%d warnings about connecting after a loss, want 0", n)
	}
	d := w.newDevice(true)
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 3))
	d.nextAck()
	w.store.checkTaps(t, d.id, 3)
}

// refuseSubscriptions is a mochi hook that, while on, makes the broker
// refuse every subscription (it turns each filter into an invalid one, so
// that the SUBACK says 0x80).
type refuseSubscriptions struct {
	mochi.HookBase
	on    atomic.Bool
	tried atomic.Int64 // SUBSCRIBE packets refused
}

func (h *refuseSubscriptions) ID() string { return "refuse-subscriptions" }

func (h *refuseSubscriptions) Provides(b byte) bool { return b == mochi.OnSubscribe }

func (h *refuseSubscriptions) OnSubscribe(_ *mochi.Client, pk packets.Packet) packets.Packet {
	if !h.on.Load() {
		return pk
	}
	h.tried.Add(1)
	pk.Filters = append(packets.Subscriptions(nil), pk.Filters...)
	for i := range pk.Filters {
		pk.Filters[i].Filter = "refused/#/invalid"
	}
	return pk
}

// TestSubscriptionRefused: while the broker refuses the subscriptions the
// ingest is not Connected and tries again (logged once, as an error); once
// they are granted it is, and the recovery is logged once.
func TestSubscriptionRefused(t *testing.T) {
	w := newWorld(t, "")
	hook := &refuseSubscriptions{}
	hook.on.Store(true)
	if err := w.broker.Server().AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	cfg := w.config()
	cfg.MaxReconnectInterval = 50 * time.Millisecond
	in, logs := runLogged(t, w, cfg)
	waitFor(t, "refused subscriptions", func() bool { return hook.tried.Load() >= 3 })
	if in.Connected() {
		t.Error("Connected with its subscriptions refused")
	}
	hook.on.Store(false)
	waitFor(t, "the subscriptions", in.Connected)
	if n := logs.count("connected but not ready"); n != 1 {
		t.Errorf("%d errors about the refused subscriptions, want 1: %q", n, logs.lines)
	}
	if n := logs.count("ingest connected after"); n != 1 {
		t.Errorf("%d recovery lines, want 1: %q", n, logs.lines)
	}
	d := w.newDevice(true)
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 1))
	d.nextAck()
}

// silentBroker listens on a loopback port, accepts connections and never
// answers them; it returns the broker URL and the connections accepted.
func silentBroker(tb testing.TB) (string, <-chan net.Conn) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	accepted := make(chan net.Conn, 100)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		held []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			select {
			case accepted <- c:
			default:
			}
		}
	})
	tb.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
	return "tcp://" + l.Addr().String(), accepted
}

// TestStopWhileConnecting: Run returns when its context ends although the
// broker never answers the CONNECT and the connect timeout is an hour.
func TestStopWhileConnecting(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(ctx context.Context, w *world, url string) error
	}{
		{"ingest", func(ctx context.Context, w *world, url string) error {
			cfg := w.config()
			cfg.Brokers, cfg.ConnectTimeout = []string{url}, time.Hour
			in, err := New(cfg, w.store)
			if err != nil {
				return err
			}
			return in.Run(ctx)
		}},
		{"publisher", func(ctx context.Context, w *world, url string) error {
			cfg := w.publisherConfig(newDocSource().source)
			cfg.Brokers, cfg.ConnectTimeout = []string{url}, time.Hour
			p, err := NewPublisher(cfg)
			if err != nil {
				return err
			}
			return p.Run(ctx)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, accepted := silentBroker(t)
			w := newWorld(t, "nobroker")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- tc.run(ctx, w, url) }()
			select {
			case <-accepted:
			case <-time.After(waitTimeout):
				t.Fatal("no connection attempt")
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("Run did not return while connecting")
			}
		})
	}
}
