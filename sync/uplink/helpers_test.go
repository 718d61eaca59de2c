package uplink

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
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
	"github.com/farego/farego/queue"
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
	os.Exit(brokertest.LeakCheck(m, 10*time.Second, "sync/uplink.(*"))
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	brokertest.WaitFor(tb, waitTimeout, what, cond)
}

// logRecorder is a log destination that writes to the test log (until the
// test ends) and keeps the text for assertions.
type logRecorder struct {
	tb   testing.TB
	done atomic.Bool
	mu   sync.Mutex
	buf  bytes.Buffer
}

func newLogger(tb testing.TB) (*slog.Logger, *logRecorder) {
	r := &logRecorder{tb: tb}
	tb.Cleanup(func() { r.done.Store(true) })
	level := slog.LevelInfo
	if os.Getenv("FAREGO_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: level})), r
}

func (r *logRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(p)
	r.mu.Unlock()
	if !r.done.Load() && testing.Verbose() {
		r.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (r *logRecorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Count(r.buf.String(), s)
}

func (r *logRecorder) contains(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Contains(r.buf.String(), s)
}

// fakeState is the StateApplier stand-in: it records what it is given and
// can be told to fail.
type fakeState struct {
	mu       sync.Mutex
	versions map[string]uint64
	applied  []string // "kind/version"
	syncs    int
	applyErr error // returned by Apply when set
}

var errStale = errors.New("fake: stale version")

func newFakeState() *fakeState { return &fakeState{versions: map[string]uint64{}} }

func (f *fakeState) Apply(kind string, version uint64, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applyErr != nil {
		return f.applyErr
	}
	if version <= f.versions[kind] {
		return fmt.Errorf("%w: %s %d", errStale, kind, version)
	}
	f.versions[kind] = version
	f.applied = append(f.applied, fmt.Sprintf("%s/%d", kind, version))
	return nil
}

func (f *fakeState) Versions() map[string]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]uint64, len(f.versions))
	for k, v := range f.versions {
		out[k] = v
	}
	return out
}

func (f *fakeState) SyncSucceeded() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	return nil
}

func (f *fakeState) appliedList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.applied...)
}

func (f *fakeState) syncCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

func newKey(tb testing.TB) ed25519.PrivateKey { return brokertest.NewKey(tb) }

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func uniqueName(prefix string) string { return brokertest.UniqueName(prefix) }

// openQueue opens a queue in a temporary directory, closed at cleanup.
func openQueue(tb testing.TB) *queue.Queue {
	tb.Helper()
	q, err := queue.Open(filepath.Join(tb.TempDir(), "queue.db"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { q.Close() })
	return q
}

// tapMaker makes realistic tap records (about 350 bytes, each with a
// payment code of its own) for a device.
type tapMaker struct {
	device string
	riders []*paycodetest.Rider
	start  time.Time
}

func newTapMaker(tb testing.TB, device string) *tapMaker {
	tb.Helper()
	now := time.Now()
	is := paycodetest.NewIssuer(tb, 7, now)
	m := &tapMaker{device: device, start: now}
	for i := range 16 {
		m.riders = append(m.riders, is.Rider(tb, uint64(4000+i), now))
	}
	return m
}

// record returns the tap record with sequence number seq.
func (m *tapMaker) record(epoch string, seq uint64) ([]byte, error) {
	r := m.riders[seq%uint64(len(m.riders))]
	at := m.start.Add(time.Duration(seq) * time.Second)
	code, err := paycode.MakeCode(r.Credential, r.Key, at, uint16(seq))
	if err != nil {
		return nil, err
	}
	t := record.Tap{
		DeviceID: m.device, Epoch: epoch, Seq: seq,
		Time: at, Route: "R12", Vehicle: "BUS-0042", Scanner: "front",
		Code: code, Account: r.Account, Serial: r.Serial, Profile: paycode.Adult,
		Fare: 250, Currency: "EUR", FareVersion: 3, KeyringVersion: 7, Software: "farego-test 1.0",
	}
	return t.MarshalBinary()
}

// appendTaps appends n tap records to q, with a few concurrent writers so
// that the queue's group commit shares the fsyncs.
func appendTaps(tb testing.TB, q *queue.Queue, m *tapMaker, n int) {
	tb.Helper()
	const writers = 32
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				_, err := q.AppendFunc(context.Background(), func(_ *queue.State, seq uint64) ([]byte, error) {
					return m.record(q.Epoch(), seq)
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func queueCount(tb testing.TB, q *queue.Queue) int {
	tb.Helper()
	st, err := q.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	return st.Count
}

// fixture is one device with its queue and state, a broker and keys.
type fixture struct {
	tb     testing.TB
	broker *brokertest.Broker
	id     string
	prefix string
	dev    ed25519.PrivateKey
	fleet  ed25519.PrivateKey
	q      *queue.Queue
	state  *fakeState
	taps   *tapMaker
	logs   *logRecorder
	cfg    Config
}

// newFixture makes a device for broker (nil: a new in-process broker) with
// a configuration for fast tests.
func newFixture(tb testing.TB, broker *brokertest.Broker) *fixture {
	tb.Helper()
	if broker == nil {
		broker = brokertest.Start(tb, nil)
	}
	f := &fixture{
		tb: tb, broker: broker,
		id:     uniqueName("bus-"),
		prefix: "farego",
		dev:    newKey(tb),
		fleet:  newKey(tb),
		q:      openQueue(tb),
		state:  newFakeState(),
	}
	f.taps = newTapMaker(tb, f.id)
	var logger *slog.Logger
	logger, f.logs = newLogger(tb)
	f.cfg = Config{
		Brokers:           []string{broker.URL()},
		DeviceID:          f.id,
		DeviceKey:         f.dev,
		FleetPublicKey:    pubOf(f.fleet),
		TopicPrefix:       f.prefix,
		Software:          "1.0.0-test",
		AckTimeout:        time.Second,
		PollInterval:      50 * time.Millisecond,
		SyncInterval:      50 * time.Millisecond,
		StatusMinInterval: 50 * time.Millisecond,
		MinBackoff:        20 * time.Millisecond,
		MaxBackoff:        300 * time.Millisecond,
		ConnectTimeout:    10 * time.Second,
		ShutdownTimeout:   10 * time.Second,
		Logger:            logger,
	}
	return f
}

func (f *fixture) topic(kind string) string {
	return wire.Topics{Prefix: f.prefix}.Device(f.id, kind)
}

func (f *fixture) fleetTopic(kind string) string {
	return wire.Topics{Prefix: f.prefix}.Fleet(kind)
}

// start makes the uplink from f.cfg and runs it until the test ends.
func (f *fixture) start() *running {
	f.tb.Helper()
	u, err := New(f.cfg, f.q, f.state)
	if err != nil {
		f.tb.Fatal(err)
	}
	return runUplink(f.tb, u)
}

// running is an uplink whose Run is going.
// stop cancels Run and returns its result (bounded; a hang fails the test).
func (r *running) stop() error { return r.run.Stop(waitTimeout) }

type running struct {
	*Uplink
	run *brokertest.Running
}

// runUplink runs u until stop or the end of the test.
func runUplink(tb testing.TB, u *Uplink) *running {
	tb.Helper()
	return &running{Uplink: u, run: brokertest.Go(tb, waitTimeout, u.Run)}
}

// signedDownlink seals a downlink with key.
func signedDownlink(tb testing.TB, key ed25519.PrivateKey, kind string, version uint64, body string) []byte {
	tb.Helper()
	dl := wire.Downlink{Kind: kind, Version: version, IssuedAt: time.Now(), Body: []byte(body)}
	p, err := dl.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	msg, err := wire.Seal(wire.TypeDownlink, p, true, key)
	if err != nil {
		tb.Fatal(err)
	}
	return msg
}

// seal seals a wire message with key.
func seal(tb testing.TB, t wire.Type, m interface{ MarshalBinary() ([]byte, error) }, key ed25519.PrivateKey) []byte {
	tb.Helper()
	p, err := m.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	msg, err := wire.Seal(t, p, false, key)
	if err != nil {
		tb.Fatal(err)
	}
	return msg
}

// testServer is a stand-in for the settlement server's ingest: it takes the
// tap batches of every device under a prefix, checks the device signature
// and the records, keeps each tap id once, and publishes fleet-signed acks.
type testServer struct {
	tb     testing.TB
	fleet  ed25519.PrivateKey
	topics wire.Topics

	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	devices   map[string]ed25519.PublicKey
	seen      map[string]int // tap id → receptions
	epochSeen map[string]int // device/epoch/seq → receptions
	received  int            // records received, duplicates included
	problems  []string
	dropAcks  int    // acks still to drop
	mute      bool   // take batches but never ack
	withhold  uint64 // a batch holding this seq is never acked (0: none)
	acks      int    // acks published
	// busy, when set, makes the server work through batches one at a
	// time, each taking that long before its ack (a server settling a
	// fleet's backlog).
	busy   time.Duration
	serial sync.Mutex
}

// serverOptions configures a testServer connection.
type serverOptions struct {
	url      string
	tls      *tls.Config
	username string
	password string
}

// newTestServer connects a test server to the broker at url, acking for
// the given devices. It reconnects by itself when the broker comes back,
// with a fresh client each time (paho's own automatic reconnection races
// with itself when it resends stored messages: a data race in
// client.resume, v1.5.1).
func newTestServer(tb testing.TB, so serverOptions, prefix string, fleet ed25519.PrivateKey, devices map[string]ed25519.PublicKey) *testServer {
	tb.Helper()
	s := &testServer{
		tb: tb, fleet: fleet, topics: wire.Topics{Prefix: prefix},
		devices: devices, seen: map[string]int{}, epochSeen: map[string]int{},
		stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	ready := make(chan struct{}, 1)
	go s.run(so, ready)
	tb.Cleanup(s.close)
	select {
	case <-ready:
	case <-time.After(waitTimeout):
		tb.Fatal("test server did not subscribe")
	}
	return s
}

// run keeps the server connected and subscribed until close.
func (s *testServer) run(so serverOptions, ready chan<- struct{}) {
	defer close(s.stopped)
	id := uniqueName("settle-")
	for {
		lost := make(chan struct{}, 1)
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(so.url).
			SetClientID(id).
			SetUsername(so.username).SetPassword(so.password).
			SetTLSConfig(so.tls).
			SetCleanSession(true).
			SetOrderMatters(false).
			SetAutoReconnect(false).
			// An ack published while the connection goes down waits this long
			// (paho's default is 30 s), within the leak check's grace period.
			SetWriteTimeout(2 * time.Second).
			SetConnectionLostHandler(func(mqtt.Client, error) { lost <- struct{}{} }))
		if ok := s.wait(c.Connect()); ok {
			if ok = s.wait(c.Subscribe(s.topics.AllDevices(wire.KindTaps), 1, s.onBatch)); ok {
				select {
				case ready <- struct{}{}:
				default:
				}
				select {
				case <-lost:
				case <-s.stop:
				}
			}
		}
		c.Disconnect(250)
		select {
		case <-s.stop:
			return
		case <-time.After(50 * time.Millisecond): // and connect again
		}
	}
}

// wait waits for a token (or close) and reports whether it succeeded.
func (s *testServer) wait(tok mqtt.Token) bool {
	select {
	case <-tok.Done():
		return tok.Error() == nil
	case <-s.stop:
		return false
	}
}

// close disconnects the server; closing again does nothing.
func (s *testServer) close() {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.stopped
}

func (s *testServer) problem(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problems = append(s.problems, fmt.Sprintf(format, a...))
}

// onBatch handles one batch message (in a goroutine of its own: the
// server's client does not keep order).
func (s *testServer) onBatch(c mqtt.Client, m mqtt.Message) {
	id, _, err := s.topics.ParseDevice(m.Topic())
	if err != nil {
		s.problem("topic %s: %v", m.Topic(), err)
		return
	}
	s.mu.Lock()
	pub := s.devices[id]
	s.mu.Unlock()
	body, err := wire.Open(m.Payload(), wire.TypeBatch, pub)
	if err != nil {
		s.problem("batch from %s: %v", id, err)
		return
	}
	b, err := wire.ParseBatch(body)
	if err != nil {
		s.problem("batch from %s: %v", id, err)
		return
	}
	if b.DeviceID != id {
		s.problem("batch on %s's topic says device %s", id, b.DeviceID)
		return
	}
	s.mu.Lock()
	busy := s.busy
	s.mu.Unlock()
	if busy > 0 {
		s.serial.Lock()
		defer s.serial.Unlock()
		select {
		case <-time.After(busy):
		case <-s.stop:
			return
		}
	}
	seqs := make([]uint64, 0, len(b.Records))
	for _, r := range b.Records {
		t, err := record.ParseTap(r.Data)
		if err != nil || t.Seq != r.Seq || t.DeviceID != id || t.Epoch != b.Epoch {
			s.problem("record %d from %s: %v (tap %+v)", r.Seq, id, err, t)
			return
		}
		seqs = append(seqs, r.Seq)
	}
	s.mu.Lock()
	for _, seq := range seqs {
		s.seen[tapKey(id, seq)]++
		s.epochSeen[record.TapID(id, b.Epoch, seq)]++
	}
	s.received += len(seqs)
	drop := s.mute || s.dropAcks > 0 || (s.withhold != 0 && slices.Contains(seqs, s.withhold))
	if s.dropAcks > 0 {
		s.dropAcks--
	}
	if !drop {
		s.acks++
	}
	s.mu.Unlock()
	if drop {
		return
	}
	ack := wire.Ack{DeviceID: id, Epoch: b.Epoch, Ranges: wire.Ranges(seqs)}
	c.Publish(s.topics.Device(id, wire.KindAck), 1, false, seal(s.tb, wire.TypeAck, &ack, s.fleet))
}

// addDevice makes the server take the batches of another device.
func (s *testServer) addDevice(id string, pub ed25519.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devices[id] = pub
}

// unique returns how many distinct tap ids were received.
func (s *testServer) unique() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// timesIn returns how often a record of an epoch was received.
func (s *testServer) timesIn(device, epoch string, seq uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epochSeen[record.TapID(device, epoch, seq)]
}

// times returns how often a tap id was received.
func (s *testServer) times(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id]
}

func (s *testServer) totalReceived() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received
}

func (s *testServer) setMute(mute bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mute = mute
}

func (s *testServer) setBusy(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = d
}

// setWithhold makes the server never ack a batch that holds seq (a
// server that keeps refusing it, as one over the device's aside budget).
func (s *testServer) setWithhold(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.withhold = seq
}

func (s *testServer) setDropAcks(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropAcks = n
}

// check fails the test for any problem seen, and unless the tap ids
// received are exactly device/1..n.
func (s *testServer) check(tb testing.TB, device string, n int) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.problems {
		tb.Errorf("test server: %s", p)
	}
	if len(s.seen) != n {
		tb.Errorf("test server has %d distinct taps, want %d", len(s.seen), n)
	}
	for seq := 1; seq <= n; seq++ {
		if s.seen[tapKey(device, uint64(seq))] == 0 {
			tb.Errorf("tap %s never received", tapKey(device, uint64(seq)))
		}
	}
}

// statusWatcher collects the status messages of a device.
type statusWatcher struct {
	c   mqtt.Client
	ch  chan *wire.Status
	bad atomic.Value // error: a status message that did not verify
}

// watchStatus subscribes to a device's status topic; every message must
// be signed with pub.
func watchStatus(tb testing.TB, url, topic string, pub ed25519.PublicKey) *statusWatcher {
	tb.Helper()
	w := &statusWatcher{ch: make(chan *wire.Status, 1000)}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(uniqueName("watch-")).SetOrderMatters(true)
	w.c = mqtt.NewClient(o)
	if tok := w.c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		tb.Fatalf("status watcher: connect: %v", tok.Error())
	}
	tb.Cleanup(func() { w.c.Disconnect(250) })
	tok := w.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		st, err := openStatus(m.Payload(), pub)
		if err != nil {
			w.bad.Store(err)
			return
		}
		select {
		case w.ch <- st:
		default:
		}
	})
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		tb.Fatalf("status watcher: subscribe: %v", tok.Error())
	}
	return w
}

// next returns the next status that satisfies cond.
func (w *statusWatcher) next(tb testing.TB, what string, cond func(*wire.Status) bool) *wire.Status {
	tb.Helper()
	timeout := time.After(waitTimeout)
	for {
		if err, _ := w.bad.Load().(error); err != nil {
			tb.Fatalf("status message: %v", err)
		}
		select {
		case st := <-w.ch:
			if cond(st) {
				return st
			}
		case <-timeout:
			tb.Fatalf("timed out waiting for a status: %s", what)
		}
	}
}

func openStatus(msg []byte, pub ed25519.PublicKey) (*wire.Status, error) {
	p, err := wire.Open(msg, wire.TypeStatus, pub)
	if err != nil {
		return nil, err
	}
	return wire.ParseStatus(p)
}

// blackholeListener accepts TCP connections and never says a word.
type blackholeListener struct {
	addr     string
	accepted chan struct{}
}

func blackhole(tb testing.TB) *blackholeListener {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &blackholeListener{addr: l.Addr().String(), accepted: make(chan struct{}, 1)}
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case b.accepted <- struct{}{}:
			default:
			}
		}
	})
	tb.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return b
}

// tapKey is the test server's key of a device's tap.
func tapKey(device string, seq uint64) string { return device + "/" + strconv.FormatUint(seq, 10) }
