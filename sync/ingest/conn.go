package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// disconnectQuiesce is how long paho may take to send the DISCONNECT, in
// milliseconds.
const disconnectQuiesce = 250

// subscribeFailure is the SUBACK return code of a refused subscription.
const subscribeFailure = 0x80

// conn is one paho client with paho's automatic reconnection, a memory
// store, unordered delivery, a clean session and an onUp function run after
// every (re)connection (subscriptions, republishing). It logs a run of
// connection failures once and the recovery once.
type conn struct {
	name   string // "ingest", "downlink publisher": for log messages
	cfg    MQTTConfig
	log    *slog.Logger
	client mqtt.Client

	// onUp runs in its own goroutine after each connection; the
	// connection counts as ready when it returns nil.
	onUp func(c mqtt.Client) error

	ready   atomic.Bool
	gen     atomic.Uint64 // connections made; an older onConnect stops retrying
	stopped chan struct{} // closed by stop

	mu        sync.Mutex
	everUp    bool
	down      bool      // an outage is being reported
	lost      bool      // it began with a lost connection (already logged)
	downSince time.Time // when it began
	failures  int       // failed attempts since it began
}

// newConn makes the paho client; start connects it.
func newConn(name string, cfg MQTTConfig, log *slog.Logger, onUp func(mqtt.Client) error) *conn {
	c := &conn{name: name, cfg: cfg, log: log, onUp: onUp, stopped: make(chan struct{})}
	o := mqtt.NewClientOptions()
	for _, b := range cfg.Brokers {
		o.AddBroker(b)
	}
	o.SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetTLSConfig(cfg.TLS).
		SetProtocolVersion(4). // MQTT 3.1.1; $share works with Mosquitto, EMQX and mochi
		SetCleanSession(true). // subscribed again in onUp after every connection
		SetOrderMatters(false).
		SetStore(mqtt.NewMemoryStore()). // the ledger is the durable store
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(min(connectRetryInterval, cfg.MaxReconnectInterval)).
		SetMaxReconnectInterval(cfg.MaxReconnectInterval).
		SetResumeSubs(false).
		SetKeepAlive(cfg.KeepAlive).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(c.onLost).
		SetConnectionNotificationHandler(c.onNotification)
	c.client = mqtt.NewClient(o)
	return c
}

// start begins connecting; paho retries until stop.
func (c *conn) start() { c.client.Connect() }

// stop disconnects.
func (c *conn) stop() {
	close(c.stopped)
	c.ready.Store(false)
	c.client.Disconnect(disconnectQuiesce)
	c.log.Info(c.name + " disconnected")
}

// connected reports whether the client is connected and onUp succeeded.
func (c *conn) connected() bool { return c.ready.Load() && c.client.IsConnectionOpen() }

// onConnect runs onUp after a connection, again with a doubling wait
// while it fails and the connection is up (a subscription refused by the
// ACL, or one without a SUBACK in time), and logs the outcome.
func (c *conn) onConnect(client mqtt.Client) {
	gen := c.gen.Add(1)
	wait := min(time.Second, c.cfg.MaxReconnectInterval)
	for failures := 0; ; failures++ {
		err := c.onUp(client)
		if err == nil {
			if failures > 0 {
				c.log.Info(fmt.Sprintf("%s: ready after %d failed attempts", c.name, failures), logKeyAttempts, failures)
			}
			break
		}
		if failures == 0 {
			c.log.Error(c.name+": connected but not ready; retrying", logKeyErr, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-c.stopped:
			t.Stop()
			return
		case <-t.C:
		}
		if !client.IsConnectionOpen() || c.gen.Load() != gen {
			return // the next connection starts again
		}
		wait = min(2*wait, c.cfg.MaxReconnectInterval)
	}
	c.ready.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.down && c.failures > 0:
		c.log.Info(fmt.Sprintf("%s connected after %d failed attempts", c.name, c.failures),
			logKeyAttempts, c.failures, logKeyDownFor, time.Since(c.downSince).Round(time.Second))
	case c.down:
		c.log.Info(c.name+" reconnected", logKeyDownFor, time.Since(c.downSince).Round(time.Second))
	case !c.everUp:
		c.log.Info(c.name+" connected", logKeyBroker, redacted(c.cfg.Brokers), logKeyClientID, c.cfg.ClientID)
	}
	c.everUp, c.down, c.lost, c.failures = true, false, false, 0
}

// onLost records a lost connection; paho reconnects by itself.
func (c *conn) onLost(client mqtt.Client, err error) {
	if !client.IsConnectionOpen() {
		c.ready.Store(false)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.down {
		c.down, c.downSince, c.failures = true, time.Now(), 0
	}
	c.lost = true
	c.log.Warn(c.name+": connection lost; reconnecting", logKeyErr, err)
}

// onNotification logs failed connection attempts: the first of a run as a
// warning (unless the run began with a lost connection, logged already),
// the others at debug level.
func (c *conn) onNotification(_ mqtt.Client, n mqtt.ConnectionNotification) {
	f, ok := n.(mqtt.ConnectionNotificationFailed)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures++
	if !c.down {
		c.down, c.downSince = true, time.Now()
	}
	if c.failures == 1 && !c.lost {
		c.log.Warn(c.name+": cannot connect; retrying", logKeyBroker, redacted(c.cfg.Brokers),
			logKeyClientID, c.cfg.ClientID, logKeyErr, f.Reason)
		return
	}
	c.log.Debug(c.name+": connection attempt failed", logKeyAttempts, c.failures, logKeyErr, f.Reason)
}

// subscribe subscribes to filters (all QoS 1) and waits for the SUBACK;
// a filter the broker refused is an error.
func subscribe(client mqtt.Client, filters []string, timeout time.Duration, h mqtt.MessageHandler) error {
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = 1
	}
	tok := client.SubscribeMultiple(m, h)
	if !tok.WaitTimeout(timeout) {
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
