package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/wire"
)

// store adapts the ledger to what the MQTT ingest needs.
type store Server

var (
	_ ingest.Store          = (*store)(nil)
	_ ingest.BatchCommitter = (*store)(nil)
	_ ingest.StatusRecorder = (*store)(nil)
)

func (st *store) DeviceKey(ctx context.Context, id string) (ed25519.PublicKey, error) {
	return st.devs.Key(ctx, id)
}

// Commit settles a verified batch: unreadable records are quarantined;
// taps whose code the server cannot check with its current state (an issuer
// key its keyring lacks) are held aside, to be re-checked when the keyring
// changes; taps whose code fails only on time (issuer and rider
// signatures good) are stored flagged and uncharged, and those whose pass
// or rider signature does not verify quarantined (nothing but the device
// says whose they are); the rest are charged by the ledger from the server's own fare
// tables. A tap id the ledger already holds with other contents is
// quarantined too, never acked as if settled. A batch the ledger refuses
// as invalid is retried tap by tap so one bad record cannot block a
// device's queue: the bad ones are quarantined. A tap whose route is not
// the one the operator had assigned its device at the tap's time (the
// newest assignment at or before it, the tap's device time taken to the
// server's clock by the device's last reported offset) is noted
// route_mismatch and charged by its own route (see ledger.NoteRouteMismatch).
func (st *store) Commit(ctx context.Context, b *ingest.Batch) error {
	return st.CommitBatches(ctx, []*ingest.Batch{b})
}

// keepAsideRevoked quarantines a revoked device's batch: its records are
// kept for the operator, never charged.
func (st *store) keepAsideRevoked(ctx context.Context, b *ingest.Batch) error {
	s := (*Server)(st)
	quarantine := make([]ledger.QuarantinedRecord, 0, len(b.Taps))
	for _, t := range b.Taps {
		quarantine = append(quarantine, ledger.QuarantinedRecord{DeviceID: b.DeviceID, Epoch: b.Epoch, Seq: t.Seq,
			Reason: ingest.RejectRevokedDevice, Record: t.Record})
	}
	s.log.Warn("batch of a revoked device kept aside, not charged", "device", b.DeviceID, "records", len(b.Taps))
	return s.ledger.Quarantine(ctx, quarantine)
}

// tapPlace is where a checked tap record goes (sortTap).
type tapPlace int

const (
	toLedger tapPlace = iota
	toHold
	toQuarantine
)

// sortTap says where a checked tap record goes, as it arrives and when a
// held one is checked again: held while its code's issuer key is unknown;
// quarantined when it is unreadable or not attributable to the account its
// code names (nothing but the device says it is that rider's: see
// ingest.Tap.Attributable); else to the ledger, as the returned tap,
// flagged invalid_code when its code did not verify.
func sortTap(device, epoch string, t *ingest.Tap) (tapPlace, ledger.Tap) {
	switch {
	case t.Tap == nil || t.Code == nil:
		return toQuarantine, ledger.Tap{}
	case t.Verdict == paycode.ReasonUnknownIssuerKey:
		return toHold, ledger.Tap{}
	case !t.Attributable():
		return toQuarantine, ledger.Tap{}
	}
	lt := ledgerTap(device, epoch, t)
	if !t.Valid() {
		lt.Flag = ledger.FlagInvalidCode
	}
	return toLedger, lt
}

// noteRoute notes a tap route_mismatch when its route is not the one its
// device was assigned at its time (assigned: the device's history, its
// clock offset taking the tap's device time to the server's). A tap whose
// vehicle is not the one its device was assigned at its time is stored
// with no vehicle (unknown; its record keeps the claim): the reuse rule
// forgives a quick transfer between two vehicles, never two doors of one,
// and a stolen validator that claimed the vehicle of the bus that took a
// code it was shown denied the rider's pass with that one code. Unknown
// rather than the assignment's: an assignment not updated when a
// validator moved to another bus would then judge two buses one vehicle
// and deny an honest transfer; unknown errs only towards forgiving. A
// device with no vehicle assigned (never assigned, or a route alone) is
// believed about its vehicle: the server knows no other (provisioning's
// --vehicle stays on the device), and taking every such claim as unknown
// would end the two-door rule in fleets that do not assign vehicles
// through the API (README).
func (s *Server) noteRoute(lt *ledger.Tap, assigned ledger.AssignmentHistory) {
	a, ok := assigned.At(lt.Time)
	if !ok {
		return
	}
	if a.Route != lt.Route {
		lt.Notes = append(lt.Notes, ledger.NoteRouteMismatch)
		s.log.Warn("tap on another route than the device's assignment (noted route_mismatch)", "tap", lt.ID,
			"route", lt.Route, "assigned", a.Route, "assignment", a.Version, "clock_offset", assigned.ClockOffset.String())
	}
	if a.Vehicle != "" && lt.Vehicle != "" && a.Vehicle != lt.Vehicle {
		s.log.Warn("tap on another vehicle than the device's assignment: its vehicle stored as unknown", "tap", lt.ID,
			"vehicle", record.Printable(lt.Vehicle, 80), "assigned", a.Vehicle, "assignment", a.Version)
		lt.Vehicle = ""
	}
}

// classify sorts a batch's taps: unreadable records to quarantine, taps
// whose issuer key the server lacks to hold, the rest to the ledger
// (flagged when their code is invalid in itself, noted when their route is
// not the one assigned: assigned is the device's history, and its clock
// offset takes the tap's device time to the server's).
func (st *store) classify(b *ingest.Batch, assigned ledger.AssignmentHistory) (taps []ledger.Tap, quarantine []ledger.QuarantinedRecord,
	held []ledger.HeldTap, maxSeq uint64) {
	s := (*Server)(st)
	for i := range b.Taps {
		t := &b.Taps[i]
		if t.Seq <= math.MaxInt64 {
			// A sequence number beyond the ledger's range (a stolen
			// validator's: the wire carries 64 bits) is quarantined
			// with its record below, not noted as synced: the ledger
			// refuses it, and with it the noting of every device of
			// the coalesced commit (TestHugeSeqDoesNotStopOthersSync).
			maxSeq = max(maxSeq, t.Seq)
		}
		where, lt := sortTap(b.DeviceID, b.Epoch, t)
		switch where {
		case toQuarantine:
			quarantine = append(quarantine, ledger.QuarantinedRecord{DeviceID: b.DeviceID, Epoch: b.Epoch, Seq: t.Seq,
				Reason: string(t.Verdict), Record: t.Record})
			if t.Code != nil {
				s.log.Warn("tap whose code's credential or rider signature does not verify: quarantined, not stored under the account it names",
					"tap", t.ID, "verdict", t.Verdict, "code_hash", t.CodeHash)
			}
		case toHold:
			held = append(held, ledger.HeldTap{DeviceID: b.DeviceID, Epoch: b.Epoch, Seq: t.Seq, Reason: string(t.Verdict),
				Record: t.Record})
		default:
			s.noteRoute(&lt, assigned)
			if err := lt.Validate(); err != nil {
				// What the ledger would refuse (a claim out of its
				// columns' range), kept aside here: counted against the
				// device's aside budget, and the rest of the set goes in
				// at once rather than tap by tap.
				quarantine = append(quarantine, ledger.QuarantinedRecord{DeviceID: b.DeviceID, Epoch: b.Epoch, Seq: t.Seq,
					Reason: record.Printable(fmt.Sprintf("ledger: %v", err), 256), Record: t.Record})
				s.log.Error("record the ledger would refuse, quarantined", "tap", t.ID, "err", err)
				continue
			}
			if lt.Flag != "" {
				s.log.Warn("tap with an invalid code stored uncharged", "tap", t.ID, "verdict", t.Verdict,
					"account", t.Code.Account, "code_hash", t.CodeHash)
			}
			taps = append(taps, lt)
		}
	}
	return taps, quarantine, held, maxSeq
}

// CommitBatches settles several devices' batches together (Commit is the
// case of one): their taps go to the ledger in one CommitTaps call (the
// set-based path settles a big set much faster than many small ones).
// Revoked devices' batches are kept aside. A set the ledger refuses as
// invalid is settled again batch by batch, and a single batch it refuses
// tap by tap, so one bad record cannot block a device's queue: the bad
// ones are quarantined.
//
// A SQLite ledger file removed under the server fails every write after
// its commit (ledger.FileGone): such a batch is not acked, and its device
// sends it again.
func (st *store) CommitBatches(ctx context.Context, bs []*ingest.Batch) error {
	// A set larger than one ledger call takes (32 devices' batches of up to
	// 1,000 records each, in a catch-up) goes in several calls of at most
	// ledger.MaxCommitTaps taps, not to the ledger whole to be refused and
	// settled batch by batch.
	if n := 0; len(bs) > 1 {
		for i, b := range bs {
			if n += len(b.Taps); n > ledger.MaxCommitTaps {
				if err := st.CommitBatches(ctx, bs[:max(i, 1)]); err != nil {
					return err
				}
				return st.CommitBatches(ctx, bs[max(i, 1):])
			}
		}
	}
	s := (*Server)(st)
	var taps []ledger.Tap
	var quarantine []ledger.QuarantinedRecord
	var held []ledger.HeldTap
	type span struct {
		b        *ingest.Batch
		from, to int
		maxSeq   uint64
		aside    int // records quarantined or held by this call
	}
	spans := make([]span, 0, len(bs))
	ids := make([]string, 0, len(bs))
	for _, b := range bs {
		if !b.Revoked {
			ids = append(ids, b.DeviceID)
		}
	}
	assigned, err := s.ledger.DevicesAssignments(ctx, ids)
	if err != nil {
		return err
	}
	for _, b := range bs {
		if b.Revoked {
			if err := st.keepAsideRevoked(ctx, b); err != nil {
				return err
			}
			b.Aside = len(b.Taps)
			continue
		}
		t, q, h, m := st.classify(b, assigned[b.DeviceID])

		spans = append(spans, span{b: b, from: len(taps), to: len(taps) + len(t), maxSeq: m})
		taps, quarantine, held = append(taps, t...), append(quarantine, q...), append(held, h...)
	}
	if len(spans) == 0 {
		return nil
	}
	// The budget is charged what this call kept aside: a batch sent again
	// (its ack lost, or a replay) keeps nothing new aside, and charged
	// again for what it kept the first time, a device whose acks got lost
	// was refused for an hour once a few resends of one batch had used up
	// its budget (TestResentBatchNotChargedAgain).
	quarantined, err := s.ledger.QuarantineKept(ctx, quarantine)
	if err != nil {
		return err
	}
	kept, err := st.hold(ctx, held)
	if err != nil {
		return err
	}
	for device, n := range quarantined {
		kept[device] += n
	}
	for i := range spans {
		spans[i].aside, kept[spans[i].b.DeviceID] = kept[spans[i].b.DeviceID], 0 // a device's first batch
	}
	res, err := s.ledger.CommitTaps(ctx, taps)
	if errors.Is(err, ledger.ErrInvalid) {
		if len(spans) == 1 {
			var refused int
			res, refused, err = st.commitOneByOne(ctx, taps)
			spans[0].aside += refused
		} else {
			for _, sp := range spans {
				if err := st.Commit(ctx, sp.b); err != nil {
					return err
				}
				// What the first pass kept aside is no longer new to
				// the batch's own pass: charged here (review).
				sp.b.Aside += sp.aside
			}
			return nil
		}
	}
	if err != nil {
		return err
	}
	if len(res) != len(taps) {
		return fmt.Errorf("ledger returned %d results for %d taps", len(res), len(taps))
	}
	for _, sp := range spans {
		if err := st.quarantineConflicts(ctx, sp.b, taps[sp.from:sp.to], res[sp.from:sp.to]); err != nil {
			return err
		}
		// What the device's budget of records kept aside is charged
		// (ingest.Config.AsideBudget): a stolen validator signing junk or
		// replaying codes it read is bounded by it, not by the disk. So
		// are new taps charged nothing (transfers, taps past the daily
		// cap, free profiles): a stolen validator and an account of the
		// thief's own signed codes without end, each a valid tap, stored
		// and charged 0 past the day's cap — 82,000 taps in 10 s, every
		// batch acked (an attack review). An honest validator records far
		// fewer in an hour than the budget.
		sp.b.Aside = sp.aside
		for _, r := range res[sp.from:sp.to] {
			if r.Conflict || !r.Duplicate && (r.Flag != "" || r.Charge == 0) {
				sp.b.Aside++
			}
		}
	}
	s.observeLag(taps, res)
	if s.cfg.AfterCommit != nil {
		s.cfg.AfterCommit()
	}
	// Every device of the set noted in one transaction: one per device
	// was a write transaction per batch beside the set's one, the most of
	// the ledger's transactions while taps travel a few to a batch.
	synced := make(map[string]uint64, len(spans))
	for _, sp := range spans {
		synced[sp.b.DeviceID] = max(synced[sp.b.DeviceID], sp.maxSeq)
	}
	if err := s.ledger.NoteDevicesSync(ctx, synced); err != nil {
		s.log.Warn("noting device sync", "devices", len(synced), "err", err)
	}
	s.pub.Changed(record.DocDenyList) // coalesced; a commit may have moved the deny list
	return nil
}

// quarantineConflicts keeps aside the records whose tap id the ledger holds
// with other contents: the stored tap stands, the new record is kept for
// the operator (visible on the console), and nothing is charged for it.
// One with another payment code than the stored tap's (OtherCode) is
// another ride under a reused id — two validators running with one
// identity (an SD card cloned onto a spare bus: both number on from the
// same file, and two taps a few milliseconds apart get one number), or a
// validator whose queue file was put back from an older backup and whose
// clock was not set when it took its first tap since (see
// queue.Options.SeqFloor) — the log says so, naming both causes: the
// clone is the one an operator must act on.
func (st *store) quarantineConflicts(ctx context.Context, b *ingest.Batch, taps []ledger.Tap, res []ledger.TapResult) error {
	s := (*Server)(st)
	var q []ledger.QuarantinedRecord
	for i, r := range res {
		if !r.Conflict {
			continue
		}
		q = append(q, ledger.QuarantinedRecord{DeviceID: b.DeviceID, Epoch: b.Epoch, Seq: taps[i].Seq,
			Reason: ReasonTapIDConflict, Record: taps[i].Record})
		msg := "tap id already settled with other contents; record quarantined, not charged"
		if r.OtherCode {
			msg = "tap id already settled with another payment code: two validators running with this device's identity (a cloned SD card or copied bundle: " +
				"provision the second its own, farego-provision device --id), or its queue file put back from a backup; record quarantined, not charged"
		}
		s.log.Error(msg, "tap", r.ID, "device", b.DeviceID)
	}
	return s.ledger.Quarantine(ctx, q)
}

// maxReportedOffsetMS bounds a clock offset a device reports (ten years):
// beyond it the status time is used.
const maxReportedOffsetMS = 10 * 365 * 24 * 3600 * 1000

// ReasonTapIDConflict is the quarantine reason of a record whose tap id
// (device, epoch, seq) the ledger holds with other contents.
const ReasonTapIDConflict = "tap_id_conflict"

// hold keeps records aside; one the ledger refuses to hold (its epoch not
// one a tap may have, say) is quarantined instead, the others held: no
// bad record blocks the batches it came with. It returns how many of each
// device's records it kept aside that were not before.
func (st *store) hold(ctx context.Context, held []ledger.HeldTap) (map[string]int, error) {
	s := (*Server)(st)
	kept, err := s.ledger.HoldKept(ctx, held)
	if !errors.Is(err, ledger.ErrInvalid) || len(held) == 0 {
		if kept == nil {
			kept = map[string]int{}
		}
		return kept, err
	}
	kept = map[string]int{}
	for _, h := range held {
		n, err := s.ledger.HoldKept(ctx, []ledger.HeldTap{h})
		if errors.Is(err, ledger.ErrInvalid) {
			n, err = map[string]int{h.DeviceID: 1}, st.quarantineRefused(ctx, h.DeviceID, h.Epoch, h.Seq, h.Record, err)
		}
		if err != nil {
			return nil, err
		}
		kept[h.DeviceID] += n[h.DeviceID]
	}
	return kept, nil
}

// quarantineRefused keeps aside a device's record the ledger refused
// (refusal), with the refusal as its reason (a held record leaves the held
// list with it).
func (st *store) quarantineRefused(ctx context.Context, device, epoch string, seq uint64, rec []byte, refusal error) error {
	s := (*Server)(st)
	s.log.Error("record refused by the ledger, quarantined", "tap", ledger.TapID(device, epoch, seq), "err", refusal)
	return s.ledger.Quarantine(ctx, []ledger.QuarantinedRecord{{DeviceID: device, Epoch: epoch, Seq: seq,
		Reason: record.Printable(fmt.Sprintf("ledger: %v", refusal), 256), Record: rec}})
}

// commitOneByOne commits taps one at a time: a tap the ledger refuses is
// quarantined (its result names it alone; refused counts them), and the
// others are committed.
func (st *store) commitOneByOne(ctx context.Context, taps []ledger.Tap) (res []ledger.TapResult, refused int, err error) {
	s := (*Server)(st)
	out := make([]ledger.TapResult, len(taps))
	for i, t := range taps {
		r, err := s.ledger.CommitTaps(ctx, []ledger.Tap{t})
		if errors.Is(err, ledger.ErrInvalid) {
			err = st.quarantineRefused(ctx, t.DeviceID, t.Epoch, t.Seq, t.Record, err)
			r = []ledger.TapResult{{ID: t.ID}}
			refused++
		}
		if err != nil {
			return nil, 0, err
		}
		out[i] = r[0]
	}
	return out, refused, nil
}

// ledgerTap is what the ledger is told of a checked tap: the account,
// serial, profile and rider key come from the code's credential (which the
// server verified), the time from the record, and the fare, currency,
// profile and fare version the record claims are passed as claims only.
func ledgerTap(device, epoch string, t *ingest.Tap) ledger.Tap {
	w, c := t.Tap, t.Code
	return ledger.Tap{
		ID: ledger.TapID(device, epoch, t.Seq), DeviceID: device, Seq: t.Seq, Epoch: epoch, Time: w.Time,
		Account: c.Account, Serial: c.Serial, RiderKey: c.RiderKey[:], CodeKey: c.ID().Key(), CodeHash: t.CodeHash,
		Profile: c.Profile, ClaimedProfile: w.Profile, BaseFare: w.Fare, Currency: w.Currency, FareVersion: w.FareVersion,
		Route: w.Route, Vehicle: w.Vehicle, Record: t.Record,
		CredentialNotBefore: time.Unix(int64(c.NotBefore), 0), CredentialNotAfter: time.Unix(int64(c.NotAfter), 0),
	}
}

func (st *store) Status(ctx context.Context, m *wire.Status) error {
	if err := (*Server)(st).ledger.UpdateDeviceStatus(ctx, m.DeviceID, deviceStatus(m)); err != nil {
		return err
	}
	(*Server)(st).sendKeptReplays(m)
	return nil
}

// Statuses records several devices' statuses (as Status does each) in one
// ledger transaction. A status the ledger refuses for what it holds (a
// stolen validator's time before 1970) is left out and named in an
// *ingest.StatusesRefused: it failed the call, and the ingest then
// recorded every other status of the call alone, a transaction each, as
// often as that device sent one.
func (st *store) Statuses(ctx context.Context, ms []*wire.Status) error {
	us := make([]ledger.DeviceStatusUpdate, len(ms))
	for i, m := range ms {
		us[i] = ledger.DeviceStatusUpdate{ID: m.DeviceID, Status: deviceStatus(m)}
	}
	refused, err := (*Server)(st).ledger.UpdateDevicesStatus(ctx, us)
	if err != nil {
		return err
	}
	for i, m := range ms {
		if refused[i] == nil {
			(*Server)(st).sendKeptReplays(m)
		}
	}
	if refused != nil {
		return &ingest.StatusesRefused{Refused: refused}
	}
	return nil
}

// deviceStatus is a device's status message as the ledger records it.
func deviceStatus(m *wire.Status) ledger.DeviceStatus {
	ds := ledger.DeviceStatus{Online: m.Online, QueueDepth: m.QueueDepth, LastSeen: m.Time, Written: m.Time, Software: m.Software,
		Epoch: m.Epoch, OutOfService: m.OutOfService, Versions: m.Versions}
	// Not for an offline status: its time says when it was written (a last
	// will, at connect time: the ledger keeps the newer status recorded
	// since, see UpdateDeviceStatus).
	if m.Online && m.ClockOffsetMS != nil && *m.ClockOffsetMS > -maxReportedOffsetMS && *m.ClockOffsetMS < maxReportedOffsetMS {
		// The device measured its offset against this server's acks (to
		// half a round trip): better than its status time, which a
		// retained status delivers late. The ledger derives the offset
		// from LastSeen when it records the status, so LastSeen becomes
		// the device's clock now, as the device measured it.
		ds.LastSeen = time.Now().Add(time.Duration(*m.ClockOffsetMS) * time.Millisecond)
	}
	ds.OldestUnsent = secondsDuration(m.OldestUnsentSec)
	// The device's word (wire bounds it), for the operator: when the
	// broker starts refusing it.
	ds.CertNotAfter = m.CertNotAfter
	if a := m.Assignment; a != nil {
		ds.Route, ds.Vehicle, ds.ServerVersion = a.Route, a.Vehicle, a.ServerVersion
	}
	if u := m.Update; u != nil {
		// The reason is the device's error text: cut to the ledger's
		// bound and made printable rather than refused. The ledger
		// refuses whatever else is out of bounds.
		ds.Update = ledger.DeviceUpdate{Pending: u.Pending, Failed: u.Failed, FailedReason: record.Printable(u.FailedReason, ledger.MaxUpdateReason),
			FailedAt: u.FailedAt}
	}
	return ds
}

// observeLag records the settlement lag (now minus tap time) of the taps a
// commit settled for the first time.
func (s *Server) observeLag(taps []ledger.Tap, res []ledger.TapResult) {
	if s.lag == nil {
		return
	}
	now := time.Now()
	for i, r := range res {
		if !r.Duplicate && !r.Conflict {
			s.lag.Observe(max(now.Sub(taps[i].Time), 0).Seconds())
		}
	}
}
