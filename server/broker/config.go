package broker

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/farego/farego/sync/wire"
)

// Defaults of the zero fields of Config.
const (
	// DefaultListen is the plain MQTT listen address.
	DefaultListen = "127.0.0.1:1883"
	// DefaultServerUsername is the MQTT username of the settlement
	// server's own clients (ingest, downlink publisher).
	DefaultServerUsername = "farego-server"
	// DefaultConnectTimeout bounds the time from accepting a connection to
	// reading its CONNECT packet (TLS handshake included).
	DefaultConnectTimeout = 30 * time.Second
	// DefaultSessionExpiry is how long the broker keeps the session of a
	// client that asked for a persistent one after it disconnects (farego's
	// own clients use clean sessions; a device can hold one session, under
	// its own client id).
	DefaultSessionExpiry = time.Hour
	// DefaultMaxPacketSize bounds an MQTT packet: a wire message (at most
	// wire.MaxMessageSize, 384 KiB) with its topic and headers: 400 KiB.
	DefaultMaxPacketSize = wire.MaxMessageSize + 16<<10
	// DeviceClientIDPrefix is what a device's MQTT client id must be: the
	// prefix and its device id ("farego-dev-bus-17").
	DeviceClientIDPrefix = "farego-dev-"
	// DefaultWriteTimeout bounds a write to a client that takes nothing:
	// the client is then disconnected.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultMaxPendingWrites is the number of packets queued for writing
	// to one client (mochi's default; each client's queue is allocated
	// when it connects, 8 bytes a slot).
	DefaultMaxPendingWrites = 8192
)

// minSecretSize is the least size of the broker secret.
const minSecretSize = 16

// Config configures a Broker. The zero value of every optional field means
// the matching Default constant.
type Config struct {
	// Listen is the plain MQTT (TCP) listen address (default
	// DefaultListen; "127.0.0.1:0" picks a free port, see Broker.Addr).
	// Clients authenticate with a username and password (see
	// DevicePassword), which travel in clear: on an untrusted network use
	// the TLS listener, and bind this one to loopback for the server's
	// own clients.
	Listen string
	// DisablePlain turns the plain listener off (TLS only).
	DisablePlain bool

	// TLSListen, if set, is the address of an MQTT-over-TLS listener.
	TLSListen string
	// TLSCertFile and TLSKeyFile are the broker's certificate and key (PEM)
	// for the TLS listener; or set TLS.Certificates.
	TLSCertFile string
	TLSKeyFile  string
	// ClientCAFile (PEM) makes the TLS listener require a client
	// certificate signed by one of its CAs (mutual TLS); the
	// certificate's common name is then the client's identity: a device
	// id, or ServerUsername for the settlement server. Without it, TLS
	// clients authenticate with a username and password.
	ClientCAFile string
	// TLS is the base TLS configuration of the TLS listener (nil: TLS 1.2
	// or later). The files above add to it. With ClientAuth set to
	// tls.RequireAndVerifyClientCert and ClientCAs, it is mutual TLS as
	// with ClientCAFile.
	TLS *tls.Config

	// TopicPrefix is the topic prefix (default wire.DefaultPrefix); the
	// access rules apply under it, and everything else is refused.
	TopicPrefix string

	// Secret is the broker secret (at least 16 bytes) from which the
	// device and server passwords are derived. Required.
	Secret []byte

	// ServerUsername is the username (or certificate common name) of the
	// settlement server's clients (default DefaultServerUsername). A
	// device cannot have this id.
	ServerUsername string

	// Devices decides which devices may log in (required).
	Devices DeviceAuthority

	// DevicesReady, if set, gates devices' connections: while it returns
	// false devices are refused (and retry after their back-off), so that
	// no batch is published before the settlement server's ingest has
	// subscribed (a batch published then would reach no one and wait for
	// the device's ack timeout). The server's own clients are always
	// accepted. It must be quick and safe for concurrent use.
	DevicesReady func() bool

	// ConnectTimeout bounds the time from accepting a connection to its
	// CONNECT packet (default DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// MaxConnections bounds the connections the broker's listeners hold
	// open at once, authenticated or not (default: half the process's
	// open-files limit, so that connections that never log in cannot take
	// the file descriptors of the HTTP API and the ledger; negative: no
	// bound). A connection beyond it is closed at once.
	MaxConnections int
	// MaxPendingPerAddress bounds the connections of one client address
	// (an IPv4 address, an IPv6 /64) that have not logged in yet (default
	// DefaultMaxPendingPerAddress; negative: no bound); one beyond is
	// closed at once. Logged-in connections do not count: a fleet behind
	// one carrier NAT is not limited.
	MaxPendingPerAddress int
	// SessionExpiry bounds how long a persistent session outlives its
	// connection (default DefaultSessionExpiry).
	SessionExpiry time.Duration
	// MaxPacketSize bounds an MQTT packet (default DefaultMaxPacketSize).
	MaxPacketSize int
	// MaxPendingWrites is the per-client write queue (default
	// DefaultMaxPendingWrites).
	MaxPendingWrites int
	// WriteTimeout bounds each chunk of a write to a client that takes
	// nothing: the client is then disconnected (default
	// DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Limits bound what one device can make the broker hold or do
	// (publication budget, flood ban, messages held for it).
	Limits Limits

	// Logger receives the broker's log records (and mochi's, prefixed
	// "broker: "); nil discards them.
	Logger *slog.Logger

	// Now is the clock of the log rate limits; nil means time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = wire.DefaultPrefix
	}
	c.TopicPrefix = strings.TrimSuffix(c.TopicPrefix, "/")
	if c.ServerUsername == "" {
		c.ServerUsername = DefaultServerUsername
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = math.MaxInt32
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/2 < math.MaxInt32 {
			c.MaxConnections = int(max(rl.Cur/2, 64))
		}
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxPendingPerAddress == 0 {
		c.MaxPendingPerAddress = DefaultMaxPendingPerAddress
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = DefaultSessionExpiry
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = DefaultMaxPacketSize
	}
	if c.MaxPendingWrites == 0 {
		c.MaxPendingWrites = DefaultMaxPendingWrites
	}
	c.Limits = c.Limits.withDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func configErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
}

// validate checks a Config with its defaults and returns the TLS listener's
// configuration (nil without one).
func (c *Config) validate() (*tls.Config, error) {
	if c.Devices == nil {
		return nil, configErr("no Devices authority")
	}
	if len(c.Secret) < minSecretSize {
		return nil, configErr("Secret is %d bytes, want at least %d", len(c.Secret), minSecretSize)
	}
	if c.DisablePlain && c.TLSListen == "" {
		return nil, configErr("no listener: DisablePlain without TLSListen")
	}
	for _, a := range []string{c.Listen, c.TLSListen} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, configErr("listen address %q: %v", a, err)
		}
	}
	if c.TopicPrefix == "" || strings.ContainsAny(c.TopicPrefix, "+#\x00") || strings.HasPrefix(c.TopicPrefix, "$") {
		return nil, configErr("TopicPrefix %q: no wildcards, no leading '$'", c.TopicPrefix)
	}
	if strings.ContainsAny(c.ServerUsername, "+#/\x00") {
		return nil, configErr("ServerUsername %q", c.ServerUsername)
	}
	if c.ConnectTimeout < 0 || c.WriteTimeout < 0 || c.SessionExpiry < 0 || c.MaxPacketSize < 0 || c.MaxPendingWrites < 0 {
		return nil, configErr("negative limit")
	}
	if c.SessionExpiry/time.Second > 1<<32-1 {
		return nil, configErr("SessionExpiry %v too long", c.SessionExpiry)
	}
	if c.MaxPacketSize > 256<<20 || c.MaxPendingWrites > 1<<20 {
		return nil, configErr("MaxPacketSize or MaxPendingWrites too large")
	}
	if err := c.Limits.validate(); err != nil {
		return nil, err
	}
	if c.TLSListen == "" {
		if c.TLS != nil || c.TLSCertFile != "" || c.ClientCAFile != "" {
			return nil, configErr("TLS settings without TLSListen")
		}
		return nil, nil
	}
	return c.tlsConfig()
}

// tlsConfig builds the TLS listener's configuration, reading the files.
func (c *Config) tlsConfig() (*tls.Config, error) {
	var t *tls.Config
	if c.TLS != nil {
		t = c.TLS.Clone()
	} else {
		t = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return nil, configErr("TLSCertFile and TLSKeyFile go together")
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil && strings.Contains(err.Error(), "does not match") {
			// A renewal cut between its two renames leaves the new key
			// beside the old certificate.
			return nil, configErr("TLS certificate: %v (%s and %s are not one pair: was farego-provision broker-cert cut short? "+
				"run it again with --force)", err, c.TLSCertFile, c.TLSKeyFile)
		}
		if err != nil {
			return nil, configErr("TLS certificate: %v", err)
		}
		t.Certificates = append(t.Certificates, cert)
	}
	if len(t.Certificates) == 0 && t.GetCertificate == nil {
		return nil, configErr("the TLS listener has no certificate (TLSCertFile and TLSKeyFile)")
	}
	if c.ClientCAFile != "" {
		pemBytes, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, configErr("ClientCAFile: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, configErr("ClientCAFile %s holds no PEM certificate", c.ClientCAFile)
		}
		t.ClientCAs = pool
		t.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return t, nil
}
