package ledger

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"
)

// TestRevokedTokenTopsUpNothing: a top-up or credit line asked with a
// payments token revoked by the time the ledger writes it is refused
// (ErrTokenRevoked), as payments and refunds are: a leaked payment
// provider's token, revoked while its top-ups were in flight, went on
// adding money after the revocation had answered (review of c71445e).
func TestRevokedTokenTopsUpNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 0)
		sum := sha256.Sum256([]byte("psp token"))
		if _, err := s.CreateToken(ctx, APIToken{ID: "psp00001", Role: RolePayments, Name: "psp"}, sum[:]); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.TopUpOnce(ctx, acct, 1_000, "psp-0", "psp00001"); err != nil {
			t.Fatal(err)
		}
		// The revocation comes while a top-up is being written.
		revoked := make(chan error, 1)
		first, answeredDuring := true, false
		s.fault = func(p string) error {
			if p != "topup" || !first {
				return nil
			}
			first = false
			go func() { revoked <- s.RevokeToken(ctx, "psp00001") }()
			select {
			case err := <-revoked:
				revoked <- err
				answeredDuring = true
			case <-time.After(300 * time.Millisecond): // it waits for the top-up (SQLite)
			}
			return nil
		}
		_, _, err := s.TopUpOnce(ctx, acct, 5_000, "psp-1", "psp00001")
		if rerr := <-revoked; rerr != nil {
			t.Fatal(rerr)
		}
		s.fault = nil
		if answeredDuring {
			wantErr(t, err, ErrTokenRevoked)
		}
		// Asked after the revocation.
		before := balance(t, s, acct)
		_, _, err = s.TopUpOnce(ctx, acct, 5_000, "psp-2", "psp00001")
		wantErr(t, err, ErrTokenRevoked)
		_, err = s.SetCreditLine(ctx, acct, 100_000, "psp00001")
		wantErr(t, err, ErrTokenRevoked)
		if b := balance(t, s, acct); b != before {
			t.Errorf("balance %d after the revoked token's top-up, want %d", b, before)
		}
		// Other tokens, the operator's and the ledger's own callers are not refused.
		if _, err := s.SetCreditLine(ctx, acct, 500, "init"); err != nil {
			t.Errorf("credit line by the operator token file: %v", err)
		}
		if _, err := s.TopUp(ctx, acct, 100, "cli-1"); err != nil {
			t.Errorf("top-up without a token: %v", err)
		}
	})
}
