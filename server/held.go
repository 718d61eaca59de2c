package server

import (
	"context"
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
// invalid in itself) and leave the held list; the others stay. It returns
// how many were released.
func (s *Server) RecheckHeld(ctx context.Context) (int, error) {
	held, err := s.ledger.HeldTaps(ctx, ledger.MaxHeldList)
	if err != nil || len(held) == 0 {
		return 0, err
	}
	var taps []ledger.Tap
	var bad []ledger.QuarantinedRecord
	for _, h := range held {
		t := s.ingest.CheckRecord(h.DeviceID, h.Epoch, h.Seq, h.Record)
		switch {
		case t.Verdict == paycode.ReasonUnknownIssuerKey:
			continue // still cannot tell
		case t.Tap == nil || t.Code == nil:
			bad = append(bad, ledger.QuarantinedRecord{DeviceID: h.DeviceID, Epoch: h.Epoch, Seq: h.Seq,
				Reason: string(t.Verdict), Record: h.Record})
			continue
		}
		lt := ledgerTap(h.DeviceID, h.Epoch, &t)
		if !t.Valid() {
			lt.Flag = ledger.FlagInvalidCode
		}
		lt.Held = true
		taps = append(taps, lt)
	}
	if err := s.ledger.Quarantine(ctx, bad); err != nil {
		return 0, err
	}
	if len(bad) > 0 {
		if err := s.ledger.Release(ctx, bad); err != nil {
			return 0, err
		}
	}
	if len(taps) == 0 {
		return len(bad), nil
	}
	if _, err := s.ledger.CommitTaps(ctx, taps); err != nil {
		return 0, err
	}
	s.log.Info("held taps re-checked and settled", "count", len(taps))
	s.pub.Changed(record.DocDenyList)
	return len(taps) + len(bad), nil
}

// heldLoop re-checks held taps at start, whenever the keyring changes and
// every heldInterval.
func (s *Server) heldLoop(ctx context.Context) {
	t := time.NewTicker(heldInterval)
	defer t.Stop()
	for {
		if n, err := s.ledger.HeldCount(ctx); err == nil && n > 0 {
			if _, err := s.RecheckHeld(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("re-checking held taps failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.recheck:
		}
	}
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
