package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/brokertest"
)

func TestServerPassword(t *testing.T) {
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(i)
	}
	if got, want := ServerPassword(secret), "df47fb56f746f582402e153876bc43dd0e54fe0ab54920c51c945ef3e1a95e1e"; got != want {
		t.Errorf("ServerPassword = %s, want %s", got, want)
	}
	if ServerPassword(secret) == ServerPassword(secret[1:]) {
		t.Error("the server password does not depend on the secret")
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		allowed, filter string
		want            bool
	}{
		{"p/fleet/#", "p/fleet/keyring", true},
		{"p/fleet/#", "p/fleet/#", true},
		{"p/fleet/#", "p/fleet/+", true},
		{"p/fleet/#", "p/fleet", true},
		{"p/fleet/#", "p/#", false},
		{"p/fleet/#", "p/+/keyring", false},
		{"p/fleet/#", "#", false},
		{"p/dev/+/taps", "p/dev/bus-1/taps", true},
		{"p/dev/+/taps", "p/dev/+/taps", true},
		{"p/dev/+/taps", "p/dev/#", false},
		{"p/dev/+/taps", "p/dev/bus-1/ack", false},
		{"p/dev/+/taps", "p/dev/bus-1/taps/x", false},
		{"p/dev/+/taps", "p/dev/bus-1", false},
		{"p/dev/a/ack", "p/dev/a/ack", true},
		{"p/dev/a/ack", "p/dev/+/ack", false},
	} {
		if got := covers(tc.allowed, tc.filter); got != tc.want {
			t.Errorf("covers(%q, %q) = %t, want %t", tc.allowed, tc.filter, got, tc.want)
		}
	}
}

func TestAuthentication(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret, Devices: testDevices{secret: secret, banned: "bus-banned"}})
	for _, tc := range []struct {
		name       string
		user, pass string
		opts       []func(*mqtt.ClientOptions)
		ok         bool
	}{
		{"device", "bus-1", devicePassword(secret, "bus-1"), nil, true},
		{"device, upper-case hex", "bus-1", strings.ToUpper(devicePassword(secret, "bus-1")), nil, true},
		{"server", DefaultServerUsername, ServerPassword(secret), nil, true},
		{"wrong password", "bus-1", devicePassword(secret, "bus-2"), nil, false},
		{"another secret", "bus-1", devicePassword(newSecret(t), "bus-1"), nil, false},
		{"server name, device password", DefaultServerUsername, devicePassword(secret, DefaultServerUsername), nil, false},
		{"no credentials", "", "", nil, false},
		{"no password", "bus-1", "", nil, false},
		{"invalid device id", "bus/1", devicePassword(secret, "bus/1"), nil, false},
		{"unknown device", "bus-banned", devicePassword(secret, "bus-banned"), nil, false},
		{"will on its own status", "bus-1", devicePassword(secret, "bus-1"),
			[]func(*mqtt.ClientOptions){func(o *mqtt.ClientOptions) { o.SetWill("farego/dev/bus-1/status", "off", 1, true) }}, true},
		{"will on another's status", "bus-1", devicePassword(secret, "bus-1"),
			[]func(*mqtt.ClientOptions){func(o *mqtt.ClientOptions) { o.SetWill("farego/dev/bus-2/status", "off", 1, true) }}, false},
		{"will on a fleet topic", "bus-1", devicePassword(secret, "bus-1"),
			[]func(*mqtt.ClientOptions){func(o *mqtt.ClientOptions) { o.SetWill("farego/fleet/keyring", "x", 1, true) }}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Stats().Refused
			_, _, err := dial(t, b.url(), tc.user, tc.pass, nil, tc.opts...)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok {
				if err == nil {
					t.Fatal("accepted")
				}
				if got := b.Stats().Refused; got != before+1 {
					t.Errorf("Refused = %d, want %d", got, before+1)
				}
			}
		})
	}
}

// TestClientIDTakeover: a client id in use cannot be taken by another
// identity; the same identity reconnecting takes its own session over.
func TestClientIDTakeover(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret})
	id := func(o *mqtt.ClientOptions) { o.SetClientID("farego-dev-bus-1") }
	_, lost := mustDial(t, b.url(), "bus-1", devicePassword(secret, "bus-1"), nil, id)
	if _, _, err := dial(t, b.url(), "bus-2", devicePassword(secret, "bus-2"), nil, id); err == nil {
		t.Fatal("another device took bus-1's client id")
	}
	select {
	case <-lost:
		t.Fatal("bus-1 was disconnected by the refused takeover")
	default:
	}
	mustDial(t, b.url(), "bus-1", devicePassword(secret, "bus-1"), nil, id)
	select {
	case <-lost:
	case <-time.After(waitTimeout):
		t.Fatal("the old connection of bus-1 stayed up")
	}
	// Squatting: while bus-3 is offline, bus-1 cannot take its client id
	// (which would lock bus-3 out), nor use a client id of its own making
	// (which would let it hold any number of sessions).
	for _, cid := range []string{"farego-dev-bus-3", "bus-1-spare", "farego-dev-", ""} {
		opt := func(o *mqtt.ClientOptions) { o.SetClientID(cid) }
		if _, _, err := dial(t, b.url(), "bus-1", devicePassword(secret, "bus-1"), nil, opt); err == nil {
			t.Errorf("bus-1 logged in with client id %q", cid)
		}
	}
	mustDial(t, b.url(), "bus-3", devicePassword(secret, "bus-3"), nil)
}

func TestACL(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret})
	srv, _ := mustDial(t, b.url(), DefaultServerUsername, ServerPassword(secret), nil)
	dev := func(id string) (mqtt.Client, <-chan struct{}) {
		return mustDial(t, b.url(), id, devicePassword(secret, id), nil)
	}

	// The server takes the taps in a shared group and the statuses.
	for _, f := range []string{"$share/settlement/farego/dev/+/status", "farego/fleet/#", "farego/dev/+/taps"} {
		if code, _ := subscribe(t, srv, f); code != 1 {
			t.Errorf("server subscription to %s: SUBACK %#x", f, code)
		}
	}
	code, taps := subscribe(t, srv, "$share/settlement/farego/dev/+/taps")
	if code != 1 {
		t.Fatalf("server shared subscription: SUBACK %#x", code)
	}

	a, _ := dev("bus-a")
	if err := publish(t, a, "farego/dev/bus-a/taps", "batch-a", false); err != nil {
		t.Fatal(err)
	}
	if m := next(t, taps); m != [2]string{"farego/dev/bus-a/taps", "batch-a"} {
		t.Errorf("server got %q", m)
	}

	// Subscriptions: a device's own and the fleet's, nothing wider.
	for f, want := range map[string]byte{
		"farego/dev/bus-a/ack": 1, "farego/dev/bus-a/cmd": 1, "farego/fleet/#": 1, "farego/fleet/keyring": 1,
		"farego/dev/bus-b/ack": 0x80, "farego/dev/+/ack": 0x80, "#": 0x80, "farego/#": 0x80,
		"$SYS/#": 0x80, "$share/g/farego/dev/bus-a/ack": 0x80, "farego/dev/bus-a/taps": 0x80,
		"$share/settlement/farego/dev/+/taps": 0x80, "$share/settlement/farego/dev/bus-b/taps": 0x80, "$share/g/farego/fleet/#": 0x80,
	} {
		if code, _ := subscribe(t, a, f); code != want {
			t.Errorf("device subscription to %s: SUBACK %#x, want %#x", f, code, want)
		}
	}

	// The server writes acks, commands and downlinks; a device reads its own.
	_, acks := subscribe(t, a, "farego/dev/bus-a/ack")
	_, fleet := subscribe(t, a, "farego/fleet/+")
	c, _ := dev("bus-c") // a device that tries to read bus-a's acks
	if code, _ := subscribe(t, c, "farego/dev/bus-a/ack"); code != 0x80 {
		t.Errorf("bus-c subscribed to bus-a's acks: SUBACK %#x", code)
	}
	if err := publish(t, srv, "farego/dev/bus-a/ack", "ack-a", false); err != nil {
		t.Fatal(err)
	}
	if err := publish(t, srv, "farego/fleet/denylist", "deny", true); err != nil {
		t.Fatal(err)
	}
	if m := next(t, acks); m[1] != "ack-a" {
		t.Errorf("bus-a got %q on its ack topic", m)
	}
	if m := next(t, fleet); m != [2]string{"farego/fleet/denylist", "deny"} {
		t.Errorf("bus-a got %q on the fleet topics", m)
	}

	// Forbidden publications disconnect the device (MQTT 3.1.1 has no
	// negative PUBACK) and reach nobody.
	for _, topic := range []string{"farego/dev/bus-b/taps", "farego/fleet/keyring", "farego/dev/bus-x/ack", "farego/dev/bus-a/status", "elsewhere"} {
		t.Run("publish "+topic, func(t *testing.T) {
			x, lost := dev("bus-x")
			denied := b.Stats().Denied
			publish(t, x, topic, "forged", true)
			select {
			case <-lost:
			case <-time.After(waitTimeout):
				t.Fatal("the device stayed connected")
			}
			if got := b.Stats().Denied; got <= denied {
				t.Errorf("Denied = %d, want more than %d", got, denied)
			}
		})
	}
	// The server's subscriptions saw nothing of it: a last, legitimate
	// batch is the next thing they get.
	if err := publish(t, a, "farego/dev/bus-a/taps", "batch-a2", false); err != nil {
		t.Fatal(err)
	}
	if m := next(t, taps); m[1] != "batch-a2" {
		t.Errorf("server got %q, want bus-a's second batch", m)
	}
	if _, ok := retained(b, "farego/fleet/keyring"); ok {
		t.Error("a forged keyring was retained")
	}
	if p, ok := retained(b, "farego/fleet/denylist"); !ok || p != "deny" {
		t.Errorf("retained deny list %q, %t", p, ok)
	}

	// The server may not write device topics or read acks.
	if code, _ := subscribe(t, srv, "farego/dev/+/ack"); code != 0x80 {
		t.Errorf("server subscribed to acks: SUBACK %#x", code)
	}
	select {
	case m := <-acks:
		t.Errorf("bus-a got %q", m)
	default:
	}
}

// TestRetainedTapsNotKept: a retained batch is stored as a plain one.
func TestRetainedTapsNotKept(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret})
	a, _ := mustDial(t, b.url(), "bus-a", devicePassword(secret, "bus-a"), nil)
	if err := publish(t, a, "farego/dev/bus-a/taps", "batch", true); err != nil {
		t.Fatal(err)
	}
	if err := publish(t, a, "farego/dev/bus-a/status", "status", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the status retained", func() bool { _, ok := retained(b, "farego/dev/bus-a/status"); return ok })
	if _, ok := retained(b, "farego/dev/bus-a/taps"); ok {
		t.Error("a batch was retained")
	}
}

// TestRetainedTapsWillNotKept: a last will is a publication too: one on
// the device's taps topic asking to be retained is delivered as a plain
// batch and not kept (mochi sends a will past OnPublish: a device's will
// with the retain flag was kept as the topic's retained batch, delivered
// again to every new plain subscriber, held in memory after the device
// was gone or revoked).
func TestRetainedTapsWillNotKept(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret})
	srv, _ := mustDial(t, b.url(), DefaultServerUsername, ServerPassword(secret), nil)
	_, got := subscribe(t, srv, "farego/dev/+/taps")
	const topic = "farego/dev/bus-a/taps"
	// The device's connection is lost from its side (not a DISCONNECT:
	// the will is sent). Stopping the broker's client instead raced
	// mochi's read loop, which sends no will when it finds the client
	// stopped between two packets.
	conns := make(chan net.Conn, 1)
	mustDial(t, b.url(), "bus-a", devicePassword(secret, "bus-a"), nil, func(o *mqtt.ClientOptions) {
		o.SetWill(topic, "batch", 1, true)
		o.SetCustomOpenConnectionFn(func(uri *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			c, err := net.Dial("tcp", uri.Host)
			if err == nil {
				conns <- c
			}
			return c, err
		})
	})
	(<-conns).Close()
	if m := next(t, got); m != [2]string{topic, "batch"} {
		t.Fatalf("got %q, want the will", m)
	}
	if p, ok := retained(b, topic); ok {
		t.Errorf("the will's batch %q was retained", p)
	}
}

func retained(b *Broker, topic string) (string, bool) {
	pk, ok := b.srv.Topics.Retained.Get(topic)
	if !ok || len(pk.Payload) == 0 {
		return "", false
	}
	return string(pk.Payload), true
}

func TestMutualTLS(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	secret := newSecret(t)
	b := startBroker(t, Config{
		Secret: secret, TLSListen: "127.0.0.1:0",
		TLSCertFile: p.ServerCertFile, TLSKeyFile: p.ServerKeyFile, ClientCAFile: p.CAFile,
		Devices: testDevices{secret: secret, banned: "bus-banned"},
	})
	url := "ssl://" + b.TLSAddr()

	// No certificate authenticates as the settlement server, not even one
	// the fleet CA signed with its name: the server logs in with its
	// password on the loopback listener.
	if _, _, err := dial(t, url, "", "", p.ClientTLS(t, DefaultServerUsername)); err == nil {
		t.Fatal("a certificate with the server's name logged in")
	}
	srv, _ := mustDial(t, b.url(), DefaultServerUsername, ServerPassword(secret), nil)
	_, taps := subscribe(t, srv, "$share/settlement/farego/dev/+/taps")
	dev, _ := mustDial(t, url, "", "", p.ClientTLS(t, "bus-7"), asDevice("bus-7"))
	if err := publish(t, dev, "farego/dev/bus-7/taps", "over tls", false); err != nil {
		t.Fatal(err)
	}
	if m := next(t, taps); m != [2]string{"farego/dev/bus-7/taps", "over tls"} {
		t.Errorf("server got %q", m)
	}
	if code, _ := subscribe(t, dev, "farego/dev/bus-8/ack"); code != 0x80 {
		t.Errorf("bus-7 subscribed to bus-8's acks: SUBACK %#x", code)
	}

	for _, tc := range []struct {
		name     string
		user     string
		tc       *tls.Config
		clientID string // the device's own client id: only the named fault stops it
	}{
		{"no client certificate", "", p.ClientTLS(t, ""), "bus-7"},
		{"no client certificate, device password", "bus-7", p.ClientTLS(t, ""), "bus-7"},
		{"certificate from another CA", "", func() *tls.Config {
			c := p.ClientTLS(t, "")
			c.Certificates = []tls.Certificate{brokertest.NewPKI(t, "").ClientCertificate(t, "bus-7")}
			return c
		}(), "bus-7"},
		{"unknown device", "", p.ClientTLS(t, "bus-banned"), "bus-banned"},
		{"not a device id", "", p.ClientTLS(t, "bus 7"), "bus 7"},
		{"username differs from the certificate", "bus-8", p.ClientTLS(t, "bus-7"), "bus-7"},
		{"another device's client id", "", p.ClientTLS(t, "bus-7"), "bus-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pass := ""
			if tc.user != "" {
				pass = devicePassword(secret, tc.user)
			}
			if _, _, err := dial(t, url, tc.user, pass, tc.tc, asDevice(tc.clientID)); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestTLSWithPasswords: a TLS listener without client certificates takes
// usernames and passwords. A device that logs in with a client
// certificate alone (provisioned with --tls) is refused, and the log says
// the listener asks for no certificate (--client-ca): it said "no
// username and password", and the operator of a server run with
// --mqtt-tls alone looked at the device's credentials.
func TestTLSWithPasswords(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	secret := newSecret(t)
	var log brokertest.SyncBuffer
	b := startBroker(t, Config{Secret: secret, TLSListen: "127.0.0.1:0", TLS: &tls.Config{Certificates: []tls.Certificate{p.ServerCertificate(t)}},
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	url := "ssl://" + b.TLSAddr()
	mustDial(t, url, "bus-1", devicePassword(secret, "bus-1"), p.ClientTLS(t, ""))
	// First: refused logins from one address are logged once a minute.
	if _, _, err := dial(t, url, "", "", p.ClientTLS(t, "bus-2"), asDevice("bus-2")); err == nil {
		t.Fatal("a client certificate the listener did not ask for logged in")
	}
	waitFor(t, "the refusal counted", func() bool { return b.Stats().Refused == 1 })
	if out := log.String(); !strings.Contains(out, "--client-ca") {
		t.Errorf("the refusal of a device with a certificate alone does not name --client-ca:\n%s", out)
	}
	if _, _, err := dial(t, url, "bus-1", "nope", p.ClientTLS(t, "")); err == nil {
		t.Error("wrong password accepted over TLS")
	}
	if _, _, err := dial(t, "tcp://"+b.TLSAddr(), "bus-1", devicePassword(secret, "bus-1"), nil); err == nil {
		t.Error("plain MQTT accepted on the TLS port")
	}
	mustDial(t, b.url(), "bus-1", devicePassword(secret, "bus-1"), nil) // and the plain listener works too
}

// TestCloseWithStalledConnection: Close returns although a client never
// sent its CONNECT.
func TestCloseWithStalledConnection(t *testing.T) {
	b := startBroker(t, Config{})
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte{0x10}); err != nil { // half a CONNECT
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close blocked on a stalled connection")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TestConnectTimeout: a connection that sends nothing is closed after
// ConnectTimeout.
func TestConnectTimeout(t *testing.T) {
	b := startBroker(t, Config{ConnectTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("read data from a broker that should have hung up")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the broker kept a silent connection open")
	}
}

func TestCapabilities(t *testing.T) {
	b := startBroker(t, Config{})
	caps := b.srv.Options.Capabilities
	if caps.MaximumInflight != math.MaxUint16 || caps.ReceiveMaximum != math.MaxUint16 ||
		caps.MaximumMessageExpiryInterval != 0 || caps.MaximumSessionExpiryInterval != 3600 ||
		caps.MaximumPacketSize != DefaultMaxPacketSize || caps.MaximumClientWritesPending != DefaultMaxPendingWrites {
		t.Errorf("capabilities %+v", caps)
	}
	if err := b.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
}

func TestConfig(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	base := Config{Secret: newSecret(t), Listen: "127.0.0.1:0", Devices: testDevices{}}
	if _, err := New(base); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		set  func(*Config)
	}{
		{"no secret", func(c *Config) { c.Secret = nil }},
		{"no device authority", func(c *Config) { c.Devices = nil }},
		{"short secret", func(c *Config) { c.Secret = []byte("short") }},
		{"bad listen address", func(c *Config) { c.Listen = "1883" }},
		{"no listener", func(c *Config) { c.DisablePlain = true }},
		{"wildcard prefix", func(c *Config) { c.TopicPrefix = "a/+" }},
		{"TLS files without TLSListen", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = p.ServerCertFile, p.ServerKeyFile }},
		{"TLS without a certificate", func(c *Config) { c.TLSListen = "127.0.0.1:0" }},
		{"certificate without key", func(c *Config) { c.TLSListen, c.TLSCertFile = "127.0.0.1:0", p.ServerCertFile }},
		{"client CA file missing", func(c *Config) {
			c.TLSListen, c.TLSCertFile, c.TLSKeyFile, c.ClientCAFile = "127.0.0.1:0", p.ServerCertFile, p.ServerKeyFile, p.Dir+"/nope"
		}},
		{"client CA file without certificates", func(c *Config) {
			c.TLSListen, c.TLSCertFile, c.TLSKeyFile, c.ClientCAFile = "127.0.0.1:0", p.ServerCertFile, p.ServerKeyFile, p.ServerKeyFile
		}},
		{"negative session expiry", func(c *Config) { c.SessionExpiry = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.set(&cfg)
			if _, err := New(cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("New = %v, want ErrConfig", err)
			}
		})
	}
	// The key of another pair beside the certificate (a broker-cert
	// renewal cut between its renames): the error says what to run.
	other := brokertest.NewPKI(t, "")
	mixed := base
	mixed.TLSListen, mixed.TLSCertFile, mixed.TLSKeyFile = "127.0.0.1:0", p.ServerCertFile, other.ServerKeyFile
	if _, err := New(mixed); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "broker-cert") {
		t.Errorf("New with the key of another pair = %v, want ErrConfig naming broker-cert", err)
	}
	// A port taken: Start fails, and Close still works.
	b := startBroker(t, Config{})
	taken, err := New(Config{Secret: newSecret(t), Listen: b.Addr(), Devices: testDevices{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := taken.Start(); err == nil {
		t.Error("Start on a taken port succeeded")
	}
	if err := taken.Close(); err != nil {
		t.Errorf("Close after a failed Start = %v", err)
	}
}

// TestMaxConnections: connections that never log in hold at most
// MaxConnections places; one beyond is closed at once, and a place freed
// lets a device in. Without the bound, thousands of silent connections
// (anyone can open them: no credentials needed before CONNECT) took every
// file descriptor of the settlement process, and the HTTP API's accept
// failed with "too many open files".
func TestMaxConnections(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret, MaxConnections: 3, ConnectTimeout: time.Minute})
	var silent []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	time.Sleep(100 * time.Millisecond) // accepted
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("read data from a connection over the bound")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("a connection over the bound was kept open")
	}
	silent[0].Close()
	deadline := time.Now().Add(waitTimeout)
	for {
		cl, _, err := dial(t, b.url(), "bus-1", devicePassword(secret, "bus-1"), nil)
		if err == nil {
			cl.Disconnect(0)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("device after a place was freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
