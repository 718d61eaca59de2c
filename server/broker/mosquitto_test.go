package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/uplink"
)

// sampleDir holds the Mosquitto sample configuration and ACL.
var sampleDir = filepath.Join("..", "..", "testdata", "broker")

// mosquittoSample starts a Mosquitto of its own with the sample
// configuration and ACL of testdata/broker (ports, files and persistence
// changed for the test), a password file for the given users, and the
// test's PKI on its TLS listener. It returns the plain and TLS URLs.
func mosquittoSample(t *testing.T, p *brokertest.PKI, users map[string]string) (plainURL, tlsURL string) {
	t.Helper()
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{Listeners: 2, Users: users, Config: func(m *brokertest.Mosquitto) string {
		acl, err := filepath.Abs(filepath.Join(sampleDir, "acl"))
		if err != nil {
			t.Fatal(err)
		}
		sample, err := os.ReadFile(filepath.Join(sampleDir, "mosquitto.conf"))
		if err != nil {
			t.Fatal(err)
		}
		plainPort, tlsPort := m.Ports[0], m.Ports[1]
		conf := strings.NewReplacer(
			"/etc/mosquitto/farego.passwd", m.PasswordFile,
			"/etc/mosquitto/farego.acl", acl,
			"/etc/mosquitto/farego-ca.pem", p.CAFile,
			"/etc/mosquitto/broker.pem", p.ServerCertFile,
			"/etc/mosquitto/broker-key.pem", p.ServerKeyFile,
			"listener 1883 127.0.0.1", "listener "+plainPort+" 127.0.0.1",
			"listener 8883\n", "listener "+tlsPort+" 127.0.0.1\n",
			"persistence true", "persistence false",
			"persistence_location /var/lib/mosquitto/\n", "",
		).Replace(string(sample))
		for _, must := range []string{m.PasswordFile, acl, p.CAFile, "listener " + plainPort, "listener " + tlsPort, "persistence false"} {
			if !strings.Contains(conf, must) {
				t.Fatalf("the sample configuration changed: %q not substituted", must)
			}
		}
		return conf
	}})
	return "tcp://" + m.Addrs[0], "ssl://" + m.Addrs[1]
}

// TestMosquittoSample runs the end-to-end scenario and the access rules
// against Mosquitto configured with testdata/broker's sample: the server
// with its password and a shared subscription, one device with its
// password, one with a certificate.
func TestMosquittoSample(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	secret := newSecret(t)
	f := newFleet(t)
	devP, devA, devB := uniqueName("bus-"), uniqueName("bus-"), uniqueName("bus-")
	users := map[string]string{DefaultServerUsername: ServerPassword(secret)}
	for _, d := range []string{devP, devA, devB} {
		users[d] = devicePassword(secret, d)
	}
	plainURL, tlsURL := mosquittoSample(t, p, users)
	f.startServer(t, ingest.MQTTConfig{Brokers: []string{plainURL}, Username: DefaultServerUsername, Password: ServerPassword(secret)})

	withPassword := f.startDevice(t, devP, 50, func(c *uplink.Config) {
		c.Brokers = []string{plainURL}
		c.Username, c.Password = c.DeviceID, devicePassword(secret, c.DeviceID)
	})
	withCert := f.startDevice(t, "", 30, func(c *uplink.Config) {
		c.Brokers = []string{tlsURL}
		c.TLS = p.ClientTLS(t, c.DeviceID)
	})
	for _, d := range []*device{withPassword, withCert} {
		waitFor(t, "the queue of "+d.id+" to drain", func() bool { return d.queued(t) == 0 })
		waitFor(t, "the fare table applied on "+d.id, func() bool { return d.state.Versions()[record.DocFares] == 3 })
	}
	if n := f.store.count(); n != 80 {
		t.Errorf("store has %d taps, want 80", n)
	}

	// Passwords: right ones in, wrong ones out.
	a, _ := mustDial(t, plainURL, devA, devicePassword(secret, devA), nil)
	if _, _, err := dial(t, plainURL, devA, devicePassword(secret, devB), nil); err == nil {
		t.Error("Mosquitto accepted a wrong password")
	}
	if _, _, err := dial(t, plainURL, "", "", nil); err == nil {
		t.Error("Mosquitto accepted an anonymous client")
	}

	// A server-side spy with ordered delivery sees every taps and fleet
	// publication.
	spyClient, _ := mustDial(t, plainURL, DefaultServerUsername, ServerPassword(secret), nil,
		func(o *mqtt.ClientOptions) { o.SetOrderMatters(true) })
	_, spy := subscribe(t, spyClient, "farego/#")

	// devB never sees devA's acks, only its own.
	b, _ := mustDial(t, plainURL, devB, devicePassword(secret, devB), nil)
	_, peek := subscribe(t, b, "farego/dev/"+devA+"/ack")
	_, own := subscribe(t, b, "farego/dev/"+devB+"/ack")
	for _, d := range []string{devA, devB} {
		if err := publish(t, spyClient, "farego/dev/"+d+"/ack", "ack-"+d, false); err != nil {
			t.Fatal(err)
		}
	}
	if m := next(t, own); m[1] != "ack-"+devB {
		t.Errorf("devB got %q on its ack topic", m)
	}

	// devA's publications as devB or as the fleet reach nobody (Mosquitto
	// drops them); its own batch, sent after them, does.
	for _, topic := range []string{"farego/dev/" + devB + "/taps", "farego/fleet/keyring"} {
		if err := publish(t, a, topic, "forged", true); err != nil {
			t.Logf("forged publication on %s: %v", topic, err)
		}
	}
	if err := publish(t, a, "farego/dev/"+devA+"/taps", "marker", false); err != nil {
		t.Fatal(err)
	}
	for {
		m := next(t, spy)
		if m[1] == "marker" {
			break
		}
		if m[1] == "forged" {
			t.Errorf("forged publication delivered on %s", m[0])
		}
	}
	select {
	case m := <-peek:
		t.Errorf("devB read devA's ack %q", m)
	default:
	}
}
