package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/wire"
)

// orderStore records the order in which devices' batches are committed.
type orderStore struct {
	*memStore
	mu     sync.Mutex
	order  []string
	groups []int // sizes of CommitBatches calls
}

func (s *orderStore) Commit(ctx context.Context, b *Batch) error {
	if err := s.memStore.Commit(ctx, b); err != nil {
		return err
	}
	s.mu.Lock()
	s.order = append(s.order, b.DeviceID)
	s.mu.Unlock()
	return nil
}

// groupStore is an orderStore that commits several batches in one call.
type groupStore struct{ *orderStore }

var _ BatchCommitter = groupStore{}

func (s groupStore) CommitBatches(ctx context.Context, bs []*Batch) error {
	s.mu.Lock()
	s.groups = append(s.groups, len(bs))
	s.mu.Unlock()
	for _, b := range bs {
		if err := s.orderStore.Commit(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func startWith(w *world, cfg Config, st Store) *Ingest {
	w.tb.Helper()
	in, err := New(cfg, st)
	if err != nil {
		w.tb.Fatal(err)
	}
	brokertest.Go(w.tb, waitTimeout, in.Run)
	waitFor(w.tb, "the ingest to subscribe", in.Connected)
	return in
}

// TestFairIngest: one device's backlog does not delay another's batch:
// the flooder's queue is bounded (the excess is dropped, counted as
// device_queue_full), and the other device's batch is served within one
// round, whatever the flooder's backlog.
func TestFairIngest(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	cfg.Workers, cfg.CoalesceBatches, cfg.DeviceQueueSize = 1, 1, 4
	st := &orderStore{memStore: w.store}
	entered, release := w.store.holdCommits()
	in := startWith(w, cfg, st)
	flood, other := w.newDevice(true), w.newDevice(true)
	flood.publish(flood.topic(wire.KindTaps), flood.validBatch(1, 1))
	<-entered // the worker is busy with the flooder's first batch
	for seq := uint64(2); seq <= 12; seq++ {
		flood.publish(flood.topic(wire.KindTaps), flood.validBatch(seq, seq))
	}
	waitFor(t, "the flooder's queue to fill", func() bool {
		s := in.Stats()
		return s.Queued == 4 && s.Rejects[RejectDeviceQueueFull] == 7
	})
	other.publish(other.topic(wire.KindTaps), other.validBatch(1, 1))
	waitFor(t, "the other device's batch to be queued", func() bool { return in.Stats().Queued == 5 })
	release()
	other.nextAck()
	waitFor(t, "every queued batch acked", func() bool { return in.Stats().Acks == 6 })
	st.mu.Lock()
	defer st.mu.Unlock()
	// Round-robin: besides the batch in progress, at most one of the
	// flooder's goes before the other device's.
	if i := slices.Index(st.order, other.id); i < 0 || i > 2 {
		t.Errorf("commit order %v: the other device's batch is number %d, want at most 3", st.order, i+1)
	}
	if s := in.Stats(); s.QueuedDevices != 0 || s.QueuedBytes != 0 {
		t.Errorf("queue not empty after draining: %+v", s)
	}
}

// TestCoalescedCommit: batches of several devices waiting together are
// committed in one CommitBatches call, and each is acked.
func TestCoalescedCommit(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	cfg.Workers = 1
	st := groupStore{&orderStore{memStore: w.store}}
	entered, release := w.store.holdCommits()
	in := startWith(w, cfg, st)
	first := w.newDevice(true)
	first.publish(first.topic(wire.KindTaps), first.validBatch(1, 1))
	<-entered
	var devs []*device
	for range 5 {
		d := w.newDevice(true)
		d.publish(d.topic(wire.KindTaps), d.validBatch(1, 3))
		devs = append(devs, d)
	}
	waitFor(t, "five batches queued", func() bool { return in.Stats().Queued == 5 })
	release()
	for _, d := range devs {
		if a := d.nextAck(); len(seqsOf(a.Ranges)) != 3 {
			t.Errorf("%s: ack of %v", d.id, a.Ranges)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.groups) != 1 || st.groups[0] != 5 {
		t.Errorf("CommitBatches calls of %v batches, want one of 5", st.groups)
	}
}

// slowGroupStore's coalesced commits run out of time; its single commits
// fail on an expired context, as a database's would.
type slowGroupStore struct{ *orderStore }

func (s slowGroupStore) CommitBatches(ctx context.Context, bs []*Batch) error {
	<-ctx.Done()
	return ctx.Err()
}

func (s slowGroupStore) Commit(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.orderStore.Commit(ctx, b)
}

// TestFallbackAfterSlowCoalescedCommit: when a coalesced commit runs out
// of CommitTimeout, the batch-by-batch fallback after it gets a timeout
// of its own (not the round's, spent), so every batch is committed and
// acked at once instead of waiting for the devices to send it again.
func TestFallbackAfterSlowCoalescedCommit(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	cfg.Workers, cfg.CommitTimeout = 1, 300*time.Millisecond
	st := slowGroupStore{&orderStore{memStore: w.store}}
	entered, release := w.store.holdCommits()
	in := startWith(w, cfg, st)
	first := w.newDevice(true)
	first.publish(first.topic(wire.KindTaps), first.validBatch(1, 1))
	<-entered
	var devs []*device
	for range 2 {
		d := w.newDevice(true)
		d.publish(d.topic(wire.KindTaps), d.validBatch(1, 2))
		devs = append(devs, d)
	}
	waitFor(t, "two batches queued", func() bool { return in.Stats().Queued == 2 })
	release()
	for _, d := range devs {
		if a := d.nextAck(); len(seqsOf(a.Ranges)) != 2 {
			t.Errorf("%s: ack of %v", d.id, a.Ranges)
		}
	}
}

// statusGroupStore is a groupStore that records several statuses in one
// call; with fail set, that call fails (a fault) and records nothing.
type statusGroupStore struct {
	groupStore
	fail     bool
	refuse   int   // a status of this queue depth is refused, the others recorded (StatusesRefused)
	statuses []int // sizes of Statuses calls
}

var _ StatusRecorder = (*statusGroupStore)(nil)

func (s *statusGroupStore) Statuses(ctx context.Context, sts []*wire.Status) error {
	s.mu.Lock()
	s.statuses = append(s.statuses, len(sts))
	s.mu.Unlock()
	if s.fail {
		return errors.New("injected fault")
	}
	refused := map[int]error{}
	for i, st := range sts {
		if s.refuse != 0 && st.QueueDepth == s.refuse {
			refused[i] = errors.New("injected refusal")
			continue
		}
		if err := s.memStore.Status(ctx, st); err != nil {
			return err
		}
	}
	if len(refused) > 0 {
		return &StatusesRefused{Refused: refused}
	}
	return nil
}

// TestStatusesRefusedAlone: a status the StatusRecorder refuses for what it
// holds (StatusesRefused) is counted refused and the others of the call
// recorded: they are not recorded again one by one (a stolen validator's
// bad status made every other of its call a transaction of its own).
func TestStatusesRefusedAlone(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	cfg.Workers = 1
	st := &statusGroupStore{groupStore: groupStore{&orderStore{memStore: w.store}}, refuse: 3}
	entered, release := w.store.holdCommits()
	in := startWith(w, cfg, st)
	first := w.newDevice(true)
	first.publish(first.topic(wire.KindTaps), first.validBatch(1, 1))
	<-entered // the worker is busy: what comes now waits
	var reporting []*device
	for i := range 5 {
		d := w.newDevice(true)
		d.publish(d.topic(wire.KindStatus), d.statusMessage(i+1))
		reporting = append(reporting, d)
	}
	waitFor(t, "five statuses queued", func() bool { return in.Stats().Queued == 5 })
	release()
	waitFor(t, "five statuses handled", func() bool {
		s := in.Stats()
		return s.Statuses+s.Rejects[RejectStatusFailed] == 5
	})
	if s := in.Stats(); s.Statuses != 4 || s.Rejects[RejectStatusFailed] != 1 {
		t.Errorf("%d statuses recorded, %d refused; want 4, 1", s.Statuses, s.Rejects[RejectStatusFailed])
	}
	for i, d := range reporting {
		got := w.store.status(d.id)
		if i+1 == 3 && got != nil {
			t.Errorf("%s: the refused status recorded: %+v", d.id, got)
		}
		if i+1 != 3 && (got == nil || got.QueueDepth != i+1) {
			t.Errorf("%s: status %+v, want queue depth %d", d.id, got, i+1)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.statuses) != 1 || st.statuses[0] != 5 {
		t.Errorf("Statuses calls of %v statuses, want one of 5", st.statuses)
	}
}

// statusMessage is d's status, signed, reporting depth records queued.
func (d *device) statusMessage(depth int) []byte {
	d.w.tb.Helper()
	st := wire.Status{DeviceID: d.id, Online: true, Time: time.Now().UTC().Truncate(time.Second), QueueDepth: depth}
	p, err := st.MarshalBinary()
	if err != nil {
		d.w.tb.Fatal(err)
	}
	msg, err := wire.Seal(wire.TypeStatus, p, false, d.key)
	if err != nil {
		d.w.tb.Fatal(err)
	}
	return msg
}

// TestStatusesRecordedTogether: statuses of several devices waiting
// together are recorded in one Statuses call, as their batches are
// committed in one CommitBatches call, and every batch is acked. A
// validator reports its status each time an ack empties its queue (about
// once a tap while riders tap), so one store call per status was as many
// ledger transactions as taps. If the call fails, each status is recorded
// alone.
func TestStatusesRecordedTogether(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			w := newWorld(t, "")
			cfg := w.config()
			cfg.Workers = 1
			st := &statusGroupStore{groupStore: groupStore{&orderStore{memStore: w.store}}, fail: fail}
			entered, release := w.store.holdCommits()
			in := startWith(w, cfg, st)
			first := w.newDevice(true)
			first.publish(first.topic(wire.KindTaps), first.validBatch(1, 1))
			<-entered // the worker is busy: what comes now waits
			var reporting, tapping []*device
			for i := range 5 {
				d := w.newDevice(true)
				d.publish(d.topic(wire.KindStatus), d.statusMessage(i+1))
				reporting = append(reporting, d)
				d = w.newDevice(true)
				d.publish(d.topic(wire.KindTaps), d.validBatch(1, 3))
				tapping = append(tapping, d)
			}
			waitFor(t, "five statuses and five batches queued", func() bool { return in.Stats().Queued == 10 })
			release()
			for _, d := range tapping {
				if a := d.nextAck(); len(seqsOf(a.Ranges)) != 3 {
					t.Errorf("%s: ack of %v", d.id, a.Ranges)
				}
			}
			waitFor(t, "five statuses recorded", func() bool { return in.Stats().Statuses == 5 })
			for i, d := range reporting {
				if got := w.store.status(d.id); got == nil || got.QueueDepth != i+1 {
					t.Errorf("%s: status %+v, want queue depth %d", d.id, got, i+1)
				}
			}
			st.mu.Lock()
			defer st.mu.Unlock()
			if len(st.statuses) != 1 || st.statuses[0] != 5 {
				t.Errorf("Statuses calls of %v statuses, want one of 5", st.statuses)
			}
			if len(st.groups) != 1 || st.groups[0] != 5 {
				t.Errorf("CommitBatches calls of %v batches, want one of 5", st.groups)
			}
		})
	}
}

// TestStatusesOfOneDeviceKeepTheirOrder: a device's newer status is not
// overwritten by an older one that another worker took first. Statuses are
// recorded after their worker's batches are committed; a worker holding a
// device's status behind a slow commit recorded it after another worker
// had recorded the device's next status: the device showed its queue as
// it was (or online, after it had said it was going offline) until it
// reported again.
func TestStatusesOfOneDeviceKeepTheirOrder(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	cfg.Workers = 2
	busy, slow := w.newDevice(true), w.newDevice(true)
	other, reporting := w.newDevice(true), w.newDevice(true)
	entered := make(chan string, 10)
	releaseBusy, releaseSlow := make(chan struct{}), make(chan struct{})
	w.store.mu.Lock()
	w.store.onCommit = func(b *Batch) {
		switch b.DeviceID {
		case busy.id, other.id:
			entered <- b.DeviceID
			<-releaseBusy
		case slow.id:
			entered <- b.DeviceID
			<-releaseSlow
		}
	}
	w.store.mu.Unlock()
	in := startWith(w, cfg, w.store)
	// Both workers busy: what comes next waits in the queue.
	busy.publish(busy.topic(wire.KindTaps), busy.validBatch(1, 1))
	<-entered
	other.publish(other.topic(wire.KindTaps), other.validBatch(1, 1))
	<-entered
	slow.publish(slow.topic(wire.KindTaps), slow.validBatch(1, 1))
	reporting.publish(reporting.topic(wire.KindStatus), reporting.statusMessage(5))
	reporting.publish(reporting.topic(wire.KindStatus), reporting.statusMessage(0))
	waitFor(t, "a batch and two statuses queued", func() bool { return in.Stats().Queued == 3 })
	// One worker takes the slow batch and the first status (one message
	// a device), the other the second status.
	close(releaseBusy)
	if id := <-entered; id != slow.id {
		t.Fatalf("commit of %s entered, want %s", id, slow.id)
	}
	waitFor(t, "the newer status recorded", func() bool { return in.Stats().Statuses == 1 })
	close(releaseSlow)
	slow.nextAck()
	waitFor(t, "both statuses handled", func() bool { s := in.Stats(); return s.Acks == 3 && s.Statuses == 2 })
	if got := w.store.status(reporting.id); got == nil || got.QueueDepth != 0 {
		t.Errorf("the device's status: %+v, want its newer one (queue depth 0)", got)
	}
}

// outOfTimeStore is a store whose statuses wait until their call runs out
// of time (a fault: a ledger that does not answer).
type outOfTimeStore struct {
	*memStore
	mu            sync.Mutex
	status, group int // calls of Status and Statuses
}

func (s *outOfTimeStore) Status(ctx context.Context, _ *wire.Status) error {
	s.mu.Lock()
	s.status++
	s.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (s *outOfTimeStore) Statuses(ctx context.Context, _ []*wire.Status) error {
	s.mu.Lock()
	s.group++
	s.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// TestStatusesGiveUpOnALedgerOutOfTime: statuses recorded together whose
// call ran out of CommitTimeout are not then tried one by one, each
// waiting its own CommitTimeout (30 s by default: a worker's 32 statuses
// held it 16 minutes while the ledger did not answer, and the other
// workers behind it); a status lost is sent again with the device's next.
func TestStatusesGiveUpOnALedgerOutOfTime(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	cfg.Workers, cfg.CommitTimeout = 1, 50*time.Millisecond
	st := &outOfTimeStore{memStore: w.store}
	entered, release := w.store.holdCommits()
	in := startWith(w, cfg, st)
	first := w.newDevice(true)
	first.publish(first.topic(wire.KindTaps), first.validBatch(1, 1))
	<-entered
	for i := range 5 {
		d := w.newDevice(true)
		d.publish(d.topic(wire.KindStatus), d.statusMessage(i))
	}
	waitFor(t, "five statuses queued", func() bool { return in.Stats().Queued == 5 })
	release()
	waitFor(t, "five statuses refused", func() bool { return in.Stats().Rejects[RejectStatusFailed] == 5 })
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.group != 1 || st.status != 0 {
		t.Errorf("%d calls of Statuses and %d of Status, each waiting out its time; want one of Statuses and none of Status", st.group, st.status)
	}
}

// heldStatusStore holds the Status calls of one device until released (a
// fault: a ledger slow on that call).
type heldStatusStore struct {
	*memStore
	held     string
	entered  chan struct{}
	release  chan struct{}
	releaseO sync.Once
}

func (s *heldStatusStore) Status(ctx context.Context, st *wire.Status) error {
	if st.DeviceID == s.held {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.memStore.Status(ctx, st)
}

func (s *heldStatusStore) unhold() { s.releaseO.Do(func() { close(s.release) }) }

// TestStatusesDoNotHoldOtherWorkers: a worker whose status call is slow
// (up to CommitTimeout, 30 s) holds no other worker: they record other
// devices' statuses and commit and ack batches meanwhile, and a newer
// status of the slow call's device is left to that worker, recorded after
// its older one. Recording statuses one worker at a time, a slow ledger
// held every worker behind one call, and with them every device's
// batches and acks.
func TestStatusesDoNotHoldOtherWorkers(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	// The held call outlasts every wait of the test: it ends only when
	// released.
	cfg.Workers, cfg.CommitTimeout = 2, 2*waitTimeout
	slow, other, tapper := w.newDevice(true), w.newDevice(true), w.newDevice(true)
	st := &heldStatusStore{memStore: w.store, held: slow.id, entered: make(chan struct{}, 1), release: make(chan struct{})}
	in := startWith(w, cfg, st)
	t.Cleanup(st.unhold) // before the Ingest stops
	slow.publish(slow.topic(wire.KindStatus), slow.statusMessage(5))
	<-st.entered
	slow.publish(slow.topic(wire.KindStatus), slow.statusMessage(0))
	other.publish(other.topic(wire.KindStatus), other.statusMessage(1))
	waitFor(t, "another device's status recorded", func() bool { return w.store.status(other.id) != nil })
	tapper.publish(tapper.topic(wire.KindTaps), tapper.validBatch(1, 1))
	tapper.nextAck()
	st.unhold()
	waitFor(t, "all statuses handled", func() bool { return in.Stats().Statuses == 3 })
	if got := w.store.status(slow.id); got == nil || got.QueueDepth != 0 {
		t.Errorf("the slow device's status: %+v, want its newer one (queue depth 0)", got)
	}
	if s := in.Stats(); s.Rejects[RejectStatusFailed] != 0 {
		t.Errorf("%d statuses refused", s.Rejects[RejectStatusFailed])
	}
}
