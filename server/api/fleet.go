package api

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

// getFares answers the latest fare table. Anyone may ask, so the answer is
// encoded once per version and kept: parsing and encoding a large table for
// each request cost 73 ms of CPU for a 600 KB table (an attack review: a
// client asking 30 times a second kept two cores busy).
func (h *Handler) getFares(w http.ResponseWriter, r *http.Request) (any, int, error) {
	v, t, err := h.cfg.Ledger.LatestFareTableShared(r.Context())
	if errors.Is(err, ledger.ErrNoFareTable) {
		return nil, 0, errorf(http.StatusNotFound, "not_found", "no fare table uploaded yet")
	}
	if err != nil {
		return nil, 0, err
	}
	if c := h.fares.Load(); c != nil && c.version == v {
		return c.body, http.StatusOK, nil
	}
	body, err := encodeJSON(t)
	if err != nil {
		return nil, 0, err
	}
	h.fares.Store(&encodedFares{version: v, body: body})
	return body, http.StatusOK, nil
}

// encodedFares is the answer of GET /v1/fares for one table version.
type encodedFares struct {
	version uint64
	body    rawJSON
}

func (h *Handler) putFares(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	body, err := readBody(r, maxFareBody)
	if err != nil {
		return nil, 0, err
	}
	t, err := fare.Parse(body) // refuses a key named twice too
	if err != nil {
		return nil, 0, err
	}
	// An older table sent again is stored already and changes nothing:
	// answering 200 {"version": 1} told an operator rolling a mistaken
	// table back with the earlier file that it was back in force, while
	// the mistaken one went on charging. A retry of the latest is still 200.
	latest, _, err := h.cfg.Ledger.LatestFareTableShared(r.Context())
	if err != nil && !errors.Is(err, ledger.ErrNoFareTable) {
		return nil, 0, err
	}
	if err == nil && t.Version < latest {
		return nil, 0, errorf(http.StatusConflict, "stale_version",
			"fare table version %d is older than version %d, in force now, and publishing it changes nothing: to put its fares back in force, publish them as version %d",
			t.Version, latest, latest+1)
	}
	if err := h.cfg.Ledger.PutFareTable(r.Context(), t); err != nil {
		return nil, 0, err
	}
	h.audit(r, p, "put_fares", strconv.FormatUint(t.Version, 10), fmt.Sprintf("currency %s, %d routes", t.Currency, len(t.Fares)))
	h.log.Info("fare table uploaded", "version", t.Version)
	h.cfg.Notifier.Changed(record.DocFares)
	out := map[string]any{"version": t.Version}
	if above := aboveDailyCap(t); len(above) > 0 {
		// The console's preview marks them; a script was told nothing,
		// and the cap is what such a rider pays from the first ride.
		h.log.Warn("fare table has fares above their profile's daily cap: those riders pay the cap from the first ride",
			"version", t.Version, "fares", len(above))
		out["above_daily_cap"] = above
	}
	if left := h.devicesLeftOut(r.Context(), t); len(left) > 0 {
		// The console's confirmation names them; a script was told nothing.
		h.log.Warn("fare table leaves devices out of service: their route is not in its routes", "version", t.Version,
			"devices", len(left), "first", left[:min(len(left), 5)])
		out["out_of_service"] = left[:min(len(left), maxLeftOut)]
		out["out_of_service_count"] = len(left)
	}
	return out, http.StatusOK, nil
}

// CappedFare is a fare of a table above its profile's daily cap.
type CappedFare struct {
	Route    string `json:"route"`
	Profile  string `json:"profile"`
	Fare     int64  `json:"fare"`
	DailyCap int64  `json:"daily_cap"`
}

// aboveDailyCap lists the fares of t above their profile's daily cap, by
// route and profile (at most a table's routes times its profiles).
func aboveDailyCap(t *fare.Table) []CappedFare {
	var out []CappedFare
	for _, route := range slices.Sorted(maps.Keys(t.Fares)) {
		for _, p := range slices.Sorted(maps.Keys(t.Fares[route])) {
			if limit, ok := t.DailyCap[p]; ok && t.Fares[route][p] > limit {
				out = append(out, CappedFare{Route: route, Profile: p, Fare: t.Fares[route][p], DailyCap: limit})
			}
		}
	}
	return out
}

// maxLeftOut bounds the device ids a fare upload's answer names.
const maxLeftOut = 100

// devicesLeftOut lists the devices the table t puts out of service
// (ledger.DevicesLeftOut): nothing when the fleet cannot be read in 5 s
// (logged: the table is stored all the same).
func (h *Handler) devicesLeftOut(ctx context.Context, t *fare.Table) []string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	left, err := h.cfg.Ledger.DevicesLeftOut(ctx, t)
	if err != nil {
		h.log.Warn("reading the fleet for the routes a fare table leaves out failed", "err", err)
		return nil
	}
	ids := make([]string, len(left))
	for i, d := range left {
		ids[i] = d.Device
	}
	return ids
}

// getFleet answers the fleet's public key (no secret: it is on every
// validator), so that provisioning can check the fleet directory it is
// given is the one this server signs downlinks and acks with.
func (h *Handler) getFleet(w http.ResponseWriter, r *http.Request) (any, int, error) {
	return map[string]string{"fleet_public_key": hex.EncodeToString(h.cfg.Keys.FleetPublic())}, http.StatusOK, nil
}

func (h *Handler) getKeyring(w http.ResponseWriter, r *http.Request) (any, int, error) {
	return h.cfg.Keys.Keyring(), http.StatusOK, nil
}

// MaxKeyActivation bounds a rotation's activate_in.
const MaxKeyActivation = 30 * 24 * time.Hour

func (h *Handler) rotate(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	activate := max(h.cfg.KeyActivation, 0)
	if r.ContentLength != 0 { // no body, or {}: the configured delay
		var req struct {
			ActivateIn *string `json:"activate_in"`
		}
		if err := decode(r, maxBody, &req); err != nil {
			return nil, 0, err
		}
		if req.ActivateIn != nil {
			d, err := time.ParseDuration(*req.ActivateIn)
			if err != nil || d < 0 || d > MaxKeyActivation {
				return nil, 0, errorf(http.StatusBadRequest, "invalid", "activate_in %q: a duration from 0s to %v, like \"24h\" or \"0s\" (at once)", *req.ActivateIn, MaxKeyActivation)
			}
			activate = d
		}
	}
	before := h.cfg.Keys.Keyring()
	now := h.cfg.Now()
	kr, err := h.cfg.Keys.RotateShared(r.Context(), h.cfg.Ledger, now, 0, h.cfg.CredentialTTL+time.Hour, activate)
	if errors.Is(err, keys.ErrRotationRace) || errors.Is(err, keys.ErrForgedKeyring) {
		return nil, 0, errorf(http.StatusConflict, "conflict", "%v", err)
	}
	if err != nil {
		return nil, 0, err
	}
	// The older keys' windows may end before the delay does: the new key
	// then signs from their end (keys.Dir.RotateShared).
	signs := keys.SignsFrom(kr)
	early := ""
	if signs.Before(now.Truncate(time.Second).Add(activate.Truncate(time.Second))) {
		early = fmt.Sprintf(" (sooner than the %v asked for: the older keys' windows end then)", activate)
	}
	h.audit(r, p, "rotate_keyring", strconv.FormatUint(kr.Version(), 10), "the new key signs from "+signs.UTC().Format(time.RFC3339)+early+
		superseded(before, kr, now))
	h.log.Info("issuer key rotated", "version", kr.Version())
	h.cfg.Notifier.Changed(record.DocKeyring)
	return kr, http.StatusOK, nil
}

// superseded says which keys of before, not yet signing at now, the
// rotation to after cut short: their audit entries named a time from
// which they would sign that never comes (an operator review: a 720 h
// rotation, then one at once, left the first entry saying the key signs
// from a date a month away).
func superseded(before, after *paycode.Keyring, now time.Time) string {
	out := ""
	for _, k := range before.Keys() {
		if !k.NotBefore.After(now) {
			continue
		}
		if n, ok := after.Lookup(k.ID); ok && n.NotAfter.Before(k.NotAfter) {
			out += fmt.Sprintf("; key %d, which was to sign from %s, is superseded (valid until %s)", k.ID,
				k.NotBefore.UTC().Format(time.RFC3339), n.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return out
}

// DenyEntry is a deny-list entry.
type DenyEntry struct {
	Account uint64 `json:"account"`
	Serial  uint32 `json:"serial,omitempty"`
	Reason  string `json:"reason"`
	Since   string `json:"since,omitempty"`
	Expires string `json:"expires,omitempty"`
}

func (h *Handler) denyList(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	dl, err := h.cfg.Ledger.DenyList(r.Context())
	if err != nil {
		return nil, 0, err
	}
	return map[string]any{"version": dl.Version, "entries": toDenyEntries(dl.Entries)}, http.StatusOK, nil
}

// toDenyEntries is the API's form of deny-list entries.
func toDenyEntries(es []ledger.DenyEntry) []DenyEntry {
	out := make([]DenyEntry, len(es))
	for i, e := range es {
		out[i] = DenyEntry{Account: e.Account, Serial: e.Serial, Reason: e.Reason, Since: timeOrEmpty(e.Since), Expires: timeOrEmpty(e.Expires)}
	}
	return out
}

func (h *Handler) denyChange(r *http.Request, action string, fn func(ctx context.Context, account uint64, serial uint32, reason string) error) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	var req struct {
		Account uint64 `json:"account"`
		Serial  uint32 `json:"serial"`
		Reason  string `json:"reason"`
		Note    string `json:"note"` // for the audit trail: why
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	if req.Account == 0 || (req.Reason == "" && action == "deny") {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "account and reason are required")
	}
	if err := ledger.CheckDenyNote(req.Note); err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "%v", err)
	}
	if err := fn(r.Context(), req.Account, req.Serial, req.Reason); err != nil {
		return nil, 0, err
	}
	h.cfg.Notifier.Changed(record.DocDenyList)
	detail := fmt.Sprintf("serial %d reason %q", req.Serial, req.Reason)
	if req.Note != "" {
		detail += fmt.Sprintf(" note %q", req.Note)
	}
	h.audit(r, p, action, strconv.FormatUint(req.Account, 10), detail)
	dl, err := h.cfg.Ledger.DenyList(r.Context())
	if err != nil {
		return nil, 0, err
	}
	out := map[string]any{"version": dl.Version}
	if action == "undeny" {
		// Clearing the account's entry leaves its credentials' (a reused
		// code's pass, which also blocks new credentials): an operator who
		// cleared an innocent rider was told 200 and nothing more while the
		// rider stayed refused on every bus and could fetch no new pass.
		left, err := h.cfg.Ledger.DenyEntries(r.Context(), req.Account)
		if err != nil {
			return nil, 0, err
		}
		if len(left) > 0 {
			out["still_denied"] = toDenyEntries(left)
		}
	}
	return out, http.StatusOK, nil
}

func (h *Handler) deny(w http.ResponseWriter, r *http.Request) (any, int, error) {
	return h.denyChange(r, "deny", h.cfg.Ledger.Deny)
}

func (h *Handler) undeny(w http.ResponseWriter, r *http.Request) (any, int, error) {
	return h.denyChange(r, "undeny", h.cfg.Ledger.Undeny)
}

// Token is an API credential as the API shows it (never the token itself,
// but once, when it is made).
type Token struct {
	ID         string `json:"id"`
	Role       string `json:"role"`
	MerchantID string `json:"merchant_id,omitempty"`
	Name       string `json:"name,omitempty"`
	Created    string `json:"created"`
	Revoked    string `json:"revoked,omitempty"`
	Token      string `json:"token,omitempty"`
}

func toToken(t ledger.APIToken) Token {
	return Token{ID: t.ID, Role: t.Role, MerchantID: t.MerchantID, Name: t.Name, Created: timeOrEmpty(t.Created),
		Revoked: timeOrEmpty(t.Revoked)}
}

// CreateToken makes a new API credential and returns it with its token
// (shown this once; the ledger keeps only its hash).
func CreateToken(ctx context.Context, l *ledger.Store, role, merchant, name string) (Token, error) {
	id, tok := newToken()
	sum := sha256Sum(tok)
	t, err := l.CreateToken(ctx, ledger.APIToken{ID: id, Role: role, MerchantID: merchant, Name: name}, sum)
	if err != nil {
		return Token{}, err
	}
	out := toToken(t)
	out.Token = tok
	return out, nil
}

func (h *Handler) createToken(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	var req struct {
		Role       string `json:"role"`
		MerchantID string `json:"merchant_id"`
		Name       string `json:"name"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	t, err := CreateToken(r.Context(), h.cfg.Ledger, req.Role, req.MerchantID, req.Name)
	if err != nil {
		return nil, 0, err
	}
	h.audit(r, p, "create_token", t.ID, fmt.Sprintf("role %s merchant %q name %q", t.Role, t.MerchantID, t.Name))
	return t, http.StatusCreated, nil
}

func (h *Handler) listTokens(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	f, err := tokenFilter(r)
	if err != nil {
		return nil, 0, err
	}
	ts, more, err := h.cfg.Ledger.TokensPage(r.Context(), f)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "after must be the id of a token (the last one of the page before: next_after)")
	}
	if err != nil {
		return nil, 0, err
	}
	out := make([]Token, len(ts))
	for i, t := range ts {
		out[i] = toToken(t)
	}
	resp := map[string]any{"tokens": out}
	if more {
		resp["next_after"] = ts[len(ts)-1].ID
	}
	return resp, http.StatusOK, nil
}

// tokenFilter reads GET /v1/tokens's ?limit, after, role, merchant_id and
// in_force.
func tokenFilter(r *http.Request) (ledger.TokenFilter, error) {
	q := r.URL.Query()
	var f ledger.TokenFilter
	var err error
	if f.Limit, err = limitParam(r, ledger.MaxTokensPage, ledger.MaxTokensPage); err != nil {
		return f, err
	}
	f.After, f.Role, f.Merchant = q.Get("after"), q.Get("role"), q.Get("merchant_id")
	switch f.Role {
	case "", ledger.RoleOperator, ledger.RolePayments, ledger.RoleMerchant, ledger.RoleAuditor:
	default:
		return f, errorf(http.StatusBadRequest, "invalid", "role must be %s, %s, %s or %s",
			ledger.RoleOperator, ledger.RolePayments, ledger.RoleMerchant, ledger.RoleAuditor)
	}
	if len(f.After) > 64 || len(f.Merchant) > 256 {
		return f, errorf(http.StatusBadRequest, "invalid", "after or merchant_id too long")
	}
	if s := q.Get("in_force"); s != "" {
		if f.InForce, err = strconv.ParseBool(s); err != nil {
			return f, errorf(http.StatusBadRequest, "invalid", "in_force must be true or false")
		}
	}
	return f, nil
}

func (h *Handler) revokeToken(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	id := r.PathValue("id")
	now, err := h.cfg.Ledger.RevokeTokenOnce(r.Context(), id)
	if err != nil {
		return nil, 0, err
	}
	if now {
		h.audit(r, p, "revoke_token", id, "") // revoked before: nothing changed, nothing to audit
	}
	return map[string]any{"id": id, "revoked": true, "already": !now}, http.StatusOK, nil
}

// AuditEntry is one line of the audit trail.
type AuditEntry struct {
	ID     uint64 `json:"id"`
	At     string `json:"at"`
	Actor  string `json:"actor"`
	Action string `json:"action"`
	Target string `json:"target,omitempty"`
	Detail string `json:"detail,omitempty"`
}

func (h *Handler) auditLog(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	before, err := beforeParam(r, "an entry id")
	if err != nil {
		return nil, 0, err
	}
	es, err := h.cfg.Ledger.AuditLog(r.Context(), before, 100)
	if err != nil {
		return nil, 0, err
	}
	out := make([]AuditEntry, len(es))
	for i, e := range es {
		out[i] = AuditEntry{ID: e.ID, At: timeOrEmpty(e.At), Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail}
	}
	return map[string]any{"entries": out}, http.StatusOK, nil
}
