package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/internal/backoff"
	"github.com/farego/farego/sync/internal/mqttdial"
)

// disconnectQuiesce is how long paho may take to send the DISCONNECT, in
// milliseconds.
const disconnectQuiesce = 250

// subscribeFailure is the SUBACK return code of a refused subscription.
const subscribeFailure = 0x80

// minReconnectInterval is the first wait after a failed attempt or a lost
// connection (at most MaxReconnectInterval); it doubles up to
// MaxReconnectInterval while the attempts fail.
const minReconnectInterval = time.Second

// conn keeps the connection of one Ingest or Publisher Run: a fresh paho
// client for every connection attempt (paho's own reconnection is off: in
// v1.5.1 it races with publishing), each with a clean session, a memory
// store and unordered delivery. After each connection setup runs (the
// subscriptions); the connection is ready when it returns nil, and then
// onReady runs. A failed attempt, setup included, or a lost connection is
// retried after a jittered wait that doubles up to MaxReconnectInterval. A
// run of failures is logged once and the recovery once.
type conn struct {
	name    string // "ingest", "downlink publisher": for log messages
	cfg     MQTTConfig
	log     *slog.Logger
	setup   func(ctx context.Context, client mqtt.Client) error // nil: none
	onReady func()                                              // nil: none

	mu     sync.Mutex
	client mqtt.Client // the connected client; nil between connections
	ready  bool        // setup succeeded on client

	// Only the loop's goroutine uses these.
	backoff        backoff.Backoff
	up             bool      // the last session got ready
	everUp         bool      // a session got ready
	down           bool      // an outage is being reported
	downSince      time.Time // when it began
	failures       int       // failed attempts since it began
	notReadyLogged bool      // a failed setup was logged in this outage
}

// newConn returns a conn; start runs it.
func newConn(name string, cfg MQTTConfig, log *slog.Logger, setup func(context.Context, mqtt.Client) error, onReady func()) *conn {
	return &conn{name: name, cfg: cfg, log: log, setup: setup, onReady: onReady}
}

// start runs the connection loop in a goroutine of its own until stop is
// called; stop disconnects and returns once the loop has ended. ctx only
// carries values: its end does not stop the loop.
func (c *conn) start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.loop(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// loop connects and reconnects until ctx is done.
func (c *conn) loop(ctx context.Context) {
	c.backoff = backoff.Backoff{Min: min(minReconnectInterval, c.cfg.MaxReconnectInterval), Max: c.cfg.MaxReconnectInterval}
	for {
		err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		c.failed(err)
		if !backoff.Sleep(ctx, c.backoff.Next()) {
			return
		}
	}
}

// session connects a fresh client, runs setup and waits until the
// connection is lost or ctx is done, then disconnects. It returns nil when
// ctx ended it, the error of the loss, or that of a failed attempt (a
// *notReadyError for a failed setup).
func (c *conn) session(ctx context.Context) error {
	d := mqttdial.New(ctx, c.cfg.TLS, c.cfg.ConnectTimeout)
	lost := make(chan error, 1)
	o := mqtt.NewClientOptions()
	for _, b := range c.cfg.Brokers {
		o.AddBroker(b)
	}
	o.SetClientID(c.cfg.ClientID).
		SetUsername(c.cfg.Username).
		SetPassword(c.cfg.Password).
		SetProtocolVersion(4). // MQTT 3.1.1; $share works with Mosquitto, EMQX and mochi
		SetCleanSession(true). // subscribed again by setup on every connection
		SetOrderMatters(false).
		SetStore(mqtt.NewMemoryStore()). // the ledger is the durable store
		SetAutoReconnect(false).         // loop reconnects, with a fresh client
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetKeepAlive(c.cfg.KeepAlive).
		SetConnectTimeout(c.cfg.ConnectTimeout).
		SetCustomOpenConnectionFn(d.Open).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	client := mqtt.NewClient(o)
	tok := client.Connect()
	<-tok.Done() // the dialer ends the attempt promptly when ctx is done
	d.Release()
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}

	c.set(client, false)
	defer c.set(nil, false)
	if c.setup != nil {
		if err := c.setup(ctx, client); err != nil {
			client.Disconnect(disconnectQuiesce)
			return &notReadyError{err}
		}
	}
	c.set(client, true)
	c.isUp(d.Broker())
	if c.onReady != nil {
		c.onReady()
	}
	upAt := time.Now()
	select {
	case err := <-lost:
		if time.Since(upAt) >= c.cfg.MaxReconnectInterval {
			c.backoff.Reset() // a connection that flaps backs off
		}
		return err
	case <-ctx.Done():
	}
	c.set(nil, false)
	client.Disconnect(disconnectQuiesce)
	c.log.Info(c.name + " disconnected")
	return nil
}

// set records the connected client (nil: none) and whether it is ready.
func (c *conn) set(client mqtt.Client, ready bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.client, c.ready = client, ready
}

// current returns the connected client, or nil.
func (c *conn) current() mqtt.Client {
	c.mu.Lock()
	client := c.client
	c.mu.Unlock()
	if client == nil || !client.IsConnectionOpen() {
		return nil
	}
	return client
}

// connected reports whether the client is connected and setup succeeded.
func (c *conn) connected() bool {
	c.mu.Lock()
	client, ready := c.client, c.ready
	c.mu.Unlock()
	return ready && client != nil && client.IsConnectionOpen()
}

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
		return fmt.Errorf("%w: %s: %v", ErrPublish, topic, ctx.Err())
	case <-t.C:
		return fmt.Errorf("%w: %s: no PUBACK within %v", ErrPublish, topic, timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrPublish, topic, err)
	}
	return nil
}

// isUp records and logs a connection made ready.
func (c *conn) isUp(broker string) {
	switch {
	case c.down && c.failures > 0:
		c.log.Info(fmt.Sprintf("%s connected after %d failed attempts", c.name, c.failures), logKeyBroker, broker,
			logKeyAttempts, c.failures, logKeyDownFor, time.Since(c.downSince).Round(time.Second))
	case c.down:
		c.log.Info(c.name+" reconnected", logKeyBroker, broker, logKeyDownFor, time.Since(c.downSince).Round(time.Second))
	case !c.everUp:
		c.log.Info(c.name+" connected", logKeyBroker, broker, logKeyClientID, c.cfg.ClientID)
	}
	c.up, c.everUp, c.down, c.failures, c.notReadyLogged = true, true, false, 0, false
}

// failed records and logs a session that ended with err (ctx still live):
// a lost connection, the first failed attempt of an outage (unless it began
// with a lost connection, logged already) and the first failed setup as
// warnings or errors, other failed attempts at debug level.
func (c *conn) failed(err error) {
	if c.up {
		c.up = false
		c.down, c.downSince, c.failures = true, time.Now(), 0
		c.log.Warn(c.name+": connection lost; reconnecting", logKeyErr, err)
		return
	}
	c.failures++
	first := !c.down
	if first {
		c.down, c.downSince = true, time.Now()
	}
	_, notReady := errors.AsType[*notReadyError](err)
	switch {
	case notReady && !c.notReadyLogged:
		c.notReadyLogged = true
		c.log.Error(c.name+": connected but not ready; retrying", logKeyErr, err)
	case first:
		c.log.Warn(c.name+": cannot connect; retrying", logKeyBroker, redacted(c.cfg.Brokers),
			logKeyClientID, c.cfg.ClientID, logKeyErr, err)
	default:
		c.log.Debug(c.name+": connection attempt failed", logKeyAttempts, c.failures, logKeyErr, err)
	}
}

// notReadyError is a failed setup on a connection made.
type notReadyError struct{ err error }

func (e *notReadyError) Error() string { return e.err.Error() }
func (e *notReadyError) Unwrap() error { return e.err }

// subscribe subscribes to filters (all QoS 1) and waits for the SUBACK, at
// most timeout and until ctx is done; a filter the broker refused is an
// error.
func subscribe(ctx context.Context, client mqtt.Client, filters []string, timeout time.Duration, h mqtt.MessageHandler) error {
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = 1
	}
	tok := client.SubscribeMultiple(m, h)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("subscribe: %w", ctx.Err())
	case <-t.C:
		return errors.New("subscribe: no SUBACK in time")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	st, ok := tok.(*mqtt.SubscribeToken)
	if !ok {
		return nil
	}
	var refused []string
	for f, qos := range st.Result() {
		if qos == subscribeFailure {
			refused = append(refused, f)
		}
	}
	if len(refused) > 0 {
		slices.Sort(refused)
		return fmt.Errorf("subscribe: the broker refused %s (check its ACL and the server's credentials)", strings.Join(refused, ", "))
	}
	return nil
}

// redacted returns broker URLs without passwords.
func redacted(brokers []string) []string {
	out := make([]string, len(brokers))
	for i, b := range brokers {
		out[i] = b
		if at := strings.LastIndex(b, "@"); at >= 0 {
			if scheme, _, ok := strings.Cut(b, "://"); ok {
				out[i] = scheme + "://" + b[at+1:]
			}
		}
	}
	return out
}
