package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/wire"
)

// store adapts the ledger to what the MQTT ingest needs.
type store Server

var _ ingest.Store = (*store)(nil)

func (st *store) DeviceKey(ctx context.Context, id string) (ed25519.PublicKey, error) {
	s := (*Server)(st)
	if k, ok := s.devKeys.Load(id); ok {
		return k.(ed25519.PublicKey), nil
	}
	return s.deviceKey(ctx, id)
}

// Commit settles a verified batch: unreadable records are quarantined, taps
// whose code failed re-verification are stored flagged and uncharged, the
// rest are charged. A batch the ledger refuses as invalid is retried tap by
// tap so one bad record cannot block a device's queue: the bad ones are
// quarantined.
func (st *store) Commit(ctx context.Context, b *ingest.Batch) error {
	s := (*Server)(st)
	var taps []ledger.Tap
	var quarantine []ledger.QuarantinedRecord
	var maxSeq uint64
	for i := range b.Taps {
		t := &b.Taps[i]
		maxSeq = max(maxSeq, t.Seq)
		if t.Tap == nil || t.Code == nil {
			quarantine = append(quarantine, ledger.QuarantinedRecord{DeviceID: b.DeviceID, Epoch: b.Epoch, Seq: t.Seq,
				Reason: string(t.Verdict), Record: t.Record})
			continue
		}
		lt := ledgerTap(b, t)
		if !t.Valid() {
			lt.Flag = ledger.FlagInvalidCode
			s.log.Warn("tap with an invalid code stored uncharged", "tap", t.ID, "verdict", t.Verdict,
				"account", t.Tap.Account, "code_hash", t.CodeHash)
		}
		taps = append(taps, lt)
	}
	if err := s.ledger.Quarantine(ctx, quarantine); err != nil {
		return err
	}
	_, err := s.ledger.CommitTaps(ctx, taps)
	if errors.Is(err, ledger.ErrInvalid) {
		err = st.commitOneByOne(ctx, b, taps)
	}
	if err != nil {
		return err
	}
	if s.cfg.AfterCommit != nil {
		s.cfg.AfterCommit()
	}
	if err := s.ledger.NoteDeviceSync(ctx, b.DeviceID, maxSeq); err != nil {
		s.log.Warn("noting device sync", "device", b.DeviceID, "err", err)
	}
	s.pub.Changed(record.DocDenyList) // coalesced; a commit may have moved the deny list
	return nil
}

func (st *store) commitOneByOne(ctx context.Context, b *ingest.Batch, taps []ledger.Tap) error {
	s := (*Server)(st)
	for _, t := range taps {
		_, err := s.ledger.CommitTaps(ctx, []ledger.Tap{t})
		if errors.Is(err, ledger.ErrInvalid) {
			s.log.Error("tap refused by the ledger, quarantined", "tap", t.ID, "err", err)
			err = s.ledger.Quarantine(ctx, []ledger.QuarantinedRecord{{DeviceID: b.DeviceID, Epoch: b.Epoch, Seq: t.Seq,
				Reason: truncate(fmt.Sprintf("ledger: %v", err), 256), Record: t.Record}})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func ledgerTap(b *ingest.Batch, t *ingest.Tap) ledger.Tap {
	w := t.Tap
	return ledger.Tap{
		ID: t.ID, DeviceID: b.DeviceID, Seq: t.Seq, Epoch: b.Epoch, Time: w.Time, Account: w.Account, Serial: w.Serial,
		CodeKey: t.Code.ID().Key(), CodeHash: t.CodeHash, Profile: w.Profile, BaseFare: w.Fare, Currency: w.Currency,
		FareVersion: w.FareVersion, Route: w.Route, Vehicle: w.Vehicle, Record: t.Record,
	}
}

func (st *store) Status(ctx context.Context, m *wire.Status) error {
	s := (*Server)(st)
	ds := ledger.DeviceStatus{Online: m.Online, QueueDepth: m.QueueDepth, LastSeen: m.Time, Software: m.Software,
		Epoch: m.Epoch, OutOfService: m.OutOfService, Versions: m.Versions}
	ds.OldestUnsent = secondsDuration(m.OldestUnsentSec)
	return s.ledger.UpdateDeviceStatus(ctx, m.DeviceID, ds)
}
