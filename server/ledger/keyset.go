package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrOtherKeys is returned by BindKeySet when the ledger was made with
// another key directory.
var ErrOtherKeys = errors.New("ledger: the ledger was made with another key directory")

// KeySet returns the fingerprint of the key directory the ledger is bound
// to (keys.Dir.Fingerprint), "" if none is yet.
func (s *Store) KeySet(ctx context.Context) (string, error) {
	var fp string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM ledger_settings WHERE name = 'key_set'`).Scan(&fp)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ledger: read the key set: %w", err)
	}
	return fp, nil
}

// BindKeySet binds the ledger to the key directory of fingerprint fp if it
// is bound to none (init does, and the first start of a ledger from before
// the binding), and reports whether it did. A ledger bound to another key
// set gets ErrOtherKeys: its credentials and devices were signed with
// other keys, and a server with these would flag its riders' taps as
// forged.
func (s *Store) BindKeySet(ctx context.Context, fp string) (bool, error) {
	if fp == "" || len(fp) > 128 {
		return false, invalid("key set fingerprint of %d bytes", len(fp))
	}
	var bound bool
	err := s.write(ctx, "bind key set", func(t *txn) error {
		n, err := t.execCount("bind key set", `INSERT INTO ledger_settings (name, value) VALUES ('key_set', $1)
			ON CONFLICT (name) DO NOTHING`, fp)
		if err != nil {
			return err
		}
		bound = n == 1
		return t.otherKeys(fp)
	})
	if err != nil {
		return false, err
	}
	if bound {
		s.log.Info("ledger: bound to its key directory", "key_set", fp)
	}
	return bound, nil
}

// InUse reports whether the ledger holds what only a running server makes
// (accounts, devices, API tokens): a ledger from before the key-set
// binding that a server has used is one, an empty ledger init made and
// did not finish (keys not made) is not.
func (s *Store) InUse(ctx context.Context) (bool, error) {
	var used bool
	err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM accounts) OR EXISTS (SELECT 1 FROM devices)
		OR EXISTS (SELECT 1 FROM api_tokens)`).Scan(&used)
	if err != nil {
		return false, fmt.Errorf("ledger: read whether the ledger is in use: %w", err)
	}
	return used, nil
}

// otherKeys returns ErrOtherKeys if the ledger is bound to another key set
// than fp's, nil if to fp's or to none (BindKeySet, and the migration's
// check before it changes anything).
func (t *txn) otherKeys(fp string) error {
	var have string
	err := t.queryRow(`SELECT value FROM ledger_settings WHERE name = 'key_set'`).Scan(&have)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ledger: read the key set: %w", err)
	}
	if have != fp {
		return fmt.Errorf("%w (the ledger's key set is %s, these keys' %s)", ErrOtherKeys, have, fp)
	}
	return nil
}
