package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/farego/farego/agent/fare"
)

// restoreWindow is when the credentials a restore lost were issued: after
// the newest credential the restored ledger holds (from, the backup's
// time as near as the ledger can tell) and before the restore (at). Both
// in unix nanoseconds.
type restoreWindow struct{ from, at int64 }

// RestoreSerialMargin is how far Restored moves every account's last
// credential serial: past the serials the lost history handed out, which
// riders' phones and taps still hold.
const RestoreSerialMargin = 1000

// credentialIssueLead is how long before its issue a credential's window
// starts (the API's NotBefore = now − 5 min).
const credentialIssueLead = 5 * time.Minute

// loadRestore reads the restore window Restored kept, if any.
func (s *Store) loadRestore(ctx context.Context) error {
	var from, at string
	err := s.db.QueryRowContext(ctx, `SELECT f.value, a.value FROM ledger_settings f, ledger_settings a
		WHERE f.name = 'restored_from_ns' AND a.name = 'restored_at_ns'`).Scan(&from, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ledger: read the restore window: %w", err)
	}
	f, err1 := strconv.ParseInt(from, 10, 64)
	a, err2 := strconv.ParseInt(at, 10, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("ledger: the restore window %q..%q does not parse", from, at)
	}
	s.restore.Store(&restoreWindow{from: f, at: a})
	return nil
}

// RestoredAt reports when the ledger was last marked restored (Restored),
// as it was when this Store opened it.
func (s *Store) RestoredAt() (time.Time, bool) {
	w := s.restore.Load()
	if w == nil {
		return time.Time{}, false
	}
	return time.Unix(0, w.at), true
}

// LastTapCommitted returns when the ledger's newest tap was committed
// (false: it holds none). Read from a ledger just restored, it is about
// when the backup was taken: the taps validators acked since are what a
// replay of their archives must bring back, and an archive keeps them
// only so long (7 days by default).
func (s *Store) LastTapCommitted(ctx context.Context) (time.Time, bool, error) {
	var at sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(committed_ns) FROM taps`).Scan(&at); err != nil {
		return time.Time{}, false, fmt.Errorf("ledger: read the newest tap: %w", err)
	}
	if !at.Valid {
		return time.Time{}, false, nil
	}
	return time.Unix(0, at.Int64), true, nil
}

// lostCredential reports whether the tap's credential, unknown to the
// ledger, is one a restore lost: issued after the restored ledger's newest
// credential and before the restore. Its issuer signature was checked by
// the caller; only the ledger's record of it was lost with the backup.
func (s *Store) lostCredential(tp *Tap) bool {
	w := s.restore.Load()
	if w == nil || tp.CredentialNotBefore.IsZero() || !tp.CredentialNotAfter.After(tp.CredentialNotBefore) || tp.Serial == 0 {
		return false
	}
	issued := tp.CredentialNotBefore.Add(credentialIssueLead).UnixNano()
	// The window's start is in whole seconds: a credential issued in the
	// second of the backup's newest is not excluded.
	return issued+int64(time.Second) >= w.from && issued <= w.at
}

// adoptCredential records a credential a restore lost, from its tap.
func (t *txn) adoptCredential(tp *Tap) (issued, error) {
	c := issued{riderKey: tp.RiderKey, notAfter: tp.CredentialNotAfter.UnixNano()}
	// Another instance may have taken the same pass in meanwhile (a
	// replay reaches several): its row, from the same issuer-signed
	// credential, stands.
	_, err := t.exec("adopt credential", `INSERT INTO credentials (account_id, serial, not_after_ns, rider_public_key, issued_ns)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, serial) DO NOTHING`, int64(tp.Account), int64(tp.Serial), c.notAfter, tp.RiderKey,
		tp.CredentialNotBefore.Add(credentialIssueLead).UnixNano())
	if err != nil {
		return issued{}, err
	}
	// Its serial was handed out: the next one is past it.
	if _, err := t.exec("adopt credential serial", `UPDATE accounts SET last_serial = $1 WHERE id = $2 AND last_serial < $3`,
		int64(tp.Serial), int64(tp.Account), int64(tp.Serial)); err != nil {
		return issued{}, err
	}
	t.s.log.Info("ledger: a credential issued after the restored backup taken from its tap", "account", tp.Account, "serial", tp.Serial)
	// Issued before the account's secret was last replaced (after the
	// restore: a replacement since the backup was lost with it), it is
	// denied as the replacement denied the passes it found: a lost
	// phone's pass, in no ledger when the rider replaced the secret, went
	// on paying on buses and, once taken in, at shops
	// (TestSecretReplacedAfterRestoreDeniesLostPasses). This tap, which a
	// validator accepted, is charged.
	var replaced int64
	if err := t.queryRow(`SELECT secret_replaced_ns FROM accounts WHERE id = $1`, int64(tp.Account)).Scan(&replaced); err != nil {
		return issued{}, fmt.Errorf("ledger: read when the secret was replaced: %w", err)
	}
	// NotBefore is in whole seconds (the API truncates its clock): a pass
	// issued in the second of the replacement, after it — the wallet
	// fetches the new phone's at once — reads as issued before it, and
	// was denied when a restore lost it but not the replacement (a
	// backup, or a point in time, between the two). A second's margin
	// keeps it; a pass a restore lost was issued before the restore, by
	// far more than a second before any replacement made since (the
	// servers are stopped for "restored").
	if issuedNS := tp.CredentialNotBefore.Add(credentialIssueLead).UnixNano(); issuedNS+int64(time.Second) <= replaced {
		if _, err := t.deny(tp.Account, tp.Serial, ReasonSecretReplaced, c.notAfter+int64(DenyGrace)); err != nil {
			return issued{}, err
		}
		t.s.log.Warn("ledger: a credential taken from its tap was issued before the account's secret was replaced: denied",
			"account", tp.Account, "serial", tp.Serial)
	}
	return c, nil
}

// lostFareTable is a fare table Restored stores again, in its stored form.
type lostFareTable struct {
	index   int // in the tables given to Restored
	version uint64
	body    string
}

// LostFareTableError is Restored's refusal of one of the fare tables it
// was given (Index in its arguments), so that a caller can name the file.
type LostFareTableError struct {
	Index   int
	Version uint64
	Err     error
}

func (e *LostFareTableError) Error() string {
	return fmt.Sprintf("fare table version %d: %v", e.Version, e.Err)
}

func (e *LostFareTableError) Unwrap() error { return e.Err }

// lostFareTables checks the fare tables given to Restored as publishing
// them does and returns them by version; a version given twice is refused.
func (s *Store) lostFareTables(tables []*fare.Table) ([]lostFareTable, error) {
	out := make([]lostFareTable, 0, len(tables))
	for i, tbl := range tables {
		body, err := s.fareBody(tbl)
		if err != nil {
			return nil, &LostFareTableError{Index: i, Version: tbl.Version, Err: err}
		}
		out = append(out, lostFareTable{index: i, version: tbl.Version, body: body})
	}
	slices.SortFunc(out, func(a, b lostFareTable) int { return cmp.Compare(a.version, b.version) })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, &LostFareTableError{Index: out[i].index, Version: out[i].version, Err: invalid("given twice")}
		}
	}
	return out, nil
}

// restoreFareTables stores the fare tables published after the backup the
// ledger was restored from. Validators applied them and name them in their
// taps, and keep charging by the newest: without them the ledger would rate
// those taps by the older table it holds. Each comes into force now (a tap
// that names no table, or one the ledger does not have, is rated as before
// the restore up to now), and a validator's claim to have used it is
// believed from when the table before it came into force, or from the
// restored ledger's newest credential if later (from): the ledger cannot
// tell when it was first published, only that it came after both. A table
// the ledger already holds with the same contents (in the backup, or stored
// by an earlier run) is skipped; one with other contents, or a version not
// above the ledger's latest, is refused.
func (t *txn) restoreFareTables(tables []lostFareTable, from int64, actor string) error {
	if len(tables) == 0 {
		return nil
	}
	latest, err := t.lockFareVersion()
	if err != nil {
		return err
	}
	claimable := from
	var prev int64
	err = t.queryRow(`SELECT COALESCE(r.claimable_from_ns, f.created_ns) FROM fare_tables f
		LEFT JOIN restored_fare_tables r ON r.version = f.version WHERE f.version = $1`, latest).Scan(&prev)
	switch {
	case err == nil:
		claimable = max(claimable, prev)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("ledger: read the latest fare table: %w", err)
	}
	for _, tbl := range tables {
		added, err := t.storeFareTable(tbl.version, tbl.body, latest)
		if err != nil {
			return &LostFareTableError{Index: tbl.index, Version: tbl.version, Err: err}
		}
		if !added {
			continue // the backup holds it, or an earlier run stored it
		}
		if _, err := t.exec("mark fare table restored", `INSERT INTO restored_fare_tables (version, claimable_from_ns) VALUES ($1, $2)`,
			int64(tbl.version), claimable); err != nil {
			return err
		}
		latest = int64(tbl.version)
		if err := t.audit(actor, "fare_table_restored", strconv.FormatUint(tbl.version, 10),
			fmt.Sprintf("published after the backup; validators' claims of it taken from %s", time.Unix(0, claimable).UTC().Format(time.RFC3339))); err != nil {
			return err
		}
		t.s.log.Warn("ledger: a fare table published after the backup stored again", logKeyVersion, tbl.version,
			"claimable_from", time.Unix(0, claimable).UTC())
	}
	return nil
}

// LastMoneyMoved returns when the ledger's newest top-up, online payment
// and refund were made (the zero time where it holds none). After a
// restore, those made since the backup are lost: the operator enters
// again from the payment provider's and the shops' records what came
// after these times.
func (s *Store) LastMoneyMoved(ctx context.Context) (topup, payment, refund time.Time, err error) {
	var t, p, r sql.NullInt64
	err = s.db.QueryRowContext(ctx, `SELECT (SELECT MAX(created_ns) FROM topups), (SELECT MAX(created_ns) FROM payments),
		(SELECT MAX(created_ns) FROM refunds)`).Scan(&t, &p, &r)
	if err != nil {
		return time.Time{}, time.Time{}, time.Time{}, fmt.Errorf("ledger: read the newest top-up, payment and refund: %w", err)
	}
	at := func(n sql.NullInt64) time.Time {
		if !n.Valid {
			return time.Time{}
		}
		return time.Unix(0, n.Int64)
	}
	return at(t), at(p), at(r), nil
}

// LastAudited returns when the ledger's newest audit entry of action
// was made, or, with action "", its newest entry but a restore's own
// (the zero time where it holds none). After a restore, what was done
// since the backup is lost with it: a void of a fare (action
// "void_tap"), whose tap a replay charges again, and the operator's and
// riders' other changes (confirmed profiles, credit lines, payment
// limits, deny entries): the operator does them again.
func (s *Store) LastAudited(ctx context.Context, action string) (time.Time, error) {
	q := `SELECT MAX(at_ns) FROM audit_log WHERE action = $1`
	args := []any{action}
	if action == "" {
		q, args = `SELECT MAX(at_ns) FROM audit_log WHERE action NOT IN ('restored', 'fare_table_restored')`, nil
	}
	var n sql.NullInt64
	if err := s.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return time.Time{}, fmt.Errorf("ledger: read the newest audit entry: %w", err)
	}
	if !n.Valid {
		return time.Time{}, nil
	}
	return time.Unix(0, n.Int64), nil
}
