package uplink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/backoff"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/internal/mqttclient"
	"github.com/farego/farego/sync/wire"
)

// maxUnsendableLogged bounds the remembered unsendable records (each is
// logged once).
const maxUnsendableLogged = 1024

// inflight is a published batch awaiting the server's ack.
type inflight struct {
	epoch    string   // the queue epoch of its records: the queue's own, or an adopted one
	seqs     []uint64 // its records not acked yet, ascending
	sentAt   time.Time
	sentWall time.Time // Config.Now when sent, for the clock offset
	// fresh: none of its records was sent before in this process, so an
	// ack for it answers this very send (a clock sample needs that).
	fresh bool
}

// sender is the send side of the uplink: the window of published, unacked
// batches and what goes with it. It lives for one Run and belongs to the
// Run goroutine.
//
// Records flow like this: fill peeks the records after cursor and
// publishes them in batches until MaxInFlight batches are out; a valid ack
// takes the records it names out of the window and hands them to the ack
// committer, which deletes them from the queue (acks that arrive together
// share one fsync) while fill sends the next batches; if
// the oldest batch is not acked within the ack timeout of its send or of
// the last ack that took records out of the oldest batch (doubling on
// each timeout in a row), or the connection is new, or the server asked for a
// replay, the window is dropped and sending starts again from the oldest
// unacked record. The server is idempotent by tap id, so sending a record
// twice is harmless; deleting one it has not committed never happens.
type sender struct {
	u   *Uplink
	pub publisher

	win        []*inflight
	cursor     uint64            // the highest seq of the queue's own records sent since the last reset
	adopted    map[string]uint64 // the same for each adopted epoch
	sentMax    map[string]uint64 // the highest seq ever sent, by epoch (not reset)
	ackTimeout time.Duration
	timeouts   int // ack timeouts in a row without the oldest batch acked (the backoff)
	noAck      int // ack timeouts in a row without any ack (Stats.AckTimeoutsInRow)
	timer      *time.Timer
	// progress is when an ack last took the window's oldest batch out:
	// the ack timer runs from it or from the oldest batch's send,
	// whichever is later (TCP's retransmission timer, restarted when new
	// data is acknowledged: RFC 6298, 5.3; TCP's acks are cumulative, so
	// new data acked is the oldest). Timed from the send alone, a window
	// sent at once to a server working through a fleet's backlog timed
	// out on its last batches while the acks of its first were still
	// coming in, and was sent again. Restarted by an ack of any batch, an
	// oldest batch that was lost (sent after a broker restart before the
	// server had subscribed again) was never sent again while later taps
	// kept being acked: its records stayed queued, and the risk counters
	// kept counting, until the bus stood 10 s without a tap.
	progress time.Time

	syncPending bool      // an ack emptied the queue; SyncSucceeded is due
	lastSync    time.Time // the last SyncSucceeded call
	lastStatus  time.Time // the last online status published

	queueErrs  int             // queue errors in a row (logged once)
	unsendable map[uint64]bool // records too large for a batch, logged

	// ackBackoff spaces the resends after acks that failed to commit (a
	// full disk): resent at once, the window was acked and failed again
	// in a tight loop that flooded the log and the broker, which shut the
	// device out. Nothing is sent before ackHold; zero once an ack has
	// committed again.
	ackBackoff backoff.Backoff
	ackHold    time.Time
}

func newSender(u *Uplink) *sender {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &sender{u: u, timer: t, ackTimeout: u.cfg.AckTimeout, unsendable: map[uint64]bool{},
		adopted: map[string]uint64{}, sentMax: map[string]uint64{},
		ackBackoff: backoff.Backoff{Min: time.Second, Max: time.Minute}}
}

// run drives one connected session until ctx is done, the connection is
// lost (*mqttclient.LostError) or the queue fails (mqttclient.Fatal).
func (s *sender) run(ctx context.Context, pub publisher, lost <-chan error) error {
	u := s.u
	s.pub = pub
	s.reset()
	s.ackTimeout, s.timeouts, s.noAck = u.cfg.AckTimeout, 0, 0
	u.count(func(st *Stats) { st.AckTimeoutsInRow = 0 })
	defer s.reset()

	s.publishStatus()
	heartbeat := time.NewTicker(u.cfg.Heartbeat)
	defer heartbeat.Stop()
	poll := time.NewTicker(u.cfg.PollInterval)
	defer poll.Stop()

	err := s.check(s.fill())
	for err == nil {
		select {
		case <-ctx.Done():
			return nil
		case e := <-lost:
			return &mqttclient.LostError{Err: e}
		case m := <-u.deviceIn:
			err = s.handleDevice(m.topic, m.payload)
		case <-u.acks.done:
			err = s.acksCommitted()
		case <-s.timer.C:
			err = s.ackTimedOut()
		case <-u.wake:
			err = s.fill()
			s.maybeStatus()
		case <-poll.C:
			err = errors.Join(s.fill(), s.maybeSync())
			s.maybeStatus()
		case <-heartbeat.C:
			s.publishStatus()
		}
		err = s.check(err)
	}
	return err
}

// check sorts an error of one step: connection losses and fatal queue
// errors end the session; other queue errors are logged once per run of
// them and retried at the next poll.
func (s *sender) check(err error) error {
	switch {
	case err == nil:
		if s.queueErrs > 0 && s.ackHold.IsZero() { // not while an ack that failed to commit has not committed since
			s.u.log.Info("uplink: queue working again", "count", s.queueErrs)
			s.queueErrs = 0
		}
		return nil
	case isLost(err):
		return err
	case errors.Is(err, queue.ErrClosed), errors.Is(err, queue.ErrCorrupt):
		return mqttclient.Fatal(err)
	}
	s.queueErrs++
	if s.queueErrs == 1 {
		s.u.log.Error("uplink: queue error; retrying", "err", err)
	}
	return nil
}

func isLost(err error) bool {
	_, ok := errors.AsType[*mqttclient.LostError](err)
	return ok
}

// reset drops the window: the next fill starts from the oldest unacked
// record.
func (s *sender) reset() {
	clear(s.win)
	s.win = s.win[:0]
	s.cursor = 0
	clear(s.adopted)
	s.timer.Stop()
	s.setInFlight()
}

func (s *sender) setInFlight() {
	n := len(s.win)
	s.u.count(func(st *Stats) { st.InFlight = n })
}

// fill publishes batches of the records after the cursors until the window
// is full or no record is left: the queue's own records first, then those
// adopted from earlier queue files (each batch holds records of one epoch,
// sent under that epoch).
func (s *sender) fill() error {
	u := s.u
	if time.Now().Before(s.ackHold) {
		return nil
	}
	defer s.arm()
	var epochs []string // adopted epochs, read once per fill
	listed := false
	for len(s.win) < u.cfg.MaxInFlight {
		epoch := u.q.Epoch()
		recs, err := u.q.PeekAfter(s.cursor, u.cfg.BatchRecords, u.cfg.BatchBytes)
		if err != nil {
			return err
		}
		fromQueue := len(recs) > 0
		if fromQueue {
			s.cursor = recs[len(recs)-1].Seq
		} else {
			if !listed {
				if epochs, err = u.q.AdoptedEpochs(); err != nil {
					return err
				}
				listed = true
			}
			for len(epochs) > 0 && len(recs) == 0 {
				epoch = epochs[0]
				if recs, err = u.q.PeekAdopted(epoch, s.adopted[epoch], u.cfg.BatchRecords, u.cfg.BatchBytes); err != nil {
					return err
				}
				if len(recs) == 0 {
					epochs = epochs[1:]
				}
			}
			if len(recs) == 0 {
				return nil
			}
			s.adopted[epoch] = recs[len(recs)-1].Seq
		}
		b := wire.Batch{DeviceID: u.cfg.DeviceID, Epoch: epoch, SentAt: u.cfg.Now(), Records: make([]wire.Record, 0, len(recs))}
		seqs := make([]uint64, 0, len(recs))
		for _, r := range recs {
			if len(r.Data) > record.MaxSize {
				s.unsendableRecord(r)
				continue
			}
			b.Records = append(b.Records, wire.Record{Seq: r.Seq, Data: r.Data})
			seqs = append(seqs, r.Seq)
		}
		if len(seqs) == 0 {
			continue
		}
		msg, err := s.seal(&b)
		if err != nil {
			return fmt.Errorf("batch: %w", err)
		}
		if n := len(b.Records); n < len(seqs) {
			// Halved to fit a wire message: the rest goes in the next
			// batch.
			seqs = seqs[:n]
			if fromQueue {
				s.cursor = seqs[n-1]
			} else {
				s.adopted[epoch] = seqs[n-1]
			}
		}
		if err := tokenFailed(s.pub.Publish(u.taps, 1, false, msg)); err != nil {
			return &mqttclient.LostError{Err: fmt.Errorf("publish: %w", err)}
		}
		fresh := seqs[0] > s.sentMax[epoch]
		s.sentMax[epoch] = max(s.sentMax[epoch], seqs[len(seqs)-1])
		s.win = append(s.win, &inflight{epoch: epoch, seqs: seqs, sentAt: time.Now(), sentWall: b.SentAt, fresh: fresh})
		u.count(func(st *Stats) {
			st.BatchesSent++
			st.RecordsSent += uint64(len(seqs))
			st.BytesSent += uint64(len(msg))
			st.InFlight = len(s.win)
		})
	}
	return nil
}

// seal encodes and signs a batch. A batch too large for one wire message
// (records that compress badly, or BatchBytes near its bound) is halved
// until it fits: b.Records is cut, and the caller sends the rest later.
func (s *sender) seal(b *wire.Batch) ([]byte, error) {
	u := s.u
	for {
		payload, err := b.MarshalBinary()
		if err != nil {
			return nil, err
		}
		msg, err := wire.Seal(wire.TypeBatch, payload, !u.cfg.DisableCompression, u.cfg.DeviceKey)
		if errors.Is(err, wire.ErrTooLarge) && len(b.Records) > 1 {
			b.Records = b.Records[:len(b.Records)/2]
			u.count(func(st *Stats) { st.BatchesSplit++ })
			continue
		}
		return msg, err
	}
}

// unsendableRecord logs, once, a record that no batch can carry. It stays
// in the queue: records are never dropped silently.
func (s *sender) unsendableRecord(r queue.Record) {
	if s.unsendable[r.Seq] || len(s.unsendable) >= maxUnsendableLogged {
		return
	}
	s.unsendable[r.Seq] = true
	s.u.count(func(st *Stats) { st.Unsendable++ })
	s.u.log.Error("uplink: record too large to send; left in the queue",
		"seq", r.Seq, "size", len(r.Data))
}

// arm sets the ack timer for the oldest batch in the window.
func (s *sender) arm() {
	if len(s.win) == 0 {
		s.timer.Stop()
		return
	}
	s.timer.Reset(time.Until(s.ackDeadline()))
}

// ackDeadline is when the oldest batch in the window times out.
func (s *sender) ackDeadline() time.Time {
	from := s.win[0].sentAt
	if s.progress.After(from) {
		from = s.progress
	}
	return from.Add(s.ackTimeout)
}

// ackTimedOut sends the window again from its oldest unacked record when
// no ack has come for the oldest batch for the ack timeout since it was
// sent or since the last ack that took records out of the oldest batch,
// and doubles the timeout (up to maxAckBackoff times AckTimeout) until an
// ack takes records out of the oldest batch.
func (s *sender) ackTimedOut() error {
	u := s.u
	if len(s.win) == 0 {
		return nil
	}
	if time.Now().Before(s.ackDeadline()) {
		s.arm()
		return nil
	}
	s.timeouts++
	s.noAck++
	u.count(func(st *Stats) { st.AckTimeouts++; st.AckTimeoutsInRow = s.noAck })
	if s.timeouts == 1 {
		u.log.Warn("uplink: no ack from the server in time; sending again",
			"seq", s.win[0].seqs[0], "timeout", s.ackTimeout.String())
	} else {
		u.log.Debug("uplink: still no ack; sending again",
			"seq", s.win[0].seqs[0], "timeout", s.ackTimeout.String(), "count", s.timeouts)
	}
	s.ackTimeout = min(2*s.ackTimeout, maxAckBackoff*u.cfg.AckTimeout)
	s.reset()
	return s.fill()
}

// handleDevice processes one message on one of the device's own topics.
func (s *sender) handleDevice(topic string, payload []byte) error {
	switch topic {
	case s.u.ack:
		if a := s.checkAck(payload); a != nil {
			return s.applyAck(a)
		}
		return nil
	case s.u.cmd:
		return s.handleCmd(payload)
	}
	s.u.refuse(topic, payload, errors.New("not a topic of this device"))
	return nil
}

// checkAck returns the ack in payload if it is valid: fleet-signed, well
// formed, for this device and this queue epoch. Otherwise it refuses the
// message and returns nil.
func (s *sender) checkAck(payload []byte) *wire.Ack {
	u := s.u
	body, err := wire.Open(payload, wire.TypeAck, u.cfg.FleetPublicKey)
	if err != nil {
		u.refuse(u.ack, payload, err)
		return nil
	}
	a, err := wire.ParseAck(body)
	if err != nil {
		u.refuse(u.ack, payload, err)
		return nil
	}
	if a.DeviceID != u.cfg.DeviceID {
		u.refuse(u.ack, payload, fmt.Errorf("ack for device %q", a.DeviceID))
		return nil
	}
	if a.Epoch != u.q.Epoch() && !s.inFlight(a.Epoch) {
		u.refuse(u.ack, payload, fmt.Errorf("ack for queue epoch %q, this queue's is %q and none of that epoch is in flight", a.Epoch, u.q.Epoch()))
		return nil
	}
	if a.Epoch == u.q.Epoch() {
		// The last replay request carried out (the queue keeps it): an
		// ack of this queue made before it is a copy of an old one (kept
		// by whoever could read the ack topic), and would take the
		// records sent again out of the queue before the server has them.
		floor, err := u.q.LastReplay()
		if err != nil || s.beforeReplay(a, floor) {
			u.refuse(u.ack, payload, fmt.Errorf("ack made before the last replay request (%d): a copy of an old ack (%v)", floor, err))
			return nil
		}
	}
	u.count(func(st *Stats) { st.Acks++ })
	return a
}

// beforeReplay reports whether ack a was made before the replay request
// floor (queue.LastReplay: the requester's milliseconds; 0, none). An ack
// without a time (a version 1 ack) cannot tell: refused too. A floor more
// than queue.ReplaySlack ahead of the server's clock as this device knows
// it was set while that clock ran ahead (queue.Replay takes a new request
// then): it is not held against acks, or none would be taken until the
// clock caught up with it.
func (s *sender) beforeReplay(a *wire.Ack, floor uint64) bool {
	if floor == 0 {
		return false
	}
	if ms := s.u.serverNow().UnixMilli(); ms > 0 && floor > uint64(ms)+queue.ReplaySlack {
		return false
	}
	return a.Time.IsZero() || uint64(a.Time.UnixMilli()) < floor
}

// inFlight reports whether a batch of epoch is in the window.
func (s *sender) inFlight(epoch string) bool {
	for _, b := range s.win {
		if b.epoch == epoch {
			return true
		}
	}
	return false
}

// applyAck takes the in-flight records that a valid ack names out of the
// window, hands them to the ack committer and refills the window: the next
// batches go out while the ack is written (fsync) to the queue.
func (s *sender) applyAck(a *wire.Ack) error {
	u := s.u
	s.measureClock(a)
	seqs := s.covered(a.Epoch, a.Ranges)
	var oldest *inflight // the oldest batch, and its records in flight
	var oldestN int
	if len(s.win) > 0 {
		oldest, oldestN = s.win[0], len(s.win[0].seqs)
	}
	s.remove(a.Epoch, a.Ranges)
	if len(seqs) == 0 {
		return nil // duplicates, or for records not in flight (sent again anyway)
	}
	epoch := a.Epoch
	if epoch == u.q.Epoch() {
		epoch = "" // the queue's own records
	}
	u.acks.add(epoch, seqs)
	s.setInFlight()
	if s.noAck > 0 { // the server takes this device's batches
		s.noAck = 0
		u.count(func(st *Stats) { st.AckTimeoutsInRow = 0 })
	}
	if len(s.win) == 0 || s.win[0] != oldest || len(oldest.seqs) < oldestN {
		// The oldest batch's records came out: the timer restarts, and
		// the timeout is AckTimeout again. An ack of a later batch alone
		// does neither (TCP keeps its backed-off timeout until new data,
		// cumulatively, is acked: RFC 6298, 5.5 and the note after 5.7):
		// reset by it, an oldest batch the server kept refusing (a
		// device over its aside budget, a commit that keeps failing) was
		// sent again, with the window after it, every AckTimeout for as
		// long as riders tapped, each time with a warning.
		s.progress = time.Now()
		if s.timeouts > 0 {
			u.log.Info("uplink: acks from the server resumed", "count", s.timeouts)
			s.timeouts = 0
		}
		s.ackTimeout = u.cfg.AckTimeout
	}
	return s.fill()
}

// acksCommitted takes the outcome of the acks committed since the last
// call. A failed commit leaves its records in the queue but out of the
// window, so sending starts again from the oldest unacked record; an ack
// that left the queue empty makes SyncSucceeded due.
func (s *sender) acksCommitted() error {
	res := s.u.acks.result()
	if res.err != nil {
		s.reset()
		s.ackHold = time.Now().Add(s.ackBackoff.Next())
		return res.err // resent at a poll once ackHold has passed
	}
	if !s.ackHold.IsZero() {
		s.ackHold = time.Time{}
		s.ackBackoff.Reset()
	}
	if res.empty {
		s.syncPending = true
		s.u.statusDirty.Store(true)
		return s.maybeSync()
	}
	return nil
}

// measureClock takes a clock sample from a timed ack of a batch sent once
// (NTP's way, with one timestamp): the server made the ack between the
// send and the receipt, so the device clock at the middle of the round
// trip, minus the ack's time, is the offset, within half the round trip.
// The round trip is measured on the monotonic clock, so a wall-clock jump
// in flight does not distort it.
func (s *sender) measureClock(a *wire.Ack) {
	if a.Time.IsZero() {
		return // an older server's ack: no time
	}
	var b *inflight
	for _, w := range s.win {
		if w.epoch == a.Epoch && w.fresh && slices.ContainsFunc(w.seqs, func(seq uint64) bool { return inRanges(a.Ranges, seq) }) {
			b = w
			break
		}
	}
	if b == nil {
		return
	}
	rtt := time.Since(b.sentAt)
	mid := s.u.cfg.Now().Add(-rtt / 2)
	smp := ClockSample{Offset: mid.Sub(a.Time), Uncertainty: rtt/2 + time.Millisecond, At: time.Now(), RTT: rtt}
	s.u.clockSample(smp)
}

// covered returns the in-flight seqs of epoch that ranges (ascending,
// disjoint) cover. Only records in flight are acked: an ack is for what
// was sent, and this bounds the work whatever ranges a message holds.
func (s *sender) covered(epoch string, ranges []wire.Range) []uint64 {
	var out []uint64
	for _, b := range s.win {
		if b.epoch != epoch {
			continue
		}
		for _, seq := range b.seqs {
			if inRanges(ranges, seq) {
				out = append(out, seq)
			}
		}
	}
	return out
}

// remove takes the seqs of epoch that ranges cover out of the window and
// drops the batches left empty.
func (s *sender) remove(epoch string, ranges []wire.Range) {
	win := s.win[:0]
	for _, b := range s.win {
		if b.epoch != epoch {
			win = append(win, b)
			continue
		}
		left := b.seqs[:0]
		for _, seq := range b.seqs {
			if !inRanges(ranges, seq) {
				left = append(left, seq)
			}
		}
		if b.seqs = left; len(left) > 0 {
			win = append(win, b)
		}
	}
	clear(s.win[len(win):])
	s.win = win
}

// inRanges reports whether seq is in one of ranges (ascending, disjoint).
func inRanges(ranges []wire.Range, seq uint64) bool {
	i := sort.Search(len(ranges), func(i int) bool { return ranges[i].To >= seq })
	return i < len(ranges) && ranges[i].From <= seq
}

// handleCmd carries out a fleet-signed command for this device: a replay
// request moves archived records back into the queue, and sending starts
// again from the oldest unacked record; an assignment sets the route and
// vehicle (Config.Assign).
func (s *sender) handleCmd(payload []byte) error {
	u := s.u
	if len(payload) == 0 {
		return nil // a retained assignment cleared on the broker
	}
	t, err := wire.PeekType(payload)
	if err == nil && t == wire.TypeAssign {
		s.handleAssign(payload)
		return nil
	}
	if err == nil && t != wire.TypeReplay {
		err = fmt.Errorf("%s message on the command topic", t)
	}
	if err != nil {
		u.refuse(u.cmd, payload, err)
		return nil
	}
	body, err := wire.Open(payload, wire.TypeReplay, u.cfg.FleetPublicKey)
	if err != nil {
		u.refuse(u.cmd, payload, err)
		return nil
	}
	r, err := wire.ParseReplay(body)
	if err != nil {
		u.refuse(u.cmd, payload, err)
		return nil
	}
	if r.DeviceID != u.cfg.DeviceID {
		u.refuse(u.cmd, payload, fmt.Errorf("replay for device %q", r.DeviceID))
		return nil
	}
	if r.Epoch != u.q.Epoch() {
		u.refuse(u.cmd, payload, fmt.Errorf("replay for queue epoch %q, this queue's is %q", r.Epoch, u.q.Epoch()))
		return nil
	}
	if r.ID == 0 {
		// The copy a server sends for validators from before request
		// ids (or one from a server before them: upgrade it). Not
		// carried out, not counted as refused.
		u.log.Debug("uplink: a replay request without an id ignored (the copy for older validators)")
		return nil
	}
	// The server's clock as this device knows it: the id a request made
	// now carries.
	n, err := u.q.Replay(r.ID, uint64(max(u.serverNow().UnixMilli(), 1)), r.From, r.To)
	if errors.Is(err, queue.ErrReplayed) {
		u.refuse(u.cmd, payload, err)
		return nil
	}
	if err != nil {
		return err
	}
	u.log.Info("uplink: replaying archived records at the server's request",
		"from", r.From, "to", r.To, "records", n)
	u.count(func(st *Stats) { st.Replays++ })
	u.statusDirty.Store(true)
	s.reset()
	return s.fill()
}

// handleAssign checks an assignment (fleet-signed, well formed, for this
// device) and hands it to Config.Assign.
func (s *sender) handleAssign(payload []byte) {
	u := s.u
	if u.cfg.Assign == nil {
		u.refuse(u.cmd, payload, errors.New("assignments are not taken by this device"))
		return
	}
	body, err := wire.Open(payload, wire.TypeAssign, u.cfg.FleetPublicKey)
	if err != nil {
		u.refuse(u.cmd, payload, err)
		return
	}
	a, err := wire.ParseAssignment(body)
	if err != nil {
		u.refuse(u.cmd, payload, err)
		return
	}
	if a.DeviceID != u.cfg.DeviceID {
		u.refuse(u.cmd, payload, fmt.Errorf("assignment for device %q", a.DeviceID))
		return
	}
	if err := u.cfg.Assign(a); err != nil {
		u.refuse(u.cmd, payload, fmt.Errorf("assignment version %d: %w", a.Version, err))
		return
	}
	u.count(func(st *Stats) { st.Assignments++ })
	u.statusNow.Store(true)
	u.statusDirty.Store(true)
}

// maybeSync calls SyncSucceeded if an ack emptied the queue, it is still
// empty, and the last call was at least SyncInterval ago (otherwise the
// next poll tries again).
func (s *sender) maybeSync() error {
	u := s.u
	if !s.syncPending || (!s.lastSync.IsZero() && time.Since(s.lastSync) < u.cfg.SyncInterval) {
		return nil
	}
	qs, err := u.q.Stats()
	if err != nil {
		return err
	}
	s.syncPending = false
	if qs.Count != 0 || qs.Adopted != 0 {
		return nil // not all acked after all; the next emptying ack sets it again
	}
	s.lastSync = time.Now()
	if err := u.state.SyncSucceeded(); err != nil {
		u.log.Warn("uplink: SyncSucceeded failed", "err", err)
		return nil
	}
	u.count(func(st *Stats) { st.SyncCalls++ })
	return nil
}

// maybeStatus publishes the status if something it shows has changed and
// the last one went StatusMinInterval ago or more, or an operator waits
// for the change (an assignment, a downlink other than a deny-list shard,
// StatusChanged); otherwise a later poll sends it.
func (s *sender) maybeStatus() {
	if !s.u.statusNow.Load() && (!s.u.statusDirty.Load() ||
		(!s.lastStatus.IsZero() && time.Since(s.lastStatus) < s.u.cfg.StatusMinInterval)) {
		return
	}
	s.publishStatus()
}

// publishStatus publishes the online status now: it shows every change
// made so far.
func (s *sender) publishStatus() {
	s.u.statusNow.Store(false)
	s.u.statusDirty.Store(false)
	s.lastStatus = time.Now()
	s.u.publishStatus(s.pub, true)
}
