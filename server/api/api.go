package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/jsonstrict"
	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/release"
	"github.com/farego/farego/sync/ratelog"
)

// Defaults.
const (
	DefaultCredentialTTL = 24 * time.Hour
	// DefaultAccountsPerMinute and DefaultAccountsBurst limit anonymous
	// account creation per client address; DefaultAccountsPerMinuteTotal
	// limits it for everyone together.
	DefaultAccountsPerMinute      = 6
	DefaultAccountsBurst          = 10
	DefaultAccountsPerMinuteTotal = 600
	// riderChangesPerMinute and riderChangesBurst bound the changes riders
	// make with their secret (payment limit, profile, secret) per client
	// address (an IPv6 site: SiteShare times as many); riderChangesTotal
	// all riders' together, a minute. Each is a write transaction of the
	// ledger's one writer: one anonymous sign-up setting its payment limit
	// from 200 connections made 1,700 of them a second, and the fleet's
	// taps waited behind them (tap to ack p50 5 ms → 1.8 s, p99 19 ms →
	// 4.1 s: attack review).
	riderChangesPerMinute = 30
	riderChangesBurst     = 30
	riderChangesTotal     = 6000
	// maxBody bounds a request body; fare tables get more.
	maxBody     = 16 << 10
	maxFareBody = fare.MaxTableSize
)

// Notifier is told when a fleet document changed so it can publish it
// (coalesced); kind is a wire.Downlink* constant.
type Notifier interface{ Changed(kind string) }

// Health reports on a part the server depends on; nil means healthy.
type Health func(ctx context.Context) error

// Config configures the API handler. Zero fields mean the documented
// defaults.
type Config struct {
	Ledger *ledger.Store
	Keys   *keys.Dir
	// CredentialTTL is how long an issued credential is valid (default 24 h).
	CredentialTTL time.Duration
	// KeyActivation is how long after a rotation the new issuer key starts
	// signing (default keys.DefaultKeyActivation; negative: at once). A
	// rotation request may name its own ("activate_in").
	KeyActivation time.Duration
	// CredentialMinimum is the least an account's balance plus its credit
	// line must be for it to get an offline credential (a rider rides on
	// it until the validators hear of a debt). 0 means the default: the
	// latest fare table's daily cap for the rider's profile, or one base
	// fare of the default route if the table has no cap. Negative: no
	// minimum.
	CredentialMinimum int64
	Policy            paycode.Policy // for online payments: code max age and skew
	Notifier          Notifier
	// DeviceChanged, if set, is called after a device was registered or
	// revoked here, so the server forgets what it cached of it and drops
	// its broker connection.
	DeviceChanged func(id string)
	// Replay, if set, asks a device to send archived records from..to of its
	// queue (epoch) again, after the ledger was restored from a backup.
	Replay func(ctx context.Context, deviceID, epoch string, from, to uint64) error
	// ReplayFleet, if set, asks every device whose status says online
	// (sends: each one's queue epoch, by id) to resend its whole archive
	// with one request id, and keeps the request for every device
	// (ledger.KeepReplay): sent again when a device is next heard online.
	// It returns the devices asked at once. POST /v1/devices/replay needs
	// it.
	ReplayFleet func(ctx context.Context, sends map[string]string) (asked []string, err error)
	// Assign, if set, sends a device its route and vehicle (a signed
	// command, retained for a device offline now) as the ledger numbered
	// the assignment.
	Assign func(ctx context.Context, deviceID string, version uint64, route, vehicle string) error
	// AccountsPerMinute, AccountsBurst and AccountsPerMinuteTotal limit
	// POST /v1/accounts (defaults DefaultAccounts*); negative: no limit.
	AccountsPerMinute      int
	AccountsBurst          int
	AccountsPerMinuteTotal int
	// MerchantPerMinute and MerchantBurst bound the payments and refunds
	// (together) of one merchant API token (defaults
	// DefaultMerchantPerMinute, DefaultMerchantBurst); negative: no limit.
	// One over is 429 rate_limited with Retry-After, nothing written.
	MerchantPerMinute int
	MerchantBurst     int
	// TrustedProxies are the reverse proxies (TLS terminators) in front of
	// the API: a request from one of them is counted against the client
	// its X-Forwarded-For names (the nearest address that is not a trusted
	// proxy), not against the proxy. Any other peer's X-Forwarded-For is
	// ignored: a client cannot pick its own address.
	TrustedProxies []netip.Prefix
	// Started is when this server started: a device whose last status is
	// older is shown as unknown (its status may be stale). Zero: now.
	Started time.Time
	// DriftBound: a device whose clock is further than this from the
	// server's is shown drifting (and counted in farego_devices_drifting);
	// zero means DefaultDriftBound, negative disables.
	DriftBound time.Duration
	Health     map[string]Health // extra readiness checks by name (broker, ingest)
	// Releases, if set, keeps the validator releases (/v1/releases).
	Releases *release.Store
	Metrics  *metrics.Registry
	// MetricsElsewhere: GET /metrics is served on a listener of its own
	// (farego-settlement run --metrics), not by this handler: here it is
	// an unknown endpoint.
	MetricsElsewhere bool
	Logger           *slog.Logger
	Now              func() time.Time
}

// Handler serves the API.
type Handler struct {
	cfg      Config
	mux      *http.ServeMux
	log      *slog.Logger
	verifier *paycode.Verifier
	requests *metrics.CounterVec
	accounts *limiter
	changes  *limiter      // riders' changes (changePrincipal)
	merchant *TokenLimiter // merchant tokens' payments and refunds
	// healthLog lets a failing check's log line through once a minute.
	healthLog *ratelog.Limiter
	// healthy: /healthz has answered 200 once (see healthz).
	healthy atomic.Bool
	// drifting caches the farego_devices_drifting count (a scrape would
	// read the whole devices table each time).
	driftCount metrics.Cache[float64]
	// fares is the encoded answer of GET /v1/fares for the latest version.
	fares atomic.Pointer[encodedFares]
	// crossSite refuses a change a browser sends from a page of another
	// origin (see ServeHTTP).
	crossSite *http.CrossOriginProtection
}

// New returns the API handler.
func New(cfg Config) *Handler {
	if cfg.KeyActivation == 0 {
		cfg.KeyActivation = keys.DefaultKeyActivation
	}
	if cfg.CredentialTTL <= 0 {
		cfg.CredentialTTL = DefaultCredentialTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Started.IsZero() {
		cfg.Started = cfg.Now()
	}
	if cfg.DriftBound == 0 {
		cfg.DriftBound = DefaultDriftBound
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewRegistry()
	}
	if cfg.Notifier == nil {
		cfg.Notifier = nopNotifier{}
	}
	if cfg.AccountsPerMinute == 0 {
		cfg.AccountsPerMinute = DefaultAccountsPerMinute
	}
	if cfg.AccountsBurst == 0 {
		cfg.AccountsBurst = DefaultAccountsBurst
	}
	if cfg.AccountsPerMinuteTotal == 0 {
		cfg.AccountsPerMinuteTotal = DefaultAccountsPerMinuteTotal
	}
	if cfg.MerchantPerMinute == 0 {
		cfg.MerchantPerMinute = DefaultMerchantPerMinute
	}
	if cfg.MerchantBurst == 0 {
		cfg.MerchantBurst = DefaultMerchantBurst
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger, verifier: paycode.NewVerifier(0),
		requests:  cfg.Metrics.Counter("farego_http_requests_total", "HTTP API requests by route and status class.", "route", "status"),
		accounts:  newLimiter(cfg.AccountsPerMinute, cfg.AccountsBurst, cfg.AccountsPerMinuteTotal, cfg.Now, cfg.TrustedProxies),
		changes:   newLimiter(riderChangesPerMinute, riderChangesBurst, riderChangesTotal, cfg.Now, cfg.TrustedProxies),
		merchant:  NewTokenLimiter(cfg.MerchantPerMinute, cfg.MerchantBurst, cfg.Now),
		healthLog: ratelog.New(cfg.Now, ratelog.DefaultEvery), crossSite: http.NewCrossOriginProtection()}
	if cfg.Ledger != nil {
		h.driftCount = metrics.Cache[float64]{TTL: 2 * time.Second, Read: h.driftingDevices}
		cfg.Metrics.GaugeFunc("farego_devices_drifting",
			"Validators whose clock is further from the server's than the drift bound (GET /v1/devices: drifting).", h.driftCount.Get)
	}
	// --accounts-per-minute -1 (a proxy in front bounds its clients)
	// lifts the bound on riders' changes too.
	h.changes.disabled = h.changes.disabled || h.accounts.disabled
	h.route("POST /v1/accounts", h.createAccount)
	h.route("GET /v1/accounts/{id}", h.getAccount)
	h.route("GET /v1/accounts/{id}/rides", h.rides)
	h.route("GET /v1/accounts/{id}/statement", h.statement)
	h.route("POST /v1/accounts/{id}/topups", h.topUp)
	h.route("PUT /v1/accounts/{id}/credit_line", h.setCreditLine)
	h.route("PUT /v1/accounts/{id}/profile", h.setProfile)
	h.route("PUT /v1/accounts/{id}/payment_limit", h.setPaymentLimit)
	h.route("POST /v1/accounts/{id}/secret", h.replaceSecret)
	h.route("POST /v1/accounts/{id}/credentials", h.issueCredential)
	h.route("POST /v1/payments", h.pay)
	h.route("GET /v1/payments/{merchant}/{order}", h.getPayment)
	h.route("POST /v1/payments/{merchant}/{order}/refunds", h.refund)
	h.route("GET /v1/merchants/settlement", h.settlement)
	h.route("GET /v1/revenue", h.revenue)
	h.route("POST /v1/devices", h.registerDevice)
	h.route("GET /v1/devices", h.devices)
	h.route("POST /v1/devices/{id}/revoke", h.revokeDevice)
	h.route("POST /v1/devices/{id}/replay", h.replay)
	h.route("POST /v1/devices/replay", h.replayAll)
	h.route("PUT /v1/devices/{id}/assignment", h.assign)
	h.route("GET /v1/devices/{id}/assignment", h.assignments)
	h.route("GET /v1/fares", h.getFares)
	h.route("PUT /v1/fares", h.putFares)
	h.route("GET /v1/keyring", h.getKeyring)
	h.route("GET /v1/fleet", h.getFleet)
	h.route("POST /v1/keyring/rotate", h.rotate)
	h.route("GET /v1/denylist", h.denyList)
	h.route("POST /v1/denylist", h.deny)
	h.route("DELETE /v1/denylist", h.undeny)
	h.route("POST /v1/taps/void", h.voidTap)
	h.route("POST /v1/tokens", h.createToken)
	h.route("GET /v1/tokens", h.listTokens)
	h.route("DELETE /v1/tokens/{id}", h.revokeToken)
	h.route("GET /v1/tokens/{id}/payments", h.tokenPayments)
	h.route("GET /v1/tokens/{id}/refunds", h.tokenRefunds)
	h.route("GET /v1/audit", h.auditLog)
	h.route("GET /healthz", h.healthz)
	h.releaseRoutes()
	if !cfg.MetricsElsewhere {
		h.mux.Handle("GET /metrics", cfg.Metrics)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: http.StatusNotFound, code: "not_found", msg: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return h
}

type nopNotifier struct{}

func (nopNotifier) Changed(string) {}

// apiError is an error with an HTTP status and a stable code.
type apiError struct {
	status int
	code   string
	msg    string
	// minimum is, for insufficient_funds when a credential is asked for,
	// the balance (minor units of currency) a credential needs, given as
	// the error's "minimum_balance" and "currency" so that a client can
	// say how much to top up.
	minimum  int64
	currency string
	// reason is, for invalid_code, the verification's reason (the
	// error's "reason"; the message says it in words for a shopkeeper).
	reason string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errorf(status int, code, format string, a ...any) error {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, a...)}
}

func (h *Handler) route(pattern string, fn func(w http.ResponseWriter, r *http.Request) (any, int, error)) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		v, status, err := fn(w, r)
		if err != nil {
			status = h.writeErr(w, r, err)
		} else {
			writeJSON(w, status, v)
		}
		h.requests.With(pattern, strconv.Itoa(status/100)+"xx").Inc()
	})
}

// ServeHTTP implements http.Handler. Every answer is data, never a page:
// a browser must not sniff one as HTML (an error message quotes the
// request's path), run or embed anything from it, or show it in a frame
// of another site; the wallet and the console are served from the same
// origin.
//
// A change (any method but GET, HEAD and OPTIONS) that a browser says
// comes from a page of another origin (Sec-Fetch-Site, or else an Origin
// other than the Host) is refused before anything is read: a page may
// send a POST without asking first (fetch's no-cors mode, a body with no
// Content-Type), and POST /v1/accounts needs no login, so any site's page
// made accounts from each of its visitors' addresses, past the limit per
// address, and could take the limit for everyone (600 a minute) from every
// rider signing up. Programs send neither header, the wallet is on this
// origin, and a page of another origin could never send a token
// (Authorization makes the browser ask first, which this API never
// allows).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; sandbox")
	hd.Set("X-Frame-Options", "DENY")
	if err := h.crossSite.Check(r); err != nil {
		writeError(w, &apiError{status: http.StatusForbidden, code: "forbidden",
			msg: "refused: a browser sent this from a page of another site; nothing was done"})
		return
	}
	h.mux.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if b, ok := v.(rawJSON); ok {
		w.Write(b)
		return
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// rawJSON is an answer encoded before (encodeJSON), written as it is.
type rawJSON []byte

// encodeJSON encodes v as writeJSON does.
func encodeJSON(v any) (rawJSON, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeError answers with the error: {"error": {"code", "message"}}, and
// for a credential's insufficient_funds the balance it needs.
func writeError(w http.ResponseWriter, ae *apiError) {
	body := map[string]any{"code": ae.code, "message": ae.msg}
	if ae.minimum > 0 {
		body["minimum_balance"], body["currency"] = ae.minimum, ae.currency
	}
	if ae.reason != "" {
		body["reason"] = ae.reason
	}
	writeJSON(w, ae.status, map[string]any{"error": body})
}

// ErrorCodes lists every error code the API returns, for the README and
// the clients' message catalogs.
var ErrorCodes = []string{
	"bad_request", "bad_json", "unsupported_media_type", "too_large", "invalid", "invalid_name", "bad_account",
	"unauthorized", "forbidden", "rate_limited", "not_found",
	"insufficient_funds", "over_limit", "over_refund", "not_in_good_standing", "code_used", "denied", "invalid_code", "unknown_credential",
	"conflict", "not_voidable", "device_exists", "device_offline", "device_revoked", "exists", "stale_version", "too_many_credentials",
	"unavailable", "not_sent", "internal",
}

// writeErr maps an error to its HTTP form and returns the status.
func (h *Handler) writeErr(w http.ResponseWriter, r *http.Request, err error) int {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, ledger.ErrNotFound):
		ae = &apiError{status: http.StatusNotFound, code: "not_found", msg: err.Error()}
	case errors.Is(err, ledger.ErrInsufficientFunds):
		ae = &apiError{status: http.StatusPaymentRequired, code: "insufficient_funds", msg: err.Error()}
	case errors.Is(err, ledger.ErrOverLimit):
		ae = &apiError{status: http.StatusForbidden, code: "over_limit", msg: err.Error()}
	case errors.Is(err, ledger.ErrOverRefund):
		ae = &apiError{status: http.StatusConflict, code: "over_refund", msg: err.Error()}
	case errors.Is(err, ledger.ErrCodeUsed):
		ae = &apiError{status: http.StatusConflict, code: "code_used", msg: "this payment code has already paid, or was refused 3 times: ask the rider to show a new code"}
	case errors.Is(err, ledger.ErrDenied):
		ae = &apiError{status: http.StatusForbidden, code: "denied", msg: err.Error()}
	case errors.Is(err, ledger.ErrTokenRevoked):
		ae = &apiError{status: http.StatusForbidden, code: "forbidden", msg: err.Error()}
	case errors.Is(err, ledger.ErrUnknownCredential):
		ae = &apiError{status: http.StatusUnprocessableEntity, code: "unknown_credential", msg: err.Error()}
	case errors.Is(err, ledger.ErrOrderConflict), errors.Is(err, ledger.ErrRefundConflict), errors.Is(err, ledger.ErrTopUpConflict),
		errors.Is(err, ledger.ErrSecretChanged):
		ae = &apiError{status: http.StatusConflict, code: "conflict", msg: err.Error()}
	case errors.Is(err, ledger.ErrDeviceRevoked):
		ae = &apiError{status: http.StatusConflict, code: "device_revoked", msg: err.Error()}
	case errors.Is(err, ledger.ErrDeviceExists):
		ae = &apiError{status: http.StatusConflict, code: "device_exists", msg: err.Error()}
	case errors.Is(err, ledger.ErrTooManyCredentials):
		ae = &apiError{status: http.StatusConflict, code: "too_many_credentials", msg: err.Error() + "; the oldest expire within a credential's lifetime"}
	case errors.Is(err, ledger.ErrFareVersion):
		ae = &apiError{status: http.StatusConflict, code: "stale_version", msg: err.Error()}
	case errors.Is(err, ledger.ErrInvalid), errors.Is(err, fare.ErrInvalid), errors.Is(err, paycode.ErrKeyring):
		ae = &apiError{status: http.StatusBadRequest, code: "invalid", msg: err.Error()}
	case ClientGone(r, err):
		// The client hung up while its request waited for the ledger:
		// nobody reads this answer and the server is not at fault.
		// Anyone can do it at any rate (a made-up fgt_ token is looked
		// up): an attack review had one client log some 140 ERROR lines
		// a second of "request failed", each with its 30 KiB path (4 MiB
		// a second), all counted as the server's 5xx.
		// It is still answered as before (the console reads an answer
		// through ServeAs, where none would be a 200). Only the hang-up's
		// own error: a real fault of the ledger's that a client gave up
		// on (a slow failing disk makes them) is still the server's.
		h.log.Debug("request abandoned by the client", "method", r.Method, "path", ClipPath(r.URL.Path), "err", err)
		writeError(w, &apiError{status: http.StatusInternalServerError, code: "internal", msg: "the request was abandoned by the client"})
		return statusClientClosed
	case ledger.Unavailable(err):
		// A full disk, a read-only ledger, a database gone: the client
		// may try again later; logged once a while, not per request.
		if ok, n := h.healthLog.Allow("ledger-writes"); ok {
			h.log.Error("request failed: the ledger cannot take it now", "method", r.Method, "path", ClipPath(r.URL.Path), "err", err, "suppressed", n)
		}
		w.Header().Set("Retry-After", "30")
		ae = &apiError{status: http.StatusServiceUnavailable, code: "unavailable", msg: "the ledger cannot take this now; try again later"}
	default:
		h.log.Error("request failed", "method", r.Method, "path", ClipPath(r.URL.Path), "err", err)
		ae = &apiError{status: http.StatusInternalServerError, code: "internal", msg: "internal error; see the server log"}
	}
	if ae.status == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "60")
	}
	writeError(w, ae)
	return ae.status
}

// ClientGone reports whether err is the client hanging up on r: a ledger
// read that failed for it is no fault of the server's, and not logged
// (anyone can make one at any rate). Another error is, client gone or
// not: a real fault of the ledger's that a client gave up on (a slow
// failing disk makes them) is still the server's.
func ClientGone(r *http.Request, err error) bool {
	return errors.Is(err, context.Canceled) && errors.Is(r.Context().Err(), context.Canceled)
}

// statusClientClosed is what farego_http_requests_total counts a request
// as whose client hung up before its answer (nginx's 499): a 4xx, not the
// server's fault.
const statusClientClosed = 499

// maxLogPath bounds a request path in a log line: a client's path may be
// as long as the header limit (32 KiB).
const maxLogPath = 128

// ClipPath cuts a request path for a log line, saying how long it was
// (the API's and the console's lines).
func ClipPath(p string) string {
	if len(p) <= maxLogPath {
		return p
	}
	return fmt.Sprintf("%s…(%d bytes)", strings.ToValidUTF8(p[:maxLogPath], ""), len(p))
}

// readBody reads a request body of at most limit bytes, with an
// application/json Content-Type (or none).
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send Content-Type: application/json, not %q", ct)
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "bad_request", "reading the body: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, errorf(http.StatusRequestEntityTooLarge, "too_large", "body larger than %d bytes", limit)
	}
	return body, nil
}

// decode reads a JSON body strictly: no unknown fields, no duplicate keys,
// nothing after the object.
func decode(r *http.Request, limit int64, v any) error {
	body, err := readBody(r, limit)
	if err != nil {
		return err
	}
	return decodeStrict(body, v)
}

// decodeStrict decodes one JSON value strictly into v.
func decodeStrict(body []byte, v any) error {
	if err := jsonstrict.DuplicateKeys(body, true); err != nil {
		return errorf(http.StatusBadRequest, "bad_json", "%v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "bad_json", "%s", jsonProblem(err))
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "bad_json", "trailing data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, "bad_json", "trailing data after the JSON object")
	}
	return nil
}

// jsonProblem says what is wrong with a body in the API's terms, not Go's
// ("cannot unmarshal array into Go value of type struct { MerchantID
// string "json:\"merchant_id\"" … }", or "EOF" for an empty body).
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return "the body is empty: send a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON body ends too soon"
	case errors.As(err, &se):
		return fmt.Sprintf("not JSON (at byte %d): %v", se.Offset, se)
	case errors.As(err, &te) && te.Field == "":
		return fmt.Sprintf("the body must be a JSON object, not %s", jsonKind(te.Value))
	case errors.As(err, &te):
		msg := fmt.Sprintf("%q must be %s, not %s", te.Field, goKind(te.Type), jsonKind(te.Value))
		// Staff type amounts in euros: 22.50 is 2250.
		if n, ok := strings.CutPrefix(te.Value, "number "); ok && strings.Contains(n, ".") && moneyField(te.Field) {
			msg += " (amounts are whole minor units of the currency: 2250 for 22.50 EUR)"
		}
		return msg
	}
	// Unknown fields ("json: unknown field \"x\"") and the like read well.
	return strings.TrimPrefix(err.Error(), "json: ")
}

// moneyField reports whether a body field holds an amount of money.
func moneyField(name string) bool {
	return strings.Contains(name, "amount") || strings.Contains(name, "credit_line") || strings.Contains(name, "limit")
}

// jsonKind names a JSON value kind as encoding/json reports it ("array",
// "string", "number 1.5", …) with an article.
func jsonKind(v string) string {
	if v == "array" || v == "object" {
		return "an " + v
	}
	return "a " + v
}

// goKind names what a field takes in JSON terms.
func goKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

func timeOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// healthStartGrace is how long after its start a server not healthy yet
// logs a failing /healthz check as starting (Info), not as a failure.
const healthStartGrace = 30 * time.Second

// Checks runs the checks /healthz answers with, by name: "ledger" (the
// database answers, the SQLite file is the one opened) and Config.Health's;
// nil means healthy. The server's farego_health gauge reads them too, so
// that Prometheus sees what /healthz says (an unreachable database left
// every farego_ledger_* figure at -1 and no alert).
func (h *Handler) Checks(ctx context.Context) map[string]error {
	out := map[string]error{"ledger": h.cfg.Ledger.Ping(ctx)}
	for name, fn := range h.cfg.Health {
		out[name] = fn(ctx)
	}
	return out
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) (any, int, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	checks := map[string]string{}
	status := http.StatusOK
	check := func(name string, err error) {
		if err == nil {
			checks[name] = "ok"
			return
		}
		// Anyone may ask: the answer says which part is down, the log
		// why (a database's error names its address, user and database).
		checks[name], status = "unavailable (the server's log says why)", http.StatusServiceUnavailable
		// A start's first moments (the broker's clients connecting, a
		// probe or the README's wait loop asking) are not a failure: a
		// warning in every start's log said something was wrong.
		ok, n := h.healthLog.Allow(name)
		switch {
		case !ok:
		case !h.healthy.Load() && h.cfg.Now().Sub(h.cfg.Started) < healthStartGrace:
			h.log.Info("healthz: starting, a part is not ready yet", "check", name, "err", err, "suppressed", n)
		default:
			h.log.Warn("healthz: a check failed", "check", name, "err", err, "suppressed", n)
		}
	}
	for name, err := range h.Checks(ctx) {
		check(name, err)
	}
	if status == http.StatusOK {
		h.healthy.Store(true)
	}
	return map[string]any{"ok": status == http.StatusOK, "checks": checks}, status, nil
}
