package mqttclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/farego/farego/driver/backoff"
)

// disconnectQuiesce is how long paho may take to send the DISCONNECT, in
// milliseconds.
const disconnectQuiesce = 250

// subscribeFailure is the SUBACK return code of a refused subscription.
const subscribeFailure = 0x80

// Config is one client's connection. Every field but Name, Brokers,
// ClientID, KeepAlive and ConnectTimeout may be zero.
type Config struct {
	// Name starts the client's log messages ("uplink", "ingest").
	Name string
	// Brokers are the broker URLs, tried in order by paho: tcp:// or
	// mqtt:// for plain MQTT, ssl://, tls:// or mqtts:// for TLS.
	Brokers []string
	// ClientID, Username and Password go in the CONNECT.
	ClientID, Username, Password string
	// TLS is the configuration for TLS brokers; nil means the system roots.
	TLS *tls.Config
	// KeepAlive is the MQTT keep-alive; ConnectTimeout bounds one attempt
	// (dial, handshakes, CONNACK) and the SUBACK.
	KeepAlive, ConnectTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered, doubling wait between
	// attempts.
	MinBackoff, MaxBackoff time.Duration
	// BackoffResetAfter: the wait starts again from MinBackoff after a
	// connection that stayed ready at least this long; 0 means after every
	// ready connection. A longer one keeps a connection that the broker
	// accepts and drops at once (a flapping ACL, a stolen client id) from
	// reconnecting at the shortest interval.
	BackoffResetAfter time.Duration
	// Filters are subscribed (topic filter → QoS) on every connection,
	// with Handler receiving the messages.
	Filters map[string]byte
	Handler mqtt.MessageHandler
	// Ordered calls Handler for one message at a time, in the order the
	// broker sent them, on paho's reading goroutine: the Handler must not
	// block. Otherwise each message is handled on a goroutine of its own,
	// and two messages of one sender may be handled in either order.
	Ordered bool
	// Will, if set, makes the last will (retained, QoS 1) of each
	// connection as the connection starts; an error stops Run.
	Will func() (topic string, payload []byte, err error)
	// Goodbye, if set, runs before a clean disconnect of an open
	// connection (the uplink publishes its offline status there).
	Goodbye func(c mqtt.Client)
	// Refused, if set, says what to do when the broker refuses the login
	// (not authorised, bad user name or password): it is logged, as
	// "advice", with the first refusal of an outage, also one that began
	// with a lost connection (a broker reloaded with another password
	// file), which otherwise leaves only "connection lost" in the log.
	Refused string
	// Logger receives the log records; nil discards them.
	Logger *slog.Logger
}

// Broker URL schemes.
var (
	tlsSchemes   = map[string]bool{"ssl": true, "tls": true, "mqtts": true}
	plainSchemes = map[string]bool{"tcp": true, "mqtt": true}
)

// IsTLS reports whether a broker URL's scheme is one of MQTT over TLS.
func IsTLS(broker string) bool {
	u, err := url.Parse(broker)
	return err == nil && tlsSchemes[u.Scheme]
}

var errNotURL = errors.New("not a URL (want scheme://host:port: tcp://host:1883, ssl://host:8883)")

// CheckBrokerURL checks one broker URL: scheme tcp, mqtt, ssl, tls or
// mqtts, and host:port. Its errors never repeat a password (one that is
// not a URL at all is errNotURL: the parse error would repeat it).
func CheckBrokerURL(b string) error {
	u, err := url.Parse(b)
	if err != nil {
		return fmt.Errorf("broker URL: %w", errNotURL)
	}
	if !tlsSchemes[u.Scheme] && !plainSchemes[u.Scheme] {
		return fmt.Errorf("broker URL %s: scheme must be tcp, mqtt, ssl, tls or mqtts", u.Redacted())
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return fmt.Errorf("broker URL %s: want scheme://host:port", u.Redacted())
	}
	return nil
}

// Validate checks the connection settings every client shares: broker
// URLs (scheme and host:port), the client id, credentials and the
// keep-alive. Its errors never repeat a password.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("no broker URL (Brokers)")
	}
	for i, b := range c.Brokers {
		if err := CheckBrokerURL(b); err != nil {
			if errors.Is(err, errNotURL) {
				return fmt.Errorf("broker URL %d of %d is %w", i+1, len(c.Brokers), errNotURL)
			}
			return err
		}
	}
	if c.ClientID == "" || len(c.ClientID) > 65535 || strings.ContainsRune(c.ClientID, 0) {
		return fmt.Errorf("ClientID %q", c.ClientID)
	}
	if c.Password != "" && c.Username == "" {
		return errors.New("a Password needs a Username")
	}
	if c.KeepAlive < time.Second {
		return fmt.Errorf("KeepAlive %v is under a second", c.KeepAlive)
	}
	if c.ConnectTimeout < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || c.BackoffResetAfter < 0 {
		return errors.New("negative ConnectTimeout, MinBackoff, MaxBackoff or BackoffResetAfter")
	}
	if c.MinBackoff > c.MaxBackoff {
		return fmt.Errorf("MinBackoff %v is above MaxBackoff %v", c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// Redact returns broker URLs fit for logs: a password in one is masked.
func Redact(brokers []string) []string {
	out := make([]string, len(brokers))
	for i, b := range brokers {
		if u, err := url.Parse(b); err == nil {
			out[i] = u.Redacted()
		} else {
			out[i] = "(not a URL)"
		}
	}
	return out
}

// Stats are a client's connection counters.
type Stats struct {
	Connected       bool   // a connection is ready now
	Connects        uint64 // connections made ready
	ConnectFailures uint64 // failed attempts (a lost connection is not one)
	Losses          uint64 // ready connections that were lost
	LastError       string // the last failure or loss; "" if none yet
}

// Client keeps one MQTT connection. Use New, then Run.
type Client struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	stats Stats
	ready atomic.Bool

	// Only Run's goroutine uses these.
	backoff        backoff.Backoff
	up             bool      // the last session got ready
	everUp         bool      // a session got ready
	down           bool      // an outage is being reported
	downSince      time.Time // when it began
	failures       int       // failed attempts since it began
	notReadyLogged bool      // a failed subscription was logged in this outage
	refusedLogged  bool      // a refused login was logged in this outage
}

// New returns a client for cfg, which should have passed Validate.
func New(cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Client{cfg: cfg, log: cfg.Logger}
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Connected = c.ready.Load()
	return s
}

// Connected reports whether a connection is ready now.
func (c *Client) Connected() bool { return c.ready.Load() }

// Session is one ready connection, handed to the session function.
type Session struct {
	client mqtt.Client
	lost   chan error
	broker string
}

// Client is the connected paho client, for publishing.
func (s *Session) Client() mqtt.Client { return s.client }

// Lost delivers the error of the connection's loss.
func (s *Session) Lost() <-chan error { return s.lost }

// Broker is the broker connected to, without credentials.
func (s *Session) Broker() string { return s.broker }

// Wait blocks until the connection is lost (returning a *LostError) or ctx
// is done (returning nil): the whole session of a client that only
// subscribes or publishes from elsewhere.
func (s *Session) Wait(ctx context.Context) error {
	select {
	case err := <-s.lost:
		return &LostError{Err: err}
	case <-ctx.Done():
		return nil
	}
}

// LostError ends a session whose connection was lost: there is nothing
// left to disconnect.
type LostError struct{ Err error }

func (e *LostError) Error() string {
	if e.Err == nil {
		return "connection lost"
	}
	return "connection lost: " + e.Err.Error()
}

func (e *LostError) Unwrap() error { return e.Err }

// fatalError stops Run.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// Fatal wraps err so that a session returning it stops Run, which
// disconnects and returns err.
func Fatal(err error) error { return &fatalError{err} }

// notReadyError is a connection made whose subscriptions failed.
type notReadyError struct{ err error }

func (e *notReadyError) Error() string { return e.err.Error() }
func (e *notReadyError) Unwrap() error { return e.err }

// Run connects and reconnects until ctx is done, calling session with
// every ready connection. session must return when ctx is done (nil), when
// the connection is lost (a *LostError, from Session.Lost or a failed
// publish) or with Fatal(err) to stop Run. Run returns nil when ctx ended
// it, or the error given to Fatal.
func (c *Client) Run(ctx context.Context, session func(ctx context.Context, s *Session) error) error {
	c.backoff = backoff.Backoff{Min: c.cfg.MinBackoff, Max: c.cfg.MaxBackoff}
	for {
		err := c.attempt(ctx, session)
		if fe, ok := errors.AsType[*fatalError](err); ok {
			return fe.err
		}
		if ctx.Err() != nil {
			return nil
		}
		c.failed(err)
		if !backoff.Sleep(ctx, c.backoff.Next()) {
			return nil
		}
	}
}

// attempt makes one connection with a fresh paho client and runs session
// on it once ready. It returns nil when ctx ended it (after the clean
// disconnect), a *LostError if the connection was lost, a *notReadyError
// for refused subscriptions, and any other error for a failed attempt.
func (c *Client) attempt(ctx context.Context, session func(context.Context, *Session) error) error {
	d := newDialer(ctx, c.cfg.TLS, c.cfg.ConnectTimeout)
	s := &Session{lost: make(chan error, 1)}
	o := mqtt.NewClientOptions()
	for _, b := range c.cfg.Brokers {
		o.AddBroker(b)
	}
	o.SetClientID(c.cfg.ClientID).
		SetUsername(c.cfg.Username).
		SetPassword(c.cfg.Password).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetCleanSession(true). // subscribed again on every connection
		SetOrderMatters(c.cfg.Ordered).
		SetStore(mqtt.NewMemoryStore()). // the queue and the ledger are the durable stores
		SetAutoReconnect(false).         // Run reconnects, with a fresh client
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetKeepAlive(c.cfg.KeepAlive).
		SetConnectTimeout(c.cfg.ConnectTimeout).
		SetCustomOpenConnectionFn(d.Open).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case s.lost <- err:
			default:
			}
		})
	if c.cfg.Will != nil {
		topic, payload, err := c.cfg.Will()
		if err != nil {
			return Fatal(fmt.Errorf("last will: %w", err))
		}
		o.SetBinaryWill(topic, payload, 1, true)
	}
	s.client = mqtt.NewClient(o)
	tok := s.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		<-tok.Done() // the dialer ends the attempt promptly
	}
	d.Release()
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	s.broker = d.Broker()

	if err := c.subscribe(ctx, s); err != nil {
		if _, ok := errors.AsType[*LostError](err); ok {
			return err
		}
		s.client.Disconnect(disconnectQuiesce)
		if ctx.Err() != nil {
			return nil
		}
		return &notReadyError{err}
	}
	c.isUp(s.broker)
	upAt := time.Now()
	c.ready.Store(true)
	err := session(ctx, s)
	c.ready.Store(false)
	if c.cfg.BackoffResetAfter == 0 || time.Since(upAt) >= c.cfg.BackoffResetAfter {
		c.backoff.Reset()
	}
	if _, ok := errors.AsType[*LostError](err); ok {
		return err
	}
	if c.cfg.Goodbye != nil && s.client.IsConnectionOpen() {
		c.cfg.Goodbye(s.client)
	}
	s.client.Disconnect(disconnectQuiesce)
	c.log.Info(c.cfg.Name + " disconnected")
	if _, ok := errors.AsType[*fatalError](err); !ok && ctx.Err() != nil {
		return nil
	}
	return err
}

// subscribe subscribes to the filters and waits for the SUBACK, at most
// ConnectTimeout; a filter the broker refused is an error.
func (c *Client) subscribe(ctx context.Context, s *Session) error {
	if len(c.cfg.Filters) == 0 {
		return nil
	}
	tok := s.client.SubscribeMultiple(c.cfg.Filters, c.cfg.Handler)
	t := time.NewTimer(c.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case err := <-s.lost:
		return &LostError{Err: err}
	case <-ctx.Done():
		return fmt.Errorf("subscribe: %w", ctx.Err())
	case <-t.C:
		return errors.New("subscribe: no SUBACK within the connect timeout")
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
		return fmt.Errorf("subscribe: the broker refused %s (check its ACL and the credentials)", strings.Join(refused, ", "))
	}
	return nil
}

// isUp records and logs a connection made ready.
func (c *Client) isUp(broker string) {
	name := c.cfg.Name
	switch {
	case c.down && c.failures > 0:
		c.log.Info(fmt.Sprintf("%s connected after %d failed attempts", name, c.failures), "broker", broker,
			"attempts", c.failures, "down_for", time.Since(c.downSince).Round(time.Second).String())
	case c.down:
		c.log.Info(name+" reconnected", "broker", broker, "down_for", time.Since(c.downSince).Round(time.Second).String())
	case !c.everUp:
		c.log.Info(name+" connected", "broker", broker, "client_id", c.cfg.ClientID)
	}
	c.up, c.everUp, c.down, c.failures, c.notReadyLogged, c.refusedLogged = true, true, false, 0, false, false
	c.mu.Lock()
	c.stats.Connects++
	c.mu.Unlock()
}

// failed records and logs an attempt or session that ended with err (ctx
// still live): a lost connection, the first failed attempt of an outage
// (unless it began with a lost connection, logged already) and the first
// refused subscription as warnings or errors, other failures at debug
// level.
func (c *Client) failed(err error) {
	msg := "unknown error"
	if err != nil {
		msg = err.Error()
	}
	c.mu.Lock()
	c.stats.LastError = msg
	if c.up {
		c.stats.Losses++
	} else {
		c.stats.ConnectFailures++
	}
	c.mu.Unlock()
	name := c.cfg.Name
	if c.up {
		c.up = false
		c.down, c.downSince, c.failures = true, time.Now(), 0
		c.log.Warn(name+": connection lost; reconnecting", "err", err)
		return
	}
	c.failures++
	first := !c.down
	if first {
		c.down, c.downSince = true, time.Now()
	}
	_, notReady := errors.AsType[*notReadyError](err)
	refused := errors.Is(err, packets.ErrorRefusedNotAuthorised) || errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword)
	switch {
	case notReady && !c.notReadyLogged:
		c.notReadyLogged = true
		c.log.Error(name+": connected but not ready; retrying", "err", err)
	case refused && c.cfg.Refused != "" && !c.refusedLogged:
		c.refusedLogged = true
		c.log.Error(name+": the broker refuses the login; retrying", "broker", Redact(c.cfg.Brokers),
			"client_id", c.cfg.ClientID, "user", c.cfg.Username, "err", err, "advice", c.cfg.Refused)
	case first:
		c.log.Warn(name+": cannot connect; retrying", "broker", Redact(c.cfg.Brokers),
			"client_id", c.cfg.ClientID, "err", err)
	default:
		c.log.Debug(name+": connection attempt failed", "attempts", c.failures, "err", err)
	}
}
