package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// Pay makes an online payment: a merchant's scanner, online, presents a
// rider's payment code and the amount is deducted at once (posting kind
// payment). It is idempotent on (MerchantID, OrderID): the same request
// again returns the same order, with replayed true (also when a
// concurrent first try committed it while this one ran); the order id
// with other parameters is ErrOrderConflict.
//
// A new payment is refused, with nothing written, with ErrNotFound (no such
// account), ErrDenied (the account or the credential is on the deny list),
// ErrCodeUsed (the code already paid, by a tap or online), ErrOverLimit
// (more than the account's limit for one payment by code, SetPaymentLimit),
// ErrUnknownCredential (the code's credential — account, serial, rider key
// — is not one the ledger issued), ErrTokenRevoked (TokenID was revoked
// meanwhile), ErrInsufficientFunds (the balance plus
// the account's credit line is below the amount; this and ErrOverLimit
// write only the code's refusal count, below), or ErrInvalid (bad
// request, or a currency other than the account's). A code pays once,
// online or offline: a tap of a code that paid online is flagged
// duplicate_code.
//
// ErrOverLimit and ErrInsufficientFunds are counted against the code (in
// the transaction that refused, nothing else written): a code refused
// MaxCodeRefusals times is ErrCodeUsed for payments from then on, so a
// shop's scanner shown one code cannot search the rider's limit and
// balance by trying amount after amount.
func (s *Store) Pay(ctx context.Context, req PaymentRequest) (order PaymentOrder, replayed bool, err error) {
	if err := req.validate(); err != nil {
		return PaymentOrder{}, false, invalid("payment: %v", err)
	}
	created := false
	var refused error // a refusal counted against the code, committed
	err = s.write(ctx, "pay", func(t *txn) error {
		created, refused = false, nil
		if err := t.tokenInForce(req.TokenID, false); err != nil {
			return err
		}
		a, err := t.lockAccount(req.Account)
		if err != nil {
			return err
		}
		if prev, err := t.paymentByOrder(req.MerchantID, req.OrderID); err == nil {
			if !prev.matches(&req) {
				return fmt.Errorf("%w: merchant %q order %q", ErrOrderConflict, req.MerchantID, req.OrderID)
			}
			order = prev.PaymentOrder
			return nil
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if a == nil {
			return fmt.Errorf("%w: account %d", ErrNotFound, req.Account)
		}
		if req.Currency != a.currency {
			return invalid("payment in %s, account %d holds %s", req.Currency, req.Account, a.currency)
		}
		var riderKey []byte
		err = t.queryRow(`SELECT rider_public_key FROM credentials WHERE account_id = $1 AND serial = $2`,
			int64(req.Account), int64(req.Serial)).Scan(&riderKey)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && !bytes.Equal(riderKey, req.RiderKey)) {
			return fmt.Errorf("%w: account %d serial %d", ErrUnknownCredential, req.Account, req.Serial)
		}
		if err != nil {
			return fmt.Errorf("ledger: read credential: %w", err)
		}
		var denied int64
		if err := t.queryRow(
			`SELECT COUNT(*) FROM deny_entries WHERE account_id = $1 AND (serial = 0 OR serial = $2)`,
			int64(req.Account), int64(req.Serial)).Scan(&denied); err != nil {
			return fmt.Errorf("ledger: read deny list: %w", err)
		}
		if denied > 0 {
			return fmt.Errorf("%w: account %d serial %d", ErrDenied, req.Account, req.Serial)
		}
		used, err := t.codeUsed(req.CodeKey)
		if err != nil {
			return err
		}
		if used {
			return ErrCodeUsed
		}
		refusals, err := t.codeRefusals(req.CodeKey)
		if err != nil {
			return err
		}
		if refusals >= MaxCodeRefusals {
			return fmt.Errorf("%w: refused %d times", ErrCodeUsed, refusals)
		}
		var limit sql.NullInt64
		err = t.queryRow(`SELECT amount FROM payment_limits WHERE account_id = $1`, int64(req.Account)).Scan(&limit)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("ledger: read payment limit: %w", err)
		}
		switch {
		case limit.Valid && req.Amount > limit.Int64:
			refused = fmt.Errorf("%w: amount %d, limit %d for one payment by code", ErrOverLimit, req.Amount, limit.Int64)
		case a.balance+a.creditLine < req.Amount:
			refused = fmt.Errorf("%w: balance %d (credit line %d), amount %d", ErrInsufficientFunds, a.balance, a.creditLine, req.Amount)
		}
		if refused != nil {
			return t.countRefusal(req.CodeKey, req.Account)
		}
		id, err := t.nextID("payment_id")
		if err != nil {
			return err
		}
		at, err := t.shopTime()
		if err != nil {
			return err
		}
		n, err := t.execCount("record payment",
			`INSERT INTO payments (id, merchant_id, order_id, account_id, serial, code_key, code_hash, amount, currency, status, created_ns, token_id)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			 ON CONFLICT (merchant_id, order_id) DO NOTHING`,
			id, req.MerchantID, req.OrderID, int64(req.Account), int64(req.Serial), req.CodeKey, req.CodeHash,
			req.Amount, req.Currency, StatusPaid, at, req.TokenID)
		if err != nil {
			return err
		}
		if n == 0 {
			// The same order id was committed by a concurrent transaction
			// (of another account): run again to answer as for a retry.
			return errRetry
		}
		t.stat(statPayments, 1)
		if _, err := t.exec("record code use",
			`INSERT INTO code_uses (code_key, account_id, serial, payment_id, created_ns) VALUES ($1, $2, $3, $4, $5)`,
			req.CodeKey, int64(req.Account), int64(req.Serial), id, t.now); err != nil {
			return err
		}
		if err := t.s.hook("pay"); err != nil {
			return err
		}
		if err := t.appendPosting(a, KindPayment, -req.Amount, postingRef{paymentID: id}); err != nil {
			return err
		}
		if err := t.tokenInForce(req.TokenID, true); err != nil { // last: see tokenInForce
			return err
		}
		created = true
		order = PaymentOrder{ID: uint64(id), MerchantID: req.MerchantID, OrderID: req.OrderID, Account: req.Account,
			Serial: req.Serial, Amount: req.Amount, Currency: req.Currency, CodeHash: req.CodeHash, Status: StatusPaid,
			CreatedAt: fromNS(at), TokenID: req.TokenID}
		return nil
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return PaymentOrder{}, false, err
	}
	if created {
		s.log.Info("ledger: payment", logKeyPayment, order.ID, logKeyMerchant, order.MerchantID,
			logKeyAccount, order.Account, logKeyAmount, order.Amount, logKeyCodeHash, order.CodeHash)
	}
	return order, !created, nil
}

// storedPayment is a payment row with the code key, for idempotency checks.
type storedPayment struct {
	PaymentOrder
	codeKey []byte
}

func (p *storedPayment) matches(r *PaymentRequest) bool {
	return p.Account == r.Account && p.Serial == r.Serial && p.Amount == r.Amount &&
		p.Currency == r.Currency && bytes.Equal(p.codeKey, r.CodeKey)
}

const paymentColumns = `id, merchant_id, order_id, account_id, serial, code_key, code_hash, amount, currency, status, created_ns, token_id`

func scanPayment(r rowScanner) (storedPayment, error) {
	var p storedPayment
	var id, account, serial, created int64
	err := r.Scan(&id, &p.MerchantID, &p.OrderID, &account, &serial, &p.codeKey, &p.CodeHash, &p.Amount, &p.Currency,
		&p.Status, &created, &p.TokenID)
	p.ID, p.Account, p.Serial, p.CreatedAt = uint64(id), uint64(account), uint32(serial), fromNS(created)
	return p, err
}

func (t *txn) paymentByOrder(merchant, order string) (storedPayment, error) {
	return paymentQuery(t.ctx, t.tx, `SELECT `+paymentColumns+` FROM payments WHERE merchant_id = $1 AND order_id = $2`, merchant, order)
}

func paymentQuery(ctx context.Context, q queryer, query string, args ...any) (storedPayment, error) {
	p, err := scanPayment(q.QueryRowContext(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("%w: payment", ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("ledger: read payment: %w", err)
	}
	return p, nil
}

// Payment returns a payment order by id, or ErrNotFound.
func (s *Store) Payment(ctx context.Context, id uint64) (PaymentOrder, error) {
	if id > math.MaxInt64 {
		return PaymentOrder{}, fmt.Errorf("%w: payment %d", ErrNotFound, id)
	}
	p, err := paymentQuery(ctx, s.db, `SELECT `+paymentColumns+` FROM payments WHERE id = $1`, int64(id))
	return p.PaymentOrder, err
}

// PaymentByOrder returns a payment order by merchant and order id, or
// ErrNotFound.
func (s *Store) PaymentByOrder(ctx context.Context, merchantID, orderID string) (PaymentOrder, error) {
	if unstorable(merchantID, orderID) {
		return PaymentOrder{}, fmt.Errorf("%w: payment", ErrNotFound)
	}
	p, err := paymentQuery(ctx, s.db, `SELECT `+paymentColumns+` FROM payments WHERE merchant_id = $1 AND order_id = $2`,
		merchantID, orderID)
	return p.PaymentOrder, err
}

// MaxCodeRefusals is how many online payments the ledger refuses a payment
// code (over the rider's limit, or short of funds) before the code pays no
// more online: the rider's app shows a new code every minute, a rogue
// scanner gets no search.
const MaxCodeRefusals = 3

// codeRefusals returns how many payments were refused the code.
func (t *txn) codeRefusals(key []byte) (int64, error) {
	var n int64
	err := t.queryRow(`SELECT refusals FROM code_refusals WHERE code_key = $1`, key).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ledger: read code refusals: %w", err)
	}
	return n, nil
}

// MaxRefusedCodes is how many refused codes an account keeps counted, its
// latest: a code is live for minutes, and only the rider, who holds the
// credential's key, can make more of the account's codes (a rider with a
// shop's token of their own could otherwise grow the table without end;
// evicting the oldest count lets only that rider try it again).
const MaxRefusedCodes = 64

// countRefusal counts a refused payment against the code, and forgets the
// account's refused codes beyond its MaxRefusedCodes latest.
func (t *txn) countRefusal(key []byte, account uint64) error {
	if _, err := t.exec("count code refusal",
		`INSERT INTO code_refusals (code_key, account_id, refusals, updated_ns) VALUES ($1, $2, 1, $3)
		 ON CONFLICT (code_key) DO UPDATE SET refusals = code_refusals.refusals + 1, updated_ns = excluded.updated_ns`,
		key, int64(account), t.now); err != nil {
		return err
	}
	_, err := t.exec("forget old code refusals",
		`DELETE FROM code_refusals WHERE account_id = $1 AND code_key NOT IN
		 (SELECT code_key FROM code_refusals WHERE account_id = $1 ORDER BY updated_ns DESC, code_key LIMIT $2)`,
		int64(account), MaxRefusedCodes)
	return err
}

// shopTime is the time a payment or refund is dated by, which puts it on
// a service day of the merchant settlement report: the transaction's, but
// never before the newest payment or refund. A server clock stepped back
// (NTP correcting a clock that ran ahead) dated the payments of the
// minutes after a day's end on that day, after the report taken then had
// paid the shops out: they were in no day paid out
// (TestShopDayAfterClockStepBack). The newest payment or refund is read
// through the created_ns indexes (payments_time, refunds_time). A newest
// more than maxShopClockStep ahead is not followed: one payment dated by a
// clock set years ahead for a moment would otherwise date every later one.
func (t *txn) shopTime() (int64, error) {
	var newest int64
	if err := t.queryRow(`SELECT COALESCE(MAX(m), 0) FROM (
		SELECT MAX(created_ns) AS m FROM payments UNION ALL SELECT MAX(created_ns) AS m FROM refunds) AS newest`).Scan(&newest); err != nil {
		return 0, fmt.Errorf("ledger: read the newest payment's time: %w", err)
	}
	if newest-t.now > int64(maxShopClockStep) {
		return t.now, nil
	}
	return max(t.now, newest), nil
}

// maxShopClockStep is the largest step back of the server's clock that
// shopTime holds payments and refunds to the newest one's time across.
const maxShopClockStep = time.Hour

func (t *txn) codeUsed(key []byte) (bool, error) {
	var one int
	err := t.queryRow(`SELECT 1 FROM code_uses WHERE code_key = $1`, key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ledger: look up code use: %w", err)
	}
	return true, nil
}

// recentPaymentsWhere selects RecentPayments' rows: the account's
// payments since the time, newest first, read through payments_account_time
// (account_id, created_ns, id; migration 27), which alone gives them in
// the order asked: a range of the rider's own payments. By account_id
// alone and ORDER BY id, PostgreSQL read a rider who had paid often, but
// not lately, through the whole payments table newest first (the primary
// key gives id order), expecting the rider's recent payments soon (a
// scale review).
const recentPaymentsWhere = `WHERE account_id = $1 AND created_ns >= $2 ORDER BY created_ns DESC, id DESC LIMIT $3`

// MaxRecentPayments is how many payments RecentPayments returns at most.
const MaxRecentPayments = 64

// RecentPayments returns an account's online payments made at since or
// later, newest first, at most MaxRecentPayments: what shops took with
// the rider's codes lately, whatever else the account's statement holds
// since (a shop's refunds, fares), so that a wallet does not show a code
// again that a shop took (shown on a bus, it is a code used twice). Only
// the rider's own codes make payments, so the rider alone could fill it.
func (s *Store) RecentPayments(ctx context.Context, account uint64, since time.Time) ([]PaymentOrder, error) {
	if checkAccountID(account) != nil {
		return nil, nil
	}
	return s.payments(ctx, recentPaymentsWhere,
		int64(account), since.UnixNano(), MaxRecentPayments)
}

// RefusedCodes returns the codes of an account that online payments
// were refused MaxCodeRefusals times at since or later (over the rider's
// limit, or more than the balance covers), newest first: they pay no
// more online (ErrCodeUsed), and the shop asks the rider for a new code.
// The wallet says so beside the code on screen when it is among them. At most MaxRefusedCodes (an account keeps no more).
func (s *Store) RefusedCodes(ctx context.Context, account uint64, since time.Time) ([]paycode.ID, error) {
	if checkAccountID(account) != nil {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT code_key FROM code_refusals
		WHERE account_id = $1 AND updated_ns >= $2 AND refusals >= $3 ORDER BY updated_ns DESC, code_key LIMIT $4`,
		int64(account), since.UnixNano(), MaxCodeRefusals, MaxRefusedCodes)
	if err != nil {
		return nil, fmt.Errorf("ledger: read code refusals: %w", err)
	}
	defer rows.Close()
	var out []paycode.ID
	for rows.Next() {
		var key []byte
		if err := rows.Scan(&key); err != nil {
			return nil, fmt.Errorf("ledger: read code refusals: %w", err)
		}
		if id, ok := paycode.IDFromKey(key); ok {
			out = append(out, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: read code refusals: %w", err)
	}
	return out, nil
}

// MaxPaymentsPage is how many payments PaymentsByToken returns at most.
const MaxPaymentsPage = 100

// PaymentsByToken returns the payments an API token made, newest first,
// those with an id below before (0: from the newest), at most limit
// (MaxPaymentsPage when 0 or more): a leaked till token's orders, told
// apart from the shop's other tills'.
func (s *Store) PaymentsByToken(ctx context.Context, tokenID string, before uint64, limit int) ([]PaymentOrder, error) {
	if tokenID == "" || unstorable(tokenID) {
		return nil, nil
	}
	if limit <= 0 || limit > MaxPaymentsPage {
		limit = MaxPaymentsPage
	}
	if before == 0 || before > math.MaxInt64 {
		before = math.MaxInt64
	}
	return s.payments(ctx, `WHERE token_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`, tokenID, int64(before), limit)
}

// payments reads the payments that where (a WHERE clause and what
// follows it) selects.
func (s *Store) payments(ctx context.Context, where string, args ...any) ([]PaymentOrder, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+paymentColumns+` FROM payments `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: read payments: %w", err)
	}
	defer rows.Close()
	var out []PaymentOrder
	for rows.Next() {
		p, err := scanPayment(rows)
		if err != nil {
			return nil, fmt.Errorf("ledger: read payments: %w", err)
		}
		out = append(out, p.PaymentOrder)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: read payments: %w", err)
	}
	return out, nil
}
