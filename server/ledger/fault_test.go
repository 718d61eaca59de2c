package ledger

import (
	"context"
	"errors"
	"testing"
	"time"
)

var errCrash = errors.New("injected crash")

// A transaction that fails at any point inside leaves nothing behind, and
// the operation succeeds, once, when retried.
func TestFaultLeavesNothingHalfWritten(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 300)
		payee := newAccount(t, s, 1000)
		seq := uint64(0)
		ops := []struct {
			name   string
			points []string
			op     func() error
		}{
			{"commit taps", []string{"commit-taps:stored", "commit-taps:rated", "commit"}, func() error {
				// Late tap re-rates an earlier one and the balance goes
				// negative: taps, postings, corrections, a deny entry.
				seq += 2
				_, err := s.CommitTaps(ctx, []Tap{mkTap("bus-1", seq, acct, at(int(seq)*10+5), ""), mkTap("bus-2", seq, acct, at(int(seq)*10), "X1")})
				return err
			}},
			{"top up", []string{"topup", "commit"}, func() error {
				_, err := s.TopUp(ctx, acct, 5000, "fault-topup")
				return err
			}},
			{"pay", []string{"pay", "commit"}, func() error {
				_, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "m", OrderID: "fault", Account: payee, Serial: 1, RiderKey: riderKey(payee),
					CodeKey: codeKey(payee, 1, at(0)), Amount: 100, Currency: "EUR"})
				return err
			}},
			{"refund", []string{"refund", "commit"}, func() error {
				_, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "m", OrderID: "fault", RefundID: "fault-refund", Amount: 40})
				return err
			}},
			{"deny", []string{"commit"}, func() error { return s.Deny(ctx, payee, 1, "fraud") }},
			{"credential", []string{"commit"}, func() error {
				_, err := s.IssueCredentialSerial(ctx, payee, time.Now().Add(time.Hour), riderKey(payee))
				return err
			}},
		}
		for _, o := range ops {
			for _, point := range o.points {
				before := snapshot(t, s)
				hit := false
				s.fault = func(p string) error {
					if p == point {
						hit = true
						return errCrash
					}
					return nil
				}
				err := o.op()
				s.fault = nil
				if !hit {
					t.Fatalf("%s: fault point %q never reached", o.name, point)
				}
				if !errors.Is(err, errCrash) {
					t.Fatalf("%s at %s: err = %v, want the injected crash", o.name, point, err)
				}
				if after := snapshot(t, s); after != before {
					t.Errorf("%s failing at %s left changes:\n%s\n%s", o.name, point, before, after)
				}
				if err := s.CheckInvariants(ctx); err != nil {
					t.Errorf("%s failing at %s: %v", o.name, point, err)
				}
			}
			if err := o.op(); err != nil {
				t.Errorf("%s without fault: %v", o.name, err)
			}
		}
		if b := balance(t, s, payee); b != 940 {
			t.Errorf("payee balance %d, want 940 (paid 100, 40 of it refunded)", b)
		}
	})
}

// TestCancelledCommitSaysCancelled: a write whose context is cancelled
// just before its commit (a shutting-down ingest, a client gone) is
// rolled back by database/sql, and the error says it was cancelled: it
// said only sql.ErrTxDone ("transaction has already been committed or
// rolled back"), which reads as a bug, not as a stop. Nothing is written.
func TestCancelledCommitSaysCancelled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 300)
		before := snapshot(t, s)
		idle := s.db.Stats().InUse
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rolledBack := false
		s.fault = func(p string) error {
			if p != "commit" {
				return nil
			}
			cancel()
			// database/sql rolls the transaction back on its own once the
			// context is done, and gives its connection back: wait for it.
			for range 5000 {
				if s.db.Stats().InUse <= idle {
					rolledBack = true
					break
				}
				time.Sleep(time.Millisecond)
			}
			return nil
		}
		_, err := s.CommitTaps(ctx, []Tap{mkTap("bus-1", 1, acct, at(5), "")})
		s.fault = nil
		if !rolledBack {
			t.Fatal("the cancelled transaction was never rolled back")
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("commit cancelled before it ran: err = %v, want context.Canceled", err)
		}
		if after := snapshot(t, s); after != before {
			t.Errorf("a cancelled commit left changes:\n%s\n%s", before, after)
		}
		if err := s.CheckInvariants(context.Background()); err != nil {
			t.Error(err)
		}
	})
}
