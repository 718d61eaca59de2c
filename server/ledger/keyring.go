package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/farego/farego/agent/paycode"
)

// MaxKeyringSize bounds a stored keyring: the largest keyring file and
// the seal around it (keys.Dir seals what it stores).
const MaxKeyringSize = paycode.MaxKeyringFileSize + 1<<10

// LatestKeyring returns the newest issuer keyring stored (its version and
// the body keys.Dir stored: the keyring sealed by the issuer root), or
// version 0 and nil when none is. The settlement instances share the
// keyring through the ledger: each takes a newer one from here
// (keys.Dir.Sync).
func (s *Store) LatestKeyring(ctx context.Context) (uint64, []byte, error) {
	return s.KeyringAtMost(ctx, math.MaxUint64)
}

// KeyringAtMost returns the newest issuer keyring stored of version at
// most most, or version 0 and nil when none is: keys.Dir.Sync passes over
// a row it cannot authenticate (written into the database by someone
// else) to the one before.
func (s *Store) KeyringAtMost(ctx context.Context, most uint64) (uint64, []byte, error) {
	var v int64
	var body string
	err := s.db.QueryRowContext(ctx, `SELECT version, keyring FROM issuer_keyrings WHERE version <= $1 ORDER BY version DESC LIMIT 1`,
		int64(min(most, math.MaxInt64))).Scan(&v, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("ledger: read the issuer keyring: %w", err)
	}
	return uint64(v), []byte(body), nil
}

// StoreKeyring stores keyring version v (sealed by keys.Dir) if the ledger holds no
// keyring of version v or newer, and reports whether it did: of two
// instances rotating at once, one stores its keyring and the other learns
// that it lost. The caller has checked the keyring (keys.Dir does); the
// ledger bounds its version and size.
func (s *Store) StoreKeyring(ctx context.Context, v uint64, body []byte) (bool, error) {
	if v == 0 || v > math.MaxInt64 {
		return false, invalid("keyring version %d", v)
	}
	if len(body) == 0 || len(body) > MaxKeyringSize {
		return false, invalid("keyring of %d bytes (at most %d)", len(body), MaxKeyringSize)
	}
	var stored bool
	err := s.write(ctx, "store keyring", func(t *txn) error {
		n, err := t.execCount("store keyring", `INSERT INTO issuer_keyrings (version, keyring, created_ns)
			SELECT $1, $2, $3 WHERE $4 > (SELECT COALESCE(MAX(version), 0) FROM issuer_keyrings)
			ON CONFLICT (version) DO NOTHING`, int64(v), string(body), t.now, int64(v))
		stored = n == 1
		return err
	})
	if err != nil {
		return false, err
	}
	if stored {
		s.log.Info("ledger: issuer keyring stored", "version", v)
	}
	return stored, nil
}
