package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
)

// PaymentResponse is a completed online payment.
type PaymentResponse struct {
	ID         uint64 `json:"id"`
	MerchantID string `json:"merchant_id"`
	OrderID    string `json:"order_id"`
	Account    uint64 `json:"account"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
	Status     string `json:"status"`
	CodeHash   string `json:"code_hash"`
	CreatedAt  string `json:"created_at"`
	// TokenID is the API token that made the payment ("init" for the
	// operator's token file; absent for payments made before it was kept).
	TokenID string `json:"token_id,omitempty"`
	// Refunded is what the payment's refunds give back in all; Refunds
	// lists them (GET only).
	Refunded int64            `json:"refunded"`
	Refunds  []RefundResponse `json:"refunds,omitempty"`
}

// RefundResponse is a refund of an online payment.
type RefundResponse struct {
	RefundID   string `json:"refund_id"`
	MerchantID string `json:"merchant_id"`
	OrderID    string `json:"order_id"`
	PaymentID  uint64 `json:"payment_id"`
	Account    uint64 `json:"account"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
	Reason     string `json:"reason,omitempty"`
	// Refunded is the payment's refunds in all with this one, Refundable
	// what was left of the payment after it.
	Refunded   int64  `json:"refunded"`
	Refundable int64  `json:"refundable"`
	CreatedAt  string `json:"created_at"`
	TokenID    string `json:"token_id,omitempty"` // the API token that made the refund
}

func toRefund(r ledger.PaymentRefund) RefundResponse {
	return RefundResponse{RefundID: r.RefundID, MerchantID: r.MerchantID, OrderID: r.OrderID, PaymentID: r.PaymentID,
		Account: r.Account, Amount: r.Amount, Currency: r.Currency, Reason: r.Reason, Refunded: r.Refunded,
		Refundable: r.PaymentAmount - r.Refunded, CreatedAt: r.CreatedAt.UTC().Format(time.RFC3339), TokenID: r.TokenID}
}

func toPayment(p ledger.PaymentOrder) PaymentResponse {
	return PaymentResponse{ID: p.ID, MerchantID: p.MerchantID, OrderID: p.OrderID, Account: p.Account, Amount: p.Amount,
		Currency: p.Currency, Status: p.Status, CodeHash: p.CodeHash, CreatedAt: p.CreatedAt.UTC().Format(time.RFC3339),
		TokenID: p.TokenID}
}

// pay makes an online payment. It is idempotent on (merchant, order): the
// order is looked up before anything else, so a retry — any time later,
// with a code long expired — gets the same answer as the first request; the
// same order with another code or amount is a conflict. A merchant token
// pays only for its own merchant id.
func (h *Handler) pay(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r, ledger.RoleMerchant)
	if err != nil {
		return nil, 0, err
	}
	if err := h.merchantRate(w, p); err != nil {
		return nil, 0, err
	}
	var req struct {
		MerchantID string `json:"merchant_id"`
		OrderID    string `json:"order_id"`
		Code       string `json:"code"`
		Amount     int64  `json:"amount"`
		Currency   string `json:"currency"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	if req.MerchantID == "" || req.OrderID == "" || req.Amount <= 0 {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "merchant_id, order_id and a positive amount are required")
	}
	if p.role == ledger.RoleMerchant && req.MerchantID != p.merchant {
		return nil, 0, errorf(http.StatusForbidden, "forbidden", "this token pays for merchant %q only", p.merchant)
	}
	text := strings.TrimRight(req.Code, "\r\n")
	code, perr := paycode.ParseText(text)
	hash := paycode.ShortHash(text)
	// The same order again: the same answer, whenever it comes.
	prev, err := h.cfg.Ledger.PaymentByOrder(r.Context(), req.MerchantID, req.OrderID)
	switch {
	case err == nil:
		if perr != nil || prev.Account != code.Account || prev.Amount != req.Amount || prev.CodeHash != hash ||
			(req.Currency != "" && req.Currency != prev.Currency) {
			return nil, 0, errorf(http.StatusConflict, "conflict", "merchant %q order %q was paid with another code or amount", req.MerchantID, req.OrderID)
		}
		return h.replayedPayment(w, r, prev)
	case !errors.Is(err, ledger.ErrNotFound):
		return nil, 0, err
	}
	d := h.verifier.Verify(text, h.cfg.Now(), h.cfg.Keys.Keyring(), h.cfg.Policy)
	if !d.Accepted {
		h.log.Info("payment refused", "reason", d.Reason, "merchant", req.MerchantID, "code_hash", hash)
		return nil, 0, &apiError{status: http.StatusUnprocessableEntity, code: "invalid_code", reason: string(d.Reason), msg: codeAdvice(d.Reason)}
	}
	c := d.Code
	if req.Currency == "" {
		a, err := h.cfg.Ledger.Account(r.Context(), c.Account)
		if err != nil {
			return nil, 0, err
		}
		req.Currency = a.Currency
	}
	// A payment never moves the deny list: it refuses rather than go below
	// the credit line, and a refusal moves no money (the ledger counts it
	// against the code).
	order, replayed, err := h.cfg.Ledger.Pay(r.Context(), ledger.PaymentRequest{MerchantID: req.MerchantID, OrderID: req.OrderID,
		Account: c.Account, Serial: c.Serial, RiderKey: c.RiderKey[:], CodeKey: c.ID().Key(), CodeHash: hash,
		Amount: req.Amount, Currency: req.Currency, TokenID: p.tokenID})
	if err != nil {
		return nil, 0, payRefusal(err)
	}
	if replayed {
		// A retry that ran beside its first try: the ledger answered it
		// from the order the first committed. The same answer as a
		// retry that comes later, nothing moved, nothing audited.
		return h.replayedPayment(w, r, order)
	}
	h.log.Info("payment", "id", order.ID, "merchant", order.MerchantID, "account", order.Account, "amount", order.Amount)
	if p.role != ledger.RoleMerchant {
		// Another role's payment for a shop moves a rider's money to it
		// like the shop's own: audited, as its refunds are.
		h.audit(r, p, "payment", req.MerchantID+"/"+req.OrderID,
			fmt.Sprintf("payment %d account %d amount %d %s code %s", order.ID, order.Account, order.Amount, order.Currency, order.CodeHash))
	}
	return toPayment(order), http.StatusCreated, nil
}

// replayedPayment answers a payment's retry: the order as stored, with
// what its refunds have given back by now (a till retrying after a
// refund is not told the payment was refunded nothing).
func (h *Handler) replayedPayment(w http.ResponseWriter, r *http.Request, o ledger.PaymentOrder) (any, int, error) {
	resp, _, err := h.withRefunds(r.Context(), o)
	if err != nil {
		return nil, 0, err
	}
	w.Header().Set("Idempotent-Replayed", "true")
	return resp, http.StatusCreated, nil
}

// withRefunds is an order's answer with what its refunds have given back
// by now, and the refunds.
func (h *Handler) withRefunds(ctx context.Context, o ledger.PaymentOrder) (PaymentResponse, []ledger.PaymentRefund, error) {
	refunds, err := h.cfg.Ledger.Refunds(ctx, o.ID)
	if err != nil {
		return PaymentResponse{}, nil, err
	}
	resp := toPayment(o)
	resp.Refunded = ledger.RefundedOf(refunds) // the running total, read with them
	return resp, refunds, nil
}

// getPayment returns a merchant's order: a point of sale that lost the
// answer asks instead of paying again.
func (h *Handler) getPayment(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r, ledger.RoleMerchant, ledger.RoleAuditor)
	if err != nil {
		return nil, 0, err
	}
	merchant, order := r.PathValue("merchant"), r.PathValue("order")
	if p.role == ledger.RoleMerchant && merchant != p.merchant {
		return nil, 0, errorf(http.StatusForbidden, "forbidden", "this token reads merchant %q's orders only", p.merchant)
	}
	o, err := h.cfg.Ledger.PaymentByOrder(r.Context(), merchant, order)
	if err != nil {
		return nil, 0, err
	}
	resp, refunds, err := h.withRefunds(r.Context(), o)
	if err != nil {
		return nil, 0, err
	}
	for _, rf := range refunds {
		resp.Refunds = append(resp.Refunds, toRefund(rf))
	}
	return resp, http.StatusOK, nil
}

// refund gives back all or part of an online payment to the rider: the
// merchant's token for its own orders, the operator's for any (audited).
// It is idempotent on (merchant, refund_id): a retry — the till lost the
// answer — gets the same refund; the refund id again with another order or
// amount is a conflict. The payment's refunds never come to more than it
// (409 over_refund, nothing written).
func (h *Handler) refund(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r, ledger.RoleMerchant)
	if err != nil {
		return nil, 0, err
	}
	merchant, order := r.PathValue("merchant"), r.PathValue("order")
	if p.role == ledger.RoleMerchant && merchant != p.merchant {
		return nil, 0, errorf(http.StatusForbidden, "forbidden", "this token refunds merchant %q's orders only", p.merchant)
	}
	if err := h.merchantRate(w, p); err != nil {
		return nil, 0, err
	}
	var req struct {
		RefundID string `json:"refund_id"`
		Amount   int64  `json:"amount"`
		Reason   string `json:"reason"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	// The ledger checks the ids, the amount and the reason (400 invalid),
	// and logs the refund.
	rf, replayed, err := h.cfg.Ledger.RefundPayment(r.Context(), ledger.RefundRequest{MerchantID: merchant, OrderID: order,
		RefundID: req.RefundID, Amount: req.Amount, Reason: req.Reason, TokenID: p.tokenID, Actor: p.actor()})
	if err != nil {
		return nil, 0, err
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
		return toRefund(rf), http.StatusCreated, nil
	}
	// A refund may lift a negative_balance entry (as a top-up does). The
	// ledger wrote it to the audit trail with the refund (any role's: a
	// merchant's refund moves money as an operator's does).
	h.cfg.Notifier.Changed(record.DocDenyList)
	return toRefund(rf), http.StatusCreated, nil
}

// merchantRate counts a merchant token's payment or refund against its
// bound (Config.MerchantPerMinute): over it, 429 rate_limited with
// Retry-After, before anything is read or written. The operator's and the
// payment provider's tokens are not bounded here.
func (h *Handler) merchantRate(w http.ResponseWriter, p principal) error {
	if p.role != ledger.RoleMerchant {
		return nil
	}
	ok, wait := h.merchant.Allow(p.tokenID)
	if ok {
		return nil
	}
	w.Header().Set("Retry-After", RetryAfter(wait))
	h.log.Debug("merchant token over its rate", "token", p.tokenID, "merchant", p.merchant)
	return errorf(http.StatusTooManyRequests, "rate_limited", "too many payments and refunds with this token; try again shortly")
}

// payRefusal is what the shop is told of a payment the ledger refused: the
// reason, not the rider's figures. A refused payment leaves the code
// usable, so any scanner shown it once could otherwise read the rider's
// balance, credit line and limit by asking for too much.
func payRefusal(err error) error {
	switch {
	case errors.Is(err, ledger.ErrInsufficientFunds):
		return errorf(http.StatusPaymentRequired, "insufficient_funds", "the rider's balance does not cover the amount")
	case errors.Is(err, ledger.ErrOverLimit):
		return errorf(http.StatusForbidden, "over_limit", "the amount is over the limit the rider set for payments by code")
	}
	return err
}

// tokenPayments lists the payments an API token made, newest first, 100
// at a time (?before=ID for older ones): when a shop's till token leaks
// and is revoked, the operator reads which orders it made, told apart
// from the shop's other tills'. Its refunds: tokenRefunds.
func (h *Handler) tokenPayments(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	before, err := beforeParam(r, "a payment id")
	if err != nil {
		return nil, 0, err
	}
	id := r.PathValue("id")
	if err := KnownToken(r.Context(), h.cfg.Ledger, id); err != nil {
		return nil, 0, err
	}
	ps, err := h.cfg.Ledger.PaymentsByToken(r.Context(), id, before, ledger.MaxPaymentsPage)
	if err != nil {
		return nil, 0, err
	}
	out := make([]PaymentResponse, len(ps))
	for i, p := range ps {
		out[i] = toPayment(p)
	}
	return map[string]any{"payments": out}, http.StatusOK, nil
}

// tokenRefunds lists the refunds an API token made, newest first, 100 at
// a time (?before=the created time in unix ns of the last one shown, for
// older ones): what a leaked till token gave back, any of its shop's
// payments to the rider who paid.
func (h *Handler) tokenRefunds(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	before, err := beforeParam(r, "a time in unix nanoseconds")
	if err != nil {
		return nil, 0, err
	}
	if before > math.MaxInt64 {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "before must be a time in unix nanoseconds")
	}
	id := r.PathValue("id")
	if err := KnownToken(r.Context(), h.cfg.Ledger, id); err != nil {
		return nil, 0, err
	}
	rs, err := h.cfg.Ledger.RefundsByToken(r.Context(), id, int64(before), ledger.MaxPaymentsPage)
	if err != nil {
		return nil, 0, err
	}
	out := make([]TokenRefundResponse, len(rs))
	for i, rf := range rs {
		out[i] = TokenRefundResponse{RefundResponse: toRefund(rf), CreatedNS: rf.CreatedAt.UnixNano()}
	}
	return map[string]any{"refunds": out}, http.StatusOK, nil
}

// TokenRefundResponse is a refund as a token's list gives it: with its
// time in unix nanoseconds, the list's ?before= for older ones. A JSON
// string: a time in ns is past 2^53, which a client reading JSON numbers
// as doubles (JavaScript, jq, Go's any) rounds by up to 128 ns, and the
// next page then repeated the last refund.
type TokenRefundResponse struct {
	RefundResponse
	CreatedNS int64 `json:"created_ns,string"`
}

// KnownToken is nil for an API token the ledger holds (revoked or not)
// and for the operator token file's ("init"), and ledger.ErrNotFound
// otherwise: a mistyped id is said so, not answered with no payments.
func KnownToken(ctx context.Context, st *ledger.Store, id string) error {
	if id == ledger.InitTokenID {
		return nil
	}
	_, err := st.TokenByID(ctx, id)
	return err
}

// codeAdvice says a refused code's reason in words a shopkeeper can act
// on (the reason itself is the error's "reason"): the message was the
// bare reason, "code_expired" or "malformed", on the scanner's screen.
func codeAdvice(r paycode.Reason) string {
	var say string
	switch r {
	case paycode.ReasonMalformed, paycode.ReasonUnsupportedVersion:
		say = "this is not a farego payment code (or it was misread): scan it again, or ask the rider to open the wallet's code"
	case paycode.ReasonCodeExpired:
		say = "the code is too old: ask the rider to show a new one (a phone whose clock is wrong makes old codes)"
	case paycode.ReasonCodeFromFuture:
		say = "the code is dated ahead of the server's clock: ask the rider to set the phone's clock right and show a new one"
	case paycode.ReasonCredentialExpired, paycode.ReasonCredentialNotYetValid:
		say = "the rider's pass is out of date: ask the rider to go online in the wallet to renew it"
	default:
		say = "the code does not verify: ask the rider for a new one; if it is refused again, the rider's pass is not valid here"
	}
	return string(r) + ": " + say
}
