package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// A secret replaced just after a pass's end denies the pass too: shops and
// validators take its codes for the clock skew after its end, and a lost
// phone's code paid at a shop after the rider had replaced the secret (the
// pass had "expired", so the replacement left it out).
func TestReplaceSecretDeniesPassInItsSkew(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		clock := time.Now()
		s := db.open(t, &Options{Now: func() time.Time { return clock }})
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult, SecretHash: []byte("old")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.TopUp(ctx, a.ID, 5_000, "psp-1"); err != nil {
			t.Fatal(err)
		}
		end := clock.Add(time.Hour)
		if _, err := s.IssueCredentialSerial(ctx, a.ID, end, riderKey(a.ID)); err != nil {
			t.Fatal(err)
		}
		clock = end.Add(10 * time.Second) // within paycode.DefaultSkew after its end
		if n, err := s.ReplaceSecret(ctx, a.ID, []byte("old"), []byte("new")); err != nil || n != 1 {
			t.Fatalf("ReplaceSecret = %d, %v; want the pass still in its skew denied", n, err)
		}
		before := snapshot(t, s)
		_, _, err = s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: "thief", Account: a.ID, Serial: 1, RiderKey: riderKey(a.ID),
			CodeKey: codeKey(a.ID, 1, clock), Amount: 4_000, Currency: "EUR"})
		wantErr(t, err, ErrDenied)
		if after := snapshot(t, s); after != before {
			t.Errorf("the refused payment changed the ledger:\n%s\n%s", before, after)
		}
		// A pass that ended more than an hour ago is left out (no code of
		// it pays anywhere).
		if _, err := s.IssueCredentialSerial(ctx, a.ID, clock.Add(time.Minute), riderKey(a.ID)); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(time.Hour + 2*time.Minute)
		if n, err := s.ReplaceSecret(ctx, a.ID, []byte("new"), []byte("newer")); err != nil || n != 0 {
			t.Errorf("ReplaceSecret = %d, %v; want 0 (every pass long ended)", n, err)
		}
	})
}

// RecentPayments lists an account's online payments since a time, newest
// first, whatever else its statement holds since (the wallet renews a code
// on screen that a shop took by it).
func TestRecentPayments(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		clock := time.Now()
		s := db.open(t, &Options{Now: func() time.Time { return clock }})
		acct := newAccount(t, s, 10_000)
		other := newAccount(t, s, 10_000)
		pay := func(a uint64, order string) {
			t.Helper()
			if _, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: order, Account: a, Serial: 1, RiderKey: riderKey(a),
				CodeKey: codeKey(a, 1, clock), CodeHash: order, Amount: 100, Currency: "EUR"}); err != nil {
				t.Fatal(err)
			}
		}
		pay(acct, "old")
		clock = clock.Add(20 * time.Minute)
		since := clock
		pay(acct, "new-1")
		pay(other, "theirs")
		pay(acct, "new-2")
		for i := range 12 {
			if _, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: "new-1", RefundID: fmt.Sprint("r", i), Amount: 1}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.RecentPayments(ctx, acct, since)
		if err != nil {
			t.Fatal(err)
		}
		var hashes []string
		for _, p := range got {
			hashes = append(hashes, p.CodeHash)
		}
		if fmt.Sprint(hashes) != "[new-2 new-1]" {
			t.Errorf("RecentPayments = %v; want [new-2 new-1]", hashes)
		}
	})
}

// TestDenyGraceCoversTheSkew: a pass's codes pay for the skew after its
// end, so the credentials denied with a replaced secret or a reused code
// must reach back further than any skew a server or validator may be
// configured with.
func TestDenyGraceCoversTheSkew(t *testing.T) {
	if DenyGrace <= paycode.MaxPolicySkew {
		t.Errorf("DenyGrace %v does not cover paycode.MaxPolicySkew %v", DenyGrace, paycode.MaxPolicySkew)
	}
}
