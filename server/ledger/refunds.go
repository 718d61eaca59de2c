package ledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/farego/farego/driver/feedback"
)

// MaxRefundsPerPayment bounds the refunds of one payment (as card and
// wallet payment systems do: a few dozen partial refunds an order), so a
// shop cannot make the ledger hold a row for every cent it paid back.
const MaxRefundsPerPayment = 50

// RefundRequest gives back all or part of an online payment.
type RefundRequest struct {
	MerchantID string // the payment's merchant
	OrderID    string // the payment's order id
	// RefundID is the merchant's id for this refund, unique among its
	// refunds: the same request again (a retry) is the same refund.
	RefundID string
	Amount   int64  // minor units, at most what is left of the payment
	Reason   string // optional, shown to the operator
	TokenID  string // the API token that asks (its id), kept with the refund
	// Actor, if set, is who asks ("token:ID (merchant)"): a new refund is
	// written to the audit trail (action "refund") in its own transaction,
	// so that money given back is never without its entry there.
	Actor string
}

// PaymentRefund is a refund of an online payment.
type PaymentRefund struct {
	MerchantID string
	OrderID    string
	RefundID   string
	PaymentID  uint64
	Account    uint64
	Amount     int64
	Currency   string
	Reason     string
	CreatedAt  time.Time
	TokenID    string // the API token that made it ("" before schema version 26)
	// Refunded is the payment's refunds in all (this one included) when
	// it was made, of the payment's PaymentAmount.
	Refunded      int64
	PaymentAmount int64
}

func (r *RefundRequest) validate() error {
	if err := checkText("merchant id", r.MerchantID, maxName, true); err != nil {
		return err
	}
	if err := checkText("order id", r.OrderID, maxLongName, true); err != nil {
		return err
	}
	if err := checkText("refund id", r.RefundID, maxLongName, true); err != nil {
		return err
	}
	if err := checkText("reason", r.Reason, maxLongName, false); err != nil {
		return err
	}
	if err := checkText("token id", r.TokenID, maxName, false); err != nil {
		return err
	}
	if err := checkText("actor", r.Actor, maxLongName, false); err != nil {
		return err
	}
	return checkAmount("amount", r.Amount)
}

// RefundPayment gives back Amount of a merchant's online payment to the
// rider's account: a posting on the payment (kind payment, amount > 0)
// and a refund row. It is idempotent on (MerchantID, RefundID): the same
// request again returns the same refund and replayed = true; the refund id
// with another order or amount is ErrRefundConflict. Refused with nothing
// written: ErrNotFound (no such order of this merchant), ErrOverRefund (the
// payment's refunds would exceed its amount, or it has
// MaxRefundsPerPayment), ErrTokenRevoked (TokenID was revoked meanwhile),
// ErrInvalid (bad request).
//
// The payment's account is locked first, so refunds of one payment (which
// all post on that account) are counted one after another: concurrent
// refunds never give back more than was paid. A refund may lift the
// account's negative_balance deny entry (see write).
func (s *Store) RefundPayment(ctx context.Context, req RefundRequest) (refund PaymentRefund, replayed bool, err error) {
	if err := req.validate(); err != nil {
		return PaymentRefund{}, false, invalid("refund: %v", err)
	}
	err = s.write(ctx, "refund", func(t *txn) error {
		replayed = false
		if err := t.tokenInForce(req.TokenID, false); err != nil {
			return err
		}
		p, err := t.paymentByOrder(req.MerchantID, req.OrderID)
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: merchant %q order %q", ErrNotFound, req.MerchantID, req.OrderID)
		}
		if err != nil {
			return err
		}
		a, err := t.lockExisting(p.Account)
		if err != nil {
			return err
		}
		prev, err := refundQuery(t.ctx, t.tx, `WHERE r.merchant_id = $1 AND r.refund_id = $2`, req.MerchantID, req.RefundID)
		if err != nil {
			return err
		}
		if len(prev) > 0 {
			if prev[0].PaymentID != p.ID || prev[0].Amount != req.Amount {
				return fmt.Errorf("%w: merchant %q refund %q was made for another order or amount", ErrRefundConflict,
					req.MerchantID, req.RefundID)
			}
			refund, replayed = prev[0], true
			return nil
		}
		var refunded, count int64
		if err := t.queryRow(`SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT), COUNT(*) FROM refunds WHERE payment_id = $1`,
			int64(p.ID)).Scan(&refunded, &count); err != nil {
			return fmt.Errorf("ledger: read refunds: %w", err)
		}
		if err := CheckRefund(p.PaymentOrder, refunded, int(count), req.Amount); err != nil {
			return err
		}
		if err := t.appendPosting(a, KindPayment, req.Amount, postingRef{paymentID: int64(p.ID)}); err != nil {
			return err
		}
		if err := t.s.hook("refund"); err != nil {
			return err
		}
		at, err := t.shopTime()
		if err != nil {
			return err
		}
		n, err := t.execCount("record refund", `INSERT INTO refunds (merchant_id, refund_id, payment_id, account_id, posting_seq,
				amount, reason, created_ns, token_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (merchant_id, refund_id) DO NOTHING`,
			req.MerchantID, req.RefundID, int64(p.ID), int64(p.Account), a.postings, req.Amount, req.Reason, at, req.TokenID)
		if err != nil {
			return err
		}
		if n == 0 {
			// The same refund id was committed meanwhile for a payment of
			// another account (whose lock this one does not hold): run
			// again to answer as for a retry, or a conflict.
			return errRetry
		}
		t.stat(statRefunds, 1)
		if req.Actor != "" {
			if err := t.audit(req.Actor, "refund", req.MerchantID+"/"+req.OrderID,
				fmt.Sprintf("refund %q of payment %d (account %d) amount %d %s, refunded %d of %d; token %s; reason %q",
					req.RefundID, p.ID, p.Account, req.Amount, p.Currency, refunded+req.Amount, p.Amount, req.TokenID, req.Reason)); err != nil {
				return err
			}
		}
		if err := t.tokenInForce(req.TokenID, true); err != nil { // last: see tokenInForce
			return err
		}
		refund = PaymentRefund{MerchantID: req.MerchantID, OrderID: req.OrderID, RefundID: req.RefundID, PaymentID: p.ID,
			Account: p.Account, Amount: req.Amount, Currency: p.Currency, Reason: req.Reason, CreatedAt: fromNS(at),
			TokenID: req.TokenID, Refunded: refunded + req.Amount, PaymentAmount: p.Amount}
		return nil
	})
	if err != nil {
		return PaymentRefund{}, false, err
	}
	if !replayed {
		s.log.Info("ledger: refund", logKeyPayment, refund.PaymentID, logKeyMerchant, refund.MerchantID,
			"refund_id", refund.RefundID, logKeyAccount, refund.Account, logKeyAmount, refund.Amount)
	}
	return refund, replayed, nil
}

// CheckRefund is the refund rule: a new refund of amount of payment p,
// whose refunds (count of them) have given back refunded so far, is
// refused (ErrOverRefund, saying what is left) when the refunds would come
// to more than the payment, or it has MaxRefundsPerPayment refunds
// already. RefundPayment holds every refund to it under the account's
// lock; a front-end (the console) asks it first, as advice, with what
// Refunds and RefundedOf say.
func CheckRefund(p PaymentOrder, refunded int64, count int, amount int64) error {
	if count >= MaxRefundsPerPayment {
		return fmt.Errorf("%w: payment %d has %d refunds, the most there may be", ErrOverRefund, p.ID, count)
	}
	if refunded+amount > p.Amount {
		m := func(minor int64) string { return feedback.FormatAmount(minor, p.Currency) }
		return fmt.Errorf("%w: payment %d of %s, refunded %s, asked %s (%s left to refund)", ErrOverRefund, p.ID, m(p.Amount), m(refunded),
			m(amount), m(p.Amount-refunded))
	}
	return nil
}

// RefundedOf is what a payment's refunds (as Refunds returns them,
// oldest first) have given back in all: each carries the running total.
func RefundedOf(refunds []PaymentRefund) int64 {
	if len(refunds) == 0 {
		return 0
	}
	return refunds[len(refunds)-1].Refunded
}

// Refunds returns a payment's refunds, oldest first (at most
// MaxRefundsPerPayment).
func (s *Store) Refunds(ctx context.Context, paymentID uint64) ([]PaymentRefund, error) {
	if paymentID > math.MaxInt64 {
		return nil, nil
	}
	return refundQuery(ctx, s.db, `WHERE r.payment_id = $1 ORDER BY r.posting_seq`, int64(paymentID))
}

// RefundsByToken returns the refunds an API token made, newest first,
// those made before before (unix ns; 0: from the newest), at most limit
// (MaxPaymentsPage when 0 or more; a full page also takes the refunds of
// its last one's time, so that the next, before that time, skips none):
// what a leaked till token gave back, as PaymentsByToken is what it took.
func (s *Store) RefundsByToken(ctx context.Context, tokenID string, before int64, limit int) ([]PaymentRefund, error) {
	if tokenID == "" || unstorable(tokenID) {
		return nil, nil
	}
	if limit <= 0 || limit > MaxPaymentsPage {
		limit = MaxPaymentsPage
	}
	if before <= 0 {
		before = math.MaxInt64
	}
	rs, err := refundQuery(ctx, s.db, tokenRefundsWhere, tokenID, before, limit)
	if err != nil || len(rs) < limit {
		return rs, err
	}
	// The next page starts before the last one's time: a page never ends
	// inside refunds of one time (a coarse clock, two instances), which
	// the next page would skip. It takes the rest of them, past limit.
	last := rs[len(rs)-1].CreatedAt.UnixNano()
	tie, err := refundQuery(ctx, s.db, tokenRefundsTieWhere, tokenID, last)
	if err != nil {
		return nil, err
	}
	listed := map[[2]string]bool{}
	for _, r := range rs {
		listed[[2]string{r.MerchantID, r.RefundID}] = true
	}
	for _, r := range tie {
		if !listed[[2]string{r.MerchantID, r.RefundID}] {
			rs = append(rs, r)
		}
	}
	return rs, nil
}

// tokenRefundsTieWhere selects a token's refunds of one time, in the
// order of tokenRefundsWhere.
const tokenRefundsTieWhere = `WHERE r.token_id = $1 AND r.created_ns = $2 ORDER BY r.account_id DESC, r.posting_seq DESC`

// tokenRefundsWhere selects a token's refunds before a time, newest first,
// in the order of refunds_token (token, time, then the refund's posting:
// refunds_time gives the time's order, not this one, so that neither plan
// of PostgreSQL walks it).
const tokenRefundsWhere = `WHERE r.token_id = $1 AND r.created_ns < $2
	ORDER BY r.created_ns DESC, r.account_id DESC, r.posting_seq DESC LIMIT $3`

// refundsQuery reads refunds joined to their payment (refundQuery), its
// WHERE to follow.
const refundsQuery = `SELECT r.merchant_id, y.order_id, r.refund_id, r.payment_id, r.account_id, r.amount,
		y.currency, r.reason, r.created_ns, r.token_id, y.amount,
		(SELECT CAST(SUM(o.amount) AS BIGINT) FROM refunds o WHERE o.payment_id = r.payment_id AND o.posting_seq <= r.posting_seq)
	FROM refunds r JOIN payments y ON y.id = r.payment_id `

// refundQuery reads refunds joined to their payment; where is the query's
// WHERE (and ORDER BY). Refunded is the payment's refunds up to and
// including each one.
func refundQuery(ctx context.Context, q queryer, where string, args ...any) ([]PaymentRefund, error) {
	rows, err := q.QueryContext(ctx, refundsQuery+where, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: read refunds: %w", err)
	}
	defer rows.Close()
	var out []PaymentRefund
	for rows.Next() {
		var r PaymentRefund
		var payment, account, created int64
		if err := rows.Scan(&r.MerchantID, &r.OrderID, &r.RefundID, &payment, &account, &r.Amount, &r.Currency, &r.Reason,
			&created, &r.TokenID, &r.PaymentAmount, &r.Refunded); err != nil {
			return nil, fmt.Errorf("ledger: read refunds: %w", err)
		}
		r.PaymentID, r.Account, r.CreatedAt = uint64(payment), uint64(account), fromNS(created)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: read refunds: %w", err)
	}
	return out, nil
}

// RefundedTotal returns what all the ledger's refunds gave back (verify's
// summary; how many there are is a kept figure, Stats.Refunds).
func (s *Store) RefundedTotal(ctx context.Context) (int64, error) {
	var amount int64
	err := s.db.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM refunds`).Scan(&amount)
	return amount, err
}
