package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// pay makes a payment of amount by a fresh code of acct.
func pay(tb testing.TB, s *Store, merchant, order string, acct uint64, amount int64) PaymentOrder {
	tb.Helper()
	o, _, err := s.Pay(context.Background(), PaymentRequest{MerchantID: merchant, OrderID: order, Account: acct, Serial: 1,
		RiderKey: riderKey(acct), CodeKey: codeKey(acct, 1, at(0)), CodeHash: "abc", Amount: amount, Currency: "EUR"})
	if err != nil {
		tb.Fatalf("Pay %s/%s: %v", merchant, order, err)
	}
	return o
}

// A shop gives back a payment in parts, never more than was paid; a retry
// is the same refund; another merchant cannot refund it; and every refusal
// leaves the ledger as it was (invariants checked at cleanup).
func TestRefundPayment(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		o1 := pay(t, s, "shop-a", "o-1", acct, 600)
		pay(t, s, "shop-a", "o-2", acct, 100)

		r, replayed, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-1", Amount: 200,
			Reason: "returned one item"})
		if err != nil || replayed || r.PaymentID != o1.ID || r.Account != acct || r.Amount != 200 || r.Refunded != 200 ||
			r.PaymentAmount != 600 || r.Currency != "EUR" {
			t.Fatalf("RefundPayment = %+v, %t, %v", r, replayed, err)
		}
		if b := balance(t, s, acct); b != 1000-600-100+200 {
			t.Fatalf("balance %d after the refund, want %d", b, 1000-600-100+200)
		}
		before := snapshot(t, s)
		again, replayed, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-1", Amount: 200})
		if err != nil || !replayed || again.Amount != 200 || again.Refunded != 200 || again.Reason != "returned one item" {
			t.Errorf("retry = %+v, %t, %v; want the same refund, replayed", again, replayed, err)
		}
		refused := []struct {
			req  RefundRequest
			want error
		}{
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-1", Amount: 300}, ErrRefundConflict},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-2", RefundID: "r-1", Amount: 200}, ErrRefundConflict},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-2", Amount: 401}, ErrOverRefund},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-2", RefundID: "r-3", Amount: 101}, ErrOverRefund},
			{RefundRequest{MerchantID: "shop-b", OrderID: "o-1", RefundID: "r-2", Amount: 1}, ErrNotFound},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-9", RefundID: "r-2", Amount: 1}, ErrNotFound},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-2", Amount: 0}, ErrInvalid},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-2", Amount: -5}, ErrInvalid},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-2", Amount: MaxAmount + 1}, ErrInvalid},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "", Amount: 1}, ErrInvalid},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: strings.Repeat("r", 129), Amount: 1}, ErrInvalid},
			{RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-2", Amount: 1, Reason: "bad\x00reason"}, ErrInvalid},
			{RefundRequest{MerchantID: "", OrderID: "o-1", RefundID: "r-2", Amount: 1}, ErrInvalid},
		}
		// An operator reads money, not minor units (the console showed
		// "payment 1 of 600, refunded 200, asked 401").
		if _, _, err := s.RefundPayment(ctx, refused[2].req); err == nil ||
			!strings.Contains(err.Error(), "of 6.00 EUR, refunded 2.00 EUR, asked 4.01 EUR (4.00 EUR left to refund)") {
			t.Errorf("over-refund message: %v", err)
		}
		for _, tc := range refused {
			_, _, err := s.RefundPayment(ctx, tc.req)
			if !errors.Is(err, tc.want) {
				t.Errorf("RefundPayment(%+v) = %v, want %v", tc.req, err, tc.want)
			}
		}
		if after := snapshot(t, s); after != before {
			t.Errorf("a retry or a refused refund changed the ledger:\n%s\n%s", before, after)
		}
		// The rest of the payment, then nothing more.
		r2, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-2", Amount: 400})
		if err != nil || r2.Refunded != 600 {
			t.Fatalf("refunding the rest: %+v, %v", r2, err)
		}
		_, _, err = s.RefundPayment(ctx, RefundRequest{MerchantID: "shop-a", OrderID: "o-1", RefundID: "r-3", Amount: 1})
		wantErr(t, err, ErrOverRefund)
		list, err := s.Refunds(ctx, o1.ID)
		if err != nil || len(list) != 2 || list[0].RefundID != "r-1" || list[0].Refunded != 200 || list[1].RefundID != "r-2" ||
			list[1].Refunded != 600 || list[1].OrderID != "o-1" {
			t.Errorf("Refunds = %+v, %v", list, err)
		}
		ps, err := s.Postings(ctx, acct, 2)
		if err != nil || len(ps) != 2 || !ps[0].IsRefund() || ps[0].Amount != 400 || ps[0].PaymentID != o1.ID ||
			ps[0].RefundID != "r-2" || ps[0].MerchantID != "shop-a" || ps[0].OrderID != "o-1" || ps[0].Balance != 900 ||
			ps[1].Amount != 200 || ps[1].RefundID != "r-1" || ps[1].Balance != 500 {
			t.Errorf("the refunds' postings: %+v, %v", ps, err)
		}
		// The whole statement: each balance is the one before plus the
		// posting, from zero; the payments name their shop and order.
		all, err := s.Postings(ctx, acct, 0)
		if err != nil || len(all) != 5 {
			t.Fatalf("statement: %+v, %v", all, err)
		}
		prev := int64(0)
		for i := len(all) - 1; i >= 0; i-- {
			p := all[i]
			if p.Balance != prev+p.Amount {
				t.Errorf("posting %d: balance %d after %d, want %d", p.Seq, p.Balance, p.Amount, prev+p.Amount)
			}
			prev = p.Balance
			if p.Kind == KindPayment && (p.MerchantID != "shop-a" || p.OrderID == "" || p.IsRefund() != (p.RefundID != "")) {
				t.Errorf("posting %d of a payment: %+v", p.Seq, p)
			}
		}
		if all[4].Kind != KindTopUp || all[3].OrderID != "o-1" || all[2].OrderID != "o-2" || all[2].RefundID != "" {
			t.Errorf("statement: %+v", all)
		}
		// Paged two at a time from each page's last seq: the same
		// postings with the same balances, then nothing.
		var paged []Posting
		for before, pages := uint64(0), 0; pages < 5; pages++ {
			page, err := s.PostingsBefore(ctx, acct, before, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			before = page[len(page)-1].Seq
		}
		if fmt.Sprint(paged) != fmt.Sprint(all) {
			t.Errorf("the statement paged:\n%+v\nwhole:\n%+v", paged, all)
		}
		if page, err := s.PostingsBefore(ctx, acct, all[4].Seq, 10); err != nil || len(page) != 0 {
			t.Errorf("before the first posting: %+v, %v", page, err)
		}
		if b := balance(t, s, acct); b != 900 {
			t.Errorf("balance %d, want 900 (1000 - 600 - 100 + 600)", b)
		}
		if sum, err := s.RefundedTotal(ctx); err != nil || sum != 600 {
			t.Errorf("RefundedTotal = %d, %v; want 600", sum, err)
		}
		if st, err := s.Stats(ctx); err != nil || st.Refunds != 2 || st.Payments != 2 {
			t.Errorf("Stats = %+v, %v; want 2 payments, 2 refunds", st, err)
		}
		// The journal tables stay append-only.
		for _, q := range []string{`UPDATE refunds SET amount = 1`, `DELETE FROM refunds`} {
			if _, err := s.db.ExecContext(ctx, q); err == nil {
				t.Errorf("%s: succeeded on an append-only table", q)
			}
		}
	})
}

// Many refunds of one payment at once (a shop's till retrying, several
// clerks): together they never give back more than was paid, and one
// refund id sent twice at once is made once.
func TestRefundsConcurrent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		o := pay(t, s, "shop", "o-1", acct, 500)
		const n = 12
		var wg sync.WaitGroup
		errs := make([]error, n)
		replays := make([]bool, n)
		for i := range n {
			wg.Go(func() {
				id := "r-" + strconv.Itoa(i/2) // each id twice
				_, replays[i], errs[i] = s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: "o-1", RefundID: id, Amount: 100})
			})
		}
		wg.Wait()
		made, over, replayed := 0, 0, 0
		for i, err := range errs {
			switch {
			case err == nil && replays[i]:
				replayed++
			case err == nil:
				made++
			case errors.Is(err, ErrOverRefund):
				over++
			default:
				t.Errorf("refund %d: %v", i, err)
			}
		}
		list, err := s.Refunds(ctx, o.ID)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, r := range list {
			sum += r.Amount
		}
		if made != 5 || len(list) != 5 || sum != 500 || made+over+replayed != n {
			t.Errorf("%d made, %d over, %d replayed; %d stored summing %d: want 5 made, 500 refunded", made, over, replayed, len(list), sum)
		}
		if b := balance(t, s, acct); b != 1000 {
			t.Errorf("balance %d, want 1000 (all of the payment back)", b)
		}
		// One refund id sent at once for two payments of two riders
		// (whose accounts lock apart): one is made, the other is a
		// conflict, never an internal error or two refunds.
		for round := range 10 {
			a1, a2 := newAccount(t, s, 1000), newAccount(t, s, 1000)
			o1, o2 := "x-"+strconv.Itoa(round), "y-"+strconv.Itoa(round)
			pay(t, s, "shop", o1, a1, 100)
			pay(t, s, "shop", o2, a2, 100)
			var errs [2]error
			var wg sync.WaitGroup
			for i, order := range []string{o1, o2} {
				wg.Go(func() {
					_, _, errs[i] = s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: order,
						RefundID: "same-" + strconv.Itoa(round), Amount: 40})
				})
			}
			wg.Wait()
			ok := 0
			for _, err := range errs {
				switch {
				case err == nil:
					ok++
				case !errors.Is(err, ErrRefundConflict):
					t.Errorf("round %d: %v, want a conflict", round, err)
				}
			}
			if ok != 1 || balance(t, s, a1)+balance(t, s, a2) != 2*900+40 {
				t.Errorf("round %d: %d made (%v); balances %d and %d", round, ok, errs, balance(t, s, a1), balance(t, s, a2))
			}
		}
	})
}

// A refund that brings an account back above its credit line takes it off
// the deny list, as a top-up does.
func TestRefundLiftsDeny(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 300)
		pay(t, s, "shop", "o-1", acct, 300)
		commit(t, s, mkTap("bus-1", 1, acct, at(60), "")) // 250 below zero
		if a, err := s.Account(ctx, acct); err != nil || !a.Denied || a.Balance != -250 {
			t.Fatalf("after the tap: %+v, %v; want denied at -250", a, err)
		}
		if _, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: "o-1", RefundID: "r", Amount: 300}); err != nil {
			t.Fatal(err)
		}
		if a, err := s.Account(ctx, acct); err != nil || a.Denied || a.Balance != 50 {
			t.Errorf("after the refund: %+v, %v; want not denied at 50", a, err)
		}
	})
}

// paidToDamage opens a ledger of db whose account (of 1000) paid shop's
// order o-1 (500), to damage: not db.open, whose cleanup would find the
// damage, which stays (refunds are append-only).
func paidToDamage(t *testing.T, db *testDB) (*Store, uint64, PaymentOrder) {
	t.Helper()
	s, err := Open(context.Background(), db.dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	putTableAt(t, s, tableV1, tablesSince)
	acct := newAccount(t, s, 1000)
	return s, acct, pay(t, s, "shop", "o-1", acct, 500)
}

// CheckInvariants finds a refund row without its posting, and a refund
// posting without its row.
func TestCheckInvariantsFindsBadRefunds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s, acct, o := paidToDamage(t, db)
		// A refund row made up, with no money behind it.
		if _, err := s.db.ExecContext(ctx, `INSERT INTO refunds (merchant_id, refund_id, payment_id, account_id, posting_seq, amount,
			reason, created_ns) VALUES ('shop', 'forged', $1, $2, 99, 100, '', 0)`, int64(o.ID), int64(acct)); err != nil {
			t.Fatal(err)
		}
		err := s.CheckInvariants(ctx)
		if !errors.Is(err, ErrInvariant) || !strings.Contains(err.Error(), "refund without its posting") ||
			!strings.Contains(err.Error(), "money not conserved") {
			t.Errorf("forged refund row: %v", err)
		}
	})
}

// Money given back on a payment must be named by one refund: a second row
// naming a refund's posting is refused by the database, and a refund
// posting no row names is found (with the account's cache and figures
// made to agree, so nothing else shows it).
func TestCheckInvariantsFindsUnnamedRefund(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s, acct, o := paidToDamage(t, db)
		if _, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: "o-1", RefundID: "r1", Amount: 100}); err != nil {
			t.Fatal(err)
		}
		seq := int64(4) // top-up, payment, refund r1: its posting is 3
		if _, err := s.db.ExecContext(ctx, `INSERT INTO refunds (merchant_id, refund_id, payment_id, account_id, posting_seq, amount,
			reason, created_ns) VALUES ('shop', 'r2', $1, $2, $3, 100, '', 0)`, int64(o.ID), int64(acct), seq-1); err == nil {
			t.Error("a second refund row naming refund r1's posting was stored")
		}
		for _, q := range []string{
			`INSERT INTO postings (account_id, seq, kind, amount, payment_id, created_ns) VALUES ($1, $2, 'payment', 100, $3, 0)`,
			`UPDATE accounts SET balance = balance + 100, postings = postings + 1 WHERE id = $1`,
		} {
			args := []any{int64(acct), seq, int64(o.ID)}
			if strings.HasPrefix(q, "UPDATE") {
				args = args[:1]
			}
			if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CheckInvariants(ctx); !errors.Is(err, ErrInvariant) || !strings.Contains(err.Error(), "without its refund") {
			t.Errorf("a refund posting no refund names: %v", err)
		}
	})
}

// A shop cannot split a refund into a row a cent: a payment takes at most
// MaxRefundsPerPayment refunds, whatever is left of it.
func TestRefundsBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		pay(t, s, "shop", "o-1", acct, 500)
		for i := range MaxRefundsPerPayment {
			if _, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: "o-1", RefundID: "r-" + strconv.Itoa(i),
				Amount: 1}); err != nil {
				t.Fatal(err)
			}
		}
		_, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: "o-1", RefundID: "one-more", Amount: 1})
		wantErr(t, err, ErrOverRefund)
		if b := balance(t, s, acct); b != 1000-500+MaxRefundsPerPayment {
			t.Errorf("balance %d, want %d", b, 1000-500+MaxRefundsPerPayment)
		}
	})
}

// TestPaymentsByToken: each payment and refund keeps the API token that
// made it, and a token's payments are listed newest first, paged: a shop
// with several tills whose one token leaked tells that till's orders from
// the others'. A token id no row can hold lists nothing.
func TestPaymentsByToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 10_000)
		payBy := func(order, token string, counter int) PaymentOrder {
			t.Helper()
			o, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop-a", OrderID: order, Account: acct, Serial: 1,
				RiderKey: riderKey(acct), CodeKey: codeKey(acct, 1, at(counter)), CodeHash: "h", Amount: 100, Currency: "EUR", TokenID: token})
			if err != nil {
				t.Fatal(err)
			}
			return o
		}
		var leaked []uint64
		for i := range 5 {
			leaked = append(leaked, payBy(fmt.Sprintf("till-3-%d", i), "tok-3", 2*i).ID)
			payBy(fmt.Sprintf("till-1-%d", i), "tok-1", 2*i+1)
		}
		if o, err := s.PaymentByOrder(ctx, "shop-a", "till-3-0"); err != nil || o.TokenID != "tok-3" {
			t.Fatalf("PaymentByOrder = %+v, %v; want token tok-3", o, err)
		}
		ids := func(ps []PaymentOrder) (out []uint64) {
			for _, p := range ps {
				if p.TokenID != "tok-3" || p.MerchantID != "shop-a" {
					t.Errorf("listed %+v for token tok-3", p)
				}
				out = append(out, p.ID)
			}
			return out
		}
		all, err := s.PaymentsByToken(ctx, "tok-3", 0, 0)
		if got := ids(all); err != nil || fmt.Sprint(got) != fmt.Sprint([]uint64{leaked[4], leaked[3], leaked[2], leaked[1], leaked[0]}) {
			t.Fatalf("PaymentsByToken = %v, %v; want %v newest first", got, err, leaked)
		}
		page, err := s.PaymentsByToken(ctx, "tok-3", leaked[3], 2)
		if got := ids(page); err != nil || fmt.Sprint(got) != fmt.Sprint([]uint64{leaked[2], leaked[1]}) {
			t.Errorf("the page before %d = %v, %v", leaked[3], got, err)
		}
		for _, tok := range []string{"", "nobody", strings.Repeat("x", 65), "bad\x00id"} {
			if ps, err := s.PaymentsByToken(ctx, tok, 0, 0); err != nil || len(ps) != 0 {
				t.Errorf("PaymentsByToken(%q) = %v, %v; want none", tok, ps, err)
			}
		}
		r, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop-a", OrderID: "till-3-0", RefundID: "r-1", Amount: 50, TokenID: "tok-ops"})
		if err != nil || r.TokenID != "tok-ops" {
			t.Fatalf("RefundPayment = %+v, %v", r, err)
		}
		if rs, err := s.Refunds(ctx, leaked[0]); err != nil || len(rs) != 1 || rs[0].TokenID != "tok-ops" {
			t.Errorf("Refunds = %+v, %v; want the refund by tok-ops", rs, err)
		}
		_, _, err = s.Pay(ctx, PaymentRequest{MerchantID: "shop-a", OrderID: "long", Account: acct, Serial: 1, RiderKey: riderKey(acct),
			CodeKey: codeKey(acct, 1, at(20)), Amount: 1, Currency: "EUR", TokenID: strings.Repeat("x", 65)})
		wantErr(t, err, ErrInvalid)
	})
}

// TestRefundsByToken: a token's refunds are listed newest first, paged by
// their time: a leaked till token may refund any of its shop's payments,
// and the operator reads what it gave back as well as what it took.
func TestRefundsByToken(t *testing.T) {
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
		refund := func(order, id, token string) {
			t.Helper()
			if _, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop-a", OrderID: order, RefundID: id, Amount: 10, TokenID: token}); err != nil {
				t.Fatal(err)
			}
		}
		refund("o-0", "r-1", "tok-3")
		refund("o-1", "r-2", "tok-1")
		refund("o-0", "r-3", "tok-3")
		refund("o-2", "r-4", "tok-3")
		ids := func(rs []PaymentRefund) (out []string) {
			for _, r := range rs {
				if r.TokenID != "tok-3" || r.MerchantID != "shop-a" || r.Account != acct || r.Amount != 10 {
					t.Errorf("listed %+v for token tok-3", r)
				}
				out = append(out, r.OrderID+"/"+r.RefundID)
			}
			return out
		}
		all, err := s.RefundsByToken(ctx, "tok-3", 0, 0)
		if got := fmt.Sprint(ids(all)); err != nil || got != "[o-2/r-4 o-0/r-3 o-0/r-1]" {
			t.Fatalf("RefundsByToken = %s, %v; want o-2/r-4 o-0/r-3 o-0/r-1", got, err)
		}
		page, err := s.RefundsByToken(ctx, "tok-3", all[0].CreatedAt.UnixNano(), 1)
		if got := fmt.Sprint(ids(page)); err != nil || got != "[o-0/r-3]" {
			t.Errorf("the page before r-4 = %s, %v; want o-0/r-3", got, err)
		}
		for _, tok := range []string{"", "nobody", "tok-2", strings.Repeat("x", 65), "bad\x00id"} {
			if rs, err := s.RefundsByToken(ctx, tok, 0, 0); err != nil || len(rs) != 0 {
				t.Errorf("RefundsByToken(%q) = %v, %v; want none", tok, rs, err)
			}
		}
	})
}
