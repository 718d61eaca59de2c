package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"
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
	return c, nil
}
