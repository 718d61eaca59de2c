package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/sync/ratelog"
	"github.com/farego/farego/sync/wire"
)

// Ingest is the settlement server's MQTT consumer: it takes the devices'
// tap batches and status messages, checks and re-verifies them, hands them
// to the Store and acks what was committed. Use New, then Run.
type Ingest struct {
	cfg      Config
	store    Store
	log      *slog.Logger
	topics   wire.Topics
	filters  []string
	verifier *paycode.Verifier
	stats    *counters
	limit    *ratelog.Limiter
	aside    *asideBudget
	verify   *asideBudget // records checked (Config.VerifyBudget)

	queue   *fairQueue
	conn    atomic.Pointer[conn] // the current Run's connection
	running atomic.Bool

	dropStreak   atomic.Int64                  // messages dropped (queue full) since the last one queued
	commitStreak atomic.Int64                  // commit failures since the last success
	commitErr    atomic.Pointer[commitFailure] // the last failed commit while commitStreak > 0
	replayID     atomic.Uint64                 // the last replay request's id

	// statusMu guards, by device: statusSeq, the arrival number
	// (inbound.seq) of its newest status recorded; statusBusy, that of
	// the status a worker is recording; statusNext, a newer status left
	// to that worker (see recordStatuses).
	statusMu   sync.Mutex
	statusSeq  map[string]uint64
	statusBusy map[string]uint64
	statusNext map[string]statusIn
}

// inbound is one message received from the broker.
type inbound struct {
	topic   string
	payload []byte
	seq     uint64 // the order it was queued in (fairQueue.push)
}

// New checks cfg and returns an Ingest that commits to store. It does not
// connect: Run does.
func New(cfg Config, store Store) (*Ingest, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, configErr("no Store")
	}
	in := &Ingest{
		cfg:        cfg,
		store:      store,
		log:        cfg.Logger,
		topics:     wire.Topics{Prefix: cfg.TopicPrefix},
		verifier:   paycode.NewVerifier(cfg.VerifierCacheSize),
		stats:      newCounters(cfg.Metrics),
		limit:      ratelog.New(cfg.Now, ratelog.DefaultEvery),
		aside:      newAsideBudget(cfg.AsideBudget, cfg.Now),
		verify:     newAsideBudget(cfg.VerifyBudget, cfg.Now),
		queue:      newFairQueue(cfg.DeviceQueueSize, cfg.DeviceQueueBytes, cfg.QueueSize, cfg.QueueBytes),
		statusSeq:  map[string]uint64{},
		statusBusy: map[string]uint64{},
		statusNext: map[string]statusIn{},
	}
	for _, kind := range []string{wire.KindTaps, wire.KindStatus} {
		f := in.topics.AllDevices(kind)
		if !cfg.NoSharedSubscription {
			f = wire.Shared(cfg.SharedGroup, f)
		}
		in.filters = append(in.filters, f)
	}
	return in, nil
}

// Run connects to the broker, subscribes to every device's taps and status
// topics (in the shared group unless NoSharedSubscription) after every
// connection, and processes messages with Workers goroutines until ctx is
// done. It reconnects with a fresh client after a jittered wait that
// doubles up to MaxReconnectInterval; a run of failures is logged once and
// the recovery once. When ctx is done Run lets the workers finish the
// message each is on (acks included), disconnects and returns nil.
// Messages still queued then were taken from the broker but not acked:
// their devices send them again.
func (in *Ingest) Run(ctx context.Context) error {
	if !in.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer in.running.Store(false)

	c := newConn("ingest", in.cfg.MQTTConfig, in.log, in.filters, in.onMessage, nil)
	in.conn.Store(c)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range in.cfg.Workers {
		wg.Go(func() { in.worker(ctx, stop) })
	}
	stopConn := c.start(ctx)
	<-ctx.Done()
	close(stop)
	wg.Wait()
	stopConn()
	if n, _, _ := in.queue.depth(); n > 0 {
		in.log.Info("ingest: messages left unprocessed at shutdown; their devices will send them again", "count", n)
	}
	return nil
}

// Connected reports whether the Ingest is connected and subscribed.
func (in *Ingest) Connected() bool {
	c := in.conn.Load()
	return c != nil && c.connected()
}

// commitFailure is the last commit failure of a run of them.
type commitFailure struct {
	err   error
	since time.Time // the run's first failure
	last  time.Time // the run's latest failure
}

// CommitFailureStale is how long after the last failed commit, with no
// commit tried since, Committing stops reporting it: a device whose batch
// was not acked sends it again within its ack timeout (at most 80 s with
// the uplink's defaults), so while commits fail and any device waits for
// an ack, failures keep coming. One transient failure in a quiet hour (the
// last bus's batch at the depot) no longer holds /healthz at 503 until the
// morning's first commit.
const CommitFailureStale = 5 * time.Minute

// Committing reports whether the Store takes batches: nil until a commit
// fails and again after the next one succeeds, or once no commit has been
// tried for CommitFailureStale; while every commit fails
// (a full disk, a read-only ledger file, a database down) an error
// saying since when and the last failure. The broker connection can be
// fine all that time: devices' batches go unacked and pile up on them.
func (in *Ingest) Committing() error {
	f := in.commitErr.Load()
	if f == nil || in.cfg.Now().Sub(f.last) > CommitFailureStale {
		return nil
	}
	return fmt.Errorf("commits failing since %s (%d failures; batches not acked): %w",
		f.since.UTC().Format(time.RFC3339), in.commitStreak.Load(), f.err)
}

// Stats returns a snapshot of the Ingest's counters.
func (in *Ingest) Stats() Stats {
	s := in.stats.snapshot()
	s.Connected = in.Connected()
	s.Queued, s.QueuedBytes, s.QueuedDevices = in.queue.depth()
	s.QueueLength = in.cfg.QueueSize
	return s
}

// Replay asks a device to send its archived records from..to of queue
// epoch again (after the server restored an older backup): a fleet-signed
// wire.Replay on PREFIX/dev/ID/cmd, QoS 1, not retained. The device acts
// on it only while connected (its session is clean); publish it while the
// device's status says online. ErrNotConnected while the Ingest is not
// connected.
//
// Each request carries an id a device carries out once: the clock's Unix
// milliseconds, above the last id this Ingest sent (a device refuses a
// request whose id is not above the last one it carried out).
func (in *Ingest) Replay(ctx context.Context, deviceID, epoch string, from, to uint64) error {
	return in.ReplayAs(ctx, in.NextReplayID(), deviceID, epoch, from, to)
}

// ReplayAs is Replay with the request's id (NextReplayID): the same
// request sent again (a copy kept for a device not reached) is carried
// out once.
func (in *Ingest) ReplayAs(ctx context.Context, id uint64, deviceID, epoch string, from, to uint64) error {
	r := wire.Replay{DeviceID: deviceID, Epoch: epoch, From: from, To: to, ID: id}
	// The request, then its version 1 copy for validators from before
	// request ids (they refuse version 2; those after them ignore the copy).
	var msgs [][]byte
	for _, enc := range []func() ([]byte, error){r.MarshalBinary, r.MarshalBinaryV1} {
		p, err := enc()
		if err != nil {
			return fmt.Errorf("ingest: replay: %w", err)
		}
		msg, err := wire.Seal(wire.TypeReplay, p, false, in.cfg.FleetKey)
		if err != nil {
			return fmt.Errorf("ingest: replay: %w", err)
		}
		msgs = append(msgs, msg)
	}
	c := in.conn.Load()
	if c == nil || !c.connected() {
		return ErrNotConnected
	}
	for _, msg := range msgs {
		if err := c.publish(ctx, in.topics.Device(deviceID, wire.KindCmd), false, msg, in.cfg.PublishTimeout); err != nil {
			return err
		}
	}
	in.stats.replay()
	in.log.Info("ingest: replay requested", "device", deviceID, "epoch", epoch, "from", from, "to", to, "id", id)
	return nil
}

// NextReplayID is the id of a new replay request: now in Unix
// milliseconds, or one above the last id if the clock has not passed it.
func (in *Ingest) NextReplayID() uint64 {
	for {
		last := in.replayID.Load()
		id := max(uint64(time.Now().UnixMilli()), last+1)
		if in.replayID.CompareAndSwap(last, id) {
			return id
		}
	}
}

// onMessage is paho's handler for both subscriptions. It never blocks: it
// queues the message on its device's queue, or drops it (logged once per
// run of drops) when that queue or the whole is full; the device sends it
// again.
func (in *Ingest) onMessage(_ mqtt.Client, m mqtt.Message) {
	id, _, err := in.topics.ParseDevice(m.Topic())
	if err != nil {
		in.stats.reject(RejectBadTopic)
		return
	}
	switch in.queue.push(id, inbound{topic: m.Topic(), payload: m.Payload()}) {
	case pushOK:
		if n := in.dropStreak.Swap(0); n > 0 {
			in.log.Info("ingest: taking messages again after dropping some", "count", n)
		}
	case pushDeviceFull:
		// One device sends faster than it is served: its own messages
		// wait, nobody else's.
		in.stats.reject(RejectDeviceQueueFull)
		if ok, n := in.limit.Allow("devqueue\x00" + id); ok {
			in.log.Warn("ingest: a device sends faster than its batches are committed; dropping its messages (it sends them again)",
				logKeyDevice, id, logKeySuppressed, n)
		}
	default:
		in.stats.reject(RejectQueueFull)
		if in.dropStreak.Add(1) == 1 {
			in.log.Warn("ingest: messages arriving faster than they are committed; dropping (devices will send them again)",
				"topic", m.Topic())
		}
	}
}

// worker processes queued messages until stop is closed: each time it
// takes up to CoalesceBatches messages of different devices (round-robin),
// checks them, commits their batches together (see commitBatches) and
// records their statuses together (see recordStatuses).
// Each Store call gets CommitTimeout of its own (see storeCall), also if
// ctx ends meanwhile, so that batches being committed at shutdown are
// still acked.
func (in *Ingest) worker(ctx context.Context, stop <-chan struct{}) {
	base := context.WithoutCancel(ctx)
	for {
		select {
		case <-stop:
			return
		case <-in.queue.wake:
		}
		ms := in.queue.take(in.cfg.CoalesceBatches)
		if len(ms) == 0 {
			continue
		}
		var group []*prepared
		var statuses []statusIn
		for _, m := range ms {
			p, st := in.handle(base, m.topic, m.payload)
			if p != nil {
				group = append(group, p)
			}
			if st != nil {
				statuses = append(statuses, statusIn{st: st, seq: m.seq})
			}
		}
		// The batches first: their acks do not wait for the statuses.
		in.commitBatches(base, group)
		in.recordStatuses(base, statuses)
	}
}

// storeCall runs one Store call with CommitTimeout of its own: a slow
// coalesced commit that runs out of time leaves the batch-by-batch
// fallback after it its full time, not an expired context.
func (in *Ingest) storeCall(base context.Context, call func(context.Context) error) error {
	_, err := in.storeCallTimed(base, call)
	return err
}

// storeCallTimed is storeCall, and whether the call failed having run out
// of its time.
func (in *Ingest) storeCallTimed(base context.Context, call func(context.Context) error) (outOfTime bool, err error) {
	ctx, cancel := context.WithTimeout(base, in.cfg.CommitTimeout)
	defer cancel()
	err = call(ctx)
	return err != nil && ctx.Err() != nil, err
}
