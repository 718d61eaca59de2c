package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/internal/mqttclient"
)

// minReconnectInterval is the first wait after a failed attempt or a lost
// connection (at most MaxReconnectInterval); it doubles up to
// MaxReconnectInterval while the attempts fail.
const minReconnectInterval = time.Second

// conn keeps the connection of one Ingest or Publisher Run on the shared
// client core (mqttclient): it subscribes to filters on every connection,
// calls onReady once a connection is ready, and publishes on the current
// connection for the workers. The backoff starts again only after a
// connection that stayed up MaxReconnectInterval, so a broker that drops
// the server at once is not hammered.
type conn struct {
	client  *mqttclient.Client
	onReady func() // nil: none

	mu  sync.Mutex
	cur mqtt.Client // the ready client; nil between connections
}

// client returns the core's configuration of m for a client called name.
func (m MQTTConfig) client(name string, log *slog.Logger) mqttclient.Config {
	return mqttclient.Config{
		Name: name, Brokers: m.Brokers, ClientID: m.ClientID, Username: m.Username, Password: m.Password,
		TLS: m.TLS, KeepAlive: m.KeepAlive, ConnectTimeout: m.ConnectTimeout,
		MinBackoff: min(minReconnectInterval, m.MaxReconnectInterval), MaxBackoff: m.MaxReconnectInterval,
		BackoffResetAfter: m.MaxReconnectInterval,
		Refused:           m.Refused,
		Logger:            log,
	}
}

// newConn returns a conn subscribing to filters (QoS 1) with handler;
// start runs it.
func newConn(name string, cfg MQTTConfig, log *slog.Logger, filters []string, handler mqtt.MessageHandler, onReady func()) *conn {
	mc := cfg.client(name, log)
	if len(filters) > 0 {
		mc.Filters = make(map[string]byte, len(filters))
		for _, f := range filters {
			mc.Filters[f] = 1
		}
		mc.Handler = handler
		// A device's messages are queued in the order it sent them (its
		// statuses are recorded newest last: recordStatuses); the
		// handler never blocks (Ingest.onMessage).
		mc.Ordered = true
	}
	return &conn{client: mqttclient.New(mc), onReady: onReady}
}

// start runs the connection loop in a goroutine of its own until stop is
// called; stop disconnects and returns once the loop has ended. ctx only
// carries values: its end does not stop the loop.
func (c *conn) start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.client.Run(ctx, c.session) // sessions never return Fatal
	}()
	return func() {
		cancel()
		<-done
	}
}

// session makes a ready connection current until it is lost or ctx is done.
func (c *conn) session(ctx context.Context, s *mqttclient.Session) error {
	c.mu.Lock()
	c.cur = s.Client()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.cur = nil
		c.mu.Unlock()
	}()
	if c.onReady != nil {
		c.onReady()
	}
	return s.Wait(ctx)
}

// current returns the connected client, or nil.
func (c *conn) current() mqtt.Client {
	c.mu.Lock()
	client := c.cur
	c.mu.Unlock()
	if client == nil || !client.IsConnectionOpen() {
		return nil
	}
	return client
}

// connected reports whether the client is connected and subscribed.
func (c *conn) connected() bool { return c.client.Connected() && c.current() != nil }

// publish publishes at QoS 1 on the connected client and waits for the
// PUBACK, at most timeout and until ctx is done. ErrNotConnected between
// connections.
func (c *conn) publish(ctx context.Context, topic string, retained bool, payload []byte, timeout time.Duration) error {
	client := c.current()
	if client == nil {
		return ErrNotConnected
	}
	tok := client.Publish(topic, 1, retained, payload)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("%w: %s: %w", ErrPublish, topic, ctx.Err())
	case <-t.C:
		return fmt.Errorf("%w: %s: no PUBACK within %v", ErrPublish, topic, timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrPublish, topic, err)
	}
	return nil
}
