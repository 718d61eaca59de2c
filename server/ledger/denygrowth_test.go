package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// A rider who fetches every credential an account may hold and replaces
// the secret between them (16 live, 64 not yet expired in all) had each
// one deny-listed secret_replaced, and kept the entries for good once they
// expired: 64 rows more a day and account, read whole at every change of
// the deny list (each instance's publisher; an attack review measured
// 3.5 s and 278 MB allocated for a list of 500,000 expired entries on
// PostgreSQL, 5.3 s on SQLite). A replacement forgets the account's
// secret_replaced entries that have expired (an hour after their
// credential's end: no code of it pays anywhere since); those not expired
// yet, and the expired entries that still mean something (a reused code's,
// which stops new credentials until the operator clears it), stay.
func TestExpiredSecretReplacedEntriesForgotten(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		clock := time.Now()
		s := db.open(t, &Options{Now: func() time.Time { return clock }})
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult, SecretHash: []byte("secret-0")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.TopUp(ctx, a.ID, 5_000, "psp-1"); err != nil {
			t.Fatal(err)
		}
		// A reused code's expired entry: not the replacement's to forget.
		if err := s.write(ctx, "test", func(t *txn) error {
			_, err := t.deny(a.ID, 999_999, ReasonCodeReused, clock.Add(-48*time.Hour).UnixNano())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		count := func() (all, replaced int) {
			t.Helper()
			if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(CASE WHEN reason = 'secret_replaced' THEN 1 END)
				FROM deny_entries WHERE account_id = $1`, int64(a.ID)).Scan(&all, &replaced); err != nil {
				t.Fatal(err)
			}
			return all, replaced
		}
		secret := 0
		const days = 4
		for day := range days {
			// Every credential the account may hold, the secret replaced
			// after each 16.
			for range MaxUnexpiredCredentials / MaxLiveCredentials {
				for range MaxLiveCredentials {
					if _, err := s.IssueRiderCredentialSerial(ctx, a.ID, []byte(fmt.Sprint("secret-", secret)), clock.Add(24*time.Hour),
						riderKey(a.ID)); err != nil {
						t.Fatalf("day %d: issue: %v", day, err)
					}
				}
				// The operator's reset: a rider's own replacement is
				// refused from 48 credentials not yet expired on.
				n, err := s.ReplaceSecret(ctx, a.ID, nil, []byte(fmt.Sprint("secret-", secret+1)))
				if err != nil || n != MaxLiveCredentials {
					t.Fatalf("day %d: ReplaceSecret = %d, %v; want %d denied", day, n, err, MaxLiveCredentials)
				}
				secret++
			}
			all, replaced := count()
			t.Logf("day %d: %d deny entries of the account, %d secret_replaced", day, all, replaced)
			if replaced > MaxUnexpiredCredentials {
				t.Fatalf("day %d: the account holds %d secret_replaced entries; its credentials not yet expired are at most %d: "+
					"the expired ones are kept for good", day, replaced, MaxUnexpiredCredentials)
			}
			if all != replaced+1 {
				t.Fatalf("day %d: %d entries besides secret_replaced, want the reused code's alone", day, all-replaced)
			}
			// Today's credentials are still denied (a stolen phone's codes
			// refused at a shop).
			_, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: fmt.Sprint("thief-", day), Account: a.ID,
				Serial: uint32(day*MaxUnexpiredCredentials + 1), RiderKey: riderKey(a.ID),
				CodeKey: codeKey(a.ID, uint32(day*MaxUnexpiredCredentials+1), clock), Amount: 100, Currency: "EUR"})
			wantErr(t, err, ErrDenied)
			// A day and more: every credential of the day, and its
			// entry's grace, has ended.
			clock = clock.Add(24*time.Hour + DenyGrace + time.Minute)
		}
		// The reused code's expired entry still stops new credentials
		// until the operator clears it.
		es, err := s.DenyEntries(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range es {
			found = found || (e.Serial == 999_999 && e.Reason == ReasonCodeReused)
		}
		if !found {
			t.Errorf("the reused code's expired entry was forgotten: %+v", es)
		}
	})
}
