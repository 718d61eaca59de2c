package ingest

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/wire"
)

// waitTimeout bounds every wait for an event in these tests. It is
// generous: other engineers run tests on the same 2-core machine.
const waitTimeout = 90 * time.Second

// TestMain fails the run if goroutines of paho, mochi or this package are
// still running once every test is done (after a grace period: paho
// finishes some of its work in goroutines after Disconnect returns).
func TestMain(m *testing.M) {
	os.Exit(brokertest.LeakCheck(m, 15*time.Second, "sync/ingest.(*", "sync/uplink.(*"))
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	brokertest.WaitFor(tb, waitTimeout, what, cond)
}

// testLogger writes to the test log when verbose.
func testLogger(tb testing.TB) *slog.Logger { return brokertest.Logger(tb) }

func newKey(tb testing.TB) ed25519.PrivateKey { return brokertest.NewKey(tb) }

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func uniqueName(prefix string) string { return brokertest.UniqueName(prefix) }

// memStore is the Store stand-in with the ledger's semantics that matter
// here: device keys, taps kept once by tap id (the first commit wins), and
// statuses. It can be told to fail commits.
type memStore struct {
	mu        sync.Mutex
	keys      map[string]ed25519.PublicKey
	taps      map[string]Tap // by tap id
	received  int            // taps in successful commits, duplicates included
	commits   int            // successful Commit calls
	attempts  int            // Commit calls
	failFirst int            // Commit calls still to fail
	statuses  map[string]*wire.Status
	keyErr    error        // returned by DeviceKey when set
	onCommit  func(*Batch) // called first by Commit, without the lock
}

var errInjected = errors.New("memstore: injected failure")

func newMemStore() *memStore {
	return &memStore{keys: map[string]ed25519.PublicKey{}, taps: map[string]Tap{}, statuses: map[string]*wire.Status{}}
}

var _ Store = (*memStore)(nil)

func (s *memStore) addDevice(id string, pub ed25519.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[id] = pub
}

func (s *memStore) DeviceKey(_ context.Context, id string) (ed25519.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keyErr != nil {
		return nil, s.keyErr
	}
	k, ok := s.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownDevice, id)
	}
	return k, nil
}

// holdCommits makes every Commit wait until release is called; entered
// gets a value as each one starts waiting.
func (s *memStore) holdCommits() (entered <-chan struct{}, release func()) {
	block := make(chan struct{})
	e := make(chan struct{}, 100)
	s.mu.Lock()
	s.onCommit = func(*Batch) {
		e <- struct{}{}
		<-block
	}
	s.mu.Unlock()
	return e, func() {
		s.mu.Lock()
		s.onCommit = nil
		s.mu.Unlock()
		close(block)
	}
}

func (s *memStore) Commit(_ context.Context, b *Batch) error {
	s.mu.Lock()
	hook := s.onCommit
	s.mu.Unlock()
	if hook != nil {
		hook(b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if s.failFirst > 0 {
		s.failFirst--
		return errInjected
	}
	for _, t := range b.Taps {
		if t.ID != record.TapID(b.DeviceID, b.Epoch, t.Seq) {
			return fmt.Errorf("memstore: tap id %q for %s/%s/%d", t.ID, b.DeviceID, b.Epoch, t.Seq)
		}
		if _, ok := s.taps[tapKey(b.DeviceID, t.Seq)]; !ok {
			s.taps[tapKey(b.DeviceID, t.Seq)] = t
		}
	}
	s.received += len(b.Taps)
	s.commits++
	return nil
}

func (s *memStore) Status(_ context.Context, st *wire.Status) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses[st.DeviceID] = st
	return nil
}

func (s *memStore) tapCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.taps)
}

func (s *memStore) tap(id string) (Tap, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.taps[id]
	return t, ok
}

func (s *memStore) counts() (attempts, commits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts, s.commits
}

func (s *memStore) status(id string) *wire.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statuses[id]
}

// checkTaps fails the test unless the store has exactly the taps
// device/1..n, each with verdict "".
func (s *memStore) checkTaps(tb testing.TB, device string, n int) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	got := 0
	for seq := 1; seq <= n; seq++ {
		t, ok := s.taps[tapKey(device, uint64(seq))]
		if !ok {
			tb.Errorf("tap %s not committed", tapKey(device, uint64(seq)))
			continue
		}
		got++
		if t.Verdict != "" {
			tb.Errorf("tap %s verdict %q, want valid", t.ID, t.Verdict)
		}
	}
	for id := range s.taps {
		if strings.HasPrefix(id, device+"/") {
			got--
		}
	}
	if got != 0 {
		tb.Errorf("store has taps of %s beyond 1..%d", device, n)
	}
}

// world is a broker, a fleet key, an issuer and a store: what one or more
// ingest instances and devices share.
type world struct {
	tb     testing.TB
	url    string // broker URL
	broker *brokertest.Broker
	prefix string
	fleet  ed25519.PrivateKey
	issuer *paycodetest.Issuer
	store  *memStore
	now    time.Time
}

// newWorld starts an in-process broker (or uses the Mosquitto at url, if
// given; none if url is "nobroker") under a topic prefix of its own.
func newWorld(tb testing.TB, url string) *world {
	tb.Helper()
	now := time.Now()
	w := &world{tb: tb, prefix: uniqueName("ft-"), fleet: newKey(tb), issuer: paycodetest.NewIssuer(tb, 7, now),
		store: newMemStore(), now: now, url: url}
	switch url {
	case "":
		w.broker = brokertest.Start(tb, nil)
		w.url = w.broker.URL()
	case "nobroker":
		w.url = "tcp://127.0.0.1:1" // never connected
	}
	return w
}

// config returns an ingest configuration for the world, fast for tests.
func (w *world) config() Config {
	return Config{
		MQTTConfig: MQTTConfig{
			Brokers: []string{w.url}, ClientID: uniqueName("ingest-"),
			ConnectTimeout: 20 * time.Second, MaxReconnectInterval: 300 * time.Millisecond,
		},
		TopicPrefix:    w.prefix,
		FleetKey:       w.fleet,
		Keyring:        func() *paycode.Keyring { return w.issuer.Keyring },
		PublishTimeout: 30 * time.Second,
		Logger:         testLogger(w.tb),
	}
}

// running is an Ingest whose Run is going.
// stop cancels Run and returns its result; stopping again returns nil.
func (r *running) stop() error { return r.run.Stop(waitTimeout) }

type running struct {
	*Ingest
	run *brokertest.Running
}

// start runs an Ingest with cfg until stop or the end of the test, and
// waits until it is subscribed.
func (w *world) start(cfg Config) *running {
	w.tb.Helper()
	in, err := New(cfg, w.store)
	if err != nil {
		w.tb.Fatal(err)
	}
	r := &running{Ingest: in, run: brokertest.Go(w.tb, waitTimeout, in.Run)}
	waitFor(w.tb, "the ingest to subscribe", in.Connected)
	return r
}

// device is a validator stand-in that publishes signed batches with a bare
// paho client and collects the fleet-signed acks for it.
type device struct {
	w      *world
	id     string
	key    ed25519.PrivateKey
	epoch  string
	riders []*paycodetest.Rider
	c      mqtt.Client
	acks   chan *wire.Ack
	bad    atomic.Int64 // messages on the ack topic that did not verify
}

// newDevice registers (unless unregistered) a device and connects it.
func (w *world) newDevice(registered bool) *device {
	w.tb.Helper()
	d := &device{w: w, id: uniqueName("bus-"), key: newKey(w.tb), epoch: uniqueName("ep-"), acks: make(chan *wire.Ack, 1000)}
	for i := range 4 {
		d.riders = append(d.riders, w.issuer.Rider(w.tb, uint64(5000+i), w.now))
	}
	if registered {
		w.store.addDevice(d.id, pubOf(d.key))
	}
	o := mqtt.NewClientOptions().AddBroker(w.url).SetClientID(uniqueName("dev-")).SetOrderMatters(false).SetAutoReconnect(false)
	d.c = mqtt.NewClient(o)
	if tok := d.c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		w.tb.Fatalf("device connect: %v", tok.Error())
	}
	w.tb.Cleanup(func() { d.c.Disconnect(250) })
	fleet := pubOf(w.fleet)
	tok := d.c.Subscribe(d.topic(wire.KindAck), 1, func(_ mqtt.Client, m mqtt.Message) {
		p, err := wire.Open(m.Payload(), wire.TypeAck, fleet)
		var a *wire.Ack
		if err == nil {
			a, err = wire.ParseAck(p)
		}
		if err != nil || a.DeviceID != d.id {
			d.bad.Add(1)
			return
		}
		d.acks <- a
	})
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		w.tb.Fatalf("device subscribe: %v", tok.Error())
	}
	return d
}

func (d *device) topic(kind string) string { return wire.Topics{Prefix: d.w.prefix}.Device(d.id, kind) }

// tap returns the encoded record seq with a code made at codeAt and the
// tap at tapAt (the code is valid when tapAt is shortly after codeAt).
func (d *device) tap(seq uint64, codeAt, tapAt time.Time) []byte {
	d.w.tb.Helper()
	r := d.riders[seq%uint64(len(d.riders))]
	code, err := paycode.MakeCode(r.Credential, r.Key, codeAt, uint16(seq))
	if err != nil {
		d.w.tb.Fatal(err)
	}
	return d.record(seq, code, r, tapAt)
}

// record encodes a tap record around a code.
func (d *device) record(seq uint64, code []byte, r *paycodetest.Rider, at time.Time) []byte {
	d.w.tb.Helper()
	t := record.Tap{
		DeviceID: d.id, Epoch: d.epoch, Seq: seq, Time: at, Route: "R12", Vehicle: "BUS-7", Scanner: "front",
		Code: code, Account: r.Account, Serial: r.Serial, Profile: paycode.Adult,
		Fare: 250, Currency: "EUR", FareVersion: 1, KeyringVersion: 1, Software: "test",
	}
	b, err := t.MarshalBinary()
	if err != nil {
		d.w.tb.Fatal(err)
	}
	return b
}

// validTap is tap(seq) with a code made 10 s before the tap, a minute ago.
func (d *device) validTap(seq uint64) []byte {
	at := d.w.now.Add(-time.Minute)
	return d.tap(seq, at.Add(-10*time.Second), at)
}

// batch seals records (seq → data) into a batch message signed with key
// (the device's own if nil).
func (d *device) batch(key ed25519.PrivateKey, recs ...wire.Record) []byte {
	d.w.tb.Helper()
	if key == nil {
		key = d.key
	}
	b := wire.Batch{DeviceID: d.id, Epoch: d.epoch, SentAt: time.Now(), Records: recs}
	p, err := b.MarshalBinary()
	if err != nil {
		d.w.tb.Fatal(err)
	}
	msg, err := wire.Seal(wire.TypeBatch, p, true, key)
	if err != nil {
		d.w.tb.Fatal(err)
	}
	return msg
}

// validBatch returns a batch of valid records from..to.
func (d *device) validBatch(from, to uint64) []byte {
	var recs []wire.Record
	for seq := from; seq <= to; seq++ {
		recs = append(recs, wire.Record{Seq: seq, Data: d.validTap(seq)})
	}
	return d.batch(nil, recs...)
}

func (d *device) publish(topic string, msg []byte) {
	d.w.tb.Helper()
	if tok := d.c.Publish(topic, 1, false, msg); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		d.w.tb.Fatalf("device publish: %v", tok.Error())
	}
}

// nextAck waits for the next ack.
func (d *device) nextAck() *wire.Ack {
	d.w.tb.Helper()
	select {
	case a := <-d.acks:
		return a
	case <-time.After(waitTimeout):
		d.w.tb.Fatalf("no ack for %s", d.id)
		return nil
	}
}

// noAck fails the test if an ack is waiting.
func (d *device) noAck() {
	d.w.tb.Helper()
	select {
	case a := <-d.acks:
		d.w.tb.Errorf("unexpected ack %+v", a)
	default:
	}
	if n := d.bad.Load(); n > 0 {
		d.w.tb.Errorf("%d messages on the ack topic did not verify", n)
	}
}

// seqsOf lists the seqs that ack ranges cover.
func seqsOf(rs []wire.Range) []uint64 {
	var out []uint64
	for _, r := range rs {
		for s := r.From; s <= r.To; s++ {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// clearRetained removes a retained message from a broker that keeps it
// beyond the test (Mosquitto with persistence).
func clearRetained(tb testing.TB, url string, topics ...string) {
	tb.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(uniqueName("clean-")).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		tb.Errorf("clear retained: connect: %v", tok.Error())
		return
	}
	defer c.Disconnect(250)
	for _, topic := range topics {
		if tok := c.Publish(topic, 1, true, []byte{}); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			tb.Errorf("clear retained: %v", tok.Error())
		}
	}
}

// tapKey is the memStore's key of a device's tap: the test devices use one
// queue epoch each.
func tapKey(device string, seq uint64) string { return device + "/" + strconv.FormatUint(seq, 10) }
