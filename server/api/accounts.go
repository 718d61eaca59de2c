package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/server/ledger"
)

// Account is an account as the API shows it.
type Account struct {
	ID      uint64 `json:"id"`
	Profile string `json:"profile"`
	// ProfilePending: Profile is a reduced fare the rider asked for that
	// the operator or the payment provider has not confirmed; until then
	// the account's credentials carry the adult profile.
	ProfilePending bool   `json:"profile_pending,omitempty"`
	Name           string `json:"name,omitempty"`
	Balance        int64  `json:"balance"`
	CreditLine     int64  `json:"credit_line"`
	// PassMinimum is the balance a new credential needs (the day's cap or
	// one fare of the profile its credentials carry, less the credit
	// line, below zero with a credit line above it), as insufficient_funds
	// names it; absent when none. Below it the wallet says to top up
	// before a ride leaves the account blocked.
	PassMinimum *int64 `json:"pass_minimum,omitempty"`
	// PaymentLimit is the most one online payment by code may take (absent:
	// no limit).
	PaymentLimit int64  `json:"payment_limit,omitempty"`
	Currency     string `json:"currency"`
	// CurrencyDigits is the currency's minor-unit decimals (ISO 4217):
	// every amount here is in 1/10^digits of the currency.
	CurrencyDigits int `json:"currency_digits"`
	// Denied: the whole account is on the deny list (DenyReason says why).
	Denied     bool   `json:"denied"`
	DenyReason string `json:"deny_reason,omitempty"`
	// Blocked lists the account's credentials on the deny list, with why;
	// a code_reused entry also stops new credentials until the operator
	// clears it.
	Blocked    []Block `json:"blocked_credentials,omitempty"`
	LastSerial uint32  `json:"last_serial,omitempty"`
	CreatedAt  string  `json:"created_at"`
	// Viewer is who reads it (GET /v1/accounts/{id} only): "rider" with
	// the account's own secret, else the staff token's role ("operator",
	// "auditor"). The rider's tool signs in only as the rider: a staff
	// token reads the account too, and was taken for its secret.
	Viewer string `json:"viewer,omitempty"`
	Rides  []Ride `json:"recent_rides,omitempty"`
	// Activity is the newest entries of the account's statement.
	Activity []Entry `json:"recent_activity,omitempty"`
	// PaidCodes are the codes shops took lately (the account's online
	// payments of the last paidCodesWindow, newest first): the wallet
	// shows a new code when the one on screen is among them. Not read
	// from Activity: a shop that sent ten refunds of a cent after its
	// payment pushed the payment out of the newest ten entries, the
	// wallet kept the shop's code on screen, and the bus that read it
	// next flagged a code used twice and blocked the pass.
	PaidCodes []PaidCode `json:"paid_codes,omitempty"`
	// RefusedCodes are the codes that shops' payments were refused
	// ledger.MaxCodeRefusals times lately (over the rider's limit, or more
	// than the balance covers): they pay no more online, and the shop asks
	// for a new code. The wallet says so beside the code on screen when
	// it is among them, and to show a new one (it kept the refused code
	// on screen until the minute ended, without a word).
	RefusedCodes []RefusedCode `json:"refused_codes,omitempty"`
	// credential is the profile the account's credentials carry
	// (ledger.Account.CredentialProfile), not shown.
	credential paycode.Profile
}

// Block is a credential on the deny list.
type Block struct {
	Serial  uint32 `json:"serial"`
	Reason  string `json:"reason"`
	Since   string `json:"since"`
	Expires string `json:"expires,omitempty"`
}

func toAccount(a ledger.Account) Account {
	return Account{ID: a.ID, Profile: a.Profile.String(), ProfilePending: a.ProfilePending, Name: a.Name, Balance: a.Balance,
		CreditLine: a.CreditLine, PaymentLimit: a.PaymentLimit, Currency: a.Currency, CurrencyDigits: feedback.CurrencyDigits(a.Currency), Denied: a.Denied, DenyReason: a.DenyReason, LastSerial: a.LastSerial,
		CreatedAt: a.CreatedAt.UTC().Format(time.RFC3339), credential: a.CredentialProfile()}
}

// Ride is a tap in the rider's history.
type Ride struct {
	TapID      string   `json:"tap_id"`
	Time       string   `json:"time"`
	ServiceDay string   `json:"service_day"`
	Route      string   `json:"route"`
	Vehicle    string   `json:"vehicle,omitempty"`
	DeviceID   string   `json:"device"`
	BaseFare   int64    `json:"base_fare"`
	Charge     int64    `json:"charge"`
	Transfer   bool     `json:"transfer,omitempty"`
	Capped     bool     `json:"capped,omitempty"`
	Flag       string   `json:"flag,omitempty"`
	Notes      []string `json:"notes,omitempty"`
	CodeHash   string   `json:"code_hash"`
}

func toRides(rs []ledger.Ride) []Ride {
	out := make([]Ride, len(rs))
	for i, r := range rs {
		out[i] = Ride{TapID: r.TapID, Time: r.Time.UTC().Format(time.RFC3339Nano), ServiceDay: r.ServiceDay, Route: r.Route,
			Vehicle: r.Vehicle, DeviceID: r.DeviceID, BaseFare: r.BaseFare, Charge: r.Charge, Transfer: r.Transfer,
			Capped: r.Capped, Flag: r.Flag, Notes: r.Notes, CodeHash: r.CodeHash}
	}
	return out
}

// PaidCode is a code a shop's online payment took.
type PaidCode struct {
	CodeHash   string `json:"code_hash"` // paycode.ShortHash of the code
	MerchantID string `json:"merchant_id"`
	Amount     int64  `json:"amount"` // what the shop took (minor units)
	Time       string `json:"time"`
}

// RefusedCode is a code that online payments were refused too often: its
// credential's serial, its time (unix seconds) and its counter.
type RefusedCode struct {
	Serial  uint32 `json:"serial"`
	Time    uint32 `json:"time"`
	Counter uint16 `json:"counter"`
}

// paidCodesWindow is how far back an account's answer lists the codes
// shops took: a code pays within its maximum age plus the clock skew
// (150 s by default), and the wallet asks every 10 s while it is shown.
const paidCodesWindow = 10 * time.Minute

// Entry is one entry of an account's statement: a posting, with the
// balance after it.
type Entry struct {
	Seq     uint64 `json:"seq"`
	Time    string `json:"time"`
	Kind    string `json:"kind"` // topup, fare, fare_correction, payment, refund
	Amount  int64  `json:"amount"`
	Balance int64  `json:"balance"`
	// What it is for: a tap (fare, fare_correction), the payment
	// provider's reference (topup), a shop's payment and order (payment,
	// refund: with the refund's id).
	TapID      string `json:"tap_id,omitempty"`
	Reference  string `json:"reference,omitempty"`
	PaymentID  uint64 `json:"payment_id,omitempty"`
	MerchantID string `json:"merchant_id,omitempty"`
	OrderID    string `json:"order_id,omitempty"`
	RefundID   string `json:"refund_id,omitempty"`
	// Reason is a refund's reason as the shop (or the operator) gave it.
	Reason string `json:"reason,omitempty"`
	// CodeHash is a shop's payment's code (paycode.ShortHash): the
	// wallet renews a code on screen that a shop took.
	CodeHash string `json:"code_hash,omitempty"`
}

func toEntries(ps []ledger.Posting) []Entry {
	out := make([]Entry, len(ps))
	for i, p := range ps {
		kind := p.Kind
		if p.IsRefund() {
			kind = "refund"
		}
		out[i] = Entry{Seq: p.Seq, Time: p.CreatedAt.UTC().Format(time.RFC3339Nano), Kind: kind, Amount: p.Amount,
			Balance: p.Balance, TapID: p.TapID, Reference: p.Reference, PaymentID: p.PaymentID, MerchantID: p.MerchantID,
			OrderID: p.OrderID, RefundID: p.RefundID, Reason: p.RefundReason, CodeHash: p.CodeHash}
	}
	return out
}

func (h *Handler) createAccount(w http.ResponseWriter, r *http.Request) (any, int, error) {
	// A reduced fare is money: the rider's word for it makes it pending
	// (credentials carry the adult profile) until the operator or the
	// payment provider confirms it; their token here confirms it at once.
	// Their sign-ups are not the anonymous ones the rate limit is for.
	var staff *principal
	if bearer(r) != "" {
		sp, err := h.staff(r, ledger.RolePayments)
		if err != nil {
			return nil, 0, err
		}
		staff = &sp
	} else if !h.accounts.allow(r) {
		return nil, 0, errorf(http.StatusTooManyRequests, "rate_limited", "too many new accounts from here; try again in a minute")
	}
	var req struct {
		Profile string `json:"profile"`
		Name    string `json:"name"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	if req.Profile == "" {
		req.Profile = "adult"
	}
	p, err := paycode.ParseProfile(req.Profile)
	if err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "profile must be adult, child, senior or student")
	}
	if err := ledger.CheckAccountName(req.Name); err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "invalid_name", "%v", err)
	}
	sec := make([]byte, 32)
	rand.Read(sec)
	secret := hex.EncodeToString(sec)
	a, err := h.cfg.Ledger.CreateAccount(r.Context(), ledger.AccountSpec{Profile: p, ProfileConfirmed: staff != nil, Name: req.Name,
		SecretHash: hashSecret(secret), Anonymous: staff == nil})
	if err != nil {
		return nil, 0, err
	}
	if staff != nil && p != paycode.Adult {
		h.audit(r, *staff, "profile", strconv.FormatUint(a.ID, 10), "confirmed "+p.String()+" at creation")
	}
	h.log.Info("account created", "account", a.ID, "profile", p.String(), "profile_pending", a.ProfilePending)
	return map[string]any{"account": toAccount(a), "secret": secret}, http.StatusCreated, nil
}

// accountView is an account with its credential-level blocks.
func (h *Handler) accountView(r *http.Request, id uint64) (Account, error) {
	a, err := h.cfg.Ledger.Account(r.Context(), id)
	if err != nil {
		return Account{}, err
	}
	out := toAccount(a)
	entries, err := h.cfg.Ledger.DenyEntries(r.Context(), id)
	if err != nil {
		return Account{}, err
	}
	for _, e := range entries {
		if e.Serial == 0 {
			continue
		}
		out.Blocked = append(out.Blocked, Block{Serial: e.Serial, Reason: e.Reason, Since: timeOrEmpty(e.Since),
			Expires: timeOrEmpty(e.Expires)})
	}
	return out, nil
}

func (h *Handler) getAccount(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, p, err := h.accountPrincipal(r, readers...)
	if err != nil {
		return nil, 0, err
	}
	out, err := h.accountView(r, id)
	if err != nil {
		return nil, 0, err
	}
	out.Viewer = p.role
	// A rider whose pass was issued on a larger balance went on with it
	// below one fare, told nothing until a ride left the account below
	// zero and blocked (negative_balance).
	minimum, err := h.credentialMinimum(r, out.credential)
	if err != nil {
		return nil, 0, err
	}
	if minimum > 0 {
		// Not clamped at 0: with a credit line of 10.00 and a fare of
		// 2.50, a balance of -9.00 gets no new pass and its next ride
		// blocks the account.
		out.PassMinimum = new(minimum - out.CreditLine)
	}
	rides, err := h.cfg.Ledger.Rides(r.Context(), id, 10)
	if err != nil {
		return nil, 0, err
	}
	out.Rides = toRides(rides)
	activity, err := h.cfg.Ledger.Postings(r.Context(), id, 10)
	if err != nil {
		return nil, 0, err
	}
	out.Activity = toEntries(activity)
	paid, err := h.cfg.Ledger.RecentPayments(r.Context(), id, h.cfg.Now().Add(-paidCodesWindow))
	if err != nil {
		return nil, 0, err
	}
	for _, p := range paid {
		out.PaidCodes = append(out.PaidCodes, PaidCode{CodeHash: p.CodeHash, MerchantID: p.MerchantID, Amount: p.Amount,
			Time: p.CreatedAt.UTC().Format(time.RFC3339Nano)})
	}
	refused, err := h.cfg.Ledger.RefusedCodes(r.Context(), id, h.cfg.Now().Add(-paidCodesWindow))
	if err != nil {
		return nil, 0, err
	}
	for _, c := range refused {
		out.RefusedCodes = append(out.RefusedCodes, RefusedCode{Serial: c.Serial, Time: c.Time, Counter: c.Counter})
	}
	return out, http.StatusOK, nil
}

// statement lists an account's postings, newest first (?limit=1 to 1000,
// default 100), each with the balance after it: the rider sees every
// top-up, fare, shop payment and refund. A page that is not the last says
// so with next_before, the ?before= of the next page (the postings older
// than that seq).
func (h *Handler) statement(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, _, err := h.accountPrincipal(r, readers...)
	if err != nil {
		return nil, 0, err
	}
	limit, err := limitParam(r, 100, 1000)
	if err != nil {
		return nil, 0, err
	}
	var before uint64
	if s := r.URL.Query().Get("before"); s != "" {
		if before, err = strconv.ParseUint(s, 10, 63); err != nil || before == 0 {
			return nil, 0, errorf(http.StatusBadRequest, "invalid", "before must be a posting's seq, 1 to %d", math.MaxInt64)
		}
	}
	// One more than the page: whether there is a next page.
	ps, err := h.cfg.Ledger.PostingsBefore(r.Context(), id, before, limit+1)
	if err != nil {
		return nil, 0, err
	}
	out := map[string]any{"account": id}
	if len(ps) > limit {
		ps = ps[:limit]
		out["next_before"] = ps[limit-1].Seq
	}
	out["entries"] = toEntries(ps)
	return out, http.StatusOK, nil
}

func (h *Handler) rides(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, _, err := h.accountPrincipal(r, readers...)
	if err != nil {
		return nil, 0, err
	}
	limit, err := limitParam(r, 100, 10000)
	if err != nil {
		return nil, 0, err
	}
	rides, err := h.cfg.Ledger.Rides(r.Context(), id, limit)
	if err != nil {
		return nil, 0, err
	}
	return map[string]any{"account": id, "rides": toRides(rides)}, http.StatusOK, nil
}

// beforeParam reads the query's ?before=, an id of what (0 when absent:
// from the newest).
func beforeParam(r *http.Request, what string) (uint64, error) {
	s := r.URL.Query().Get("before")
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "invalid", "before must be %s", what)
	}
	return v, nil
}

// limitParam reads the query's ?limit=, 1 to most (def when absent).
func limitParam(r *http.Request, def, most int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	limit, err := strconv.Atoi(s)
	if err != nil || limit < 1 || limit > most {
		return 0, errorf(http.StatusBadRequest, "invalid", "limit must be 1 to %d", most)
	}
	return limit, nil
}

func (h *Handler) topUp(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, p, err := h.accountPrincipal(r, ledger.RolePayments)
	if err != nil {
		return nil, 0, err
	}
	if p.role == roleRider {
		return nil, 0, errorf(http.StatusForbidden, "forbidden", "top-ups come from the payment provider, not the rider")
	}
	var req struct {
		Amount    int64  `json:"amount"`
		Reference string `json:"reference"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	// Each fault named alone: one message for both sent a caller with a
	// good amount and no reference looking at the amount.
	if req.Amount <= 0 {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "amount must be positive, in the ledger currency's minor units (1250 is %s), got %d",
			feedback.FormatAmount(1250, h.cfg.Ledger.Currency()), req.Amount)
	}
	if req.Reference == "" {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "reference is required: the payment provider's id of this payment (the same one again adds nothing)")
	}
	a, added, err := h.cfg.Ledger.TopUpOnce(r.Context(), id, req.Amount, req.Reference, p.tokenID)
	if err != nil {
		return nil, 0, err
	}
	if !added {
		// A retry of a top-up done before: the same answer, said to be a
		// replay, and audited as one (two alike entries read as two
		// top-ups).
		w.Header().Set("Idempotent-Replayed", "true")
		h.audit(r, p, "topup", strconv.FormatUint(id, 10), fmt.Sprintf("amount %d reference %q replayed: nothing added", req.Amount, req.Reference))
		return toAccount(a), http.StatusOK, nil
	}
	// A top-up may lift a negative_balance entry. The publisher coalesces
	// and publishes only when the deny list's version moved.
	h.cfg.Notifier.Changed(record.DocDenyList)
	h.audit(r, p, "topup", strconv.FormatUint(id, 10), fmt.Sprintf("amount %d reference %q", req.Amount, req.Reference))
	h.log.Info("top-up", "account", id, "amount", req.Amount, "balance", a.Balance)
	return toAccount(a), http.StatusOK, nil
}

func (h *Handler) setCreditLine(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, p, err := h.accountPrincipal(r, ledger.RolePayments)
	if err != nil {
		return nil, 0, err
	}
	if p.role == roleRider {
		return nil, 0, errorf(http.StatusForbidden, "forbidden", "the operator or the payment provider sets credit lines")
	}
	amount, err := amountBody(r)
	if err != nil {
		return nil, 0, err
	}
	a, err := h.cfg.Ledger.SetCreditLine(r.Context(), id, amount, p.tokenID)
	if err != nil {
		return nil, 0, err
	}
	h.cfg.Notifier.Changed(record.DocDenyList)
	h.audit(r, p, "credit_line", strconv.FormatUint(id, 10), fmt.Sprintf("amount %d", amount))
	return toAccount(a), http.StatusOK, nil
}

// setPaymentLimit sets the most one online payment by code may take from
// the account (amount 0: no limit): asked by its rider with their secret,
// or by the operator (audited). A shop's scanner names what it takes; the
// rider bounds it.
func (h *Handler) setPaymentLimit(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, p, err := h.changePrincipal(r, ledger.RoleOperator)
	if err != nil {
		return nil, 0, err
	}
	amount, err := amountBody(r)
	if err != nil {
		return nil, 0, err
	}
	a, err := h.cfg.Ledger.SetPaymentLimit(r.Context(), id, amount)
	if err != nil {
		return nil, 0, err
	}
	if p.role != roleRider {
		h.audit(r, p, "payment_limit", strconv.FormatUint(id, 10), fmt.Sprintf("amount %d", amount))
	}
	return toAccount(a), http.StatusOK, nil
}

// changePrincipal is accountPrincipal for a change of the account: a
// rider's own (with its secret) is bounded per client address, its IPv6
// site and for everyone (riderChangesPerMinute): each is a write of the
// ledger's, which the fleet's taps wait for. A refused one (429
// rate_limited) changes nothing; staff tokens are not bounded.
func (h *Handler) changePrincipal(r *http.Request, staffRoles ...string) (uint64, principal, error) {
	id, p, err := h.accountPrincipal(r, staffRoles...)
	if err == nil && p.role == roleRider && !h.changes.allow(r) {
		err = errorf(http.StatusTooManyRequests, "rate_limited", "too many changes to accounts from here; try again in a minute")
	}
	return id, p, err
}

// amountBody reads the body {"amount": N} of the account settings in minor
// units (credit line, payment limit): N is required and 0 or more; the
// ledger bounds it above.
func amountBody(r *http.Request) (int64, error) {
	var req struct {
		Amount *int64 `json:"amount"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return 0, err
	}
	if req.Amount == nil || *req.Amount < 0 {
		return 0, errorf(http.StatusBadRequest, "invalid", "amount (0 or more, minor units) is required")
	}
	return *req.Amount, nil
}

// setProfile sets an account's rider profile: the rider's own secret asks
// for it (a reduced fare stays pending, and the credentials carry the
// adult profile, until confirmed), the operator's or the payment
// provider's token sets and confirms it. Credentials issued before keep
// the profile they carry until they expire.
func (h *Handler) setProfile(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, p, err := h.changePrincipal(r, ledger.RolePayments)
	if err != nil {
		return nil, 0, err
	}
	var req struct {
		Profile string `json:"profile"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	profile, err := paycode.ParseProfile(req.Profile)
	if err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "profile must be adult, child, senior or student")
	}
	staff := p.role != roleRider
	a, err := h.cfg.Ledger.SetProfile(r.Context(), id, profile, staff)
	if err != nil {
		return nil, 0, err
	}
	if staff {
		h.audit(r, p, "profile", strconv.FormatUint(id, 10), "set "+profile.String())
	}
	return toAccount(a), http.StatusOK, nil
}

// CredentialResponse is an issued credential.
type CredentialResponse struct {
	Account    uint64 `json:"account"`
	Serial     uint32 `json:"serial"`
	KeyID      uint32 `json:"key_id"`
	Profile    string `json:"profile"`
	NotBefore  string `json:"not_before"`
	NotAfter   string `json:"not_after"`
	Credential string `json:"credential"`           // hex of the 124 bytes
	TokenSeed  string `json:"token_seed,omitempty"` // hex; absent when the rider sent a public key
}

// credentialMinimum is the least balance plus credit line an account of
// profile p needs for an offline credential (see Config.CredentialMinimum).
func (h *Handler) credentialMinimum(r *http.Request, p paycode.Profile) (int64, error) {
	if h.cfg.CredentialMinimum != 0 {
		return max(h.cfg.CredentialMinimum, 0), nil
	}
	// The ledger's shared copy, read only: a fresh one is parsed from the
	// stored text, at every credential request, refused ones too.
	_, t, err := h.cfg.Ledger.LatestFareTableShared(r.Context())
	if errors.Is(err, ledger.ErrNoFareTable) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if c, ok := t.DailyCap[p.String()]; ok {
		return c, nil
	}
	f, err := t.Fare("*", p)
	if err != nil {
		return 0, nil
	}
	return f, nil
}

func (h *Handler) issueCredential(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, _, err := h.accountPrincipal(r)
	if err != nil {
		return nil, 0, err
	}
	var req struct {
		RiderPublicKey string `json:"rider_public_key"`
	}
	body, err := readBody(r, maxBody)
	if err != nil {
		return nil, 0, err
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return nil, 0, err
		}
	}
	a, err := h.accountView(r, id)
	if err != nil {
		return nil, 0, err
	}
	if a.Denied {
		return nil, 0, errorf(http.StatusForbidden, "not_in_good_standing", "account %d cannot get a credential: %s (balance %d)",
			id, orDefault(a.DenyReason, "denied"), a.Balance)
	}
	for _, b := range a.Blocked {
		if b.Reason == ledger.ReasonCodeReused {
			return nil, 0, errorf(http.StatusForbidden, "not_in_good_standing",
				"a payment code of credential %d was used more than once; the operator must clear it before a new credential", b.Serial)
		}
	}
	profile := a.credential // adult while a reduced fare asked for is not confirmed
	minimum, err := h.credentialMinimum(r, profile)
	if err != nil {
		return nil, 0, err
	}
	if a.Balance+a.CreditLine < minimum {
		return nil, 0, &apiError{status: http.StatusPaymentRequired, code: "insufficient_funds",
			msg: fmt.Sprintf("top up first: an offline credential needs a balance of at least %s (balance %s, credit line %s)",
				feedback.FormatAmount(minimum, a.Currency), feedback.FormatAmount(a.Balance, a.Currency),
				feedback.FormatAmount(a.CreditLine, a.Currency)),
			minimum: minimum - a.CreditLine, currency: a.Currency}
	}
	var seed []byte
	var riderPub ed25519.PublicKey
	if req.RiderPublicKey != "" {
		riderPub, err = hex.DecodeString(req.RiderPublicKey)
		if err != nil || len(riderPub) != ed25519.PublicKeySize {
			return nil, 0, errorf(http.StatusBadRequest, "invalid", "rider_public_key must be 64 hex digits")
		}
		if err := paycode.CheckPublicKey(riderPub); err != nil {
			return nil, 0, errorf(http.StatusBadRequest, "invalid", "rider_public_key: %v", err)
		}
	} else {
		seed = make([]byte, paycode.SecretSize)
		rand.Read(seed)
		rk, err := paycode.RiderKey(seed)
		if err != nil {
			return nil, 0, err
		}
		riderPub = rk.Public().(ed25519.PublicKey)
	}
	now := h.cfg.Now().UTC().Truncate(time.Second)
	keyID, issuer, err := h.cfg.Keys.SigningKey(now)
	if err != nil {
		return nil, 0, err
	}
	nb, na := now.Add(-5*time.Minute), now.Add(h.cfg.CredentialTTL)
	// Never beyond the key's own window: validators refuse a code of a key
	// past its end, however long the credential says it runs.
	if end := h.cfg.Keys.KeyEnd(keyID); na.After(end) {
		na = end
	}
	// The rider's key of a credential issued already, live: the answer to
	// that request was lost (the wallet asks again with the same key), and
	// the same serial is sent again. A new one each time left a credential
	// no phone holds per lost answer, and 16 refused every pass for a day.
	var serial uint32
	status := http.StatusCreated
	if seed == nil {
		s, end, ok, err := h.cfg.Ledger.LiveCredentialOfKey(r.Context(), id, riderPub)
		if err != nil {
			return nil, 0, err
		}
		if ok && !end.After(h.cfg.Keys.KeyEnd(keyID)) {
			serial, na, status = s, end, http.StatusOK
		}
	}
	if serial == 0 {
		// Recorded only if the secret is still the one this request signed
		// in with: a replacement that came meanwhile deny-listed the
		// credentials before it, and this one must not outlive it either.
		serial, err = h.cfg.Ledger.IssueRiderCredentialSerial(r.Context(), id, hashSecret(bearer(r)), na, riderPub)
		if errors.Is(err, ledger.ErrSecretChanged) {
			return nil, 0, errorf(http.StatusForbidden, "forbidden", "the account's secret was changed: sign in with the new one")
		}
		if err != nil {
			return nil, 0, err
		}
	}
	c := paycode.Credential{KeyID: keyID, Account: id, Serial: serial, NotBefore: uint32(nb.Unix()), NotAfter: uint32(na.Unix()), Profile: profile}
	copy(c.RiderKey[:], riderPub)
	cred, err := paycode.IssueCredential(issuer, c)
	if err != nil {
		return nil, 0, err
	}
	h.log.Info("credential issued", "account", id, "serial", serial, "key_id", keyID, "rider_key_supplied", seed == nil,
		"sent_again", status == http.StatusOK)
	resp := CredentialResponse{Account: id, Serial: serial, KeyID: keyID, Profile: profile.String(),
		NotBefore: nb.Format(time.RFC3339), NotAfter: na.Format(time.RFC3339), Credential: hex.EncodeToString(cred)}
	if seed != nil {
		resp.TokenSeed = hex.EncodeToString(seed)
	}
	return resp, status, nil
}

// replaceSecret gives an account a new secret: asked by its rider (with
// the current secret, for a phone lost or a secret seen by someone else)
// or by the operator or the payment provider (a rider who lost theirs;
// audited). The answer holds the new secret, shown once; the old one stops
// working at once, and so do the credentials issued before (deny-listed:
// ledger.ReplaceSecret).
func (h *Handler) replaceSecret(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, p, err := h.changePrincipal(r, ledger.RolePayments)
	if err != nil {
		return nil, 0, err
	}
	if r.ContentLength != 0 { // no body, or {}: the server makes the secret
		var req struct{}
		if err := decode(r, maxBody, &req); err != nil {
			return nil, 0, err
		}
	}
	var old []byte
	if p.role == roleRider {
		old = hashSecret(bearer(r))
	}
	sec := make([]byte, 32)
	rand.Read(sec)
	secret := hex.EncodeToString(sec)
	revoked, err := h.cfg.Ledger.ReplaceSecret(r.Context(), id, old, hashSecret(secret))
	if err != nil {
		return nil, 0, err
	}
	if p.role != roleRider {
		h.audit(r, p, "replace_secret", strconv.FormatUint(id, 10), "credentials denied: "+strconv.Itoa(revoked))
	}
	return map[string]any{"account": id, "secret": secret, "credentials_denied": revoked}, http.StatusOK, nil
}
