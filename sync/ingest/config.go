package ingest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/sync/internal/mqttclient"
	"github.com/farego/farego/sync/wire"
)

// Defaults of the MQTT connection (MQTTConfig).
const (
	// DefaultKeepAlive is the MQTT keep-alive interval.
	DefaultKeepAlive = 30 * time.Second
	// DefaultConnectTimeout bounds one connection attempt.
	DefaultConnectTimeout = 15 * time.Second
	// DefaultMaxReconnectInterval caps the jittered, doubling wait between
	// reconnection attempts.
	DefaultMaxReconnectInterval = 30 * time.Second
)

// Defaults of the zero fields of Config.
const (
	// DefaultIngestClientIDPrefix starts the random client id of an
	// Ingest whose MQTTConfig.ClientID is empty.
	DefaultIngestClientIDPrefix = "farego-ingest-"
	// DefaultSharedGroup is the shared-subscription group of the
	// settlement instances.
	DefaultSharedGroup = "settlement"
	// DefaultWorkers is the number of goroutines that verify and commit
	// batches.
	DefaultWorkers = 4
	// DefaultQueueSize is the number of received messages waiting for a
	// worker, all devices together; a message that does not fit is
	// dropped (the device sends it again). A message is at most
	// wire.MaxMessageSize (384 KiB), typically a few kilobytes (a batch
	// of 100 taps some 60 KiB). A dropped batch comes again only after
	// its device's ack timeout (10 s), while the server may run out of
	// work: the queue holds a fleet's windows in a catch-up (500
	// validators' backlogs, 1,000 batches). With 1,024 messages and
	// 64 MiB, 304 were dropped, their taps sent twice in all 1.20 times a
	// tap, and the catch-up took 14.5 s; with these bounds none, 1.04,
	// 14.0 s (BenchmarkCatchUp/sqlite, one run each, a busy machine).
	DefaultQueueSize = 2048
	// DefaultQueueBytes bounds the bytes of those messages.
	DefaultQueueBytes = 128 << 20
	// DefaultDeviceQueueSize is the number of one device's messages that
	// may wait (a validator has at most a few batches in flight).
	DefaultDeviceQueueSize = 8
	// DefaultDeviceQueueBytes bounds the bytes of one device's waiting
	// messages (one message is always allowed).
	DefaultDeviceQueueBytes = 2 << 20
	// DefaultCoalesceBatches is the most batches (of different devices)
	// a worker commits in one Store call.
	DefaultCoalesceBatches = 32
	// DefaultCommitTimeout bounds one Store call.
	DefaultCommitTimeout = 30 * time.Second
	// DefaultPublishTimeout bounds the wait for the broker to take an ack,
	// a replay request or a downlink.
	DefaultPublishTimeout = 10 * time.Second
)

// Limits of Config.
const (
	maxWorkers   = 256
	maxQueueSize = 1 << 16
)

// LoadTLS is an MQTTConfig.TLS from files: the brokers' CA certificates
// (PEM; empty: the system's roots) and a client certificate and its key
// for mutual TLS (empty: none), as the device's uplink reads its own
// (mqttclient.LoadTLS).
func LoadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	return mqttclient.LoadTLS(nil, caFile, certFile, keyFile)
}

// MQTTConfig is how the Ingest or the Publisher connects to the broker. The
// zero value of every optional field means its default.
type MQTTConfig struct {
	// Brokers are the broker URLs, tried in order: tcp://host:port or
	// mqtt://host:port for plain MQTT, ssl://, tls:// or mqtts:// for MQTT
	// over TLS. At least one.
	Brokers []string

	// ClientID is the MQTT client id. It must be unique per server instance
	// and component (a broker disconnects the older of two clients with one
	// id). Empty means a default prefix and 8 random hex digits, which is
	// unique; set it to have stable ids in the broker's logs.
	ClientID string

	// Username and Password authenticate to the broker. With farego's
	// embedded broker: the server username (server/broker.DefaultServerUsername)
	// and server/broker.ServerPassword. A Password needs a Username.
	Username string
	Password string

	// TLS is the TLS configuration for ssl://, tls:// and mqtts:// brokers
	// (root CAs, a client certificate for mutual TLS); nil means the system
	// roots.
	TLS *tls.Config

	// KeepAlive is the MQTT keep-alive interval (default DefaultKeepAlive).
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt (default
	// DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// MaxReconnectInterval caps the wait between reconnection attempts
	// (default DefaultMaxReconnectInterval).
	MaxReconnectInterval time.Duration

	// Refused says what to do when the broker refuses Username and
	// Password; logged once an outage with the refusal. Empty: nothing.
	Refused string
}

// withDefaults fills the zero fields; prefix starts a random client id.
func (m MQTTConfig) withDefaults(prefix string) MQTTConfig {
	if m.ClientID == "" {
		var b [4]byte
		rand.Read(b[:])
		m.ClientID = prefix + hex.EncodeToString(b[:])
	}
	if m.KeepAlive == 0 {
		m.KeepAlive = DefaultKeepAlive
	}
	if m.ConnectTimeout == 0 {
		m.ConnectTimeout = DefaultConnectTimeout
	}
	if m.MaxReconnectInterval == 0 {
		m.MaxReconnectInterval = DefaultMaxReconnectInterval
	}
	return m
}

// validate checks an MQTTConfig that has its defaults.
func (m *MQTTConfig) validate() error {
	if err := m.client("", nil).Validate(); err != nil {
		return configErr("%w", err)
	}
	return nil
}

// Config configures an Ingest. The zero value of every optional field means
// the matching Default constant.
type Config struct {
	// MQTTConfig is the connection to the broker.
	MQTTConfig

	// TopicPrefix is the topic prefix (default wire.DefaultPrefix).
	TopicPrefix string

	// SharedGroup is the MQTT shared-subscription group: the Ingest
	// subscribes to $share/GROUP/PREFIX/dev/+/taps and …/status, so that
	// the settlement instances of one group each get a part of the
	// messages. Default DefaultSharedGroup.
	SharedGroup string

	// NoSharedSubscription subscribes to PREFIX/dev/+/taps and …/status
	// directly: for a single instance on a broker without shared
	// subscriptions. Every instance then gets every message.
	NoSharedSubscription bool

	// FleetKey is the operator's fleet key; it signs acks and replay
	// requests. Required.
	FleetKey ed25519.PrivateKey

	// Keyring returns the issuer keyring the codes are re-verified
	// against (the server's current one, with every key still in its
	// window). It is called once per batch. Required; a nil keyring makes
	// every code unknown_issuer_key.
	Keyring func() *paycode.Keyring

	// Policy is the code freshness and clock-skew policy of the
	// re-verification (zero: paycode's defaults, as the validators use).
	Policy paycode.Policy

	// VerifierCacheSize is the number of credentials whose issuer
	// signature the re-verification remembers (0: paycode's default,
	// negative: none).
	VerifierCacheSize int

	// Workers is the number of goroutines that verify and commit batches
	// (default DefaultWorkers).
	Workers int

	// QueueSize is the number of received messages that may wait for a
	// worker (default DefaultQueueSize), and QueueBytes their bytes
	// (default DefaultQueueBytes). Each device has its own queue, of
	// DeviceQueueSize messages (default DefaultDeviceQueueSize) and
	// DeviceQueueBytes (default DefaultDeviceQueueBytes), and the
	// workers serve the devices round-robin. Messages beyond a bound are
	// dropped; the devices send them again.
	QueueSize        int
	QueueBytes       int
	DeviceQueueSize  int
	DeviceQueueBytes int

	// CoalesceBatches is the most batches, of different devices, that a
	// worker takes at once and commits in one call when the Store is a
	// BatchCommitter (default DefaultCoalesceBatches).
	CoalesceBatches int

	// CommitTimeout bounds each Store call (default DefaultCommitTimeout).
	CommitTimeout time.Duration

	// AsideBudget is how many records of one device per hour (and at
	// once) the Store may keep aside — Batch.Aside — before the Ingest
	// leaves that device's batches unacked until its budget refills
	// (default DefaultAsideBudget; negative: no budget).
	AsideBudget int

	// VerifyBudget is how many records of one device per hour (and at
	// once) the Ingest checks — each a payment code's signatures — before
	// it leaves that device's batches unchecked and unacked until its
	// budget refills (default DefaultVerifyBudget; negative: no budget).
	VerifyBudget int

	// PublishTimeout bounds the wait for the broker to take an ack or a
	// replay request (default DefaultPublishTimeout).
	PublishTimeout time.Duration

	// Logger receives the Ingest's log records; nil discards them.
	Logger *slog.Logger

	// Now is the clock of the log rate limits; nil means time.Now. Codes
	// are re-verified at their tap's time, not now.
	Now func() time.Time

	// Metrics are counters hooks; nil fields are not called.
	Metrics Metrics
}

// withDefaults returns a copy of c with every zero field set to its default.
func (c Config) withDefaults() Config {
	c.MQTTConfig = c.MQTTConfig.withDefaults(DefaultIngestClientIDPrefix)
	if c.TopicPrefix == "" {
		c.TopicPrefix = wire.DefaultPrefix
	}
	if c.SharedGroup == "" {
		c.SharedGroup = DefaultSharedGroup
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.DeviceQueueSize == 0 {
		c.DeviceQueueSize = DefaultDeviceQueueSize
	}
	if c.DeviceQueueBytes == 0 {
		c.DeviceQueueBytes = DefaultDeviceQueueBytes
	}
	if c.CoalesceBatches == 0 {
		c.CoalesceBatches = DefaultCoalesceBatches
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = DefaultCommitTimeout
	}
	if c.AsideBudget == 0 {
		c.AsideBudget = DefaultAsideBudget
	}
	if c.VerifyBudget == 0 {
		c.VerifyBudget = DefaultVerifyBudget
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.Logger == nil {
		c.Logger = discardLogger()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// validate checks a Config that has its defaults.
func (c *Config) validate() error {
	if err := c.MQTTConfig.validate(); err != nil {
		return err
	}
	if err := validPrefix(c.TopicPrefix); err != nil {
		return err
	}
	if c.SharedGroup == "" || strings.ContainsAny(c.SharedGroup, "/+#\x00") {
		return configErr("SharedGroup %q: no '/', '+' or '#'", c.SharedGroup)
	}
	if len(c.FleetKey) != ed25519.PrivateKeySize {
		return configErr("FleetKey is %d bytes, want an Ed25519 private key (%d bytes)", len(c.FleetKey), ed25519.PrivateKeySize)
	}
	if c.Keyring == nil {
		return configErr("no Keyring function")
	}
	switch {
	case c.Workers < 1 || c.Workers > maxWorkers:
		return configErr("Workers %d, want 1 to %d", c.Workers, maxWorkers)
	case c.QueueSize < 1 || c.QueueSize > maxQueueSize:
		return configErr("QueueSize %d, want 1 to %d", c.QueueSize, maxQueueSize)
	case c.QueueBytes < 1 || c.DeviceQueueSize < 1 || c.DeviceQueueBytes < 1:
		return configErr("QueueBytes, DeviceQueueSize and DeviceQueueBytes must be positive")
	case c.CoalesceBatches < 1 || c.CoalesceBatches > maxQueueSize:
		return configErr("CoalesceBatches %d, want 1 to %d", c.CoalesceBatches, maxQueueSize)
	case c.CommitTimeout < 0 || c.PublishTimeout < 0:
		return configErr("negative CommitTimeout or PublishTimeout")
	}
	return nil
}

// validPrefix checks a topic prefix: no wildcards, no leading '$'.
func validPrefix(p string) error {
	if strings.ContainsAny(p, "+#\x00") || strings.HasPrefix(p, "$") {
		return configErr("TopicPrefix %q: no wildcards, no leading '$'", p)
	}
	return nil
}

func configErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
