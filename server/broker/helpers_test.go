package broker

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/brokertest"
)

// waitTimeout bounds every wait for an event in these tests. It is
// generous: other engineers run tests on the same 2-core machine.
const waitTimeout = 90 * time.Second

// TestMain fails the run if goroutines of paho, mochi or the packages
// this suite runs are still running once every test is done.
func TestMain(m *testing.M) {
	os.Exit(brokertest.LeakCheck(m, 15*time.Second, "server/broker.(*", "sync/ingest.(*", "sync/uplink.(*"))
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	brokertest.WaitFor(tb, waitTimeout, what, cond)
}

// testLogger writes to the test log when verbose.
func testLogger(tb testing.TB) *slog.Logger { return brokertest.Logger(tb) }

func uniqueName(prefix string) string { return brokertest.UniqueName(prefix) }

func newSecret(tb testing.TB) []byte {
	tb.Helper()
	s := make([]byte, 32)
	if _, err := rand.Read(s); err != nil {
		tb.Fatal(err)
	}
	return s
}

// startBroker starts a broker on 127.0.0.1:0 (zero fields of cfg get test
// values) and closes it when the test ends.
func startBroker(tb testing.TB, cfg Config) *Broker {
	tb.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Secret == nil {
		cfg.Secret = newSecret(tb)
	}
	if cfg.Devices == nil {
		cfg.Devices = testDevices{secret: cfg.Secret}
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	b, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := b.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

// url returns the plain listener's URL.
func (b *Broker) url() string { return "tcp://" + b.Addr() }

// dial connects a paho client (no automatic reconnection) and returns it
// with the connection error. lost, if not nil, is closed when the
// connection is lost.
func dial(tb testing.TB, url, user, pass string, tc *tls.Config, opts ...func(*mqtt.ClientOptions)) (mqtt.Client, <-chan struct{}, error) {
	tb.Helper()
	lost := make(chan struct{})
	id := uniqueName("c-")
	if user != DefaultServerUsername && record.ValidDeviceID(user) == nil {
		id = DeviceClientIDPrefix + user // the only client id a device may use
	}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetTLSConfig(tc).
		SetProtocolVersion(4).SetAutoReconnect(false).SetOrderMatters(false).
		SetConnectTimeout(30 * time.Second).
		SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
	for _, f := range opts {
		f(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		tb.Fatal("connect: no answer")
	}
	if err := tok.Error(); err != nil {
		return nil, nil, err
	}
	tb.Cleanup(func() { c.Disconnect(250) })
	return c, lost, nil
}

// mustDial is dial that fails the test on an error.
func mustDial(tb testing.TB, url, user, pass string, tc *tls.Config, opts ...func(*mqtt.ClientOptions)) (mqtt.Client, <-chan struct{}) {
	tb.Helper()
	c, lost, err := dial(tb, url, user, pass, tc, opts...)
	if err != nil {
		tb.Fatalf("connect as %q: %v", user, err)
	}
	return c, lost
}

// subscribe subscribes and returns the SUBACK code and a channel of the
// messages received (topic and payload).
func subscribe(tb testing.TB, c mqtt.Client, filter string) (byte, chan [2]string) {
	tb.Helper()
	ch := make(chan [2]string, 100)
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { ch <- [2]string{m.Topic(), string(m.Payload())} })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		tb.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	for _, code := range tok.(*mqtt.SubscribeToken).Result() { // one filter (paho keys shared ones without $share/GROUP)
		return code, ch
	}
	tb.Fatalf("subscribe %s: no result", filter)
	return 0, nil
}

// publish publishes at QoS 1 and waits for the token.
func publish(tb testing.TB, c mqtt.Client, topic, payload string, retained bool) error {
	tb.Helper()
	tok := c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(waitTimeout) {
		tb.Fatalf("publish %s: no answer", topic)
	}
	return tok.Error()
}

// next waits for the next message.
func next(tb testing.TB, ch chan [2]string) [2]string {
	tb.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitTimeout):
		tb.Fatal("no message")
		return [2]string{}
	}
}

// testDevices is the tests' DeviceAuthority: every valid device id but the
// banned ones may log in with devicePassword(secret, id) or any verified
// certificate.
type testDevices struct {
	secret []byte
	banned string
}

func (d testDevices) CheckPassword(id string, password []byte) error {
	if id == d.banned {
		return errors.New("unknown device")
	}
	if !hmac.Equal(bytes.ToLower(password), []byte(devicePassword(d.secret, id))) {
		return errors.New("wrong password")
	}
	return nil
}

func (d testDevices) CheckCertificate(id string, _ []byte) error {
	if id == d.banned {
		return errors.New("unknown device")
	}
	return nil
}

// devicePassword is the tests' password of a device:
// hex(HMAC-SHA256(secret, "farego-mqtt-v1:" + id)).
func devicePassword(secret []byte, id string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("farego-mqtt-v1:" + id))
	return hex.EncodeToString(m.Sum(nil))
}

// asDevice makes a dial use device id's client id (for a device that logs
// in with a certificate and no username).
func asDevice(id string) func(*mqtt.ClientOptions) {
	return func(o *mqtt.ClientOptions) { o.SetClientID(DeviceClientIDPrefix + id) }
}
