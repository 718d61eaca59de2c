package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
)

// CommitTaps settles a batch of taps in one transaction and returns what
// happened to each, in input order. It is idempotent by tap id: a tap
// already committed comes back Duplicate with its current charge and
// changes nothing, so a device's batch can be delivered any number of times.
//
// For each new tap, in input order:
//
//   - an unknown account: the tap is stored, flagged unknown_account, charged 0;
//   - a payment code that already paid (another tap anywhere, or an online
//     payment): the tap is stored, flagged duplicate_code, charged 0, and the
//     credential (account, serial) goes on the deny list (code_reused);
//   - a currency other than the account's: stored, flagged currency_mismatch,
//     charged 0;
//   - otherwise the tap is stored and its account's service day is re-rated.
//
// Re-rating takes all unflagged taps of the account and service day, rates
// them with fare.Table.RateDay using the fare table whose version is the
// highest FareVersion among them (or the latest stored if that one is not
// stored), and appends a posting for every tap whose rated charge differs
// from the sum of its postings: kind fare for a tap's first posting,
// fare_correction after. Postings are never changed, so the final balances
// and charges do not depend on the order in which taps arrive.
//
// A tap's service day is computed with the fare table of its FareVersion (or
// the latest stored) when it is committed. Invalid input (see Tap) fails
// the whole batch with ErrInvalid before anything is written; ErrNoFareTable
// when no fare table is stored.
func (s *Store) CommitTaps(ctx context.Context, taps []Tap) ([]TapResult, error) {
	if len(taps) > MaxCommitTaps {
		return nil, invalid("%d taps in one batch, limit %d", len(taps), MaxCommitTaps)
	}
	for i := range taps {
		if err := taps[i].validate(); err != nil {
			return nil, invalid("tap %d (%q): %v", i, taps[i].ID, err)
		}
	}
	if len(taps) == 0 {
		return []TapResult{}, nil
	}
	var results []TapResult
	err := s.write(ctx, "commit taps", func(t *txn) error {
		var err error
		results, err = t.commitTaps(taps)
		return err
	})
	if err != nil {
		return nil, err
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		n := 0
		for _, r := range results {
			if !r.Duplicate {
				n++
			}
		}
		s.log.Debug("ledger: taps committed", logKeyTaps, len(taps), logKeyNew, n)
	}
	return results, nil
}

type dayKey struct {
	account uint64
	day     string
}

func (t *txn) commitTaps(taps []Tap) ([]TapResult, error) {
	ids := make([]uint64, len(taps))
	for i := range taps {
		ids[i] = taps[i].Account
	}
	if err := t.lockAccounts(ids); err != nil {
		return nil, err
	}
	results := make([]TapResult, len(taps))
	var days []dayKey
	seenDay := map[dayKey]bool{}
	var dups []int
	for i := range taps {
		tp := &taps[i]
		res := &results[i]
		res.ID = tp.ID
		tbl, err := t.tableFor(tp.FareVersion)
		if err != nil {
			return nil, err
		}
		day := tbl.ServiceDay(tp.Time)
		a := t.accounts[tp.Account]
		flag := ""
		switch {
		case tp.Flag != "":
			flag = tp.Flag
		case a == nil:
			flag = FlagUnknownAccount
		case tp.Currency != a.currency:
			flag = FlagCurrencyMismatch
		}
		inserted, err := t.insertTap(tp, day, flag)
		if err != nil {
			return nil, err
		}
		if !inserted {
			res.Duplicate = true
			dups = append(dups, i)
			continue
		}
		if a != nil && tp.Flag == "" {
			// Claim the code. If something else holds it, the tap is a
			// duplicate use (which takes precedence over other flags).
			n, err := t.execCount("record code use",
				`INSERT INTO code_uses (code_key, account_id, serial, tap_id, created_ns) VALUES ($1, $2, $3, $4, $5)
				 ON CONFLICT (code_key) DO NOTHING`,
				tp.CodeKey, int64(tp.Account), int64(tp.Serial), tp.ID, t.now)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				flag = FlagDuplicateCode
				if _, err := t.exec("flag tap", `UPDATE taps SET flag = $1 WHERE tap_id = $2`, flag, tp.ID); err != nil {
					return nil, err
				}
			}
		}
		res.Flag = flag
		switch flag {
		case "":
			if k := (dayKey{tp.Account, day}); !seenDay[k] {
				seenDay[k] = true
				days = append(days, k)
			}
		case FlagDuplicateCode:
			if _, err := t.deny(tp.Account, tp.Serial, ReasonCodeReused); err != nil {
				return nil, err
			}
			t.s.log.Warn("ledger: payment code used twice, tap not charged, credential denied",
				logKeyTap, tp.ID, logKeyAccount, tp.Account, logKeySerial, tp.Serial, logKeyCodeHash, tp.CodeHash)
		default:
			t.s.log.Warn("ledger: tap flagged, not charged", logKeyTap, tp.ID, logKeyAccount, tp.Account, logKeyFlag, flag)
		}
	}
	if err := t.s.hook("commit-taps:stored"); err != nil {
		return nil, err
	}
	charges := map[string]int64{}
	for _, k := range days {
		if err := t.rerateDay(t.accounts[k.account], k.day, charges); err != nil {
			return nil, err
		}
		if err := t.s.hook("commit-taps:rated"); err != nil {
			return nil, err
		}
	}
	for i := range results {
		if r := &results[i]; !r.Duplicate && r.Flag == "" {
			r.Charge = charges[r.ID]
		}
	}
	for _, i := range dups {
		if err := t.readDuplicate(&taps[i], &results[i]); err != nil {
			return nil, err
		}
	}
	return results, nil
}

func (t *txn) codeUsed(key []byte) (bool, error) {
	var one int
	err := t.queryRow(`SELECT 1 FROM code_uses WHERE code_key = $1`, key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ledger: look up code use: %w", err)
	}
	return true, nil
}

// insertTap stores a tap unless its id is there already.
func (t *txn) insertTap(tp *Tap, day, flag string) (bool, error) {
	record := tp.Record
	if record == nil {
		record = []byte{}
	}
	n, err := t.execCount("store tap",
		`INSERT INTO taps (tap_id, device_id, seq, epoch, at_ns, account_id, serial, code_key, code_hash, profile,
			base_fare, currency, fare_version, route, vehicle, record, service_day, flag, committed_ns)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
		 ON CONFLICT (tap_id) DO NOTHING`,
		tp.ID, tp.DeviceID, int64(tp.Seq), tp.Epoch, tp.Time.UnixNano(), int64(tp.Account), int64(tp.Serial),
		tp.CodeKey, tp.CodeHash, int64(tp.Profile), tp.BaseFare, tp.Currency, int64(tp.FareVersion),
		tp.Route, tp.Vehicle, record, day, flag, t.now)
	return n > 0, err
}

// readDuplicate fills in the result of a tap that was already stored.
func (t *txn) readDuplicate(tp *Tap, res *TapResult) error {
	var account, atNS, base int64
	var key, record []byte
	err := t.queryRow(
		`SELECT account_id, at_ns, base_fare, code_key, record, charge, flag FROM taps WHERE tap_id = $1`, tp.ID).
		Scan(&account, &atNS, &base, &key, &record, &res.Charge, &res.Flag)
	if err != nil {
		return fmt.Errorf("ledger: read tap %s: %w", tp.ID, err)
	}
	if uint64(account) != tp.Account || atNS != tp.Time.UnixNano() || base != tp.BaseFare ||
		!bytes.Equal(key, tp.CodeKey) || !bytes.Equal(record, tp.Record) {
		res.Conflict = true
		t.s.log.Warn("ledger: tap id committed before with other contents; the stored tap stands",
			logKeyTap, tp.ID, logKeyDevice, tp.DeviceID)
	}
	return nil
}

// ratedTap is a stored, unflagged tap with the sum of its postings.
type ratedTap struct {
	id                  string
	at                  int64
	profile, base       int64
	fareVersion         int64
	charge              int64
	transfer, capped    bool
	ratedVersion        int64
	postings, postedSum int64
}

// rerateDay rates one account's service day and appends the postings that
// bring every tap's postings to its rated charge. It records each tap's
// charge in charges.
func (t *txn) rerateDay(a *acctState, day string, charges map[string]int64) error {
	rows, err := t.query(
		`SELECT t.tap_id, t.at_ns, t.profile, t.base_fare, t.fare_version, t.charge, t.transfer, t.capped, t.rated_version,
			COUNT(p.seq), CAST(COALESCE(SUM(p.amount), 0) AS BIGINT)
		 FROM taps t LEFT JOIN postings p ON p.tap_id = t.tap_id
		 WHERE t.account_id = $1 AND t.service_day = $2 AND t.flag = ''
		 GROUP BY t.tap_id, t.at_ns, t.profile, t.base_fare, t.fare_version, t.charge, t.transfer, t.capped, t.rated_version`,
		int64(a.id), day)
	if err != nil {
		return fmt.Errorf("ledger: read day %s of account %d: %w", day, a.id, err)
	}
	var taps []ratedTap
	var maxVersion int64
	for rows.Next() {
		var r ratedTap
		if err := rows.Scan(&r.id, &r.at, &r.profile, &r.base, &r.fareVersion, &r.charge, &r.transfer, &r.capped,
			&r.ratedVersion, &r.postings, &r.postedSum); err != nil {
			rows.Close()
			return fmt.Errorf("ledger: read day %s of account %d: %w", day, a.id, err)
		}
		maxVersion = max(maxVersion, r.fareVersion)
		taps = append(taps, r)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ledger: read day %s of account %d: %w", day, a.id, err)
	}
	tbl, err := t.tableFor(uint64(maxVersion))
	if err != nil {
		return err
	}
	rated := rateDay(tbl, taps)
	byID := make(map[string]*ratedTap, len(taps))
	for i := range taps {
		byID[taps[i].id] = &taps[i]
	}
	for _, c := range rated {
		st := byID[c.ID]
		if have := -st.postedSum; c.Amount != have {
			kind := KindFareCorrection
			if st.postings == 0 {
				kind = KindFare
			}
			if err := t.appendPosting(a, kind, have-c.Amount, postingRef{tapID: st.id, fareVersion: tbl.Version}); err != nil {
				return err
			}
		}
		if c.Amount != st.charge || c.Transfer != st.transfer || c.Capped != st.capped || int64(tbl.Version) != st.ratedVersion {
			if _, err := t.exec("update tap charge",
				`UPDATE taps SET charge = $1, transfer = $2, capped = $3, rated_version = $4 WHERE tap_id = $5`,
				c.Amount, c.Transfer, c.Capped, int64(tbl.Version), st.id); err != nil {
				return err
			}
		}
		charges[st.id] = c.Amount
	}
	return nil
}

// rateDay rates stored taps with a table: the pure function CommitTaps and
// CheckInvariants share.
func rateDay(tbl *fare.Table, taps []ratedTap) []fare.Charge {
	rides := make([]fare.Ride, len(taps))
	for i, r := range taps {
		rides[i] = fare.Ride{ID: r.id, Time: time.Unix(0, r.at), Profile: profileOf(r.profile), Fare: r.base}
	}
	return tbl.RateDay(rides)
}

// TapCount returns the number of taps stored (flagged ones included).
func (s *Store) TapCount(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM taps`).Scan(&n); err != nil {
		return 0, fmt.Errorf("ledger: count taps: %w", err)
	}
	return n, nil
}

// Rides returns an account's taps, newest first (by tap time), with their
// current charges and flags; at most limit of them (limit <= 0: all, up to
// MaxListLimit).
func (s *Store) Rides(ctx context.Context, account uint64, limit int) ([]Ride, error) {
	if _, err := s.Account(ctx, account); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT tap_id, device_id, at_ns, service_day, route, vehicle, profile, base_fare, charge, transfer, capped,
			flag, fare_version, rated_version, code_hash, committed_ns
		 FROM taps WHERE account_id = $1 ORDER BY at_ns DESC, tap_id DESC LIMIT $2`,
		int64(account), listLimit(limit, MaxListLimit))
	if err != nil {
		return nil, fmt.Errorf("ledger: read rides: %w", err)
	}
	defer rows.Close()
	var out []Ride
	for rows.Next() {
		var r Ride
		var at, profile, fv, rv, committed int64
		if err := rows.Scan(&r.TapID, &r.DeviceID, &at, &r.ServiceDay, &r.Route, &r.Vehicle, &profile, &r.BaseFare,
			&r.Charge, &r.Transfer, &r.Capped, &r.Flag, &fv, &rv, &r.CodeHash, &committed); err != nil {
			return nil, fmt.Errorf("ledger: read rides: %w", err)
		}
		r.Time, r.Profile, r.FareVersion, r.RatedVersion, r.CommittedAt = time.Unix(0, at).UTC(), profileOf(profile), uint64(fv), uint64(rv), fromNS(committed)
		out = append(out, r)
	}
	return out, rows.Err()
}

func profileOf(v int64) paycode.Profile {
	if v < 0 || v > math.MaxUint8 {
		return paycode.Profile(math.MaxUint8)
	}
	return paycode.Profile(v)
}

// Quarantine keeps device records that could not be read as taps, so the
// device's queue can move on; idempotent on device, epoch and seq.
func (s *Store) Quarantine(ctx context.Context, recs []QuarantinedRecord) error {
	for i, r := range recs {
		if err := validDeviceID(r.DeviceID); err != nil {
			return invalid("quarantine %d: %v", i, err)
		}
		if r.Seq > math.MaxInt64 || len(r.Record) > MaxRecordSize*4 {
			return invalid("quarantine %d: seq or record size out of range", i)
		}
		if err := checkText("epoch", r.Epoch, maxName, false); err != nil {
			return invalid("quarantine %d: %v", i, err)
		}
		if err := checkText("reason", r.Reason, 256, true); err != nil {
			return invalid("quarantine %d: %v", i, err)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	return s.write(ctx, "quarantine", func(t *txn) error {
		for _, r := range recs {
			if _, err := t.exec("quarantine record",
				`INSERT INTO quarantine (device_id, epoch, seq, reason, record, received_ns) VALUES ($1, $2, $3, $4, $5, $6)
				 ON CONFLICT (device_id, epoch, seq) DO NOTHING`,
				r.DeviceID, r.Epoch, int64(r.Seq), r.Reason, r.Record, t.now); err != nil {
				return err
			}
			t.s.log.Warn("ledger: device record quarantined", logKeyDevice, r.DeviceID, logKeyReason, r.Reason)
		}
		return nil
	})
}

// QuarantineCount returns the number of quarantined records.
func (s *Store) QuarantineCount(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM quarantine`).Scan(&n)
	return n, err
}
