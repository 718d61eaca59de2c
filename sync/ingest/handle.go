package ingest

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// handle processes one message from a device topic: a status is checked
// and returned, to be recorded (with others) by recordStatuses; a tap
// batch is checked and returned, to be committed (with others) and acked
// by commitBatches. Every outcome is counted; nothing in a payload can
// make it panic, commit or ack unless the payload is a batch signed by the
// topic's device.
func (in *Ingest) handle(ctx context.Context, topic string, payload []byte) (*prepared, *wire.Status) {
	id, kind, err := in.topics.ParseDevice(topic)
	if err != nil || (kind != wire.KindTaps && kind != wire.KindStatus) {
		in.stats.reject(RejectBadTopic)
		if ok, n := in.limit.Allow("topic"); ok {
			in.log.Warn("ingest: message on an unexpected topic", logKeyTopic, topic, logKeySize, len(payload), logKeySuppressed, n)
		}
		return nil, nil
	}
	if kind == wire.KindStatus {
		return nil, in.checkStatus(ctx, id, payload)
	}
	return in.prepareBatch(ctx, id, payload), nil
}

// refuse counts a refused message and logs it at most once a minute per
// device and reason. The payload itself is never logged.
func (in *Ingest) refuse(reason, device, topicKind string, size int, why error) {
	in.stats.reject(reason)
	if ok, n := in.limit.Allow(reason + "\x00" + device); ok {
		in.log.Warn("ingest: message refused", logKeyReason, reason, logKeyDevice, device, logKeyKind, topicKind,
			logKeySize, size, logKeyErr, why, logKeySuppressed, n)
	}
}

// open checks a device message's envelope: its type, the device's key and
// the signature. It returns the payload and whether the device is revoked,
// or ok false after refusing the message.
func (in *Ingest) open(ctx context.Context, id, kind string, payload []byte, want wire.Type, limit int) (body []byte, revoked, ok bool) {
	t, err := wire.PeekType(payload)
	if err == nil && t != want {
		err = fmt.Errorf("%w: a %s message on the %s topic", wire.ErrUnsupported, t, kind)
	}
	if err != nil {
		in.refuse(RejectMalformed, id, kind, len(payload), err)
		return nil, false, false
	}
	var key ed25519.PublicKey
	err = in.storeCall(ctx, func(ctx context.Context) (err error) {
		key, err = in.store.DeviceKey(ctx, id)
		return err
	})
	switch {
	case errors.Is(err, ErrUnknownDevice):
		in.refuse(RejectUnknownDevice, id, kind, len(payload), err)
		return nil, false, false
	case errors.Is(err, ErrRevokedDevice):
		revoked = true
	case err != nil:
		in.refuse(RejectStoreError, id, kind, len(payload), err)
		return nil, false, false
	}
	if len(key) != ed25519.PublicKeySize {
		in.refuse(RejectStoreError, id, kind, len(payload), fmt.Errorf("device key is %d bytes", len(key)))
		return nil, false, false
	}
	body, err = wire.OpenLimit(payload, want, key, limit)
	switch {
	case errors.Is(err, wire.ErrBadSignature):
		in.refuse(RejectBadSignature, id, kind, len(payload), err)
		return nil, false, false
	case err != nil:
		in.refuse(RejectMalformed, id, kind, len(payload), err)
		return nil, false, false
	}
	return body, revoked, true
}

// prepared is a checked tap batch waiting for its commit.
type prepared struct {
	batch *Batch
	seqs  []uint64
	size  int // of the message
}

// batchBytesPerRecord is a batch's bytes for one of its records at most
// (record.MaxSize, its sequence number and length): a batch's payload
// inflated is charged to the verify budget as len/batchBytesPerRecord
// records, never more than it holds.
const batchBytesPerRecord = record.MaxSize + 12

// prepareBatch checks and re-verifies one tap batch; nil if refused.
func (in *Ingest) prepareBatch(ctx context.Context, id string, payload []byte) *prepared {
	if in.verify.over(id) {
		in.refuse(RejectVerifyBudget, id, wire.KindTaps, len(payload),
			fmt.Errorf("more than %d of its records checked in an hour: not taken until the budget refills", in.cfg.VerifyBudget))
		return nil
	}
	body, revoked, ok := in.open(ctx, id, wire.KindTaps, payload, wire.TypeBatch, wire.MaxPayloadSize)
	if !ok {
		return nil
	}
	// What was inflated is charged at once, as the records it could hold,
	// whatever comes of it: a batch of a few kilobytes inflating to
	// wire.MaxPayloadSize, refused as malformed, cost nothing, and a
	// stolen validator sent 40 a second (an attack review: 3.2 GB
	// inflated in 20 s, a third of a core). A batch's records are charged
	// (below) beyond that.
	charged := max(len(body)/batchBytesPerRecord, 1)
	in.verify.charge(id, charged)
	b, err := wire.ParseBatch(body)
	if err != nil {
		in.refuse(RejectMalformed, id, wire.KindTaps, len(payload), err)
		return nil
	}
	if b.DeviceID != id {
		in.refuse(RejectDeviceMismatch, id, wire.KindTaps, len(payload), fmt.Errorf("batch of device %q", b.DeviceID))
		return nil
	}
	// Charged before the records are checked, whatever comes of them
	// (signed by the device: nobody else can use its budget up).
	in.verify.charge(id, len(b.Records)-charged)
	kr := in.cfg.Keyring()
	batch := &Batch{DeviceID: id, Epoch: b.Epoch, SentAt: b.SentAt, Taps: make([]Tap, len(b.Records)), Revoked: revoked}
	seqs := make([]uint64, len(b.Records))
	for i, r := range b.Records {
		batch.Taps[i] = in.check(id, b.Epoch, r, kr)
		seqs[i] = r.Seq
	}
	return &prepared{batch: batch, seqs: seqs, size: len(payload)}
}

// commitBatches commits checked batches, of different devices, and acks
// each one committed. With a Store that is a BatchCommitter they go in one
// call (the ledger gets one big set instead of many small ones); if that
// fails, each is committed alone, so that one batch the store refuses
// does not hold the others back. A batch is acked only after its own
// taps are committed.
func (in *Ingest) commitBatches(ctx context.Context, group []*prepared) {
	group = in.withinBudget(group)
	var bs []*Batch
	var rest []*prepared
	for _, p := range group {
		if p.batch.Revoked {
			rest = append(rest, p)
		} else {
			bs = append(bs, p.batch)
		}
	}
	if bc, ok := in.store.(BatchCommitter); ok && len(bs) > 1 {
		if err := in.storeCall(ctx, func(ctx context.Context) error { return bc.CommitBatches(ctx, bs) }); err == nil {
			for _, p := range group {
				if !p.batch.Revoked {
					in.committed(ctx, p)
				}
			}
			group = rest
		} else {
			in.log.Debug("ingest: coalesced commit failed; committing batch by batch", logKeyCount, len(bs), logKeyErr, err)
		}
	}
	for _, p := range group {
		if err := in.storeCall(ctx, func(ctx context.Context) error { return in.store.Commit(ctx, p.batch) }); err != nil {
			in.commitFailed(p, err)
			continue
		}
		in.committed(ctx, p)
	}
}

// withinBudget returns the batches of group whose devices have not used
// up their aside budget, and refuses the others (not committed, not
// acked).
func (in *Ingest) withinBudget(group []*prepared) []*prepared {
	out := group[:0]
	for _, p := range group {
		if in.aside.over(p.batch.DeviceID) {
			in.refuse(RejectAsideBudget, p.batch.DeviceID, wire.KindTaps, p.size,
				fmt.Errorf("more than %d of its records kept aside in an hour (quarantined, held or flagged): "+
					"not taken until the budget refills; a validator that is not stolen or broken keeps a few a day", in.cfg.AsideBudget))
			continue
		}
		out = append(out, p)
	}
	return out
}

// commitFailed counts and logs a failed commit (once per run of failures).
func (in *Ingest) commitFailed(p *prepared, err error) {
	in.stats.reject(RejectCommitFailed)
	now := in.cfg.Now()
	since := now
	if f := in.commitErr.Load(); f != nil && now.Sub(f.last) <= CommitFailureStale {
		since = f.since // the same run of failures (a stale one is forgotten: Committing)
	}
	in.commitErr.Store(&commitFailure{err: err, since: since, last: now})
	if in.commitStreak.Add(1) == 1 {
		in.log.Error("ingest: commit failed; not acked (the device sends the batch again)",
			logKeyDevice, p.batch.DeviceID, logKeyRecords, len(p.seqs), logKeyErr, err)
	} else {
		in.log.Debug("ingest: commit failed", logKeyDevice, p.batch.DeviceID, logKeyErr, err)
	}
}

// committed acks a committed batch (a revoked device's is not acked).
func (in *Ingest) committed(ctx context.Context, pb *prepared) {
	id, b := pb.batch.DeviceID, pb.batch
	in.aside.charge(id, b.Aside)
	in.commitErr.Store(nil)
	if n := in.commitStreak.Swap(0); n > 0 {
		in.log.Info(fmt.Sprintf("ingest: commits working again after %d failures", n), logKeyCount, n)
	}
	if b.Revoked {
		// Kept aside by the store, charged nothing, and never acked: the
		// revoked device is told nothing.
		in.refuse(RejectRevokedDevice, id, wire.KindTaps, pb.size, ErrRevokedDevice)
		return
	}
	in.stats.batch(b.Taps)

	// Every record of the batch, valid or not, is committed now: ack them
	// all, so that no bad record blocks the device's queue.
	ack := wire.Ack{DeviceID: id, Epoch: b.Epoch, Ranges: wire.Ranges(pb.seqs)}
	p, err := ack.MarshalBinary()
	if err == nil {
		p, err = wire.Seal(wire.TypeAck, p, false, in.cfg.FleetKey)
	}
	if err == nil {
		c := in.conn.Load()
		if c == nil {
			err = ErrNotConnected
		} else {
			err = c.publish(ctx, in.topics.Device(id, wire.KindAck), false, p, in.cfg.PublishTimeout)
		}
	}
	if err != nil {
		in.refuse(RejectAckFailed, id, wire.KindAck, len(p), err)
		return
	}
	in.stats.ack()
}

// check decodes one record and re-verifies its payment code at the tap's
// time with the server's keyring.
func (in *Ingest) check(id, epoch string, r wire.Record, kr *paycode.Keyring) Tap {
	tp := Tap{Seq: r.Seq, ID: record.TapID(id, epoch, r.Seq), Record: r.Data}
	t, err := record.ParseTap(r.Data)
	if err == nil && (t.DeviceID != id || t.Seq != r.Seq || t.Epoch != epoch) {
		err = fmt.Errorf("record of %s, epoch %q in a batch of %s, epoch %q",
			t.ID(), t.Epoch, tp.ID, epoch)
	}
	if err == nil {
		tp.Code, err = paycode.ParseCode(t.Code)
	}
	if err != nil {
		tp.Verdict, tp.Code = VerdictMalformedRecord, nil
		if ok, n := in.limit.Allow("record\x00" + id); ok {
			in.log.Warn("ingest: malformed record; stored for audit and acked", logKeyTap, tp.ID, logKeyErr, err, logKeySuppressed, n)
		}
		return tp
	}
	tp.Tap = t
	tp.CodeText = paycode.EncodeText(t.Code)
	tp.CodeHash = paycode.ShortHash(tp.CodeText)
	d := in.verifier.VerifyCode(tp.Code, t.Time, kr, in.cfg.Policy)
	if d.Reason == paycode.ReasonUnknownIssuerKey {
		if wide := credentialWindow(kr, tp.Code); wide != nil {
			d = in.verifier.VerifyCode(tp.Code, t.Time, wide, in.cfg.Policy)
		}
	}
	if !d.Accepted {
		tp.Verdict = d.Reason
		if ok, n := in.limit.Allow("verdict\x00" + id); ok {
			in.log.Warn("ingest: code does not verify at its tap time; stored, not charged",
				logKeyTap, tp.ID, logKeyCodeHash, tp.CodeHash, logKeyVerdict, string(d.Reason), logKeySuppressed, n)
		}
	}
	return tp
}

// checkStatus checks a device's status message; nil if refused (or an
// empty one: a retained status cleared on the broker).
func (in *Ingest) checkStatus(ctx context.Context, id string, payload []byte) *wire.Status {
	if len(payload) == 0 {
		return nil // a retained status cleared on the broker
	}
	body, revoked, ok := in.open(ctx, id, wire.KindStatus, payload, wire.TypeStatus, wire.MaxStatusSize)
	if !ok {
		return nil
	}
	if revoked {
		in.refuse(RejectRevokedDevice, id, wire.KindStatus, len(payload), ErrRevokedDevice)
		return nil
	}
	st, err := wire.ParseStatus(body)
	if err != nil {
		in.refuse(RejectMalformed, id, wire.KindStatus, len(payload), err)
		return nil
	}
	if st.DeviceID != id {
		in.refuse(RejectDeviceMismatch, id, wire.KindStatus, len(payload), fmt.Errorf("status of device %q", st.DeviceID))
		return nil
	}
	return st
}

// statusIn is a checked status and when it was queued (inbound.seq).
type statusIn struct {
	st  *wire.Status
	seq uint64
}

// maxStatusOrder bounds the devices whose newest recorded status the
// Ingest remembers (statusSeq: only devices whose signed status was
// recorded, so the fleet; forgotten all at once past it).
const maxStatusOrder = 1 << 20

// recordStatuses records checked statuses: with a Store that is a
// StatusRecorder, several in one call; if that fails, or without one,
// each alone. A status older than one of its device's already recorded
// is passed over (counted as recorded: the newer one stands): a worker
// records its statuses after its batches' commit, while another worker
// may have taken and recorded the device's next status meanwhile, which
// the older one overwrote (the queue depth from before the last ack, or
// online after the device said it was going offline, until the device
// reported again).
// A device's statuses are recorded by one worker at a time: a worker
// whose status is of a device another is recording leaves it to that
// one, which records it next (the newest of those left), and goes on.
// The workers do not wait for each other's ledger calls: waiting, a
// slow ledger (each call up to CommitTimeout) held every worker, and
// the batches and acks of every device, behind one worker's statuses.
func (in *Ingest) recordStatuses(ctx context.Context, sts []statusIn) {
	for len(sts) > 0 {
		mine := in.claimStatuses(sts)
		ok, outOfTime, err := in.recordClaimed(ctx, mine)
		sts = in.releaseStatuses(mine, ok)
		if outOfTime {
			// Those left to this worker meanwhile wait no other call.
			for _, s := range sts {
				in.refuse(RejectStatusFailed, s.st.DeviceID, wire.KindStatus, 0, err)
			}
			sts = nil
		}
	}
}

// claimStatuses returns the statuses of sts this worker records: those of
// devices no other worker is recording. An older one than its device's
// recorded or being recorded is passed over; one of a device another
// worker is recording is left to it (statusNext).
func (in *Ingest) claimStatuses(sts []statusIn) []statusIn {
	in.statusMu.Lock()
	defer in.statusMu.Unlock()
	var mine []statusIn
	for _, s := range sts {
		id := s.st.DeviceID
		busy, isBusy := in.statusBusy[id]
		switch {
		case s.seq < in.statusSeq[id] || (isBusy && s.seq < busy):
			in.stats.status() // passed over: a newer one stands
		case isBusy:
			if n, ok := in.statusNext[id]; ok {
				if n.seq > s.seq {
					in.stats.status()
					continue
				}
				in.stats.status() // the one left before, passed over
			}
			in.statusNext[id] = s
		default:
			in.statusBusy[id] = s.seq
			mine = append(mine, s)
		}
	}
	return mine
}

// releaseStatuses notes the statuses this worker recorded (ok by index),
// and returns those other workers left to it meanwhile.
func (in *Ingest) releaseStatuses(mine []statusIn, ok []bool) []statusIn {
	in.statusMu.Lock()
	defer in.statusMu.Unlock()
	var next []statusIn
	for i, s := range mine {
		id := s.st.DeviceID
		if ok[i] {
			if len(in.statusSeq) >= maxStatusOrder {
				clear(in.statusSeq)
			}
			in.statusSeq[id] = s.seq
		}
		delete(in.statusBusy, id)
		if n, left := in.statusNext[id]; left {
			delete(in.statusNext, id)
			next = append(next, n)
		}
	}
	return next
}

// recordClaimed records statuses of distinct devices (see recordStatuses)
// and returns which were recorded, and whether a call ran out of time
// (with its error).
func (in *Ingest) recordClaimed(ctx context.Context, sts []statusIn) (ok []bool, outOfTime bool, err error) {
	ok = make([]bool, len(sts))
	if len(sts) == 0 {
		return ok, false, nil
	}
	recorded := func(i int) {
		ok[i] = true
		in.stats.status()
	}
	// A call that ran out of CommitTimeout (a ledger that does not
	// answer) is not followed by one a status, each waiting its own (30 s
	// by default, for each of up to CoalesceBatches statuses): the rest
	// are refused, and each device reports again with its next status.
	refuseRest := func(rest []statusIn, err error) {
		for _, s := range rest {
			in.refuse(RejectStatusFailed, s.st.DeviceID, wire.KindStatus, 0, err)
		}
	}
	if sr, isSR := in.store.(StatusRecorder); isSR && len(sts) > 1 {
		group := make([]*wire.Status, len(sts))
		for i, s := range sts {
			group[i] = s.st
		}
		outOfTime, err := in.storeCallTimed(ctx, func(ctx context.Context) error { return sr.Statuses(ctx, group) })
		// A status the Store refuses for what it holds (a stolen
		// validator's) is named and left out, the others recorded: it
		// failed the whole call, and every status of it was then recorded
		// alone, a transaction each, as often as that device sent one.
		var refused *StatusesRefused
		if err == nil || errors.As(err, &refused) {
			for i, s := range sts {
				if refused != nil && refused.Refused[i] != nil {
					in.refuse(RejectStatusFailed, s.st.DeviceID, wire.KindStatus, 0, refused.Refused[i])
					continue
				}
				recorded(i)
			}
			return ok, false, nil
		}
		if outOfTime {
			refuseRest(sts, err)
			return ok, true, err
		}
		in.log.Debug("ingest: statuses recorded together failed; recording them one by one", logKeyCount, len(sts), logKeyErr, err)
	}
	for i, s := range sts {
		outOfTime, err := in.storeCallTimed(ctx, func(ctx context.Context) error { return in.store.Status(ctx, s.st) })
		if err != nil {
			if outOfTime {
				refuseRest(sts[i:], err)
				return ok, true, err
			}
			in.refuse(RejectStatusFailed, s.st.DeviceID, wire.KindStatus, 0, err)
			continue
		}
		recorded(i)
	}
	return ok, false, nil
}

// credentialWindow returns, for a code whose issuer key kr holds but
// whose tap time is outside that key's window, a keyring of that key
// alone with its window widened to the code's credential's, or nil. The
// server derives every key of its keyring from its own root: a
// credential that key signed (VerifyCode checks the signature, over the
// window too) is the server's own word for when the pass is valid. A key
// recreated after a restore (the README's restore step 4: both the
// ledger and the key directory from before a rotation, the rotation made
// again with activate_in 0s) has its window begin at the new rotation,
// and the taps the buses took under it since the lost one were held
// aside for good, never charged.
func credentialWindow(kr *paycode.Keyring, c *paycode.Code) *paycode.Keyring {
	key, ok := kr.Lookup(c.KeyID)
	if !ok {
		return nil
	}
	nb, na := time.Unix(int64(c.NotBefore), 0), time.Unix(int64(c.NotAfter), 0)
	if !nb.Before(key.NotBefore) && !na.After(key.NotAfter) {
		return nil // the window holds the credential's: the tap is outside both
	}
	key.NotBefore, key.NotAfter = minTime(key.NotBefore, nb), maxTime(key.NotAfter, na)
	wide, err := paycode.NewKeyring(kr.Version(), []paycode.Key{key})
	if err != nil {
		return nil
	}
	return wide
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
