package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// A ledger keeps one currency: its accounts' and its fare tables'. A fare
// table in another currency than a rider's account charges that rider
// nothing (the tap is flagged currency_mismatch), so the currency is kept
// in the ledger itself (ledger_settings), where every program and instance
// that opens it reads it, not in each one's options.

// Currency returns the ledger's currency (ISO 4217).
func (s *Store) Currency() string { return s.currency }

// settleCurrency reads the ledger's currency, or fixes it at the first Open
// since it is kept (migration 0014): the latest fare table's currency, else
// the first account's (a ledger from before), else Options.Currency (or
// DefaultCurrency). asked is the currency Options named ("" for none): a
// ledger in another one is refused.
func (s *Store) settleCurrency(ctx context.Context, asked string) error {
	stored, err := s.storedCurrency(ctx)
	if err != nil {
		return err
	}
	if stored == "" {
		found, where, err := s.existingCurrency(ctx)
		if err != nil {
			return err
		}
		pick := s.currency
		if found != "" {
			if asked != "" && asked != found {
				return fmt.Errorf("%w: the ledger holds %s in %s, not %s: a ledger keeps one currency", ErrInvalid, where, found, asked)
			}
			pick = found
		}
		err = s.write(ctx, "keep currency", func(t *txn) error {
			_, err := t.exec("keep currency", `INSERT INTO ledger_settings (name, value) VALUES ('currency', $1)
				ON CONFLICT (name) DO NOTHING`, pick)
			return err
		})
		if err != nil {
			return err
		}
		if stored, err = s.storedCurrency(ctx); err != nil {
			return err
		}
		if found != "" {
			var others int64
			if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts WHERE currency <> $1`, stored).Scan(&others); err != nil {
				return fmt.Errorf("ledger: count accounts: %w", err)
			}
			if others > 0 {
				s.log.Warn("ledger: accounts in another currency than the ledger's: their taps are charged nothing (currency_mismatch)",
					"currency", stored, "accounts", others)
			}
		}
	}
	if !ValidCurrency(stored) {
		return fmt.Errorf("ledger: the kept currency %q is not an ISO 4217 code", stored)
	}
	if asked != "" && asked != stored {
		return fmt.Errorf("%w: the ledger's currency is %s, not %s: a ledger keeps one currency", ErrInvalid, stored, asked)
	}
	s.currency = stored
	return nil
}

// storedCurrency returns the kept currency, "" if none is kept yet.
func (s *Store) storedCurrency(ctx context.Context) (string, error) {
	var c string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM ledger_settings WHERE name = 'currency'`).Scan(&c)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("ledger: read the ledger's currency: %w", err)
	}
	return c, nil
}

// existingCurrency returns the currency a ledger from before migration
// 0014 is in (its latest fare table's, else its first account's) and what
// it was read from; "" for an empty ledger.
func (s *Store) existingCurrency(ctx context.Context) (currency, where string, err error) {
	v, err := latestVersion(ctx, s.db)
	if err != nil {
		return "", "", err
	}
	if v > 0 {
		e, err := s.loadTable(ctx, s.db, v)
		if err != nil || e == nil {
			return "", "", err
		}
		return e.table.Currency, fmt.Sprintf("fare table %d", v), nil
	}
	var c string
	err = s.db.QueryRowContext(ctx, `SELECT currency FROM accounts ORDER BY id LIMIT 1`).Scan(&c)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", "", nil
	case err != nil:
		return "", "", fmt.Errorf("ledger: read an account's currency: %w", err)
	}
	return c, "accounts", nil
}
