package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// MaxVoidReason bounds the reason an operator gives for voiding a tap.
const MaxVoidReason = 256

// MaxTapID is the longest tap id the ledger stores: a device id and an
// epoch of up to 64 bytes each, a sequence number of up to 19 digits
// (TapID) and the two slashes.
const MaxTapID = 64 + 1 + maxName + 1 + 19

// VoidResult is what VoidTap did.
type VoidResult struct {
	TapID    string
	Account  uint64
	Day      string // the tap's service day
	Returned int64  // what the day's re-rating gave back (0 if already void)
	Already  bool   // the tap was voided before: nothing changed
}

// VoidTap voids a charged tap: an operator gives back a wrongly charged
// fare. The tap is flagged voided and its account's service day is
// re-rated from it as if it had never been charged, with the rating
// engine (the duplicate_code refund path): its charge comes back as a
// fare_correction posting and later taps of the day may change (a
// transfer or the daily cap). Postings stay append-only. A flagged tap is
// left out of every later rating (late taps of the day, refunds,
// restores), so the tap stays void. An audit entry names the actor, the
// tap, the reason and the amount returned.
//
// Idempotent: voiding a voided tap changes nothing (Already). ErrNotFound
// for an unknown tap; ErrNotVoidable for a flagged, uncharged or unrated
// tap; ErrInvalid for a bad reason or actor.
func (s *Store) VoidTap(ctx context.Context, tapID, reason, actor string) (VoidResult, error) {
	res := VoidResult{TapID: tapID}
	if tapID == "" || len(tapID) > MaxTapID {
		return res, invalid("tap id of %d bytes", len(tapID))
	}
	if err := checkText("reason", reason, MaxVoidReason, true); err != nil {
		return res, invalid("void: %v", err)
	}
	if unstorable(tapID) {
		return res, fmt.Errorf("%w: tap %q", ErrNotFound, tapID) // no tap has such an id
	}
	// As the audit trail keeps an actor (Audit): the command line's
	// "cli:USER@HOST" runs past 64 bytes with a long host name, and such
	// a void was refused.
	if err := checkText("actor", actor, maxLongName, true); err != nil {
		return res, invalid("void: %v", err)
	}
	err := s.write(ctx, "void tap", func(t *txn) error {
		res = VoidResult{TapID: tapID}
		type row struct {
			account, at, charge, postings, version int64
			day, flag                              string
		}
		read := func() (row, error) {
			var r row
			err := t.queryRow(`SELECT account_id, service_day, at_ns, charge, postings, rated_version, flag FROM taps
				WHERE tap_id = $1`, tapID).Scan(&r.account, &r.day, &r.at, &r.charge, &r.postings, &r.version, &r.flag)
			if errors.Is(err, sql.ErrNoRows) {
				return r, fmt.Errorf("%w: tap %s", ErrNotFound, tapID)
			}
			if err != nil {
				return r, fmt.Errorf("ledger: read tap: %w", err)
			}
			return r, nil
		}
		r, err := read()
		if err != nil {
			return err
		}
		if r.account < 0 {
			return fmt.Errorf("%w: tap %s has no account", ErrNotVoidable, tapID)
		}
		if err := t.lockAccounts([]uint64{uint64(r.account)}); err != nil {
			return err
		}
		if r, err = read(); err != nil { // as of the lock
			return err
		}
		res.Account, res.Day = uint64(r.account), r.day
		switch {
		case r.flag == FlagVoided:
			res.Already = true
			return nil
		case r.flag != "":
			return fmt.Errorf("%w: tap %s is flagged %s (never charged)", ErrNotVoidable, tapID, r.flag)
		case r.version == 0:
			return fmt.Errorf("%w: tap %s is not rated yet", ErrNotVoidable, tapID)
		case r.charge == 0:
			return fmt.Errorf("%w: tap %s was charged nothing", ErrNotVoidable, tapID)
		}
		a := t.accounts[uint64(r.account)]
		if a == nil {
			return fmt.Errorf("%w: tap %s: account %d not found", ErrNotVoidable, tapID, r.account)
		}
		before := a.balance
		k := dayKey{uint64(r.account), r.day}
		refunds := []refund{{tapID: tapID, day: k, at: r.at, charge: r.charge, postings: r.postings}}
		writes, err := t.rate([]dayKey{k}, map[dayKey]int64{k: r.at}, nil, refunds)
		if err != nil {
			return err
		}
		if err := t.writeRating(writes); err != nil {
			return err
		}
		t.stat(statFlagged, 1)
		if _, err := t.exec("void tap", `UPDATE taps SET flag = $1 WHERE tap_id = $2`, FlagVoided, tapID); err != nil {
			return err
		}
		res.Returned = a.balance - before
		if err := t.markStaleDays([]string{r.day}); err != nil {
			return err
		}
		return t.audit(actor, "void_tap", tapID, fmt.Sprintf("account %d, day %s, returned %d: %s", r.account, r.day, res.Returned, reason))
	})
	if err != nil {
		return VoidResult{TapID: tapID}, err
	}
	if !res.Already {
		s.log.Warn("ledger: tap voided by an operator", "tap", tapID, "account", res.Account, "returned", res.Returned, "actor", actor)
	}
	return res, nil
}
