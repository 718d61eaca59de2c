package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

// Defaults.
const (
	DefaultCredentialTTL = 24 * time.Hour
	// maxBody bounds a request body; fare tables get more.
	maxBody     = 16 << 10
	maxFareBody = fare.MaxTableSize
)

// Notifier is told when a fleet document changed so it can publish it
// (coalesced); kind is a wire.Downlink* constant.
type Notifier interface{ Changed(kind string) }

// Health reports on a part the server depends on; nil means healthy.
type Health func(ctx context.Context) error

// Config configures the API handler.
type Config struct {
	Ledger *ledger.Store
	Keys   *keys.Dir
	// CredentialTTL is how long an issued credential is valid (default 24 h).
	CredentialTTL time.Duration
	Policy        paycode.Policy // for online payments: code max age and skew
	Notifier      Notifier
	// DeviceCredentials, if set, gives a registered device's MQTT username
	// and password (the embedded broker's derived ones); registration
	// returns them to the provisioning tool.
	DeviceCredentials func(id string) (username, password string)
	// Replay, if set, asks a device to send archived records from..to of its
	// queue (epoch) again, after the ledger was restored from a backup.
	Replay  func(ctx context.Context, deviceID, epoch string, from, to uint64) error
	Health  map[string]Health // extra readiness checks by name (broker, ingest)
	Metrics *metrics.Registry
	Logger  *slog.Logger
	Now     func() time.Time
}

// Handler serves the API.
type Handler struct {
	cfg      Config
	mux      *http.ServeMux
	log      *slog.Logger
	verifier *paycode.Verifier
	requests *metrics.CounterVec
}

// New returns the API handler.
func New(cfg Config) *Handler {
	if cfg.CredentialTTL <= 0 {
		cfg.CredentialTTL = DefaultCredentialTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewRegistry()
	}
	if cfg.Notifier == nil {
		cfg.Notifier = nopNotifier{}
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger, verifier: paycode.NewVerifier(0),
		requests: cfg.Metrics.Counter("farego_http_requests_total", "HTTP API requests by route and status class.", "route", "status")}
	h.route("POST /v1/accounts", h.createAccount)
	h.route("GET /v1/accounts/{id}", h.getAccount)
	h.route("GET /v1/accounts/{id}/rides", h.rides)
	h.route("POST /v1/accounts/{id}/topups", h.topUp)
	h.route("POST /v1/accounts/{id}/credentials", h.issueCredential)
	h.route("POST /v1/payments", h.pay)
	h.route("POST /v1/devices", h.registerDevice)
	h.route("GET /v1/devices", h.devices)
	h.route("POST /v1/devices/{id}/replay", h.replay)
	h.route("GET /v1/fares", h.getFares)
	h.route("PUT /v1/fares", h.putFares)
	h.route("GET /v1/keyring", h.getKeyring)
	h.route("POST /v1/keyring/rotate", h.rotate)
	h.route("GET /v1/denylist", h.denyList)
	h.route("POST /v1/denylist", h.deny)
	h.route("DELETE /v1/denylist", h.undeny)
	h.route("GET /healthz", h.healthz)
	h.mux.Handle("GET /metrics", cfg.Metrics)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
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

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// writeErr maps an error to its HTTP form and returns the status.
func (h *Handler) writeErr(w http.ResponseWriter, r *http.Request, err error) int {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, ledger.ErrNotFound):
		ae = &apiError{http.StatusNotFound, "not_found", err.Error()}
	case errors.Is(err, ledger.ErrInsufficientFunds):
		ae = &apiError{http.StatusPaymentRequired, "insufficient_funds", err.Error()}
	case errors.Is(err, ledger.ErrCodeUsed):
		ae = &apiError{http.StatusConflict, "code_used", err.Error()}
	case errors.Is(err, ledger.ErrDenied):
		ae = &apiError{http.StatusForbidden, "denied", err.Error()}
	case errors.Is(err, ledger.ErrOrderConflict), errors.Is(err, ledger.ErrTopUpConflict):
		ae = &apiError{http.StatusConflict, "conflict", err.Error()}
	case errors.Is(err, ledger.ErrDeviceExists):
		ae = &apiError{http.StatusConflict, "device_exists", err.Error()}
	case errors.Is(err, ledger.ErrFareVersion):
		ae = &apiError{http.StatusConflict, "stale_version", err.Error()}
	case errors.Is(err, ledger.ErrInvalid), errors.Is(err, fare.ErrInvalid), errors.Is(err, paycode.ErrKeyring):
		ae = &apiError{http.StatusBadRequest, "invalid", err.Error()}
	default:
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = &apiError{http.StatusInternalServerError, "internal", "internal error; see the server log"}
	}
	writeError(w, ae.status, ae.code, ae.msg)
	return ae.status
}

// decode reads a JSON body strictly.
func decode(r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json, not %q", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return errorf(http.StatusBadRequest, "bad_request", "reading the body: %v", err)
	}
	if int64(len(body)) > limit {
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "body larger than %d bytes", limit)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "bad_json", "%v", err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "bad_json", "trailing data after the JSON object")
	}
	return nil
}

func bearer(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(tok)
}

// operator checks the operator token.
func (h *Handler) operator(r *http.Request) error {
	tok := bearer(r)
	if tok == "" {
		return errorf(http.StatusUnauthorized, "unauthorized", "operator token required (Authorization: Bearer …)")
	}
	if !h.cfg.Keys.CheckToken(tok) {
		return errorf(http.StatusForbidden, "forbidden", "wrong operator token")
	}
	return nil
}

// hashSecret is how account secrets are stored: they are 32 random bytes,
// so a plain SHA-256 is enough.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte("farego-account-secret-v1:" + secret))
	return h[:]
}

// accountID reads {id} and checks that the caller is that account's rider
// (or, with allowOperator, the operator).
func (h *Handler) accountID(r *http.Request, allowOperator bool) (uint64, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		return 0, errorf(http.StatusBadRequest, "bad_account", "account id must be a positive integer, got %q", r.PathValue("id"))
	}
	tok := bearer(r)
	if tok == "" {
		return 0, errorf(http.StatusUnauthorized, "unauthorized", "account secret required (Authorization: Bearer …)")
	}
	if allowOperator && h.cfg.Keys.CheckToken(tok) {
		return id, nil
	}
	want, err := h.cfg.Ledger.AccountSecretHash(r.Context(), id)
	if errors.Is(err, ledger.ErrNotFound) || (err == nil && subtle.ConstantTimeCompare(want, hashSecret(tok)) != 1) {
		// The same answer for a missing account and a wrong secret.
		return 0, errorf(http.StatusForbidden, "forbidden", "wrong account or secret")
	}
	if err != nil {
		return 0, err
	}
	return id, nil
}

// Account is an account as the API shows it.
type Account struct {
	ID         uint64 `json:"id"`
	Profile    string `json:"profile"`
	Name       string `json:"name,omitempty"`
	Balance    int64  `json:"balance"`
	Currency   string `json:"currency"`
	Denied     bool   `json:"denied"`
	DenyReason string `json:"deny_reason,omitempty"`
	LastSerial uint32 `json:"last_serial,omitempty"`
	CreatedAt  string `json:"created_at"`
	Rides      []Ride `json:"recent_rides,omitempty"`
}

func toAccount(a ledger.Account) Account {
	return Account{ID: a.ID, Profile: a.Profile.String(), Name: a.Name, Balance: a.Balance, Currency: a.Currency,
		Denied: a.Denied, DenyReason: a.DenyReason, LastSerial: a.LastSerial, CreatedAt: a.CreatedAt.UTC().Format(time.RFC3339)}
}

// Ride is a tap in the rider's history.
type Ride struct {
	TapID      string `json:"tap_id"`
	Time       string `json:"time"`
	ServiceDay string `json:"service_day"`
	Route      string `json:"route"`
	Vehicle    string `json:"vehicle,omitempty"`
	BaseFare   int64  `json:"base_fare"`
	Charge     int64  `json:"charge"`
	Transfer   bool   `json:"transfer,omitempty"`
	Capped     bool   `json:"capped,omitempty"`
	Flag       string `json:"flag,omitempty"`
	CodeHash   string `json:"code_hash"`
}

func toRides(rs []ledger.Ride) []Ride {
	out := make([]Ride, len(rs))
	for i, r := range rs {
		out[i] = Ride{TapID: r.TapID, Time: r.Time.UTC().Format(time.RFC3339Nano), ServiceDay: r.ServiceDay, Route: r.Route,
			Vehicle: r.Vehicle, BaseFare: r.BaseFare, Charge: r.Charge, Transfer: r.Transfer, Capped: r.Capped, Flag: r.Flag,
			CodeHash: r.CodeHash}
	}
	return out
}

func (h *Handler) createAccount(w http.ResponseWriter, r *http.Request) (any, int, error) {
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
	sec := make([]byte, 32)
	rand.Read(sec)
	secret := hex.EncodeToString(sec)
	a, err := h.cfg.Ledger.CreateAccount(r.Context(), ledger.AccountSpec{Profile: p, Name: req.Name, SecretHash: hashSecret(secret)})
	if err != nil {
		return nil, 0, err
	}
	h.log.Info("account created", "account", a.ID, "profile", p.String())
	return map[string]any{"account": toAccount(a), "secret": secret}, http.StatusCreated, nil
}

func (h *Handler) getAccount(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, err := h.accountID(r, true)
	if err != nil {
		return nil, 0, err
	}
	a, err := h.cfg.Ledger.Account(r.Context(), id)
	if err != nil {
		return nil, 0, err
	}
	rides, err := h.cfg.Ledger.Rides(r.Context(), id, 10)
	if err != nil {
		return nil, 0, err
	}
	out := toAccount(a)
	out.Rides = toRides(rides)
	return out, http.StatusOK, nil
}

func (h *Handler) rides(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, err := h.accountID(r, true)
	if err != nil {
		return nil, 0, err
	}
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 10000 {
			return nil, 0, errorf(http.StatusBadRequest, "invalid", "limit must be 1 to 10000")
		}
	}
	rides, err := h.cfg.Ledger.Rides(r.Context(), id, limit)
	if err != nil {
		return nil, 0, err
	}
	return map[string]any{"account": id, "rides": toRides(rides)}, http.StatusOK, nil
}

func (h *Handler) topUp(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if err := h.operator(r); err != nil {
		return nil, 0, err
	}
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "bad_account", "account id must be a positive integer")
	}
	var req struct {
		Amount    int64  `json:"amount"`
		Reference string `json:"reference"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	if req.Amount <= 0 || req.Reference == "" {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "amount must be positive and reference (the payment provider's id) is required")
	}
	a, err := h.cfg.Ledger.TopUp(r.Context(), id, req.Amount, req.Reference)
	if err != nil {
		return nil, 0, err
	}
	// A top-up may lift a negative_balance entry. The publisher coalesces
	// and publishes only when the deny list's version moved.
	h.cfg.Notifier.Changed(record.DocDenyList)
	h.log.Info("top-up", "account", id, "amount", req.Amount)
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

func (h *Handler) issueCredential(w http.ResponseWriter, r *http.Request) (any, int, error) {
	id, err := h.accountID(r, false)
	if err != nil {
		return nil, 0, err
	}
	var req struct {
		RiderPublicKey string `json:"rider_public_key"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, maxBody, &req); err != nil {
			return nil, 0, err
		}
	}
	a, err := h.cfg.Ledger.Account(r.Context(), id)
	if err != nil {
		return nil, 0, err
	}
	if a.Denied || a.Balance < 0 {
		return nil, 0, errorf(http.StatusForbidden, "not_in_good_standing", "account %d cannot get a credential: %s (balance %d)", id, orDefault(a.DenyReason, "denied"), a.Balance)
	}
	var seed []byte
	var riderPub ed25519.PublicKey
	if req.RiderPublicKey != "" {
		riderPub, err = hex.DecodeString(req.RiderPublicKey)
		if err != nil || len(riderPub) != ed25519.PublicKeySize {
			return nil, 0, errorf(http.StatusBadRequest, "invalid", "rider_public_key must be 64 hex digits")
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
	serial, err := h.cfg.Ledger.IssueCredentialSerial(r.Context(), id, na, riderPub)
	if err != nil {
		return nil, 0, err
	}
	c := paycode.Credential{KeyID: keyID, Account: id, Serial: serial, NotBefore: uint32(nb.Unix()), NotAfter: uint32(na.Unix()), Profile: a.Profile}
	copy(c.RiderKey[:], riderPub)
	cred, err := paycode.IssueCredential(issuer, c)
	if err != nil {
		return nil, 0, err
	}
	h.log.Info("credential issued", "account", id, "serial", serial, "key_id", keyID, "rider_key_supplied", seed == nil)
	resp := CredentialResponse{Account: id, Serial: serial, KeyID: keyID, Profile: a.Profile.String(),
		NotBefore: nb.Format(time.RFC3339), NotAfter: na.Format(time.RFC3339), Credential: hex.EncodeToString(cred)}
	if seed != nil {
		resp.TokenSeed = hex.EncodeToString(seed)
	}
	return resp, http.StatusCreated, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// PaymentResponse is a completed online payment.
type PaymentResponse struct {
	ID         uint64 `json:"id"`
	MerchantID string `json:"merchant_id"`
	OrderID    string `json:"order_id"`
	Account    uint64 `json:"account"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
	Status     string `json:"status"`
	CreatedAt  string `json:"created_at"`
}

func (h *Handler) pay(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if err := h.operator(r); err != nil {
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
	d := h.verifier.Verify(strings.TrimRight(req.Code, "\r\n"), h.cfg.Now(), h.cfg.Keys.Keyring(), h.cfg.Policy)
	if !d.Accepted {
		h.log.Info("payment refused", "reason", d.Reason, "merchant", req.MerchantID, "code_hash", paycode.ShortHash(req.Code))
		return nil, 0, errorf(http.StatusUnprocessableEntity, "invalid_code", "%s", d.Reason)
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
	// zero, and a refusal writes nothing.
	p, err := h.cfg.Ledger.Pay(r.Context(), ledger.PaymentRequest{MerchantID: req.MerchantID, OrderID: req.OrderID,
		Account: c.Account, Serial: c.Serial, CodeKey: c.ID().Key(), CodeHash: paycode.ShortHash(req.Code),
		Amount: req.Amount, Currency: req.Currency})
	if err != nil {
		return nil, 0, err
	}
	h.log.Info("payment", "id", p.ID, "merchant", p.MerchantID, "account", p.Account, "amount", p.Amount)
	return PaymentResponse{ID: p.ID, MerchantID: p.MerchantID, OrderID: p.OrderID, Account: p.Account, Amount: p.Amount,
		Currency: p.Currency, Status: p.Status, CreatedAt: p.CreatedAt.UTC().Format(time.RFC3339)}, http.StatusCreated, nil
}

func (h *Handler) registerDevice(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if err := h.operator(r); err != nil {
		return nil, 0, err
	}
	var req struct {
		ID        string `json:"id"`
		PublicKey string `json:"public_key"`
		Replace   bool   `json:"replace"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	if err := record.ValidDeviceID(req.ID); err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "%v", err)
	}
	pub, err := hex.DecodeString(req.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "public_key must be 64 hex digits (Ed25519)")
	}
	if err := h.cfg.Ledger.RegisterDevice(r.Context(), req.ID, pub, req.Replace); err != nil {
		return nil, 0, err
	}
	h.log.Info("device registered", "device", req.ID, "replace", req.Replace)
	out := map[string]any{"id": req.ID, "public_key": req.PublicKey}
	if h.cfg.DeviceCredentials != nil {
		out["mqtt_username"], out["mqtt_password"] = h.cfg.DeviceCredentials(req.ID)
	}
	return out, http.StatusCreated, nil
}

// Device is a validator as the operator sees it.
type Device struct {
	ID              string            `json:"id"`
	RegisteredAt    string            `json:"registered_at"`
	Online          bool              `json:"online"`
	StatusAt        string            `json:"status_at,omitempty"`
	QueueDepth      int               `json:"queue_depth"`
	OldestUnsentSec int64             `json:"oldest_unsent_s"`
	LastSeq         uint64            `json:"last_seq"`
	LastSync        string            `json:"last_sync,omitempty"`
	Software        string            `json:"software,omitempty"`
	OutOfService    string            `json:"out_of_service,omitempty"`
	Versions        map[string]uint64 `json:"versions,omitempty"`
}

func timeOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func (h *Handler) devices(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if err := h.operator(r); err != nil {
		return nil, 0, err
	}
	ds, err := h.cfg.Ledger.Devices(r.Context())
	if err != nil {
		return nil, 0, err
	}
	out := make([]Device, len(ds))
	for i, d := range ds {
		out[i] = Device{ID: d.ID, RegisteredAt: timeOrEmpty(d.RegisteredAt), Online: d.Status.Online, StatusAt: timeOrEmpty(d.StatusAt),
			QueueDepth: d.Status.QueueDepth, OldestUnsentSec: int64(d.Status.OldestUnsent / time.Second), LastSeq: d.LastSeq,
			LastSync: timeOrEmpty(d.LastSync), Software: d.Status.Software, OutOfService: d.Status.OutOfService, Versions: d.Status.Versions}
	}
	return map[string]any{"devices": out}, http.StatusOK, nil
}

// replay asks a device to resend records from its archive; by default from
// the record after the last one the ledger knows of (after a restore, that
// is where the gap starts) up to its latest.
func (h *Handler) replay(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if err := h.operator(r); err != nil {
		return nil, 0, err
	}
	if h.cfg.Replay == nil {
		return nil, 0, errorf(http.StatusServiceUnavailable, "unavailable", "replay needs the MQTT link")
	}
	var req struct {
		From uint64 `json:"from"`
		To   uint64 `json:"to"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, maxBody, &req); err != nil {
			return nil, 0, err
		}
	}
	d, err := h.cfg.Ledger.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, 0, err
	}
	if d.Status.Epoch == "" || !d.Status.Online {
		return nil, 0, errorf(http.StatusConflict, "device_offline", "device %s is not online (a replay request is not kept for an offline device)", d.ID)
	}
	if req.From == 0 {
		req.From = d.LastSeq + 1
	}
	if req.To == 0 {
		req.To = ^uint64(0) >> 1
	}
	if req.From > req.To {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "from %d is after to %d", req.From, req.To)
	}
	if err := h.cfg.Replay(r.Context(), d.ID, d.Status.Epoch, req.From, req.To); err != nil {
		return nil, 0, err
	}
	h.log.Info("replay requested", "device", d.ID, "from", req.From, "to", req.To)
	return map[string]any{"device": d.ID, "epoch": d.Status.Epoch, "from": req.From, "to": req.To}, http.StatusAccepted, nil
}

func (h *Handler) getFares(w http.ResponseWriter, r *http.Request) (any, int, error) {
	t, err := h.cfg.Ledger.LatestFareTable(r.Context())
	if errors.Is(err, ledger.ErrNoFareTable) {
		return nil, 0, errorf(http.StatusNotFound, "not_found", "no fare table uploaded yet")
	}
	if err != nil {
		return nil, 0, err
	}
	return t, http.StatusOK, nil
}

func (h *Handler) putFares(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if err := h.operator(r); err != nil {
		return nil, 0, err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFareBody+1))
	if err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "bad_request", "reading the body: %v", err)
	}
	if len(body) > maxFareBody {
		return nil, 0, errorf(http.StatusRequestEntityTooLarge, "too_large", "fare table larger than %d bytes", maxFareBody)
	}
	t, err := fare.Parse(body)
	if err != nil {
		return nil, 0, err
	}
	if err := h.cfg.Ledger.PutFareTable(r.Context(), t); err != nil {
		return nil, 0, err
	}
	h.log.Info("fare table uploaded", "version", t.Version)
	h.cfg.Notifier.Changed(record.DocFares)
	return map[string]any{"version": t.Version}, http.StatusOK, nil
}

func (h *Handler) getKeyring(w http.ResponseWriter, r *http.Request) (any, int, error) {
	return h.cfg.Keys.Keyring(), http.StatusOK, nil
}

func (h *Handler) rotate(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if err := h.operator(r); err != nil {
		return nil, 0, err
	}
	kr, err := h.cfg.Keys.Rotate(h.cfg.Now(), 0, h.cfg.CredentialTTL+time.Hour)
	if err != nil {
		return nil, 0, err
	}
	h.log.Info("issuer key rotated", "version", kr.Version())
	h.cfg.Notifier.Changed(record.DocKeyring)
	return kr, http.StatusOK, nil
}

// DenyEntry is a deny-list entry.
type DenyEntry struct {
	Account uint64 `json:"account"`
	Serial  uint32 `json:"serial,omitempty"`
	Reason  string `json:"reason"`
	Since   string `json:"since,omitempty"`
}

func (h *Handler) denyList(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if err := h.operator(r); err != nil {
		return nil, 0, err
	}
	dl, err := h.cfg.Ledger.DenyList(r.Context())
	if err != nil {
		return nil, 0, err
	}
	out := make([]DenyEntry, len(dl.Entries))
	for i, e := range dl.Entries {
		out[i] = DenyEntry{Account: e.Account, Serial: e.Serial, Reason: e.Reason, Since: timeOrEmpty(e.Since)}
	}
	return map[string]any{"version": dl.Version, "entries": out}, http.StatusOK, nil
}

func (h *Handler) denyChange(r *http.Request, fn func(ctx context.Context, account uint64, serial uint32, reason string) error) (any, int, error) {
	if err := h.operator(r); err != nil {
		return nil, 0, err
	}
	var req DenyEntry
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	if req.Account == 0 || req.Reason == "" {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "account and reason are required")
	}
	if err := fn(r.Context(), req.Account, req.Serial, req.Reason); err != nil {
		return nil, 0, err
	}
	h.cfg.Notifier.Changed(record.DocDenyList)
	dl, err := h.cfg.Ledger.DenyList(r.Context())
	if err != nil {
		return nil, 0, err
	}
	return map[string]any{"version": dl.Version}, http.StatusOK, nil
}

func (h *Handler) deny(w http.ResponseWriter, r *http.Request) (any, int, error) {
	return h.denyChange(r, h.cfg.Ledger.Deny)
}

func (h *Handler) undeny(w http.ResponseWriter, r *http.Request) (any, int, error) {
	return h.denyChange(r, h.cfg.Ledger.Undeny)
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) (any, int, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	checks := map[string]string{}
	status := http.StatusOK
	if _, err := h.cfg.Ledger.Stats(ctx); err != nil {
		checks["ledger"], status = err.Error(), http.StatusServiceUnavailable
	} else {
		checks["ledger"] = "ok"
	}
	for name, fn := range h.cfg.Health {
		if err := fn(ctx); err != nil {
			checks[name], status = err.Error(), http.StatusServiceUnavailable
		} else {
			checks[name] = "ok"
		}
	}
	return map[string]any{"ok": status == http.StatusOK, "checks": checks}, status, nil
}
