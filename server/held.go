package server

import (
	"context"
	"errors"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
)

// heldInterval is how often the server re-checks the taps it held aside
// (while there are any).
const heldInterval = 30 * time.Second

// RecheckHeld re-checks the taps held aside because the server could not
// verify them with its keyring (an issuer key it lacked): those it can check
// now are committed (charged, or flagged invalid_code if their code is
// invalid in itself) and leave the held list; the others stay. Every held
// record is looked at, a page at a time: records that can never be checked
// (a tampered validator's, under an issuer key of its own) do not keep the
// ones after them from being charged. It returns how many were released.
func (s *Server) RecheckHeld(ctx context.Context) (int, error) {
	return s.recheckPages(ctx, func(after ledger.HeldTap) ([]ledger.HeldTap, error) {
		return s.ledger.HeldTapsAfter(ctx, after, ledger.MaxHeldList)
	})
}

// recheckPages re-checks the pages read reads, each after the last record
// of the one before, until a page is not full.
func (s *Server) recheckPages(ctx context.Context, read func(after ledger.HeldTap) ([]ledger.HeldTap, error)) (int, error) {
	released := 0
	var after ledger.HeldTap
	for {
		held, err := read(after)
		if err != nil || len(held) == 0 {
			return released, err
		}
		n, err := s.recheckPage(ctx, held)
		released += n
		if err != nil || len(held) < ledger.MaxHeldList {
			return released, err
		}
		after = held[len(held)-1]
	}
}

// recheckPage is RecheckHeld for one page of held records.
func (s *Server) recheckPage(ctx context.Context, held []ledger.HeldTap) (int, error) {
	var taps []ledger.Tap
	var bad []ledger.QuarantinedRecord
	devices := make([]string, len(held))
	for i, h := range held {
		devices[i] = h.DeviceID
	}
	// Checked against their devices' assignments as when they came in: a
	// tap settled late is noted route_mismatch all the same.
	assigned, err := s.ledger.DevicesAssignments(ctx, devices)
	if err != nil {
		return 0, err
	}
	for _, h := range held {
		t := s.ingest.CheckRecord(h.DeviceID, h.Epoch, h.Seq, h.Record)
		where, lt := sortTap(h.DeviceID, h.Epoch, &t)
		switch where {
		case toHold:
			continue // still cannot tell
		case toQuarantine:
			bad = append(bad, ledger.QuarantinedRecord{DeviceID: h.DeviceID, Epoch: h.Epoch, Seq: h.Seq,
				Reason: string(t.Verdict), Record: h.Record})
			continue
		}
		s.noteRoute(&lt, assigned[h.DeviceID])
		lt.Held = true
		taps = append(taps, lt)
	}
	// Quarantined, they leave the held list.
	if err := s.ledger.Quarantine(ctx, bad); err != nil {
		return 0, err
	}
	if len(taps) == 0 {
		return len(bad), nil
	}
	res, err := s.ledger.CommitTaps(ctx, taps)
	if errors.Is(err, ledger.ErrInvalid) {
		// One record the ledger refuses must not keep the page's others
		// uncharged: tap by tap, the refused ones quarantined.
		res, _, err = (*store)(s).commitOneByOne(ctx, taps)
	}
	if err != nil {
		return 0, err
	}
	// The page is committed: its deny-list changes (a code used twice)
	// go out now, whatever the quarantine below does.
	s.pub.Changed(record.DocDenyList)
	// A record whose tap id the ledger came to hold with other contents
	// while it waited stays held through the commit: kept aside for the
	// operator, as such a record that comes in is (quarantineConflicts),
	// the quarantine taking it off the held list in its own transaction
	// (a crash before it: the next recheck finds it again).
	var conflicts []ledger.QuarantinedRecord
	for i, r := range res {
		if r.Conflict {
			conflicts = append(conflicts, ledger.QuarantinedRecord{DeviceID: taps[i].DeviceID, Epoch: taps[i].Epoch, Seq: taps[i].Seq,
				Reason: ReasonTapIDConflict, Record: taps[i].Record})
			s.log.Error("held record's tap id already settled with other contents; record quarantined, not charged", "tap", r.ID)
		}
	}
	if err := s.ledger.Quarantine(ctx, conflicts); err != nil {
		return 0, err
	}
	s.log.Info("held taps re-checked and settled", "count", len(taps))
	return len(taps) + len(bad), nil
}

// heldLoop re-checks held taps at start and whenever this server's keyring
// changes (a rotation through its API, or another instance's taken from
// the ledger by syncKeyring): every held record then. A record is held because the keyring the ingest checked it
// with could not tell, and the same keyring tells no more, so between
// changes only the records held since the last pass began are looked at
// again (one the ingest checked with the keyring before a change may be
// stored after the pass the change brought).
func (s *Server) heldLoop(ctx context.Context) {
	t := time.NewTicker(heldInterval)
	defer t.Stop()
	var checked *paycode.Keyring // the keyring of the last complete pass
	var since time.Time          // when that pass began
	for {
		kr, began := s.keys.Keyring(), time.Now()
		var err error
		if kr != checked {
			_, err = s.RecheckHeld(ctx)
		} else {
			_, err = s.recheckHeldSince(ctx, since.Add(-heldMargin))
		}
		switch {
		case err == nil:
			checked, since = kr, began
		case ctx.Err() == nil:
			s.log.Warn("re-checking held taps failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.recheck:
		}
	}
}

// heldMargin covers the clocks of the instances that hold records and a
// hold's transaction that began (and took its time) before a pass did.
const heldMargin = 2 * time.Minute

// recheckHeldSince is RecheckHeld for the records held at since or later.
func (s *Server) recheckHeldSince(ctx context.Context, since time.Time) (int, error) {
	return s.recheckPages(ctx, func(after ledger.HeldTap) ([]ledger.HeldTap, error) {
		return s.ledger.HeldTapsReceivedSince(ctx, string(paycode.ReasonUnknownIssuerKey), since, after, ledger.MaxHeldList)
	})
}

// notifier is what the API tells of changed fleet documents: the
// publisher publishes them, and a new keyring makes the held taps be
// re-checked at once.
type notifier Server

func (n *notifier) Changed(kind string) {
	s := (*Server)(n)
	s.pub.Changed(kind)
	if kind == record.DocKeyring {
		select {
		case s.recheck <- struct{}{}:
		default:
		}
	}
}
