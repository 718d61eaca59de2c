package broker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
// test's PKI on its TLS listeners. It returns the URLs of the plain
// listener (the server's), the mutual-TLS one and the TLS one with
// passwords (the devices').
func mosquittoSample(t *testing.T, p *brokertest.PKI, users map[string]string) (plainURL, tlsURL, pwURL string) {
	t.Helper()
	u := mosquittoSampleURLs(t, p, users)
	return u.plain, u.tls, u.pw
}

// sampleURLs are the listeners of the Mosquitto sample: plain (the
// server's, on the broker's host), tls (devices, mutual TLS), pw (devices,
// TLS with passwords) and servers (settlement instances on other hosts,
// TLS with passwords).
type sampleURLs struct{ plain, tls, pw, servers string }

// mosquittoSampleURLs is mosquittoSample with every listener's URL.
func mosquittoSampleURLs(t *testing.T, p *brokertest.PKI, users map[string]string) sampleURLs {
	t.Helper()
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{Listeners: 4, Users: users, Config: func(m *brokertest.Mosquitto) string {
		acl, err := filepath.Abs(filepath.Join(sampleDir, "acl"))
		if err != nil {
			t.Fatal(err)
		}
		sample, err := os.ReadFile(filepath.Join(sampleDir, "mosquitto.conf"))
		if err != nil {
			t.Fatal(err)
		}
		plainPort, tlsPort, pwPort, serversPort := m.Ports[0], m.Ports[1], m.Ports[2], m.Ports[3]
		conf := strings.NewReplacer(
			"/etc/mosquitto/farego.passwd", m.PasswordFile,
			"/etc/mosquitto/farego.acl", acl,
			"/etc/mosquitto/farego-ca.pem", p.CAFile,
			"/etc/mosquitto/broker.pem", p.ServerCertFile,
			"/etc/mosquitto/broker-key.pem", p.ServerKeyFile,
			"listener 1883 127.0.0.1", "listener "+plainPort+" 127.0.0.1",
			"listener 8883\n", "listener "+tlsPort+" 127.0.0.1\n",
			"listener 8884\n", "listener "+pwPort+" 127.0.0.1\n",
			"listener 8885\n", "listener "+serversPort+" 127.0.0.1\n",
			"persistence true", "persistence false",
			"persistence_location /var/lib/mosquitto/\n", "",
		).Replace(string(sample))
		for _, must := range []string{m.PasswordFile, acl, p.CAFile, "listener " + plainPort, "listener " + tlsPort, "listener " + pwPort, "listener " + serversPort, "persistence false"} {
			if !strings.Contains(conf, must) {
				t.Fatalf("the sample configuration changed: %q not substituted", must)
			}
		}
		return conf
	}})
	return sampleURLs{"tcp://" + m.Addrs[0], "ssl://" + m.Addrs[1], "ssl://" + m.Addrs[2], "ssl://" + m.Addrs[3]}
}

// TestMosquittoSampleServersOverTLS connects settlement instances to the
// sample Mosquitto as the README's several-instances guide has them on
// hosts of their own: over TLS, as farego-server with its password. Each
// instance has two clients (ingest and downlink publisher) with client ids
// of their own, and every one must stay connected beside the others. On
// the devices' TLS listeners the username becomes the client id, so each
// farego-server client threw the one before it off (a live run: three
// instances' ingest and publisher reconnecting every second or two, acks
// refused "not connected to the broker").
func TestMosquittoSampleServersOverTLS(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	secret := newSecret(t)
	u := mosquittoSampleURLs(t, p, map[string]string{DefaultServerUsername: ServerPassword(secret)})
	tc := p.ClientTLS(t, "")
	first, lost := mustDial(t, u.servers, DefaultServerUsername, ServerPassword(secret), tc)
	_, probe := subscribe(t, first, "farego/fleet/probe")
	second, _ := mustDial(t, u.servers, DefaultServerUsername, ServerPassword(secret), tc)
	if err := publish(t, second, "farego/fleet/probe", "from the second client", false); err != nil {
		t.Fatalf("the second server client cannot publish: %v", err)
	}
	select {
	case <-lost:
		t.Fatal("the first server client was disconnected when a second one logged in as farego-server: " +
			"the listener makes the username the client id, so an instance's ingest and publisher (and every other instance's) take each other's place")
	case m := <-probe:
		if m[1] != "from the second client" {
			t.Fatalf("the first server client got %q", m)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the first server client got nothing the second published")
	}
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
	plainURL, tlsURL, pwURL := mosquittoSample(t, p, users)
	f.startServer(t, ingest.MQTTConfig{Brokers: []string{plainURL}, Username: DefaultServerUsername, Password: ServerPassword(secret)})

	withPassword := f.startDevice(t, devP, 50, func(c *uplink.Config) {
		c.Brokers = []string{pwURL}
		c.TLS = p.ClientTLS(t, "")
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
	devTLS := p.ClientTLS(t, "")
	a, _ := mustDial(t, pwURL, devA, devicePassword(secret, devA), devTLS)
	if _, _, err := dial(t, pwURL, devA, devicePassword(secret, devB), devTLS); err == nil {
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
	b, _ := mustDial(t, pwURL, devB, devicePassword(secret, devB), devTLS)
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

// TestMosquittoSampleAttacks runs issue 12's broker attacks against a
// Mosquitto with the sample configuration: a device cannot squat another
// device's client id, hold more than one session, take batches from the
// settlement group with a shared subscription, read another device's
// topics, or pass a packet over 400 KiB.
func TestMosquittoSampleAttacks(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	secret := newSecret(t)
	victim, thief := uniqueName("bus-"), uniqueName("bus-")
	users := map[string]string{DefaultServerUsername: ServerPassword(secret)}
	for _, d := range []string{victim, thief} {
		users[d] = devicePassword(secret, d)
	}
	plainURL, tlsURL, pwURL := mosquittoSample(t, p, users)
	devTLS := p.ClientTLS(t, "")
	srv, _ := mustDial(t, plainURL, DefaultServerUsername, ServerPassword(secret), nil)
	_, group := subscribe(t, srv, "$share/"+SharedGroup(secret)+"/farego/dev/+/taps")

	// Squatting: the thief connects with the victim's client id (with its
	// password, and with its certificate): Mosquitto makes the client id
	// the thief's own, so the victim is not disconnected (with client ids
	// of the clients' choosing, each of these would take the victim's
	// session over).
	v, vLost := mustDial(t, pwURL, victim, devicePassword(secret, victim), devTLS)
	for _, id := range []string{DeviceClientIDPrefix + victim, victim} {
		asVictim := func(o *mqtt.ClientOptions) { o.SetClientID(id) }
		mustDial(t, pwURL, thief, devicePassword(secret, thief), devTLS, asVictim)
		mustDial(t, tlsURL, "", "", p.ClientTLS(t, thief), asVictim)
	}

	// Sessions: whatever client id the thief asks for, it has one session:
	// a new connection takes the last one over.
	var lost []<-chan struct{}
	for i := range 3 {
		_, l := mustDial(t, pwURL, thief, devicePassword(secret, thief), devTLS, func(o *mqtt.ClientOptions) {
			o.SetClientID(fmt.Sprintf("spare-%d", i)).SetCleanSession(false)
		})
		lost = append(lost, l)
	}
	for i, l := range lost[:2] {
		select {
		case <-l:
		case <-time.After(waitTimeout):
			t.Errorf("the thief's session %d stayed up beside a newer one", i)
		}
	}
	thiefC, thiefLost := mustDial(t, pwURL, thief, devicePassword(secret, thief), devTLS)

	// Theft: Mosquitto 2's acl_file does not check subscriptions, only
	// deliveries, so the thief's shared subscriptions succeed; but the
	// servers' group is derived from the broker secret (SharedGroup), so
	// the thief's groups are groups of their own: denied delivery, they
	// take nothing. Its wildcards on other devices' topics get nothing
	// either, and the server gets every batch of the victim.
	stolen := make(chan [2]string, 100)
	for _, f := range []string{"$share/settlement/farego/dev/+/taps", "$share/settlement/farego/dev/" + victim + "/taps",
		"$share/farego/farego/dev/+/taps",
		"farego/dev/+/taps", "farego/dev/" + victim + "/ack", "farego/#"} {
		tok := thiefC.Subscribe(f, 1, func(_ mqtt.Client, m mqtt.Message) { stolen <- [2]string{m.Topic(), string(m.Payload())} })
		tok.WaitTimeout(waitTimeout)
	}
	const n = 8
	for i := range n {
		if err := publish(t, v, "farego/dev/"+victim+"/taps", fmt.Sprint("batch-", i), false); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]bool{}
	for range n {
		got[next(t, group)[1]] = true
	}
	for i := range n {
		if !got[fmt.Sprint("batch-", i)] {
			t.Errorf("the settlement group did not get batch-%d (got %v)", i, got)
		}
	}
	if err := publish(t, srv, "farego/dev/"+victim+"/ack", "ack", false); err != nil {
		t.Fatal(err)
	}
	// A marker on the fleet topics, which the thief may read, comes after
	// everything it might have stolen.
	if err := publish(t, srv, "farego/fleet/marker", "marker", false); err != nil {
		t.Fatal(err)
	}
	for m := next(t, stolen); m[1] != "marker"; m = next(t, stolen) {
		t.Errorf("the thief got %q on %s", m[1], m[0])
	}

	// Oversize: a packet over max_packet_size disconnects the device and
	// reaches nobody.
	thiefC.Publish("farego/dev/"+thief+"/taps", 1, false, strings.Repeat("x", DefaultMaxPacketSize))
	select {
	case <-thiefLost:
	case <-time.After(waitTimeout):
		t.Error("Mosquitto kept a device that sent an oversize packet")
	}
	if err := publish(t, v, "farego/dev/"+victim+"/taps", "after", false); err != nil {
		t.Fatal(err)
	}
	if m := next(t, group); m[1] != "after" {
		t.Errorf("the settlement group got %d bytes on %s, want the victim's next batch", len(m[1]), m[0])
	}
	select {
	case <-vLost:
		t.Error("the victim was disconnected")
	default:
	}
}
