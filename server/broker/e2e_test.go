package broker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/uplink"
	"github.com/farego/farego/sync/wire"
)

// store is an in-memory ingest.Store: taps kept once by id.
type store struct {
	mu   sync.Mutex
	keys map[string]ed25519.PublicKey
	taps map[string]paycode.Reason
	// statuses are the last status of each device.
	statuses map[string]wire.Status
}

func (s *store) DeviceKey(_ context.Context, id string) (ed25519.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[id]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w: %s", ingest.ErrUnknownDevice, id)
}

func (s *store) Commit(_ context.Context, b *ingest.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range b.Taps {
		if _, ok := s.taps[t.ID]; !ok {
			s.taps[t.ID] = t.Verdict
		}
	}
	return nil
}

func (s *store) Status(_ context.Context, st *wire.Status) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.statuses != nil {
		s.statuses[st.DeviceID] = *st
	}
	return nil
}

// status returns the last status of device id.
func (s *store) status(id string) (wire.Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.statuses[id]
	return st, ok
}

func (s *store) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.taps)
}

// state is the uplink's StateApplier stand-in.
type state struct {
	mu       sync.Mutex
	versions map[string]uint64
}

func (s *state) Apply(kind string, version uint64, _ []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version <= s.versions[kind] {
		return fmt.Errorf("stale %s", kind)
	}
	s.versions[kind] = version
	return nil
}

func (s *state) Versions() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]uint64{}
	for k, v := range s.versions {
		out[k] = v
	}
	return out
}

func (s *state) SyncSucceeded() error { return nil }

// fleet is the server side of an end-to-end test: a store, a fleet key,
// an issuer, and the ingest and downlink publisher connected to a broker.
type fleet struct {
	store  *store
	key    ed25519.PrivateKey
	issuer *paycodetest.Issuer
	now    time.Time
}

func newFleet(t *testing.T) *fleet {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	return &fleet{store: &store{keys: map[string]ed25519.PublicKey{}, taps: map[string]paycode.Reason{}, statuses: map[string]wire.Status{}},
		key: key, issuer: paycodetest.NewIssuer(t, 7, now), now: now}
}

// run runs fn's Run until the end of the test.
func run(t *testing.T, what string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("%s did not stop", what)
		}
	})
}

// startServer runs an ingest and a downlink publisher (fare table version
// 3) with the given MQTT settings.
func (f *fleet) startServer(t *testing.T, mc ingest.MQTTConfig) *ingest.Ingest {
	mc.MaxReconnectInterval = 300 * time.Millisecond
	in, err := ingest.New(ingest.Config{
		MQTTConfig: mc, FleetKey: f.key, Logger: testLogger(t),
		Keyring: func() *paycode.Keyring { return f.issuer.Keyring },
	}, f.store)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "ingest", in.Run)
	mc.ClientID = ""
	pub, err := ingest.NewPublisher(ingest.PublisherConfig{
		MQTTConfig: mc, FleetKey: f.key, Logger: testLogger(t),
		Source: func(_ context.Context, kind string) (uint64, []byte, error) {
			if kind == record.DocFares {
				return 3, []byte(`{"fares":"…"}`), nil
			}
			return 0, nil, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "publisher", pub.Run)
	waitFor(t, "the ingest to subscribe", in.Connected)
	return in
}

// device is a validator with n taps in its queue and its uplink running.
type device struct {
	id    string
	q     *queue.Queue
	state *state
	u     *uplink.Uplink
}

// startDevice registers device id ("": a new one), fills its queue with n
// taps and runs its uplink with the configuration set makes.
func (f *fleet) startDevice(t *testing.T, id string, n int, set func(*uplink.Config)) *device {
	if id == "" {
		id = uniqueName("bus-")
	}
	d := &device{id: id, state: &state{versions: map[string]uint64{}}}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	f.store.mu.Lock()
	f.store.keys[d.id] = key.Public().(ed25519.PublicKey)
	f.store.mu.Unlock()
	q, err := queue.Open(filepath.Join(t.TempDir(), "q.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	d.q = q
	rider := f.issuer.Rider(t, 4242, f.now)
	for i := range n {
		_, err := q.AppendFunc(context.Background(), func(_ *queue.State, seq uint64) ([]byte, error) {
			at := f.now.Add(time.Duration(i) * time.Second)
			code, err := paycode.MakeCode(rider.Credential, rider.Key, at, uint16(seq))
			if err != nil {
				return nil, err
			}
			tp := record.Tap{DeviceID: d.id, Epoch: q.Epoch(), Seq: seq, Time: at, Code: code,
				Account: rider.Account, Serial: rider.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 3}
			return tp.MarshalBinary()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg := uplink.Config{
		DeviceID: d.id, DeviceKey: key, FleetPublicKey: f.key.Public().(ed25519.PublicKey),
		BatchRecords: 10, PollInterval: 50 * time.Millisecond, AckTimeout: 2 * time.Second,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, ConnectTimeout: 20 * time.Second,
		ShutdownTimeout: 20 * time.Second, Logger: testLogger(t),
	}
	set(&cfg)
	d.u, err = uplink.New(cfg, q, d.state)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "uplink", d.u.Run)
	return d
}

func (d *device) queued(t *testing.T) int {
	st, err := d.q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st.Count
}

// TestEndToEnd runs the whole link through the embedded broker with its
// access rules: validators with device passwords or certificates drain
// their queues to the ingest, which connects with the server password, and
// apply the fare table the downlink publisher keeps retained.
func TestEndToEnd(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	secret := newSecret(t)
	f := newFleet(t)
	b := startBroker(t, Config{
		Secret: secret, TLSListen: "127.0.0.1:0", TLSCertFile: p.ServerCertFile, TLSKeyFile: p.ServerKeyFile, ClientCAFile: p.CAFile,
		Devices: testDevices{secret: secret},
	})
	f.startServer(t, ingest.MQTTConfig{Brokers: []string{b.url()}, Username: DefaultServerUsername, Password: ServerPassword(secret)})

	plain := f.startDevice(t, "", 60, func(c *uplink.Config) {
		c.Brokers = []string{b.url()}
		c.Username, c.Password = c.DeviceID, devicePassword(secret, c.DeviceID)
	})
	withCert := f.startDevice(t, "", 40, func(c *uplink.Config) {
		c.Brokers = []string{"ssl://" + b.TLSAddr()}
		c.TLS = p.ClientTLS(t, c.DeviceID)
	})
	for _, d := range []*device{plain, withCert} {
		waitFor(t, "the queue of "+d.id+" to drain", func() bool { return d.queued(t) == 0 })
		waitFor(t, "the fare table applied on "+d.id, func() bool { return d.state.Versions()[record.DocFares] == 3 })
	}
	if n := f.store.count(); n != 100 {
		t.Errorf("store has %d taps, want 100", n)
	}
	if st := b.Stats(); st.Denied != 0 || st.MessagesDropped != 0 || st.InflightDropped != 0 {
		t.Errorf("broker stats %+v, want nothing denied or dropped", st)
	}
}

// TestStatusCarriesCertEnd: a validator with a client certificate says
// when it ends in its status, through the embedded broker's TLS listener
// to the ingest, so the operator sees it before the broker refuses the
// device; one logged in with a password says none.
func TestStatusCarriesCertEnd(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	secret := newSecret(t)
	f := newFleet(t)
	b := startBroker(t, Config{
		Secret: secret, TLSListen: "127.0.0.1:0", TLSCertFile: p.ServerCertFile, TLSKeyFile: p.ServerKeyFile, ClientCAFile: p.CAFile,
		Devices: testDevices{secret: secret},
	})
	f.startServer(t, ingest.MQTTConfig{Brokers: []string{b.url()}, Username: DefaultServerUsername, Password: ServerPassword(secret)})
	var leaf *x509.Certificate
	withCert := f.startDevice(t, "", 0, func(c *uplink.Config) {
		c.Brokers = []string{"ssl://" + b.TLSAddr()}
		c.TLS = p.ClientTLS(t, c.DeviceID)
		var err error
		if leaf, err = x509.ParseCertificate(c.TLS.Certificates[0].Certificate[0]); err != nil {
			t.Fatal(err)
		}
	})
	plain := f.startDevice(t, "", 0, func(c *uplink.Config) {
		c.Brokers = []string{b.url()}
		c.Username, c.Password = c.DeviceID, devicePassword(secret, c.DeviceID)
	})
	var got wire.Status
	waitFor(t, "the status of "+withCert.id, func() bool {
		var ok bool
		got, ok = f.store.status(withCert.id)
		return ok && got.Online
	})
	if !got.CertNotAfter.Equal(leaf.NotAfter) {
		t.Errorf("status of the device with a certificate: cert_not_after %v, want its certificate's %v", got.CertNotAfter, leaf.NotAfter)
	}
	waitFor(t, "the status of "+plain.id, func() bool {
		var ok bool
		got, ok = f.store.status(plain.id)
		return ok && got.Online
	})
	if !got.CertNotAfter.IsZero() {
		t.Errorf("status of the device with a password: cert_not_after %v, want none", got.CertNotAfter)
	}
}

// TestEndToEndImpostor: a device that logs in with another device's
// credentials is refused (its last will, its own status topic, is not the
// other device's), and nothing of it is committed.
func TestEndToEndImpostor(t *testing.T) {
	secret := newSecret(t)
	f := newFleet(t)
	b := startBroker(t, Config{Secret: secret})
	f.startServer(t, ingest.MQTTConfig{Brokers: []string{b.url()}, Username: DefaultServerUsername, Password: ServerPassword(secret)})
	victim := uniqueName("bus-")
	d := f.startDevice(t, "", 5, func(c *uplink.Config) {
		c.Brokers = []string{b.url()}
		c.Username, c.Password = victim, devicePassword(secret, victim) // valid credentials of another device
	})
	waitFor(t, "refused connections", func() bool { return b.Stats().Refused >= 2 })
	if n := f.store.count(); n != 0 {
		t.Errorf("store has %d taps of an impostor", n)
	}
	if n := d.queued(t); n != 5 {
		t.Errorf("impostor's queue has %d records, want all 5", n)
	}
}

// TestIngestRefusedSubscriptions: an ingest connecting with a device's
// credentials has its subscriptions refused; it keeps trying and never
// reports itself ready.
func TestIngestRefusedSubscriptions(t *testing.T) {
	secret := newSecret(t)
	f := newFleet(t)
	b := startBroker(t, Config{Secret: secret})
	in, err := ingest.New(ingest.Config{
		MQTTConfig: ingest.MQTTConfig{Brokers: []string{b.url()}, Username: "bus-1", Password: devicePassword(secret, "bus-1"),
			ClientID: DeviceClientIDPrefix + "bus-1", MaxReconnectInterval: 100 * time.Millisecond},
		FleetKey: f.key, Logger: testLogger(t), Keyring: func() *paycode.Keyring { return f.issuer.Keyring },
	}, f.store)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "ingest", in.Run)
	waitFor(t, "subscriptions refused again and again", func() bool { return b.Stats().Denied >= 6 })
	if in.Connected() {
		t.Error("the ingest says it is subscribed")
	}
}
