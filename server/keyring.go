package server

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

// syncKeyring takes a keyring another instance rotated to from the ledger
// (the publisher asks every poll, so within its PollInterval), and has the
// held taps re-checked with it. A failure is logged once until a sync
// succeeds again; the keyring this instance has stays in use meanwhile.
func (s *Server) syncKeyring(ctx context.Context) {
	res, err := s.keys.Sync(ctx, s.ledger)
	s.reportForged(res)
	if err != nil {
		if s.keyringSyncFailing.CompareAndSwap(false, true) && ctx.Err() == nil {
			s.log.Warn("reading the shared issuer keyring failed; keeping this instance's", "err", err,
				"version", s.keys.Keyring().Version())
		}
		return
	}
	if s.keyringSyncFailing.CompareAndSwap(true, false) {
		s.log.Info("reading the shared issuer keyring works again")
	}
	if res.Changed {
		s.log.Info("issuer keyring taken from the ledger (rotated by another instance)", "version", s.keys.Keyring().Version())
		(*notifier)(s).Changed(record.DocKeyring)
	}
}

// reportForged logs, once for each newest version, keyrings in the ledger
// that this installation's root did not seal: not taken (the fleet keeps
// its keyring), and no rotation can be stored above them until they are
// removed — or, stored without a seal by an instance not yet upgraded,
// until that instance seals them again.
func (s *Server) reportForged(res keys.SyncResult) {
	if len(res.Refused) == 0 || s.keyringForged.Swap(res.Refused[0]) == res.Refused[0] {
		return
	}
	if res.Unsealed == len(res.Refused) {
		s.log.Error("the ledger holds issuer keyrings stored without a seal that are not this instance's: not taken. "+
			"An instance of a release before keyrings were sealed stores them so: upgrade every instance (the one holding "+
			"them seals them again); if none holds them, someone with write access to the database wrote them",
			"versions", res.Refused, "keeping_version", s.keys.Keyring().Version())
		return
	}
	s.log.Error("the ledger holds issuer keyrings this installation did not seal: not taken; someone with write access to the database wrote them",
		"versions", res.Refused, "unsealed", res.Unsealed, "keeping_version", s.keys.Keyring().Version())
}

// renewInterval is how often renewLoop looks at the newest key's end.
const renewInterval = time.Hour

// renewLoop rotates the issuer keyring on its own when its newest key's
// window ends within keys.RenewBefore (a year after a rotation): without
// it, credentials would be cut to the key's end and then not issued at
// all, and nothing made an operator rotate in time. The new key signs
// after the configured activation delay, as a rotation through the API.
// Of several instances, one rotation is stored; the others take it.
func (s *Server) renewLoop(ctx context.Context) {
	t := time.NewTicker(renewInterval)
	defer t.Stop()
	for {
		if now := time.Now(); s.keys.Due(now) {
			s.syncKeyring(ctx) // another instance may have renewed it
			if s.keys.Due(now) {
				s.renew(ctx, now)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) renew(ctx context.Context, now time.Time) {
	activate := max(s.cfg.KeyActivation, 0) // negative: at once
	kr, err := s.keys.RotateShared(ctx, s.ledger, now, 0, s.cfg.CredentialTTL+time.Hour, activate)
	switch {
	case errors.Is(err, keys.ErrRotationRace):
		return // another instance renewed it
	case err != nil:
		if ctx.Err() == nil {
			s.log.Error("renewing the issuer key failed: rotate it (POST /v1/keyring/rotate) before its window ends", "err", err)
		}
		return
	}
	s.log.Warn("issuer key renewed: its window was ending", "version", kr.Version(), "signs_from", keys.SignsFrom(kr).UTC().Format(time.RFC3339))
	if err := s.ledger.Audit(ctx, ledger.AuditEntry{Actor: "server", Action: "rotate_keyring", Target: strconv.FormatUint(kr.Version(), 10),
		Detail: "renewed on its own: the newest key's window ended within 30 days"}); err != nil {
		s.log.Error("writing the audit trail failed", "action", "rotate_keyring", "err", err)
	}
	(*notifier)(s).Changed(record.DocKeyring)
}
