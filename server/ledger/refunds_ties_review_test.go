package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestRefundsByTokenPagesTies: refunds made in the same nanosecond (a
// coarse clock, two instances) must not be skipped by the next page: its
// cursor is the last one's time, and the page may not end inside a tie.
func TestRefundsByTokenPagesTies(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 10_000)
		for i := range 3 {
			if _, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop-a", OrderID: fmt.Sprintf("o-%d", i), Account: acct, Serial: 1,
				RiderKey: riderKey(acct), CodeKey: codeKey(acct, 1, at(i)), CodeHash: "h", Amount: 100, Currency: "EUR", TokenID: "tok-1"}); err != nil {
				t.Fatal(err)
			}
		}
		tick := time.Now()
		s.now = func() time.Time { return tick }
		for i := range 3 {
			if _, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop-a", OrderID: fmt.Sprintf("o-%d", i),
				RefundID: fmt.Sprintf("r-%d", i), Amount: 10, TokenID: "tok-3"}); err != nil {
				t.Fatal(err)
			}
		}
		seen := map[string]bool{}
		var before int64
		for page := 0; page < 5; page++ {
			rs, err := s.RefundsByToken(ctx, "tok-3", before, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if seen[r.RefundID] {
					t.Errorf("refund %s listed twice", r.RefundID)
				}
				seen[r.RefundID] = true
			}
			if len(rs) < 2 {
				break
			}
			before = rs[len(rs)-1].CreatedAt.UnixNano()
		}
		if len(seen) != 3 {
			t.Errorf("paging by 2 listed %d of the token's 3 refunds: %v", len(seen), seen)
		}
	})
}
