package uplink

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/internal/mqttclient"
	"github.com/farego/farego/sync/wire"
)

// Defaults for the zero fields of Config.
const (
	// DefaultClientIDPrefix is put before the device id to make the MQTT
	// client id when Config.ClientID is empty.
	DefaultClientIDPrefix = "farego-dev-"

	// DefaultBatchRecords is the most queue records in one batch message.
	DefaultBatchRecords = 100

	// DefaultBatchBytes is the most record bytes in one batch message (a
	// single record larger than that still goes alone).
	DefaultBatchBytes = 256 << 10

	// DefaultMaxInFlight is the most batches published and not yet acked.
	DefaultMaxInFlight = 4

	// DefaultAckTimeout is how long the uplink waits for the server's ack
	// of its oldest unacked batch before sending again from there. Each
	// timeout in a row doubles the wait, up to 8 times this.
	DefaultAckTimeout = 10 * time.Second

	// DefaultDenyIndexWait is a value for Config.DenyIndexWait: how long
	// after connecting a validator waits for the deny-list shard index
	// before it subscribes to every shard.
	DefaultDenyIndexWait = 20 * time.Second
	// DefaultHeartbeat is the interval of status messages while connected.
	DefaultHeartbeat = 60 * time.Second

	// DefaultStatusMinInterval is the least time between two statuses a
	// change publishes (one that waits goes at the first poll after it).
	DefaultStatusMinInterval = 5 * time.Second

	// DefaultPollInterval is how often the queue is checked for new records
	// (Notify makes the uplink look at once).
	DefaultPollInterval = time.Second

	// DefaultSyncInterval is the least time between two calls of
	// SyncSucceeded.
	DefaultSyncInterval = 30 * time.Second

	// DefaultMinBackoff and DefaultMaxBackoff bound the jittered, doubling
	// wait between connection attempts.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute

	// DefaultConnectTimeout bounds one connection attempt (TCP, TLS and the
	// MQTT handshake).
	DefaultConnectTimeout = 15 * time.Second

	// DefaultKeepAlive is the MQTT keep-alive interval; a dead connection
	// is noticed within about 1.5 times this.
	DefaultKeepAlive = 30 * time.Second

	// DefaultShutdownTimeout bounds how long Run waits, once its context is
	// done, for the broker to take the offline status.
	DefaultShutdownTimeout = 5 * time.Second
)

const (
	// maxAckBackoff bounds the ack-timeout backoff, as a multiple of
	// AckTimeout.
	maxAckBackoff = 8
	// maxBatchBytes bounds BatchBytes so that a batch (with its per-record
	// overhead, uncompressed) always fits in one wire message (320 KiB);
	// the sender halves a batch that would not fit anyway.
	maxBatchBytes = wire.MaxMessageSize - 64<<10
	// maxInFlight bounds MaxInFlight.
	maxInFlight = 1000
)

// Config configures an Uplink. The zero value of every optional field means
// the matching Default constant.
type Config struct {
	// Brokers are the broker URLs, tried in order on each connection
	// attempt: tcp://host:port or mqtt://host:port for plain MQTT,
	// ssl://, tls:// or mqtts:// for MQTT over TLS. At least one.
	Brokers []string

	// DeviceID is the device's id (see record.ValidDeviceID); it names the
	// device's topics and its tap ids.
	DeviceID string

	// ClientID is the MQTT client id; empty means DefaultClientIDPrefix +
	// DeviceID. It must be unique per device: a broker disconnects the
	// older of two clients with the same id.
	ClientID string

	// DeviceKey signs tap batches and status messages.
	DeviceKey ed25519.PrivateKey

	// FleetPublicKey checks acks, replay requests and downlinks.
	FleetPublicKey ed25519.PublicKey

	// TopicPrefix is the topic prefix (default wire.DefaultPrefix).
	TopicPrefix string

	// Software is the software version reported in the status.
	Software string

	// BatchRecords and BatchBytes bound one batch message: at most
	// BatchRecords records (up to wire.MaxBatchRecords) and BatchBytes of
	// record data.
	BatchRecords int
	BatchBytes   int

	// MaxInFlight is the most batches published and not yet acked by the
	// server.
	MaxInFlight int

	// AckTimeout is how long to wait for the server's ack of the oldest
	// unacked batch before sending again from its first record.
	AckTimeout time.Duration

	// Heartbeat is the interval of status messages while connected.
	Heartbeat time.Duration

	// StatusMinInterval is the least time between two status messages
	// routine changes make (a tap batch acked that left the queue empty, a
	// deny-list shard applied, a replay, the clock offset): changes within
	// it go out together in one status, at the first poll once it has
	// passed. A busy bus online empties its queue at almost every tap, and
	// a reconnect applies up to 256 deny-list shards: without it, each was
	// a status the server records. The status on connecting, the
	// heartbeat, the last will and changes an operator waits to see (an
	// assignment, a key set or fare table applied, StatusChanged) are not
	// held.
	StatusMinInterval time.Duration

	// PollInterval is how often the queue is checked for new records.
	PollInterval time.Duration

	// SyncInterval is the least time between two SyncSucceeded calls.
	SyncInterval time.Duration

	// DisableCompression sends tap batches uncompressed. By default they
	// are DEFLATE-compressed when that makes them smaller. (Status
	// messages are never compressed, so mosquitto_sub shows their JSON.)
	DisableCompression bool

	// Username and Password authenticate to the broker (MQTT CONNECT). A
	// Password needs a Username. Use TLS: MQTT sends them in clear.
	Username string
	Password string

	// TLS is the base TLS configuration for ssl://, tls:// and mqtts://
	// brokers (nil: system roots, TLS 1.2 or later). CAFile replaces its
	// root CAs with the PEM certificates in that file; CertFile and KeyFile
	// (PEM, both or neither) add a client certificate for mutual TLS. The
	// files are read by New.
	TLS      *tls.Config
	CAFile   string
	CertFile string
	KeyFile  string

	// MinBackoff and MaxBackoff bound the jittered, doubling wait between
	// connection attempts; it starts again from MinBackoff after a
	// successful connection.
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// ConnectTimeout bounds one connection attempt.
	ConnectTimeout time.Duration

	// KeepAlive is the MQTT keep-alive interval.
	KeepAlive time.Duration

	// ShutdownTimeout bounds how long Run waits for the broker to take the
	// offline status when its context is done.
	ShutdownTimeout time.Duration

	// OnAcked, if set, is called with the sequence numbers of records the
	// server acknowledged, once they are deleted from the queue (the fleet
	// simulator measures end-to-end lag with it; a record acknowledged twice
	// may be reported twice). It must not block.
	OnAcked func(seqs []uint64)

	// OnClock, if set, is called with every clock sample taken from the
	// server's timed acks (the agent goes out of service when its clock is
	// too far off). It runs on the session goroutine and must not block.
	OnClock func(ClockSample)

	// Status, if set, fills in the device's own fields of every status
	// message before it is signed (OutOfService, Salvage). It must not
	// block.
	Status func(st *wire.Status)

	// Assign, if set, carries out an operator's assignment of route and
	// vehicle (a fleet-signed wire.Assignment for this device, retained on
	// its command topic, so it is seen again on every connection: Assign
	// must ignore a version it has applied). Nil refuses assignments. It
	// runs on the session goroutine and must not block for long.
	Assign func(a *wire.Assignment) error

	// OnRelease, if set, receives every software rollout downlink
	// (wire.DocRelease, on PREFIX/fleet/release) whose fleet signature
	// verifies, with its version and body (a wire.Rollout), at least once
	// per connection. It must not block (sync/update's Offer does not).
	OnRelease func(version uint64, body []byte)

	// DenyIndexWait, if positive, makes the uplink fetch the deny-list
	// shards through the shard index (PREFIX/fleet/denyindex) rather than
	// subscribe to every shard (PREFIX/fleet/denylist/+) and the whole
	// list (PREFIX/fleet/denylist), whose retained messages the broker
	// sends again on every connection: on an index it subscribes only to
	// the shards the index has newer than the device (see the package
	// documentation). If no index comes within DenyIndexWait of a
	// connection (a server that publishes none), it subscribes to every
	// shard and the whole list as before. 0 subscribes to them at once;
	// DefaultDenyIndexWait is a value for the field.
	DenyIndexWait time.Duration

	// Logger receives the uplink's log records; nil discards them.
	Logger *slog.Logger

	// Now is the clock for the times in batches and status messages; nil
	// means time.Now. Timeouts use the real clock.
	Now func() time.Time
}

// withDefaults returns a copy of c with every zero field set to its default.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientIDPrefix + c.DeviceID
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = wire.DefaultPrefix
	}
	if c.BatchRecords == 0 {
		c.BatchRecords = DefaultBatchRecords
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = DefaultBatchBytes
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	def(&c.AckTimeout, DefaultAckTimeout)
	def(&c.Heartbeat, DefaultHeartbeat)
	def(&c.PollInterval, DefaultPollInterval)
	def(&c.StatusMinInterval, DefaultStatusMinInterval)
	def(&c.SyncInterval, DefaultSyncInterval)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.ConnectTimeout, DefaultConnectTimeout)
	def(&c.KeepAlive, DefaultKeepAlive)
	def(&c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// validate checks a Config that has its defaults.
func (c *Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	if err := c.mqttConfig().Validate(); err != nil {
		return bad("%w", err)
	}
	tlsSet := c.tlsRequested()
	for _, b := range c.Brokers {
		u, _ := url.Parse(b) // validated
		if u.User != nil {
			return bad("broker URL %s: put credentials in Username and Password, not the URL", u.Redacted())
		}
		if tlsSet && !mqttclient.IsTLS(b) {
			return bad("broker URL %q is not TLS but TLS settings are given (use ssl://, tls:// or mqtts://)", b)
		}
	}
	if err := record.ValidDeviceID(c.DeviceID); err != nil {
		return bad("DeviceID: %v", err)
	}
	if len(c.DeviceKey) != ed25519.PrivateKeySize {
		return bad("DeviceKey is %d bytes, want an Ed25519 private key (%d bytes)", len(c.DeviceKey), ed25519.PrivateKeySize)
	}
	if len(c.FleetPublicKey) != ed25519.PublicKeySize {
		return bad("FleetPublicKey is %d bytes, want an Ed25519 public key (%d bytes)", len(c.FleetPublicKey), ed25519.PublicKeySize)
	}
	if err := paycode.CheckPublicKey(c.FleetPublicKey); err != nil {
		return bad("FleetPublicKey: %v", err)
	}
	if strings.ContainsAny(c.TopicPrefix, "+#\x00") || strings.HasPrefix(c.TopicPrefix, "$") {
		return bad("TopicPrefix %q: no wildcards, no leading '$'", c.TopicPrefix)
	}
	switch {
	case c.BatchRecords < 1 || c.BatchRecords > wire.MaxBatchRecords:
		return bad("BatchRecords %d, want 1 to %d", c.BatchRecords, wire.MaxBatchRecords)
	case c.BatchBytes < 1 || c.BatchBytes > maxBatchBytes:
		return bad("BatchBytes %d, want 1 to %d", c.BatchBytes, maxBatchBytes)
	case c.MaxInFlight < 1 || c.MaxInFlight > maxInFlight:
		return bad("MaxInFlight %d, want 1 to %d", c.MaxInFlight, maxInFlight)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"AckTimeout", c.AckTimeout}, {"Heartbeat", c.Heartbeat}, {"StatusMinInterval", c.StatusMinInterval},
		{"PollInterval", c.PollInterval},
		{"SyncInterval", c.SyncInterval}, {"MinBackoff", c.MinBackoff}, {"MaxBackoff", c.MaxBackoff},
		{"ConnectTimeout", c.ConnectTimeout}, {"KeepAlive", c.KeepAlive}, {"ShutdownTimeout", c.ShutdownTimeout},
		{"DenyIndexWait", c.DenyIndexWait},
	} {
		if d.v < 0 {
			return bad("%s %v is negative", d.name, d.v)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return bad("CertFile and KeyFile go together")
	}
	return nil
}

// CheckBroker checks one broker URL as Config.Validate does (scheme tcp,
// mqtt, ssl, tls or mqtts; host:port): for a tool that writes a device's
// configuration before the device reads it.
func CheckBroker(url string) error { return mqttclient.CheckBrokerURL(url) }

// IsTLSBroker reports whether a broker URL asks for MQTT over TLS (ssl://,
// tls:// or mqtts://).
func IsTLSBroker(url string) bool { return mqttclient.IsTLS(url) }

// mqttConfig is the connection part of c, for the client core (without
// TLS, which New adds once it has read the files).
func (c *Config) mqttConfig() mqttclient.Config {
	return mqttclient.Config{
		Name: "uplink", Brokers: c.Brokers, ClientID: c.ClientID, Username: c.Username, Password: c.Password,
		KeepAlive: c.KeepAlive, ConnectTimeout: c.ConnectTimeout, MinBackoff: c.MinBackoff, MaxBackoff: c.MaxBackoff,
		Refused: refusedAdvice,
		Logger:  c.Logger,
	}
}

// refusedAdvice is logged with the first refused login of an outage, also
// one that began with a lost connection (a device revoked or provisioned
// again while connected), which otherwise left only "connection lost" in
// the log.
const refusedAdvice = "the server refuses this device: it was revoked (farego-settlement device revoke) or provisioned again (--force), " +
	"or its bundle is another device's; its taps stay queued here (farego-validator ctl status: uplink_error; farego-validator selftest)"

// tlsRequested reports whether any TLS setting is given.
func (c *Config) tlsRequested() bool {
	return c.TLS != nil || c.CAFile != "" || c.CertFile != ""
}

// clientTLS is the TLS configuration of the MQTT client: nil when no TLS
// setting is given and no broker URL asks for TLS.
func (c *Config) clientTLS() (*tls.Config, error) {
	needTLS := c.tlsRequested()
	for _, b := range c.Brokers {
		needTLS = needTLS || mqttclient.IsTLS(b)
	}
	if !needTLS {
		return nil, nil
	}
	return c.tlsConfig()
}

// clientCertEnd is the end of the first client certificate of t (zero:
// none, or one that cannot be read: the broker says so when it refuses it).
func clientCertEnd(t *tls.Config) time.Time {
	if t == nil || len(t.Certificates) == 0 {
		return time.Time{}
	}
	c := t.Certificates[0]
	if c.Leaf != nil {
		return c.Leaf.NotAfter.UTC()
	}
	if len(c.Certificate) == 0 {
		return time.Time{}
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return time.Time{}
	}
	return leaf.NotAfter.UTC()
}

// tlsConfig builds the TLS configuration for TLS brokers, reading the files.
func (c *Config) tlsConfig() (*tls.Config, error) {
	t, err := mqttclient.LoadTLS(c.TLS, c.CAFile, c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return t, nil
}
