package ledger

import (
	"context"
	"database/sql"
	"fmt"
)

// DenyList returns the deny list and its version, read in one snapshot.
func (s *Store) DenyList(ctx context.Context) (DenyList, error) {
	var dl DenyList
	err := s.read(ctx, func(tx *sql.Tx) error {
		var v int64
		if err := tx.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'deny_version'`).Scan(&v); err != nil {
			return fmt.Errorf("ledger: read deny-list version: %w", err)
		}
		dl.Version = uint64(v)
		rows, err := tx.QueryContext(ctx,
			`SELECT account_id, serial, reason, since_ns, expires_ns FROM deny_entries ORDER BY account_id, serial, reason`)
		if err != nil {
			return fmt.Errorf("ledger: read deny list: %w", err)
		}
		dl.Entries, err = scanDenyEntries(rows)
		return err
	})
	return dl, err
}

// DenyVersion returns the deny list's version alone: a cheap read, so a
// publisher can tell whether the list moved before reading all of it.
func (s *Store) DenyVersion(ctx context.Context) (uint64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'deny_version'`).Scan(&v); err != nil {
		return 0, fmt.Errorf("ledger: read deny-list version: %w", err)
	}
	return uint64(v), nil
}

// scanDenyEntries reads rows of (account_id, serial, reason, since_ns,
// expires_ns) and closes them.
func scanDenyEntries(rows *sql.Rows) ([]DenyEntry, error) {
	defer rows.Close()
	var out []DenyEntry
	for rows.Next() {
		var account, serial, since, expires int64
		var e DenyEntry
		if err := rows.Scan(&account, &serial, &e.Reason, &since, &expires); err != nil {
			return nil, fmt.Errorf("ledger: read deny list: %w", err)
		}
		e.Account, e.Serial, e.Since, e.Expires = uint64(account), uint32(serial), fromNS(since), fromNS(expires)
		out = append(out, e)
	}
	return out, rows.Err()
}

// CheckDenyReason checks an operator's deny reason as Deny does.
func CheckDenyReason(reason string) error { return checkReason(reason) }

// CheckDenyNote checks an operator's note on a deny change, kept in the
// audit trail (why an entry is cleared, or more than a deny's one-word
// reason): at most 128 bytes of UTF-8, no control or invisible formatting
// characters.
func CheckDenyNote(note string) error { return checkText("note", note, maxLongName, false) }

// checkReason checks an operator's deny reason: 1-64 of a-z, 0-9 and '_',
// and not the ledger-managed negative_balance.
func checkReason(reason string) error {
	if !reasonRE.MatchString(reason) {
		return invalid("deny reason %q must be 1-64 of a-z, 0-9 and '_'", reason)
	}
	if reason == ReasonNegativeBalance {
		return invalid("the %s entry is managed by the ledger: top the account up instead", ReasonNegativeBalance)
	}
	return nil
}

// Deny puts an account (serial 0) or one of its credentials on the deny
// list with a reason (1-64 of a-z, 0-9, '_'; for example "lost_phone",
// "fraud"). Denying again with the same reason is a no-op. The reason
// negative_balance is the ledger's own and refused. A credential the
// account was never handed out (above its last serial) is ErrNotFound:
// serials are handed out in order, so a mistyped serial denied the
// rider's next credential the day it was issued (and left the lost one
// paying).
func (s *Store) Deny(ctx context.Context, account uint64, serial uint32, reason string) error {
	if err := checkAccountID(account); err != nil {
		return invalid("%v", err)
	}
	if err := checkReason(reason); err != nil {
		return err
	}
	added := false
	err := s.write(ctx, "deny", func(t *txn) error {
		if _, err := t.lockExisting(account); err != nil {
			return err
		}
		if serial != 0 {
			// Handed out, not held here: after a restore the passes issued
			// since the backup are in riders' phones but not in credentials
			// (the README's procedure denies them again); Restored moved
			// last_serial past them.
			var last int64
			err := t.queryRow(`SELECT last_serial FROM accounts WHERE id = $1`, int64(account)).Scan(&last)
			if err != nil {
				return fmt.Errorf("ledger: read the last serial: %w", err)
			}
			if int64(serial) > last {
				return fmt.Errorf("%w: account %d has no credential %d", ErrNotFound, account, serial)
			}
		}
		var err error
		added, err = t.deny(account, serial, reason, 0)
		return err
	})
	if err == nil && added {
		s.log.Info("ledger: denied", logKeyAccount, account, logKeySerial, serial, logKeyReason, reason)
	}
	return err
}

// Undeny removes an account's (serial 0) or credential's deny entry with a
// reason, or all of its entries when reason is "", except negative_balance,
// which only a top-up lifts. ErrNotFound if nothing was removed.
func (s *Store) Undeny(ctx context.Context, account uint64, serial uint32, reason string) error {
	if err := checkAccountID(account); err != nil {
		return invalid("%v", err)
	}
	if reason != "" {
		if err := checkReason(reason); err != nil {
			return err
		}
	}
	err := s.write(ctx, "undeny", func(t *txn) error {
		removed, err := t.undeny(account, serial, reason)
		if err != nil {
			return err
		}
		if !removed {
			return fmt.Errorf("%w: deny entry for account %d serial %d", ErrNotFound, account, serial)
		}
		return nil
	})
	if err == nil {
		s.log.Info("ledger: deny entry removed", logKeyAccount, account, logKeySerial, serial, logKeyReason, reason)
	}
	return err
}

// DenyEntries returns one account's deny entries (whole account and
// credentials), by serial and reason.
func (s *Store) DenyEntries(ctx context.Context, account uint64) ([]DenyEntry, error) {
	if checkAccountID(account) != nil {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT serial, reason, since_ns, expires_ns FROM deny_entries
		WHERE account_id = $1 ORDER BY serial, reason`, int64(account))
	if err != nil {
		return nil, fmt.Errorf("ledger: read deny entries: %w", err)
	}
	defer rows.Close()
	var out []DenyEntry
	for rows.Next() {
		e := DenyEntry{Account: account}
		var serial, since, expires int64
		if err := rows.Scan(&serial, &e.Reason, &since, &expires); err != nil {
			return nil, fmt.Errorf("ledger: read deny entries: %w", err)
		}
		e.Serial, e.Since, e.Expires = uint32(serial), fromNS(since), fromNS(expires)
		out = append(out, e)
	}
	return out, rows.Err()
}
