package ledger

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestKeyringStore: the ledger keeps each issuer keyring version once and
// only newer ones: the first of two instances rotating at once stores its
// keyring, the other learns it lost; a version or body out of range is
// refused; the table is append-only.
func TestKeyringStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		if v, body, err := s.LatestKeyring(ctx); v != 0 || body != nil || err != nil {
			t.Fatalf("LatestKeyring of a new ledger = %d, %q, %v; want none", v, body, err)
		}
		store := func(v uint64, body string, want bool) {
			t.Helper()
			if got, err := s.StoreKeyring(ctx, v, []byte(body)); got != want || err != nil {
				t.Errorf("StoreKeyring(%d) = %v, %v; want %v", v, got, err, want)
			}
		}
		store(1, `{"version":1}`, true)
		store(1, `{"version":1,"other":true}`, false) // a second keyring of version 1
		store(3, `{"version":3}`, true)
		store(2, `{"version":2}`, false) // older than the newest
		if v, body, err := s.LatestKeyring(ctx); v != 3 || string(body) != `{"version":3}` || err != nil {
			t.Errorf("LatestKeyring = %d, %q, %v; want version 3", v, body, err)
		}
		for most, want := range map[uint64]uint64{2: 1, 3: 3, 1: 1, 0: 0, 1 << 63: 3} {
			if v, _, err := s.KeyringAtMost(ctx, most); v != want || err != nil {
				t.Errorf("KeyringAtMost(%d) = %d, %v; want version %d", most, v, err, want)
			}
		}
		for _, bad := range []struct {
			v    uint64
			body string
		}{{0, "{}"}, {1 << 63, "{}"}, {4, ""}, {4, strings.Repeat("x", MaxKeyringSize+1)}} {
			if _, err := s.StoreKeyring(ctx, bad.v, []byte(bad.body)); !errors.Is(err, ErrInvalid) {
				t.Errorf("StoreKeyring(%d, %d bytes) = %v; want ErrInvalid", bad.v, len(bad.body), err)
			}
		}
		if v, _, _ := s.LatestKeyring(ctx); v != 3 {
			t.Errorf("a refused keyring changed the latest to %d", v)
		}
		for _, q := range []string{`UPDATE issuer_keyrings SET keyring = '{}'`, `DELETE FROM issuer_keyrings`} {
			if _, err := s.db.ExecContext(ctx, q); err == nil {
				t.Errorf("%s: succeeded on an append-only table", q)
			}
		}
	})
}
