package ledger

import (
	"context"
	"testing"
	"time"
)

// TestShopAndOfflineBusOneCodeForgiven: a rider shows the code on screen
// to an offline validator, then at a shop's till within the minute the
// wallet shows it (it cannot know the bus took it). The payment keeps the
// code and the tap, arriving later, is a second use: it was never judged
// innocent (the keeper a payment), so the pass was deny-listed
// code_reused and the rider could not ride again until the operator
// cleared it (a drill with real binaries: bus offline behind a relay,
// 2 s between the tap and the payment). Within ReuseWindow it is now
// judged as a quick transfer between two buses is: charged nothing,
// noted code_reuse_window, the pass left valid, at most
// MaxForgivenReuses a day; beyond the window it is still denied.
func TestShopAndOfflineBusOneCodeForgiven(t *testing.T) {
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
		if denied || bal != 5000-180 || len(notes) != 1 || notes[0] != NoteCodeReuseWindow {
			t.Errorf("bus then shop 2 s apart: denied %v, balance %d, notes %v; want the pass valid, %d, [%s]",
				denied, bal, notes, 5000-180, NoteCodeReuseWindow)
		}
		if denied, _, _ := run(10*time.Minute, 1); !denied {
			t.Errorf("bus then shop 10 min apart: the pass not denied, want code_reused")
		}
		if denied, _, _ := run(2*time.Second, MaxForgivenReuses+1); !denied {
			t.Errorf("%d such reuses in a day: the pass not denied, want code_reused", MaxForgivenReuses+1)
		}
	})
}
