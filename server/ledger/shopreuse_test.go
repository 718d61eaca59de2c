package ledger

import (
	"context"
	"testing"
	"time"
)

// TestShopAndOfflineBusOneCodeNotForgiven: a code a shop's online payment
// keeps, tapped on an offline bus within the minute, is a code used twice:
// the tap is flagged and charged nothing, and the pass is denied
// code_reused at once — never forgiven as a quick transfer between two
// buses is. Forgiven, the ride was free with no fare paid (the keeper
// paid for the shop): a cent's purchase at any shop, shown on a bus, or a
// colluding shop's cent paid and refunded, made two rides a day free (an
// attack review of the day this was forgiven).
func TestShopAndOfflineBusOneCodeNotForgiven(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		run := func(gap time.Duration, taps int) (denied bool, bal int64, notes []string) {
			s := ledgerWithTable(t, newDB(t, db.backend))
			acct := newAccount(t, s, 5000)
			for i := range taps {
				paid := at(30 * i)
				tp := mkTap("dev-A", uint64(i+1), acct, paid.Add(-gap), "")
				s.now = func() time.Time { return paid }
				_, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "kiosk", OrderID: "o-" + tp.ID, Account: acct, Serial: 1,
					RiderKey: riderKey(acct), CodeKey: tp.CodeKey, CodeHash: tp.CodeHash, Amount: 180, Currency: "EUR"})
				s.now = time.Now
				if err != nil {
					t.Fatal(err)
				}
				res := commit(t, s, tp)
				if res[0].Flag != FlagDuplicateCode {
					t.Fatalf("tap %s: %+v, want flagged %s (the payment keeps the code)", tp.ID, res[0], FlagDuplicateCode)
				}
				rides, err := s.Rides(ctx, acct, 0)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rides {
					if r.TapID == tp.ID {
						notes = append(notes, r.Notes...)
					}
				}
			}
			if err := s.CheckInvariants(ctx); err != nil {
				t.Fatal(err)
			}
			return hasDeny(denyList(t, s), acct, 1, ReasonCodeReused), balance(t, s, acct), notes
		}
		denied, bal, notes := run(2*time.Second, 1)
		if !denied || bal != 5000-180 || len(notes) != 0 {
			t.Errorf("bus then shop 2 s apart: denied %v, balance %d, notes %v; want the pass denied code_reused, %d (the shop's amount only), no note",
				denied, bal, notes, 5000-180)
		}
		if denied, _, _ := run(10*time.Minute, 1); !denied {
			t.Errorf("bus then shop 10 min apart: the pass not denied, want code_reused")
		}
	})
}
