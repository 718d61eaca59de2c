package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestShopDayAfterClockStepBack: the server's clock ran 10 minutes fast,
// the operator took the shops' report of 10 March at 00:05 by it (the
// README: some minutes after the day's end) and paid them out, then NTP
// stepped the clock back to 23:56. A payment and a refund made then were
// dated 10 March: the day's figures changed after it was paid out, and
// the 11th's report never held them (a shop not paid for an order, or a
// refund never taken back from it). They are dated no earlier than the
// newest payment or refund, on the 11th, and the 10th stays as reported.
func TestShopDayAfterClockStepBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		clock := time.Date(2026, 3, 10, 23, 50, 0, 0, time.UTC)
		s := db.open(t, &Options{Now: func() time.Time { return clock }})
		acct := newAccount(t, s, 10_000)
		pay := func(order string) PaymentOrder {
			t.Helper()
			o, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: order, Account: acct, Serial: 1, RiderKey: riderKey(acct),
				CodeKey: codeKey(acct, 1, clock), CodeHash: order, Amount: 100, Currency: "EUR"})
			if err != nil {
				t.Fatal(err)
			}
			return o
		}
		report := func(day string) string {
			t.Helper()
			rep, err := s.MerchantSettlement(ctx, day, day, "")
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("%+v", rep.Days)
		}
		pay("before-midnight")
		clock = time.Date(2026, 3, 11, 0, 5, 0, 0, time.UTC) // the server 10 minutes fast
		after := pay("after-midnight")
		paidOut := report("2026-03-10")
		clock = time.Date(2026, 3, 10, 23, 56, 0, 0, time.UTC) // NTP steps it back
		stepped := pay("stepped-back")
		rf, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: "before-midnight", RefundID: "r-1", Amount: 40})
		if err != nil {
			t.Fatal(err)
		}
		if got := report("2026-03-10"); got != paidOut {
			t.Errorf("10 March after the clock stepped back: %s; paid out %s", got, paidOut)
		}
		if got, want := report("2026-03-11"), "[{Day:2026-03-11 MerchantID:shop Payments:2 Paid:200 Refunds:1 Refunded:40}]"; got != want {
			t.Errorf("11 March: %s; want %s (the payment and refund made after its start)", got, want)
		}
		if stepped.CreatedAt.Before(after.CreatedAt) || rf.CreatedAt.Before(after.CreatedAt) {
			t.Errorf("dated %s (payment), %s (refund); want not before %s", stepped.CreatedAt, rf.CreatedAt, after.CreatedAt)
		}
		if o, err := s.PaymentByOrder(ctx, "shop", "stepped-back"); err != nil || !o.CreatedAt.Equal(stepped.CreatedAt) {
			t.Errorf("stored %+v, %v; answered %s", o, err, stepped.CreatedAt)
		}

		// A clock set a year ahead for a moment: the payment made then
		// keeps that date, and those after it are not held to it (every
		// later payment would be dated a year ahead).
		clock = time.Date(2027, 3, 11, 0, 0, 0, 0, time.UTC)
		pay("a-year-ahead")
		clock = time.Date(2026, 3, 11, 9, 0, 0, 0, time.UTC)
		if o := pay("clock-right-again"); !o.CreatedAt.Equal(clock) {
			t.Errorf("after a payment dated a year ahead: dated %s, want %s (the clock's)", o.CreatedAt, clock)
		}
	})
}
