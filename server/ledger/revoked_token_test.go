package ledger

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"
)

// TestRevokedTokenMovesNoMoney: a payment or refund asked with an API
// token that is revoked by the time the ledger writes it is refused
// (ErrTokenRevoked), nothing written. The API checks the token when the
// request comes in; a stolen till token revoked while its requests were
// in flight went on paying and refunding after the revocation had
// answered (an attack review: 7 of 80 concurrent payments of a real
// server committed up to 79 ms after it). On PostgreSQL a revocation
// that comes while a payment is being written waits for it: once
// RevokeToken returns, no payment of the token commits.
func TestRevokedTokenMovesNoMoney(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 10_000)
		sum := sha256.Sum256([]byte("till token"))
		if _, err := s.CreateToken(ctx, APIToken{ID: "till0001", Role: RoleMerchant, MerchantID: "shop", Name: "till"}, sum[:]); err != nil {
			t.Fatal(err)
		}
		payReq := func(order string, counter int) PaymentRequest {
			return PaymentRequest{MerchantID: "shop", OrderID: order, Account: acct, Serial: 1, RiderKey: riderKey(acct),
				CodeKey: codeKey(acct, 1, at(counter)), CodeHash: "h", Amount: 100, Currency: "EUR", TokenID: "till0001"}
		}
		if _, _, err := s.Pay(ctx, payReq("before", 0)); err != nil {
			t.Fatal(err)
		}

		// A payment being written when the revocation comes (PostgreSQL:
		// another connection; SQLite's writer is the payment's until it
		// commits, so the revocation comes after it anyway).
		revoked := make(chan error, 1)
		first, answeredDuring := true, false
		s.fault = func(p string) error {
			if p != "pay" || !first {
				return nil
			}
			first = false
			go func() { revoked <- s.RevokeToken(ctx, "till0001") }()
			select {
			case err := <-revoked:
				// The revocation answered while the payment was not
				// committed: the payment must not commit now.
				revoked <- err
				answeredDuring = true
				return nil
			case <-time.After(300 * time.Millisecond):
				return nil // it waits for the payment
			}
		}
		_, _, payErr := s.Pay(ctx, payReq("during", 1))
		revokeErr := <-revoked // before the hook goes: the revocation runs it too
		s.fault = nil
		if revokeErr != nil {
			t.Fatal(revokeErr)
		}
		if answeredDuring && payErr == nil {
			t.Errorf("a payment of the token committed after RevokeToken had returned")
		}
		if answeredDuring {
			wantErr(t, payErr, ErrTokenRevoked)
		}

		// A payment about to commit when the revocation comes (a second
		// token, the first is revoked now): on PostgreSQL the revocation
		// waits for it, and answers after it committed.
		sum2 := sha256.Sum256([]byte("till token 2"))
		if _, err := s.CreateToken(ctx, APIToken{ID: "till0002", Role: RoleMerchant, MerchantID: "shop", Name: "till 2"}, sum2[:]); err != nil {
			t.Fatal(err)
		}
		req2 := payReq("committing", 3)
		req2.TokenID = "till0002"
		revoked2 := make(chan error, 1)
		first, answeredDuring = true, false
		s.fault = func(p string) error {
			if p != "commit" || !first {
				return nil
			}
			first = false
			go func() { revoked2 <- s.RevokeToken(ctx, "till0002") }()
			select {
			case err := <-revoked2:
				revoked2 <- err
				answeredDuring = true
			case <-time.After(300 * time.Millisecond):
			}
			return nil
		}
		_, _, payErr = s.Pay(ctx, req2)
		revokeErr = <-revoked2
		s.fault = nil
		if revokeErr != nil {
			t.Fatal(revokeErr)
		}
		if answeredDuring && payErr == nil {
			t.Errorf("a payment of the token committed after RevokeToken had returned")
		}

		// Requests that passed the API's check before the revocation and
		// reach the ledger after it.
		before := balance(t, s, acct)
		_, _, err := s.Pay(ctx, payReq("after", 2))
		wantErr(t, err, ErrTokenRevoked)
		_, _, err = s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: "before", RefundID: "r-after", Amount: 100, TokenID: "till0001"})
		wantErr(t, err, ErrTokenRevoked)
		if b := balance(t, s, acct); b != before {
			t.Errorf("balance %d after the revoked token's payment and refund, want %d", b, before)
		}
		if ps, err := s.PaymentsByToken(ctx, "till0001", 0, 0); err != nil || len(ps) > 2 {
			t.Errorf("PaymentsByToken = %d payments, %v; want at most 2", len(ps), err)
		}
		// The shop's other tokens and the operator's are not refused.
		if _, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: "before", RefundID: "r-ops", Amount: 100, TokenID: "init"}); err != nil {
			t.Errorf("refund by the operator token file: %v", err)
		}
	})
}
