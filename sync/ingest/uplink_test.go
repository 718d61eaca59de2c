package ingest

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/uplink"
	"github.com/farego/farego/sync/wire"
)

// fakeState is the uplink's StateApplier stand-in.
type fakeState struct {
	mu       sync.Mutex
	versions map[string]uint64
	bodies   map[string][]byte
}

func newFakeState() *fakeState {
	return &fakeState{versions: map[string]uint64{}, bodies: map[string][]byte{}}
}

func (f *fakeState) Apply(kind string, version uint64, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if version <= f.versions[kind] {
		return fmt.Errorf("stale %s %d", kind, version)
	}
	f.versions[kind], f.bodies[kind] = version, body
	return nil
}

func (f *fakeState) Versions() map[string]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]uint64{}
	for k, v := range f.versions {
		out[k] = v
	}
	return out
}

func (f *fakeState) SyncSucceeded() error { return nil }

// realDevice is a validator: a bbolt queue full of taps and the real
// uplink draining it.
type realDevice struct {
	id    string
	q     *queue.Queue
	state *fakeState
	u     *uplink.Uplink
	w     *world
}

// newRealDevice registers a device, fills its queue with n valid taps and
// runs its uplink until the end of the test.
func (w *world) newRealDevice(n int, batchRecords int) *realDevice {
	w.tb.Helper()
	d := &realDevice{id: uniqueName("bus-"), state: newFakeState(), w: w}
	key := newKey(w.tb)
	w.store.addDevice(d.id, pubOf(key))
	q, err := queue.Open(filepath.Join(w.tb.TempDir(), "queue.db"), nil)
	if err != nil {
		w.tb.Fatal(err)
	}
	w.tb.Cleanup(func() { q.Close() })
	d.q = q
	appendTaps(w.tb, q, d.id, w.issuer, w.now, n)
	d.u, err = uplink.New(uplink.Config{
		Brokers: []string{w.url}, DeviceID: d.id, DeviceKey: key, FleetPublicKey: pubOf(w.fleet),
		TopicPrefix: w.prefix, BatchRecords: batchRecords, AckTimeout: 2 * time.Second,
		PollInterval: 50 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
		ConnectTimeout: 20 * time.Second, ShutdownTimeout: 20 * time.Second, Logger: testLogger(w.tb),
	}, q, d.state)
	if err != nil {
		w.tb.Fatal(err)
	}
	if w.broker == nil { // an external broker keeps retained messages
		w.tb.Cleanup(func() { clearRetained(w.tb, w.url, wire.Topics{Prefix: w.prefix}.Device(d.id, wire.KindStatus)) })
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.u.Run(ctx) }()
	w.tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				w.tb.Errorf("uplink Run = %v", err)
			}
		case <-time.After(waitTimeout):
			w.tb.Error("uplink Run did not return")
		}
	})
	return d
}

func (d *realDevice) queued() int {
	d.w.tb.Helper()
	st, err := d.q.Stats()
	if err != nil {
		d.w.tb.Fatal(err)
	}
	return st.Count
}

// appendTaps appends n valid tap records to q, with a few concurrent
// writers so that the queue's group commit shares the fsyncs.
func appendTaps(tb testing.TB, q *queue.Queue, device string, is *paycodetest.Issuer, now time.Time, n int) {
	tb.Helper()
	var riders []*paycodetest.Rider
	for i := range 8 {
		riders = append(riders, is.Rider(tb, uint64(6000+i), now))
	}
	const writers = 16
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				_, err := q.AppendFunc(context.Background(), func(_ *queue.State, seq uint64) ([]byte, error) {
					r := riders[seq%uint64(len(riders))]
					at := now.Add(-time.Hour).Add(time.Duration(seq) * time.Second)
					code, err := paycode.MakeCode(r.Credential, r.Key, at.Add(-5*time.Second), uint16(seq))
					if err != nil {
						return nil, err
					}
					t := record.Tap{
						DeviceID: device, Epoch: q.Epoch(), Seq: seq, Time: at, Route: "R1", Vehicle: "V1",
						Code: code, Account: r.Account, Serial: r.Serial, Profile: paycode.Adult,
						Fare: 250, Currency: "EUR", FareVersion: 1, KeyringVersion: 1, Software: "test",
					}
					return t.MarshalBinary()
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

// TestUplinkDrain runs the real device side against the ingest: the queue
// drains (records are deleted only on the ingest's acks), every tap is
// committed once, the status arrives.
func TestUplinkDrain(t *testing.T) {
	w := newWorld(t, "")
	w.store.failFirst = 2 // the device must send those batches again
	w.start(w.config())
	d := w.newRealDevice(300, 25)
	waitFor(t, "the queue to drain", func() bool { return d.queued() == 0 })
	w.store.checkTaps(t, d.id, 300)
	waitFor(t, "the device status", func() bool { return w.store.status(d.id) != nil })
	if st := w.store.status(d.id); st.Epoch != d.q.Epoch() {
		t.Errorf("status epoch %q, want %q", st.Epoch, d.q.Epoch())
	}
}

// TestSharedSubscription runs two ingest instances in one shared group on
// one broker: each gets part of the batches, and together they commit every
// tap. It runs against the in-process broker, and against the Mosquitto
// named by FAREGO_TEST_MOSQUITTO (for example tcp://127.0.0.1:1883) when set.
func TestSharedSubscription(t *testing.T) {
	t.Run("mochi", func(t *testing.T) { testShared(t, "") })
	t.Run("mosquitto", func(t *testing.T) {
		testShared(t, brokertest.MosquittoURL(t))
	})
}

func testShared(t *testing.T, url string) {
	w := newWorld(t, url)
	group := uniqueName("g") // instances of other test runs stay out
	ca, cb := w.config(), w.config()
	ca.SharedGroup, cb.SharedGroup = group, group
	a, b := w.start(ca), w.start(cb)
	const perDevice = 200
	var devs []*realDevice
	for range 3 {
		devs = append(devs, w.newRealDevice(perDevice, 10))
	}
	for _, d := range devs {
		waitFor(t, "the queue of "+d.id+" to drain", func() bool { return d.queued() == 0 })
		w.store.checkTaps(t, d.id, perDevice)
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("instance A committed %d batches, B %d", sa.Batches, sb.Batches)
	if sa.Batches == 0 || sb.Batches == 0 {
		t.Errorf("batches committed by A %d, by B %d: want both to take part", sa.Batches, sb.Batches)
	}
	if got, min := sa.Taps+sb.Taps, uint64(3*perDevice); got < min {
		t.Errorf("%d taps committed in all, want at least %d", got, min)
	}
}
