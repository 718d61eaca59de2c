package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/keyfile"
)

// An action is a change the console makes through the JSON API. A POST to
// act/NAME without confirm=yes shows what it will do and asks; with it,
// the API does it.
type action struct {
	// prepare reads and checks the form and says what the request will
	// be; a problem makes an error page (nothing done).
	prepare func(h *Handler, r *http.Request) (*plan, error)
}

// plan is one prepared API request and what the operator is asked.
type plan struct {
	Title   string // "Revoke device bus-1?"
	Explain string // what happens then
	Button  string // "Revoke the device"
	Danger  bool
	Fields  []field // carried to the confirmation's form
	Asks    []field // asked on the confirmation's form (a text each, required)
	Back    string  // where to go back to (below the prefix)
	Changes []fareChange
	Invalid string // the preview found the change invalid: no button

	method, path string
	body         []byte // JSON; nil: none
	done         func(resp map[string]any) result
}

type field struct{ Name, Value, Label string }

// result is what the result page shows.
type result struct {
	Message     string
	Secret      string // shown this once (a token, an MQTT password)
	SecretLabel string
}

// errInput is an input the console refuses before asking the API.
type errInput struct{ msg string }

func (e errInput) Error() string { return e.msg }

func badInput(format string, a ...any) error { return errInput{fmt.Sprintf(format, a...)} }

func formUint(r *http.Request, name string, required bool, limit uint64) (uint64, error) {
	s := strings.TrimSpace(r.PostFormValue(name))
	if s == "" && !required {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > limit || (required && v == 0) {
		return 0, badInput("%s must be a positive whole number", name)
	}
	return v, nil
}

func jsonBody(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

var actions = map[string]action{
	"deny":           {prepareDeny(true)},
	"undeny":         {prepareDeny(false)},
	"revoke_device":  {prepareRevokeDevice},
	"replace_device": {prepareReplaceDevice},
	"replay":         {prepareReplay},
	"replay_all":     {prepareReplayAll},
	"assign":         {prepareAssign},
	"publish_fares":  {preparePublishFares},
	"rotate_keyring": {prepareRotate},
	"create_token":   {prepareCreateToken},
	"revoke_token":   {prepareRevokeToken},
	"set_profile":    {prepareSetProfile},
	"refund":         {prepareRefund},
	"void":           {prepareVoid},
}

// prepareVoid voids a wrongly charged tap (the rider was not on that bus,
// a faulty reader): POST /v1/taps/void. The reason is asked on the
// confirmation and goes to the audit trail.
func prepareVoid(h *Handler, r *http.Request) (*plan, error) {
	account, err := formUint(r, "account", true, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	tap := strings.TrimSpace(r.PostFormValue("tap"))
	if tap == "" || len(tap) > ledger.MaxTapID {
		return nil, badInput("give the tap's id")
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	switch {
	case len(reason) > ledger.MaxVoidReason:
		return nil, badInput("the reason is longer than %d bytes", ledger.MaxVoidReason)
	case reason == "" && r.PostFormValue("confirm") == "yes":
		return nil, badInput("say why the tap is voided (kept in the audit trail)")
	}
	currency := h.cfg.Ledger.Currency()
	return &plan{Title: "Void tap " + tap + "?", Danger: true, Back: "accounts/" + strconv.FormatUint(account, 10),
		Explain: "Its fare comes back to the rider's account and the rider's service day is rated again as if the tap had " +
			"never been charged: a transfer it started or the daily cap may make later rides of the day cost more, so " +
			"what comes back is the net change. It cannot be undone. The audit log records who voided it and why.",
		Button: "Void the tap",
		Fields: []field{{"account", fmt.Sprint(account), "Account"}, {"tap", tap, "Tap"}},
		Asks:   []field{{"reason", reason, "Why it is voided (kept in the audit trail)"}},
		method: http.MethodPost, path: "/v1/taps/void",
		body: jsonBody(map[string]any{"tap": tap, "reason": reason}),
		done: func(resp map[string]any) result {
			if b, _ := resp["already_void"].(bool); b {
				return result{Message: "Tap " + tap + " was void already: nothing changed."}
			}
			return result{Message: fmt.Sprintf("Tap %s is void: %s came back to account %d.", tap,
				moneyField(resp, "returned", currency), account)}
		}}, nil
}

// prepareRefund gives back (part of) a shop's online payment to the
// rider: a complaint the shop will not settle. The amount is typed in the
// ledger's currency; the refund id is made when the question is asked and
// carried to the confirmation, so a confirmation sent twice is one refund.
// refundable refuses now, not after the confirmation, a refund the ledger
// would refuse then (a new user's review: 5.00 of a 4.00 payment was
// asked, confirmed, then refused): of no payment, of another account's,
// beyond what is left of it, or one more than ledger.MaxRefundsPerPayment
// (ledger.CheckRefund, the ledger's own rule). A refund id already used
// is a retry, which the ledger answers as it did. The ledger still
// decides: this is advice. It returns the payment's amount and what its
// refunds came to before (the question shows both: 50.00 typed for 5.00
// of a 60.00 payment is within it, and read only as a number beside the
// payment's).
func (h *Handler) refundable(ctx context.Context, merchant, order string, account uint64, refundID string, amount int64,
	currency string) (paid, refunded int64, retry bool, err error) {
	o, err := h.cfg.Ledger.PaymentByOrder(ctx, merchant, order)
	if errors.Is(err, ledger.ErrNotFound) {
		return 0, 0, false, badInput("there is no payment of %s's order %s", merchant, order)
	} else if err != nil {
		return 0, 0, false, err
	}
	if o.Account != account {
		return 0, 0, false, badInput("%s's order %s was paid by account %d, not %d", merchant, order, o.Account, account)
	}
	refunds, err := h.cfg.Ledger.Refunds(ctx, o.ID)
	if err != nil {
		return 0, 0, false, err
	}
	for _, rf := range refunds {
		if rf.RefundID == refundID {
			retry = true
		}
	}
	refunded = ledger.RefundedOf(refunds)
	if retry {
		return o.Amount, refunded, true, nil
	}
	if err := ledger.CheckRefund(o, refunded, len(refunds), amount); err != nil {
		if left := o.Amount - refunded; amount > left { // said as the console says it
			return 0, 0, false, badInput("only %s of the payment's %s is left to refund", feedback.FormatAmount(left, currency),
				feedback.FormatAmount(o.Amount, currency))
		}
		return 0, 0, false, badInput("%s", strings.TrimPrefix(err.Error(), ledger.ErrOverRefund.Error()+": "))
	}
	return o.Amount, refunded, retry, nil
}

func prepareRefund(h *Handler, r *http.Request) (*plan, error) {
	account, err := formUint(r, "account", true, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	merchant, order := r.PostFormValue("merchant"), r.PostFormValue("order")
	if merchant == "" || order == "" {
		return nil, badInput("the payment's merchant and order are required")
	}
	currency := h.cfg.Ledger.Currency()
	// As the settlement CLI reads it: "1250" is asked to say 1,250.00 or
	// 12.50 (the API's minor units), "1.80 EUR" is taken (it refunded
	// 1,250.00 and refused the second).
	amount, err := feedback.ParseAmount(r.PostFormValue("amount"), currency, ledger.MaxAmount)
	if err != nil {
		return nil, badInput("the amount to refund: %v", err)
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	refundID := r.PostFormValue("refund_id")
	if refundID == "" {
		b := make([]byte, 8)
		rand.Read(b)
		refundID = "console-" + hex.EncodeToString(b)
	}
	paid, refunded, retry, err := h.refundable(r.Context(), merchant, order, account, refundID, amount, currency)
	if err != nil {
		return nil, err
	}
	shown := feedback.FormatAmount(amount, currency)
	what := fmt.Sprintf("%s's order %s", merchant, order)
	// The payment beside the amount typed: the question said the amount
	// alone, so a slip of a digit within the payment (50.00 for 5.00 of
	// 60.00) read as right as the amount meant.
	of := fmt.Sprintf("The payment was %s", feedback.FormatAmount(paid, currency))
	switch {
	case retry:
		of += fmt.Sprintf("; its refunds came to %s, this one among them. ", feedback.FormatAmount(refunded, currency))
	case refunded > 0:
		of += fmt.Sprintf("; %s of it was refunded before: this refund of %s leaves %s to refund. ", feedback.FormatAmount(refunded, currency),
			shown, feedback.FormatAmount(paid-refunded-amount, currency))
	default:
		of += fmt.Sprintf(": this refund of %s leaves %s to refund. ", shown, feedback.FormatAmount(paid-amount, currency))
	}
	return &plan{Title: fmt.Sprintf("Refund %s of %s?", shown, what), Back: "accounts/" + strconv.FormatUint(account, 10),
		Explain: of + "The money goes back to the rider's account at once, as a refund posting on the payment; the payment's refunds " +
			"can never come to more than it. The audit log records who refunded it.",
		Button: "Refund " + shown,
		Fields: []field{{"account", fmt.Sprint(account), "Account"}, {"merchant", merchant, "Merchant"}, {"order", order, "Order"},
			{"amount", feedback.FormatNumber(amount, currency), "Amount"}, {"reason", reason, "Reason"}, {"refund_id", refundID, "Refund id"}},
		method: http.MethodPost, path: "/v1/payments/" + pathSegment(merchant) + "/" + pathSegment(order) + "/refunds",
		body: jsonBody(map[string]any{"refund_id": refundID, "amount": amount, "reason": reason}),
		done: func(resp map[string]any) result {
			return result{Message: fmt.Sprintf("Refunded %s of %s: its refunds come to %s, %s left.", shown, what,
				moneyField(resp, "refunded", currency), moneyField(resp, "refundable", currency))}
		}}, nil
}

// pathSegment escapes s as one segment of a URL path: "." and ".." too,
// which url.PathEscape leaves as they are and a router would take for the
// current and the parent directory.
func pathSegment(s string) string {
	if s == "." || s == ".." {
		return strings.Repeat("%2E", len(s))
	}
	return url.PathEscape(s)
}

// moneyField formats the amount resp[key] (a JSON number of minor units).
func moneyField(resp map[string]any, key, currency string) string {
	n, _ := resp[key].(json.Number)
	v, err := n.Int64()
	if err != nil {
		return "?"
	}
	return feedback.FormatAmount(v, currency)
}

// prepareSetProfile confirms (or sets) an account's rider profile: the
// operator has checked the rider's eligibility for a reduced fare.
func prepareSetProfile(h *Handler, r *http.Request) (*plan, error) {
	account, err := formUint(r, "account", true, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	profile := strings.TrimSpace(r.PostFormValue("profile"))
	if _, err := paycode.ParseProfile(profile); err != nil {
		return nil, badInput("profile must be adult, child, senior or student")
	}
	what := fmt.Sprintf("account %d", account)
	return &plan{Title: fmt.Sprintf("Confirm the %s fare of %s?", profile, what), Back: "accounts/" + strconv.FormatUint(account, 10),
		Explain: "Confirm only after checking the rider's eligibility (an identity card, a student card). The account's next credentials " +
			"carry the " + profile + " fare; those it holds keep the fare they carry until they expire (a day at most). The audit log records who confirmed it.",
		Button: "Confirm the " + profile + " fare",
		Fields: []field{{"account", fmt.Sprint(account), "Account"}, {"profile", profile, "Profile"}},
		method: http.MethodPut, path: fmt.Sprintf("/v1/accounts/%d/profile", account), body: jsonBody(map[string]string{"profile": profile}),
		done: func(map[string]any) result {
			return result{Message: fmt.Sprintf("The %s fare of %s is confirmed.", profile, what)}
		}}, nil
}

func prepareDeny(deny bool) func(h *Handler, r *http.Request) (*plan, error) {
	return func(h *Handler, r *http.Request) (*plan, error) {
		account, err := formUint(r, "account", true, math.MaxInt64)
		if err != nil {
			return nil, err
		}
		serial, err := formUint(r, "serial", false, math.MaxUint32)
		if err != nil {
			return nil, err
		}
		reason := strings.TrimSpace(r.PostFormValue("reason"))
		if deny && reason == "" {
			return nil, badInput("give a reason (a word like lost_phone or fraud)")
		}
		if deny && ledger.CheckDenyReason(reason) != nil {
			// Told now, not after the confirmation.
			return nil, badInput("the reason %q must be one word of a-z, 0-9 and _ (like lost_phone or fraud)", reason)
		}
		note := strings.TrimSpace(r.PostFormValue("note"))
		if err := ledger.CheckDenyNote(note); err != nil {
			return nil, badInput("the note: %v", err)
		}
		if !deny && note == "" && r.PostFormValue("confirm") == "yes" {
			return nil, badInput("say why the entry is cleared (a few words, kept in the audit trail)")
		}
		if deny {
			// So is an account that does not exist (a typo): the
			// confirmation asked to deny it, and only then failed.
			if _, err := h.cfg.Ledger.Account(r.Context(), account); errors.Is(err, ledger.ErrNotFound) {
				return nil, badInput("there is no account %d", account)
			} else if err != nil {
				return nil, err
			}
		}
		what := fmt.Sprintf("account %d", account)
		if serial != 0 {
			what = fmt.Sprintf("credential %d of account %d", serial, account)
		}
		p := &plan{Back: "accounts/" + strconv.FormatUint(account, 10),
			Fields: []field{{"account", fmt.Sprint(account), "Account"}, {"serial", fmt.Sprint(serial), "Credential serial (0: the whole account)"},
				{"reason", reason, "Reason"}},
			path: "/v1/denylist", body: jsonBody(map[string]any{"account": account, "serial": serial, "reason": reason, "note": note})}
		if deny {
			p.method, p.Danger = http.MethodPost, true
			p.Title = "Deny " + what + "?"
			p.Explain = "Validators refuse its payment codes as soon as the new deny list reaches them (within seconds for a bus that is online; an offline bus when it reconnects)."
			if serial == 0 {
				p.Explain += " While it is denied, the account cannot get new credentials."
			} else {
				p.Explain += " The account can still get new credentials with its secret: to stop that (a lost or stolen phone holds the secret too), deny the whole account or have the secret replaced."
			}
			p.Button = "Deny " + what
			p.done = func(resp map[string]any) result {
				return result{Message: fmt.Sprintf("%s is on the deny list (%s); deny list version %v.", what, reason, resp["version"])}
			}
		} else {
			p.method = http.MethodDelete
			p.Title = "Clear the deny entry of " + what + "?"
			if reason != "" {
				p.Title = fmt.Sprintf("Clear the %s entry of %s?", reason, what)
			}
			p.Explain = "Validators accept its codes again once the new deny list reaches them. The ledger's own negative_balance entry is lifted only by a top-up."
			p.Button = "Clear the entry"
			// Why, for the audit trail: the entry's reason says why it
			// was made, not why it ends.
			p.Asks = []field{{"note", note, "Why it is cleared (kept in the audit trail)"}}
			p.done = func(resp map[string]any) result {
				return result{Message: fmt.Sprintf("The deny entry of %s was cleared; deny list version %v.", what, resp["version"])}
			}
		}
		return p, nil
	}
}

// deviceID is the device a form names, held to the one device id rule
// (record.ValidDeviceID): an id no device can have is refused before the
// question, not by the API after the confirmation.
func deviceID(r *http.Request) (string, error) {
	id := strings.TrimSpace(r.PostFormValue("device"))
	if id == "" {
		return "", badInput("give a device id")
	}
	if record.ValidDeviceID(id) != nil {
		return "", badInput("no device is called %q: a device id is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", id)
	}
	return id, nil
}

func prepareRevokeDevice(h *Handler, r *http.Request) (*plan, error) {
	id, err := deviceID(r)
	if err != nil {
		return nil, err
	}
	// The figures of the device as it last reported (the confirmation
	// said taps in its queue are not lost, never how many there were).
	dev, err := h.cfg.Ledger.Device(r.Context(), id)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, badInput("no device %s is registered: check its id on the fleet page", id)
	}
	if err != nil {
		return nil, err
	}
	loc := h.zone(r.Context())
	row := h.rowOf(ledger.FleetDevice{Device: dev}, versions{}, loc)
	state := "It has sent no status yet."
	if !dev.StatusAt.IsZero() {
		state = fmt.Sprintf("It is %s; its last status (%s) reported %s waiting in its queue", row.State,
			dev.StatusAt.In(loc).Format("2006-01-02 15:04:05 MST"), count(dev.Status.QueueDepth, "tap", "taps"))
		if dev.Status.QueueDepth > 0 {
			state += ", the oldest " + fmtDur(row.OldestUnsent) + " old now"
		}
		state += "."
	}
	return &plan{Title: "Revoke device " + id + "?", Danger: true, Back: "devices/" + url.PathEscape(id),
		Explain: state + " Its broker login and certificate stop working within seconds on every settlement instance, and any batch it still sends is kept aside, never charged. Taps still in its queue are not lost: replacing (re-registering) the device brings them in.",
		Button:  "Revoke " + id, Fields: []field{{"device", id, "Device"}},
		method: http.MethodPost, path: "/v1/devices/" + url.PathEscape(id) + "/revoke",
		done: func(map[string]any) result {
			return result{Message: "Device " + id + " is revoked."}
		}}, nil
}

func prepareReplaceDevice(h *Handler, r *http.Request) (*plan, error) {
	id, err := deviceID(r)
	if err != nil {
		return nil, err
	}
	pub := strings.TrimSpace(r.PostFormValue("public_key"))
	cert := strings.TrimSpace(r.PostFormValue("certificate"))
	if pub == "" {
		return nil, badInput("give the device's new public key (the bundle's device.pub, pasted whole, or its 64 hex digits)")
	}
	// device.pub is PEM, as farego-provision writes it: the form asked
	// for it and took only hex, which no tool prints.
	if k, ok, err := pemDeviceKey(pub); ok {
		if err != nil {
			return nil, badInput("the public key: %v", err)
		}
		pub = k
	}
	// What the API refuses is refused now, not after the confirmation
	// asked to replace the device with it.
	if _, _, err := api.CheckDeviceKeys(id, pub, cert); err != nil {
		return nil, badInput("%v", err)
	}
	// The confirmation says a revocation is lifted: asked for by name.
	body := map[string]any{"id": id, "public_key": pub, "replace": true, "unrevoke": true}
	if cert != "" {
		body["certificate"] = cert
	}
	return &plan{Title: "Replace device " + id + "?", Danger: true, Back: "devices/" + url.PathEscape(id),
		Explain: "The device is registered with this public key (and certificate): its old key, broker password and certificate stop working at once, a revocation is lifted, and a new broker password is made (shown once). Put it in the device's validator.toml.",
		Button:  "Replace " + id, Fields: []field{{"device", id, "Device"}, {"public_key", pub, "Public key"}, {"certificate", cert, "Certificate (PEM)"}},
		method: http.MethodPost, path: "/v1/devices", body: jsonBody(body),
		done: func(resp map[string]any) result {
			pw, _ := resp["mqtt_password"].(string)
			msg := "Device " + id + " is registered with its new key."
			if resp["unrevoked"] == true {
				msg += " Its revocation is lifted: its batches are charged again."
			}
			return result{Message: msg, Secret: pw,
				SecretLabel: "MQTT password (shown this once; the ledger keeps only its hash)"}
		}}, nil
}

// pemDeviceKey reads a pasted device.pub (an Ed25519 key, PKIX PEM) as
// the 64 hex digits the API takes; ok is false for text that is not PEM.
// A one-line field drops the paste's line breaks, so the text between
// the markers is put back on lines of its own first.
func pemDeviceKey(s string) (key string, ok bool, err error) {
	const begin, end = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
	body, found := strings.CutPrefix(s, begin)
	if !found {
		return "", false, nil
	}
	body, found = strings.CutSuffix(body, end)
	if !found {
		return "", true, errors.New("device.pub is cut short (no " + end + ")")
	}
	k, err := keyfile.ParsePublic("device.pub", []byte(begin+"\n"+strings.Join(strings.Fields(body), "\n")+"\n"+end+"\n"))
	if err != nil {
		return "", true, err
	}
	return hex.EncodeToString(k), true, nil
}

func prepareReplay(h *Handler, r *http.Request) (*plan, error) {
	id, err := deviceID(r)
	if err != nil {
		return nil, err
	}
	return &plan{Title: "Ask device " + id + " to replay its archive?", Back: "devices/" + url.PathEscape(id),
		Explain: "The device resends every record of its archive (7 days or 100,000 records by default). Taps the ledger has already change nothing; taps it lacks (after a restore from a backup) are settled. The device must be online.",
		Button:  "Ask for a replay", Fields: []field{{"device", id, "Device"}},
		method: http.MethodPost, path: "/v1/devices/" + url.PathEscape(id) + "/replay", body: []byte("{}"),
		done: func(resp map[string]any) result {
			return result{Message: fmt.Sprintf("Device %s was asked to resend records %v to %v of its queue %v.", id, resp["from"], resp["to"], resp["epoch"])}
		}}, nil
}

func prepareAssign(h *Handler, r *http.Request) (*plan, error) {
	id, err := deviceID(r)
	if err != nil {
		return nil, err
	}
	route, vehicle := strings.TrimSpace(r.PostFormValue("route")), strings.TrimSpace(r.PostFormValue("vehicle"))
	if route == "" || len(route) > 64 || len(vehicle) > 64 {
		return nil, badInput("give a route (and optionally a vehicle), each at most 64 characters")
	}
	// A route the fare table does not serve puts the device out of
	// service: the button says so as a dangerous one does.
	danger := false
	if t, err := h.cfg.Ledger.LatestFareTable(r.Context()); err == nil && !t.Covers(route) {
		danger = true
	}
	return &plan{Title: "Assign device " + id + " to route " + route + "?", Back: "devices/" + url.PathEscape(id), Danger: danger,
		Explain: routeFares(h, r, route) + " The device records this route and vehicle in its taps from its next tap on (an offline device when it reconnects) and is out of service if the fare table lists its routes without this one. Its taps on another route are then noted route_mismatch.",
		Button:  "Assign", Fields: []field{{"device", id, "Device"}, {"route", route, "Route"}, {"vehicle", vehicle, "Vehicle"}},
		method: http.MethodPut, path: "/v1/devices/" + url.PathEscape(id) + "/assignment",
		body: jsonBody(map[string]any{"route": route, "vehicle": vehicle}),
		done: func(resp map[string]any) result {
			return result{Message: fmt.Sprintf("Device %s is assigned route %s (assignment version %v).", id, route, resp["version"])}
		}}, nil
}

// routeFares says which fares of the latest fare table a ride on route
// gets: a typo (x1 for X1) would otherwise quietly charge the default
// route's fares (a new user's review).
func routeFares(h *Handler, r *http.Request, route string) string {
	t, err := h.cfg.Ledger.LatestFareTable(r.Context())
	if err != nil {
		return "No fare table is published yet."
	}
	if !t.Covers(route) {
		return fmt.Sprintf("Fare table version %d does not serve route %s: the device will be out of service. Its routes: %s.",
			t.Version, route, strings.Join(t.Routes, ", "))
	}
	if _, own := t.Fares[route]; own {
		return fmt.Sprintf("Fare table version %d has fares of its own for route %s.", t.Version, route)
	}
	var named []string
	for k := range t.Fares {
		if k != fare.DefaultRoute {
			named = append(named, k)
		}
	}
	slices.Sort(named)
	msg := fmt.Sprintf("Fare table version %d has no fares of its own for route %s: its default fares (route %q) apply.",
		t.Version, route, fare.DefaultRoute)
	for _, k := range named {
		if strings.EqualFold(k, route) {
			return msg + fmt.Sprintf(" Did you mean route %s? It has fares of its own.", k)
		}
	}
	if len(named) > 0 {
		msg += " Routes with fares of their own: " + strings.Join(named, ", ") + "."
	}
	return msg
}

func prepareReplayAll(h *Handler, r *http.Request) (*plan, error) {
	// The figures of the fleet, as the API will split it (online now and
	// heard since this server started: asked at once; the others not
	// revoked: kept for them): the confirmation said "every online device"
	// alone, which at 2,000 buses does not tell 1,990 asked from 10.
	devs, err := h.cfg.Ledger.Devices(r.Context())
	if err != nil {
		return nil, err
	}
	var online, later, revoked int
	for _, d := range devs {
		switch {
		case !d.Revoked.IsZero():
			revoked++
		case d.Status.Epoch == "" || !d.Status.Online || d.StatusAt.Before(h.cfg.Started):
			later++
		default:
			online++
		}
	}
	return &plan{Title: "Ask every online device to replay its archive?", Back: "fleet",
		Explain: fmt.Sprintf("The last step of restoring the ledger from a backup: every online device resends its whole archive; taps the ledger has change nothing. "+
			"%s online now %s asked at once; %s not online (offline, or not heard since this server started) %s sent the request when next heard online, within a day; %s revoked %s left out.",
			count(online, "device", "devices"), isAre(online), count(later, "device", "devices"), isAre(later), count(revoked, "device", "devices"), isAre(revoked)),
		Button: "Ask the fleet for a replay",
		method: http.MethodPost, path: "/v1/devices/replay",
		done: func(resp map[string]any) result {
			if until, ok := resp["kept_until"].(string); ok {
				return result{Message: fmt.Sprintf("Asked %s. Offline, sent it when next heard online until %v: %s.", fewOf(resp["asked"]), until, fewOf(resp["offline"]))}
			}
			return result{Message: fmt.Sprintf("Asked %s. Offline (not asked): %s.", fewOf(resp["asked"]), fewOf(resp["offline"]))}
		}}, nil
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// fewShown is how many device ids a fleet replay's result names.
const fewShown = 20

// fewOf names how many devices a list of ids holds and the first
// fewShown of them: the result listed every id, a page of 10,000 names
// for a large fleet, with the count nowhere.
func fewOf(v any) string {
	l, _ := v.([]any)
	if len(l) == 0 {
		return "none"
	}
	s := make([]string, 0, fewShown)
	for _, x := range l[:min(len(l), fewShown)] {
		s = append(s, fmt.Sprint(x))
	}
	out := count(len(l), "device", "devices") + " (" + strings.Join(s, ", ")
	if len(l) > fewShown {
		out += fmt.Sprintf(" and %d more", len(l)-fewShown)
	}
	return out + ")"
}

func preparePublishFares(h *Handler, r *http.Request) (*plan, error) {
	text := r.PostFormValue("table")
	if f, _, err := r.FormFile("file"); err == nil {
		b, err := io.ReadAll(io.LimitReader(f, fare.MaxTableSize+1))
		f.Close()
		if err != nil {
			return nil, badInput("the file could not be read")
		}
		if len(bytes.TrimSpace(b)) > 0 {
			text = string(b)
		}
	}
	if strings.TrimSpace(text) == "" {
		return nil, badInput("paste a fare table (JSON) or choose its file")
	}
	if len(text) > fare.MaxTableSize {
		return nil, badInput("a fare table is at most %d bytes", fare.MaxTableSize)
	}
	p := &plan{Back: "fares", Fields: []field{{"table", text, "Fare table"}}, method: http.MethodPut, path: "/v1/fares", body: []byte(text)}
	next, err := fare.Parse([]byte(text))
	if err == nil {
		err = h.cfg.Ledger.CheckFareTable(next) // what publishing asks beyond Parse, asked now
	}
	if err != nil {
		p.Title, p.Invalid = "This fare table is not valid", err.Error()
		return p, nil
	}
	cur, err := h.cfg.Ledger.LatestFareTable(r.Context())
	if err != nil && !errors.Is(err, ledger.ErrNoFareTable) {
		return nil, err
	}
	p.Changes = diffTables(cur, next)
	p.Title = fmt.Sprintf("Publish fare table version %d?", next.Version)
	if cur != nil && next.Version <= cur.Version {
		p.Invalid = fmt.Sprintf("The version must increase: the current table is version %d.", cur.Version)
		return p, nil
	}
	if len(p.Changes) == 1 {
		p.Explain = "Only the version changes. "
	}
	if lost := h.devicesLeftOut(r.Context(), next); lost != "" {
		p.Explain += lost + " "
	}
	p.Explain += "The server rates taps made from now on with this table, and publishes it to the fleet: each validator applies it when it is online (check the fares version on the fleet page)."
	p.Button = fmt.Sprintf("Publish version %d", next.Version)
	p.done = func(resp map[string]any) result {
		return result{Message: fmt.Sprintf("Fare table version %v is published to the fleet.", resp["version"])}
	}
	return p, nil
}

// devicesLeftOut says which devices (not revoked) are on a route (the
// one assigned them, else that of their last tap) the table next does not
// serve: they refuse every tap once they apply it
// (route_not_in_fares). "" when none; when the fleet cannot be read in
// time, that it could not check (the preview's route row still says what
// changes).
func (h *Handler) devicesLeftOut(ctx context.Context, next *fare.Table) string {
	if len(next.Routes) == 0 {
		return ""
	}
	// Advice: a locked or slow fleet does not hold the preview (a POST,
	// which PageTimeout does not bound) nor the publishing it prepares.
	ctx, cancel := context.WithTimeout(ctx, min(h.cfg.PageTimeout, 5*time.Second))
	defer cancel()
	const unchecked = "The devices on routes this table does not list could not be read (see the server log): check the fleet page first."
	left, err := h.cfg.Ledger.DevicesLeftOut(ctx, next)
	if err != nil {
		h.log.Warn("console: reading the fleet for a fare preview failed", "err", err)
		return unchecked
	}
	var ids []string
	routes := map[string]bool{}
	for _, d := range left {
		ids = append(ids, d.Device)
		routes[d.Route] = true
	}
	if len(ids) == 0 {
		return ""
	}
	n, devices, are := len(ids), "devices", "are"
	if n == 1 {
		devices, are = "device", "is"
	}
	if len(ids) > 5 {
		ids = append(ids[:5], "…")
	}
	return fmt.Sprintf("Warning: %d %s (%s) %s on route %s, which this table does not list: once they apply it they are out "+
		"of service, refusing every tap, until assigned a route it lists.", n, devices, strings.Join(ids, ", "), are,
		strings.Join(slices.Sorted(maps.Keys(routes)), ", "))
}

func prepareRotate(h *Handler, r *http.Request) (*plan, error) {
	return &plan{Title: "Rotate the issuer key?", Danger: true, Back: "keys",
		Explain: "A new issuer key is added (valid one year) and published to the fleet at once; new credentials are signed with it after the activation delay (24 h unless the server runs with --key-activation; sooner if the older keys' windows end first), so that validators offline now have it first. The older keys sign until then and stay valid until the credentials they signed expire.",
		Button:  "Rotate the issuer key", method: http.MethodPost, path: "/v1/keyring/rotate",
		done: func(resp map[string]any) result {
			return result{Message: fmt.Sprintf("The keyring is at version %v.", resp["version"])}
		}}, nil
}

func prepareCreateToken(h *Handler, r *http.Request) (*plan, error) {
	role := r.PostFormValue("role")
	merchant := strings.TrimSpace(r.PostFormValue("merchant_id"))
	name := strings.TrimSpace(r.PostFormValue("name"))
	if !ledger.ValidRole(role) {
		return nil, badInput("choose a role: operator, payments, merchant or auditor")
	}
	// Checked before the confirmation, which shows the name: not refused
	// only after the operator confirmed it.
	if err := ledger.CheckTokenName(name); err != nil {
		return nil, badInput("%v", err)
	}
	if err := ledger.CheckTokenRole(role, merchant); err != nil {
		return nil, badInput("%v", err)
	}
	return &plan{Title: fmt.Sprintf("Create a %s token?", role), Danger: role == ledger.RoleOperator, Back: "tokens",
		Explain: "The token is shown once, on the next page: copy it then. The ledger keeps only its hash. " + roleMeaning[role],
		Button:  "Create the token", Fields: []field{{"role", role, "Role"}, {"merchant_id", merchant, "Merchant id"}, {"name", name, "Name"}},
		method: http.MethodPost, path: "/v1/tokens", body: jsonBody(map[string]string{"role": role, "merchant_id": merchant, "name": name}),
		done: func(resp map[string]any) result {
			tok, _ := resp["token"].(string)
			return result{Message: fmt.Sprintf("Token %v (%s) is created.", resp["id"], role), Secret: tok,
				SecretLabel: "The token (shown this once)"}
		}}, nil
}

var roleMeaning = map[string]string{
	ledger.RoleOperator: "An operator token may do everything.",
	ledger.RolePayments: "A payments token tops up accounts and sets credit lines (the payment provider).",
	ledger.RoleMerchant: "A merchant token makes online payments for its own merchant id only, and refunds any of them.",
	ledger.RoleAuditor:  "An auditor token reads everything and changes nothing.",
}

func prepareRevokeToken(h *Handler, r *http.Request) (*plan, error) {
	id := strings.TrimSpace(r.PostFormValue("id"))
	if id == "" || len(id) > 32 || strings.ContainsAny(id, "/?#% ") {
		return nil, badInput("give a token id")
	}
	// The confirmation says whose token it is: an id alone does not tell
	// one till of a shop from another.
	tk, err := h.cfg.Ledger.TokenByID(r.Context(), id)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, badInput("no API token %s was ever made (the tokens page lists them)", id)
	} else if err != nil {
		return nil, err
	}
	return &plan{Title: "Revoke token " + id + "?", Danger: true, Back: "tokens",
		Explain: "It stops working at once on every settlement instance, and console sessions signed in with it end.",
		Button:  "Revoke " + id, Fields: []field{{"id", id, "Token"}, {"role", tk.Role, "Role"},
			{"merchant_id", tk.MerchantID, "Merchant id"}, {"name", tk.Name, "Name"}},
		method: http.MethodDelete, path: "/v1/tokens/" + url.PathEscape(id),
		done: func(map[string]any) result { return result{Message: "Token " + id + " is revoked."} }}, nil
}

type confirmData struct {
	Action string
	*plan
}

type resultData struct {
	OK     bool
	Back   string
	Code   string // the API's error code
	Detail string
	result
}

// act prepares an action, asks for confirmation, and then makes the API do
// it.
func (h *Handler) act(w http.ResponseWriter, r *http.Request, s *sess) {
	name := r.PathValue("action")
	a, ok := actions[name]
	if !ok {
		h.errorPage(w, r, s, http.StatusNotFound, "No such action", "The console has no action "+name+".")
		return
	}
	if !s.CanChange() {
		h.log.Warn("console: change refused to an auditor", "action", name, "token", s.tokenID)
		h.errorPage(w, r, s, http.StatusForbidden, "Not allowed", "An auditor's session sees everything and changes nothing.")
		return
	}
	p, err := a.prepare(h, r)
	var bad errInput
	if errors.As(err, &bad) {
		// Back to the form's page, not the overview.
		h.render(w, r, http.StatusBadRequest, "error", page{Title: "Nothing done", S: s, Currency: "-",
			Data: errorData{Message: bad.msg + ".", Back: h.backFrom(r)}})
		return
	}
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	p.Back = h.returnTo(r, p.Back)
	if r.PostFormValue("confirm") != "yes" || p.Invalid != "" {
		status := http.StatusOK
		if p.Invalid != "" {
			status = http.StatusBadRequest
		}
		h.render(w, r, status, "confirm", page{Title: p.Title, S: s, Data: confirmData{Action: name, plan: p}})
		return
	}
	status, resp := h.callAPI(r, s, p.method, p.path, p.body)
	d := resultData{Back: p.Back}
	if status >= 300 {
		e, _ := resp["error"].(map[string]any)
		d.Code, _ = e["code"].(string)
		d.Detail, _ = e["message"].(string)
		h.render(w, r, status, "result", page{Title: "Not done", S: s, Data: d})
		return
	}
	d.OK, d.result = true, p.done(resp)
	h.render(w, r, http.StatusOK, "result", page{Title: "Done", S: s, Data: d})
}

// returnTo is where an action's Cancel and Back links go: the page the
// form was sent from, with its query (a filtered or later page of the
// tokens or an account's older postings), when it is the page the action
// goes back to (back); the confirmation carries it on (its form field
// "back", since the confirmed request's Referer is the confirmation).
// Anything else is back itself.
func (h *Handler) returnTo(r *http.Request, back string) string {
	from := r.PostFormValue("back")
	if from == "" {
		from = h.backFrom(r)
	}
	if path, query, ok := strings.Cut(from, "?"); ok && path == back && len(from) <= 1024 {
		if v, err := url.ParseQuery(query); err == nil {
			return back + "?" + v.Encode()
		}
	}
	return back
}

// maxResponse bounds what the console reads of an API response.
const maxResponse = 4 << 20

// recorder is the http.ResponseWriter ServeAs writes the API's answer to.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (rc *recorder) Header() http.Header { return rc.header }

func (rc *recorder) WriteHeader(status int) {
	if rc.status == 0 {
		rc.status = status
	}
}

func (rc *recorder) Write(p []byte) (int, error) {
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	if rc.body.Len()+len(p) > maxResponse {
		return 0, errors.New("console: API response too large")
	}
	return rc.body.Write(p)
}

// callAPI makes the JSON API handle a request as the session's token and
// returns its status and decoded body.
func (h *Handler) callAPI(r *http.Request, s *sess, method, path string, body []byte) (int, map[string]any) {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, path, rd)
	if err != nil {
		return http.StatusInternalServerError, map[string]any{"error": map[string]any{"code": "internal", "message": err.Error()}}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.RemoteAddr = r.RemoteAddr
	rec := &recorder{header: http.Header{}}
	h.cfg.API.ServeAs(api.Staff{Role: s.role, TokenID: s.tokenID, Via: "console"}, rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	var out map[string]any
	dec := json.NewDecoder(&rec.body)
	dec.UseNumber() // versions are millisecond counts: no float formatting
	if err := dec.Decode(&out); err != nil {
		out = map[string]any{"error": map[string]any{"code": "internal", "message": "the API's answer could not be read"}}
		if rec.status < 300 {
			rec.status = http.StatusInternalServerError
		}
	}
	return rec.status, out
}
