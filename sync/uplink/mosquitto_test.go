package uplink

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/wire"
)

// TestMosquittoDrain runs the drain scenario against the Mosquitto named by
// FAREGO_TEST_MOSQUITTO (for example tcp://127.0.0.1:1883), under a topic
// prefix of its own.
func TestMosquittoDrain(t *testing.T) {
	url := brokertest.MosquittoURL(t)
	f := newFixture(t, nil)
	f.prefix = uniqueName("farego-test-")
	f.cfg.TopicPrefix = f.prefix
	f.cfg.Brokers = []string{url}
	srv := newTestServer(t, serverOptions{url: url}, f.prefix, f.fleet, map[string]ed25519.PublicKey{f.id: pubOf(f.dev)})
	appendTaps(t, f.q, f.taps, 400)
	u := f.start()
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	srv.check(t, f.id, 400)
	if err := u.stop(); err != nil {
		t.Fatal(err)
	}
	clearRetained(t, serverOptions{url: url}, f.topic(wire.KindStatus))
}

// clearRetained removes a retained message from a broker that keeps it
// beyond the test (Mosquitto with persistence).
func clearRetained(tb testing.TB, so serverOptions, topic string) {
	tb.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(so.url).SetClientID(uniqueName("clean-")).SetTLSConfig(so.tls))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		tb.Errorf("clear retained: connect: %v", tok.Error())
		return
	}
	defer c.Disconnect(250)
	if tok := c.Publish(topic, 1, true, []byte{}); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		tb.Errorf("clear retained: %v", tok.Error())
	}
}

// mosquittoACL is the README's access-control example: devices are known by
// their certificate's common name (use_identity_as_username).
const mosquittoACL = `# Devices: the client certificate's CN is the device id.
pattern write farego/dev/%u/taps
pattern write farego/dev/%u/status
pattern read  farego/dev/%u/ack
pattern read  farego/dev/%u/cmd
pattern read  farego/fleet/#

# The settlement server (certificate CN "settlement").
user settlement
topic read  farego/dev/+/taps
topic read  farego/dev/+/status
topic write farego/dev/+/ack
topic write farego/dev/+/cmd
topic write farego/fleet/#
`

// startMosquitto starts a mosquitto of its own on a free port with mutual
// TLS and the README's ACL, stopped at the end of the test.
func startMosquitto(t *testing.T, pki *brokertest.PKI) string {
	t.Helper()
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{Config: func(m *brokertest.Mosquitto) string {
		acl := filepath.Join(m.Dir, "acl")
		if err := os.WriteFile(acl, []byte(mosquittoACL), 0o600); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(`persistence false
listener %s 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
allow_anonymous false
acl_file %s
max_queued_messages 100000
`, m.Ports[0], pki.CAFile, pki.ServerCertFile, pki.ServerKeyFile, acl)
	}})
	return "ssl://" + m.Addrs[0]
}

// TestMosquittoTLSACL starts a mosquitto of its own with mutual TLS and the
// README's ACL: a device drains through it, and a device whose certificate
// names another device is refused its subscriptions.
func TestMosquittoTLSACL(t *testing.T) {
	f := newFixture(t, nil)
	pki := brokertest.NewPKI(t, f.id)
	url := startMosquitto(t, pki)
	serverTLS := pki.ClientTLS(t, "settlement")

	f.cfg.Brokers = []string{url}
	f.cfg.CAFile, f.cfg.CertFile, f.cfg.KeyFile = pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile
	srv := newTestServer(t, serverOptions{url: url, tls: serverTLS}, f.prefix, f.fleet, map[string]ed25519.PublicKey{f.id: pubOf(f.dev)})
	appendTaps(t, f.q, f.taps, 300)
	u := f.start()
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	srv.check(t, f.id, 300)
	if err := u.stop(); err != nil {
		t.Fatal(err)
	}

	// A device presenting another device's certificate gets connected, but
	// the ACL keeps it to that device's topics: its taps never reach the
	// server (Mosquitto drops denied publishes and grants denied
	// subscriptions without delivering), so nothing is acked or deleted.
	t.Run("certificate of another device", func(t *testing.T) {
		g := newFixture(t, nil)
		g.cfg.Brokers = []string{url}
		g.cfg.AckTimeout = 200 * time.Millisecond
		g.cfg.CAFile, g.cfg.CertFile, g.cfg.KeyFile = pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile // f's
		srv.addDevice(g.id, pubOf(g.dev))
		appendTaps(t, g.q, g.taps, 20)
		u := g.start()
		waitFor(t, "sends without acks", func() bool { return u.Stats().AckTimeouts >= 2 })
		if n := queueCount(t, g.q); n != 20 {
			t.Errorf("queue has %d records, want all 20 (no ack possible)", n)
		}
		if n := srv.times(tapKey(g.id, 1)); n != 0 {
			t.Errorf("server received a tap of the impostor %d times", n)
		}
	})
}
