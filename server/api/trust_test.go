package api

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
)

// token makes an API token of a role through the API and returns it.
func (f *fixture) tokenFor(role, merchant string) string {
	f.t.Helper()
	body, _ := json.Marshal(map[string]string{"role": role, "merchant_id": merchant, "name": role + " test"})
	out := f.do("POST", "/v1/tokens", f.token, string(body), 201)
	tok, _ := out["token"].(string)
	if !strings.HasPrefix(tok, TokenPrefix) {
		f.t.Fatalf("token = %v", out)
	}
	return tok
}

// snapshot is everything a refused request must leave as it was.
func (f *fixture) snapshot() string {
	f.t.Helper()
	st, err := f.store.Stats(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	accts, _ := f.store.Accounts(f.t.Context(), 0, 1000)
	tbl, _ := f.store.LatestFareTable(f.t.Context())
	devs, _ := f.store.Devices(f.t.Context())
	return fmt.Sprintf("%+v %+v %d %d", st, accts, tbl.Version, len(devs))
}

// Each role may do its job and nothing else: a merchant's scanner cannot
// top up, change fares, register devices or pay for another merchant; the
// payment provider cannot pay or read riders; an auditor reads and changes
// nothing; a revoked token does nothing. Every refusal changes nothing.
func TestRoles(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1000)
	shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
	psp := f.tokenFor(ledger.RolePayments, "")
	auditor := f.tokenFor(ledger.RoleAuditor, "")
	now := time.Now()
	pay := func(merchant, order string, counter uint16) string {
		b, _ := json.Marshal(map[string]any{"merchant_id": merchant, "order_id": order, "code": r.code(t, now, counter), "amount": 100})
		return string(b)
	}
	fares := `{"version":7,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":1,"child":1,"senior":1,"student":1}}}`
	dev := `{"id":"bus-evil","public_key":"` + devKey(9) + `"}`
	before := f.snapshot()
	for _, tc := range []struct {
		who, tok, method, path, body string
	}{
		{"merchant", shop, "POST", path("/v1/accounts/%d/topups", r.id), `{"amount":100000,"reference":"free money"}`},
		{"merchant", shop, "PUT", path("/v1/accounts/%d/credit_line", r.id), `{"amount":100000}`},
		{"merchant", shop, "PUT", "/v1/fares", fares},
		{"merchant", shop, "POST", "/v1/devices", dev},
		{"merchant", shop, "POST", "/v1/payments", pay("shop-2", "o-1", 1)},
		{"merchant", shop, "POST", "/v1/keyring/rotate", ""},
		{"merchant", shop, "POST", "/v1/denylist", `{"account":1000,"reason":"x"}`},
		{"merchant", shop, "POST", "/v1/tokens", `{"role":"operator"}`},
		{"merchant", shop, "GET", path("/v1/accounts/%d", r.id), ""},
		{"merchant", shop, "GET", "/v1/devices", ""},
		{"payments", psp, "POST", "/v1/payments", pay("shop-1", "o-2", 2)},
		{"payments", psp, "PUT", "/v1/fares", fares},
		{"payments", psp, "GET", path("/v1/accounts/%d", r.id), ""},
		{"auditor", auditor, "POST", path("/v1/accounts/%d/topups", r.id), `{"amount":100,"reference":"a"}`},
		{"auditor", auditor, "PUT", "/v1/fares", fares},
		{"auditor", auditor, "POST", "/v1/devices", dev},
		{"auditor", auditor, "DELETE", "/v1/tokens/abcdefgh", ""},
		{"rider", r.secret, "PUT", path("/v1/accounts/%d/credit_line", r.id), `{"amount":5000}`},
		{"rider", r.secret, "POST", "/v1/payments", pay("shop-1", "o-3", 3)},
		{"forged", TokenPrefix + "abcdefgh_" + strings.Repeat("a", 56), "PUT", "/v1/fares", fares},
	} {
		if e := f.do(tc.method, tc.path, tc.tok, tc.body, 403); errCode(e) != "forbidden" {
			t.Errorf("%s %s %s: %v, want forbidden", tc.who, tc.method, tc.path, e)
		}
	}
	if after := f.snapshot(); after != before {
		t.Errorf("refused requests changed the ledger:\n%s\n%s", before, after)
	}
	// What each may do.
	p := f.do("POST", "/v1/payments", shop, pay("shop-1", "o-4", 4), 201)
	f.do("GET", "/v1/payments/shop-1/o-4", shop, "", 200)
	f.do("GET", "/v1/payments/shop-2/o-4", shop, "", 403)
	f.do("POST", path("/v1/accounts/%d/topups", r.id), psp, `{"amount":500,"reference":"psp-9"}`, 200)
	f.do("PUT", path("/v1/accounts/%d/credit_line", r.id), psp, `{"amount":300}`, 200)
	a := f.do("GET", path("/v1/accounts/%d", r.id), auditor, "", 200)
	if a["balance"].(float64) != 1000-100+500 || a["credit_line"].(float64) != 300 || p["account"].(float64) != float64(r.id) {
		t.Errorf("account after a payment, a top-up and a credit line: %v", a)
	}
	f.do("GET", "/v1/devices", auditor, "", 200)
	f.do("GET", "/v1/tokens", auditor, "", 200)
	// Every change is in the audit trail, with who made it.
	log := f.do("GET", "/v1/audit", auditor, "", 200)["entries"].([]any)
	var actions []string
	for _, e := range log {
		m := e.(map[string]any)
		actions = append(actions, m["action"].(string)+" by "+m["actor"].(string))
	}
	joined := strings.Join(actions, "; ")
	for _, want := range []string{"topup by token:", "credit_line by token:", "create_token by token:init (operator)"} {
		if !strings.Contains(joined, want) {
			t.Errorf("audit trail %q lacks %q", joined, want)
		}
	}
	// A revoked token stops at once.
	id := strings.Split(psp, "_")[1]
	f.do("DELETE", "/v1/tokens/"+id, f.token, "", 200)
	if e := f.do("POST", path("/v1/accounts/%d/topups", r.id), psp, `{"amount":1,"reference":"psp-10"}`, 403); !strings.Contains(e["error"].(map[string]any)["message"].(string), "revoked") {
		t.Errorf("revoked token: %v", e)
	}
	// Revoking it again changes nothing and is not audited again.
	if again := f.do("DELETE", "/v1/tokens/"+id, f.token, "", 200); again["already"] != true {
		t.Errorf("second revocation: %v, want already true", again)
	}
	revokes := 0
	for _, e := range f.do("GET", "/v1/audit", auditor, "", 200)["entries"].([]any) {
		if m := e.(map[string]any); m["action"] == "revoke_token" && m["target"] == id {
			revokes++
		}
	}
	if revokes != 1 {
		t.Errorf("%d audit entries of the token's revocation, want 1", revokes)
	}
}

// Bad input changes nothing: duplicate keys (the last would win), small-
// order keys (anyone could sign for them), reserved device ids.
func TestHostileInput(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1000)
	before := f.snapshot()
	for _, tc := range []struct {
		path, tok, body, code string
		status                int
	}{
		{path("/v1/accounts/%d/topups", r.id), f.token, `{"amount":1,"amount":100000,"reference":"dup"}`, "bad_json", 400},
		{path("/v1/accounts/%d/topups", r.id), f.token, `{"amount":1,"reference":"a","reference":"b"}`, "bad_json", 400},
		// encoding/json matches keys to fields ignoring case (and
		// Unicode folds: K is the Kelvin sign), so these are duplicates too.
		{path("/v1/accounts/%d/topups", r.id), f.token, `{"amount":1,"AMOUNT":100000,"reference":"case"}`, "bad_json", 400},
		{path("/v1/accounts/%d/topups", r.id), f.token, `{"amount":1,"reference":"a","Reference":"b"}`, "bad_json", 400},
		{"/v1/payments", f.token, `{"merchant_id":"shop-1","order_id":"o","code":"x","amount":1,"Amount":100000}`, "bad_json", 400},
		{"/v1/devices", f.token, `{"id":"bus-1","\u0049D":"farego-server","public_key":"` + devKey(1) + `"}`, "bad_json", 400},
		{"/v1/tokens", f.token, `{"role":"merchant","merchant_id":"shop-1","role":"operator"}`, "bad_json", 400},
		{"/v1/tokens", f.token, `{"role":"merchant","merchant_id":"shop-1","rOlE":"operator"}`, "bad_json", 400},
		{"/v1/devices", f.token, `{"id":"bus-1","public_key":"` + devKey(1) + `","public_\u212aey":"` + devKey(2) + `"}`, "bad_json", 400},
		{"/v1/devices", f.token, `{"id":"bus-1","id":"farego-server","public_key":"` + devKey(1) + `"}`, "bad_json", 400},
		{"/v1/devices", f.token, `{"id":"bus-1","public_key":"01` + strings.Repeat("00", 31) + `"}`, "invalid", 400},
		{"/v1/devices", f.token, `{"id":"farego-server","public_key":"` + devKey(1) + `"}`, "invalid", 400},
		{"/v1/devices", f.token, `{"id":"Farego-Server","public_key":"` + devKey(1) + `"}`, "invalid", 400},
		{path("/v1/accounts/%d/credentials", r.id), r.secret, `{"rider_public_key":"01` + strings.Repeat("00", 31) + `"}`, "invalid", 400},
		{path("/v1/accounts/%d/credentials", r.id), r.secret, `{"rider_public_key":"` + strings.Repeat("00", 32) + `"}`, "invalid", 400},
		// Text that reads as other text to the operator: bidirectional
		// controls and zero-width spaces ("Trojan Source"), and C1 controls.
		{"/v1/accounts", "", `{"name":"Ada \u202egnal"}`, "invalid_name", 400},
		{"/v1/accounts", "", `{"name":"   "}`, "invalid_name", 400}, // only spaces: a name that shows as none
		{path("/v1/accounts/%d/topups", r.id), f.token, `{"amount":5,"reference":"psp-\u200b1"}`, "invalid", 400},
		{path("/v1/accounts/%d/topups", r.id), f.token, `{"amount":5,"reference":"psp-\u00851"}`, "invalid", 400},
		{"/v1/tokens", f.token, `{"role":"merchant","merchant_id":"shop-\u20661","name":"x"}`, "invalid", 400},
		{"/v1/payments", f.token, `{"merchant_id":"shop-1","order_id":"o\ufeff","code":"` + r.code(t, time.Now(), 1) + `","amount":1}`, "invalid", 400},
	} {
		if e := f.do("POST", tc.path, tc.tok, tc.body, tc.status); errCode(e) != tc.code {
			t.Errorf("POST %s %s: %v, want %s", tc.path, tc.body, e, tc.code)
		}
	}
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/accounts", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "text/plain")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 415 {
		t.Errorf("text/plain body: %v %v", resp, err)
	}
	if after := f.snapshot(); after != before {
		t.Errorf("refused requests changed the ledger:\n%s\n%s", before, after)
	}
}

// A credential goes only to an account whose balance plus credit line
// covers the minimum (default: the daily cap, or one base fare); a
// credential whose code was reused blocks new ones until the operator
// clears it.
func TestCredentialPolicy(t *testing.T) {
	f := newFixture(t)
	out := f.do("POST", "/v1/accounts", "", `{"profile":"adult"}`, 201)
	id := uint64(out["account"].(map[string]any)["id"].(float64))
	secret := out["secret"].(string)
	cred := path("/v1/accounts/%d/credentials", id)
	if e := f.do("POST", cred, secret, "", 402); errCode(e) != "insufficient_funds" ||
		!strings.Contains(fmt.Sprint(e["error"]), "at least 2.50 EUR (balance 0.00 EUR, credit line 0.00 EUR)") {
		t.Errorf("credential at balance 0: %v, want the amounts in euros", e)
	}
	// The balance it needs, for the wallet to say: the minimum less the
	// credit line.
	f.do("PUT", path("/v1/accounts/%d/credit_line", id), f.token, `{"amount":100}`, 200)
	if e := f.do("POST", cred, secret, "", 402)["error"].(map[string]any); e["minimum_balance"] != 150.0 || e["currency"] != "EUR" {
		t.Errorf("credential at balance 0, credit line 1.00: %v, want minimum_balance 150 EUR", e)
	}
	// The account says it too, for the wallet to warn before a ride the
	// balance cannot pay blocks the account.
	if a := f.do("GET", path("/v1/accounts/%d", id), secret, "", 200); a["pass_minimum"] != 150.0 {
		t.Errorf("account at credit line 1.00: pass_minimum %v, want 150", a["pass_minimum"])
	}
	// A credit line (the operator's or the payment provider's decision)
	// covers it: "charge first, deduct later".
	f.do("PUT", path("/v1/accounts/%d/credit_line", id), f.token, `{"amount":250}`, 200)
	if a := f.do("GET", path("/v1/accounts/%d", id), secret, "", 200); a["pass_minimum"] != 0.0 {
		t.Errorf("account at credit line 2.50: pass_minimum %v, want 0", a["pass_minimum"])
	}
	// A credit line above it: the balance a pass needs is below zero
	// (credit line 10.00: -7.50), not none.
	f.do("PUT", path("/v1/accounts/%d/credit_line", id), f.token, `{"amount":1000}`, 200)
	if a := f.do("GET", path("/v1/accounts/%d", id), secret, "", 200); a["pass_minimum"] != -750.0 {
		t.Errorf("account at credit line 10.00: pass_minimum %v, want -750", a["pass_minimum"])
	}
	f.do("PUT", path("/v1/accounts/%d/credit_line", id), f.token, `{"amount":250}`, 200)
	f.do("POST", cred, secret, "", 201)
	f.do("PUT", path("/v1/accounts/%d/credit_line", id), f.token, `{"amount":0}`, 200)
	f.do("POST", path("/v1/accounts/%d/topups", id), f.token, `{"amount":249,"reference":"p1"}`, 200)
	f.do("POST", cred, secret, "", 402)
	f.do("POST", path("/v1/accounts/%d/topups", id), f.token, `{"amount":1,"reference":"p2"}`, 200)
	f.do("POST", cred, secret, "", 201)
	// A reused code's credential: visible on the account, blocks re-issue.
	f.do("POST", "/v1/denylist", f.token, fmt.Sprintf(`{"account":%d,"serial":1,"reason":"code_reused"}`, id), 200)
	a := f.do("GET", path("/v1/accounts/%d", id), secret, "", 200)
	if b, _ := a["blocked_credentials"].([]any); len(b) != 1 || a["denied"] != false {
		t.Errorf("account with a blocked credential: %v", a)
	}
	if e := f.do("POST", cred, secret, "", 403); errCode(e) != "not_in_good_standing" || !strings.Contains(e["error"].(map[string]any)["message"].(string), "more than once") {
		t.Errorf("credential after a reuse: %v", e)
	}
	// Clearing the account alone (as for an innocent rider) leaves the
	// credential's entry, which still blocks: the answer says so.
	f.do("POST", "/v1/denylist", f.token, fmt.Sprintf(`{"account":%d,"reason":"code_reused_account"}`, id), 200)
	got := f.do("DELETE", "/v1/denylist", f.token, fmt.Sprintf(`{"account":%d,"note":"innocent"}`, id), 200)
	if still, _ := got["still_denied"].([]any); len(still) != 1 || fmt.Sprintf("%v %v", still[0].(map[string]any)["serial"], still[0].(map[string]any)["reason"]) != "1 code_reused" {
		t.Errorf("account entry cleared, credential entry left: %v; want still_denied naming serial 1 code_reused", got)
	}
	f.do("POST", cred, secret, "", 403)
	got = f.do("DELETE", "/v1/denylist", f.token, fmt.Sprintf(`{"account":%d,"serial":1,"reason":"code_reused"}`, id), 200)
	if got["still_denied"] != nil {
		t.Errorf("every entry cleared: %v, want no still_denied", got)
	}
	f.do("POST", cred, secret, "", 201)
}

// A payment retried long after its code expired gets the same answer: the
// order is looked up first. GET returns it too; the same order id with
// another code or amount is a conflict.
func TestPaymentRetryLater(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := newFixture(t, func(c *Config) { c.Now = clock })
	r := f.newRider(1000)
	code := r.code(t, clock(), 1)
	body := func(order, code string, amount int64) string {
		b, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": order, "code": code, "amount": amount})
		return string(b)
	}
	first := f.do("POST", "/v1/payments", f.token, body("o-1", code, 300), 201)
	mu.Lock()
	now = now.Add(3 * time.Minute) // the code is expired now
	mu.Unlock()
	again := f.do("POST", "/v1/payments", f.token, body("o-1", code, 300), 201)
	if again["id"] != first["id"] || again["status"] != "paid" {
		t.Errorf("retry 3 minutes later: %v, first %v", again, first)
	}
	if got := f.do("GET", "/v1/payments/shop-1/o-1", f.token, "", 200); got["id"] != first["id"] {
		t.Errorf("GET the order: %v", got)
	}
	f.do("GET", "/v1/payments/shop-1/o-404", f.token, "", 404)
	f.do("POST", "/v1/payments", f.token, body("o-1", code, 301), 409)
	f.do("POST", "/v1/payments", f.token, body("o-1", r.code(t, clock(), 2), 300), 409)
	if e := f.do("POST", "/v1/payments", f.token, body("o-2", code, 300), 422); errCode(e) != "invalid_code" {
		t.Errorf("a new order with the expired code: %v", e)
	}
	if b := f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 200)["balance"].(float64); b != 700 {
		t.Errorf("balance %v, want 700: paid once", b)
	}
}

// Anonymous account creation is rate-limited per client address; the
// payment provider's and the operator's are not (their tokens sign riders
// up in bulk), and a token that is not theirs is refused, not let through.
func TestAccountCreationLimited(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AccountsPerMinute, c.AccountsBurst = 1, 3 })
	for range 3 {
		f.do("POST", "/v1/accounts", "", `{}`, 201)
	}
	n, _ := f.store.Stats(t.Context())
	if e := f.do("POST", "/v1/accounts", "", `{}`, 429); errCode(e) != "rate_limited" {
		t.Errorf("fourth account: %v", e)
	}
	if m, _ := f.store.Stats(t.Context()); m.Accounts != n.Accounts {
		t.Errorf("a refused creation made an account")
	}
	psp := f.tokenFor(ledger.RolePayments, "")
	for range 5 {
		f.do("POST", "/v1/accounts", psp, `{"profile":"senior"}`, 201)
		f.do("POST", "/v1/accounts", f.token, `{}`, 201)
	}
	f.do("POST", "/v1/accounts", f.tokenFor(ledger.RoleMerchant, "shop-1"), `{}`, 403)
	f.do("POST", "/v1/accounts", "fgt_not-a-token", `{}`, 403)
	f.do("POST", "/v1/accounts", "not-a-token", `{}`, 403)
}

// The per-address limit takes an IPv6 client's whole /64 as one address:
// a host is given a /64 and can send from any address in it. Before, each
// address had its own bucket, so one host made any number of accounts
// (up to the limit for everyone, which it then used up for all riders).
func TestAccountCreationLimitedPerIPv6Prefix(t *testing.T) {
	f := newFixture(t)
	h := New(Config{Ledger: f.store, Keys: f.keys, AccountsPerMinute: 1, AccountsBurst: 3})
	create := func(remote string) int { return createFrom(h, remote) }
	for i := range 3 {
		if c := create(fmt.Sprintf("[2001:db8:1:2::%x]:4000", i+1)); c != 201 {
			t.Fatalf("account %d: status %d", i+1, c)
		}
	}
	for _, remote := range []string{"[2001:db8:1:2::99]:4000", "[2001:db8:1:2:ffff:1:2:3]:5000", "[2001:db8:1:2::1%eth0]:1"} {
		if c := create(remote); c != 429 {
			t.Errorf("from %s in the same /64: status %d, want 429", remote, c)
		}
	}
	// Another /64, and IPv4 (also as an IPv4-mapped address), have their own.
	for _, remote := range []string{"[2001:db8:1:3::1]:4000", "192.0.2.1:4000", "[::ffff:192.0.2.2]:4000"} {
		if c := create(remote); c != 201 {
			t.Errorf("from %s: status %d, want 201", remote, c)
		}
	}
	if c := create("192.0.2.2:1"); c != 201 {
		t.Errorf("192.0.2.2 after its mapped form made one: status %d, want 201 (burst 3)", c)
	}
}

// Devices: registration makes a fresh broker password each time; revoking
// shows in the device list; a status older than the server's start is
// unknown.
func TestDeviceLifecycle(t *testing.T) {
	changed := map[string]int{}
	var mu sync.Mutex
	reg := metrics.NewRegistry()
	f := newFixture(t, func(c *Config) {
		c.Metrics = reg
		c.DeviceChanged = func(id string) { mu.Lock(); changed[id]++; mu.Unlock() }
		c.Started = time.Now().Add(time.Hour) // as if the server restarted after every status
	})
	k := devKey(1)
	a := f.do("POST", "/v1/devices", f.token, `{"id":"bus-1","public_key":"`+k+`"}`, 201)
	b := f.do("POST", "/v1/devices", f.token, `{"id":"bus-1","public_key":"`+k+`"}`, 201)
	if a["mqtt_password"] == b["mqtt_password"] {
		t.Error("registering again kept the broker password")
	}
	auth, err := f.store.DeviceAuth(t.Context(), "bus-1")
	if err != nil || strings.Contains(auth.MQTTHash, b["mqtt_password"].(string)) || !strings.HasPrefix(auth.MQTTHash, "$7$") {
		t.Errorf("stored credential %q: want a hash, never the password", auth.MQTTHash)
	}
	if err := f.store.UpdateDeviceStatus(t.Context(), "bus-1", ledger.DeviceStatus{Online: true, LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ds := f.do("GET", "/v1/devices", f.token, "", 200)["devices"].([]any)
	if d := ds[0].(map[string]any); d["state"] != "unknown" || d["online"] != false || d["since"] == "" {
		t.Errorf("a device not heard since the server started: %v", d)
	}
	if d := ds[0].(map[string]any); d["drifting"] != false {
		t.Errorf("a device with the server's time drifting: %v", d)
	}
	// A clock 5 minutes ahead is flagged, in the list and the metric.
	if err := f.store.UpdateDeviceStatus(t.Context(), "bus-1", ledger.DeviceStatus{Online: true, LastSeen: time.Now().Add(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	ds = f.do("GET", "/v1/devices", f.token, "", 200)["devices"].([]any)
	if d := ds[0].(map[string]any); d["drifting"] != true || d["clock_offset_ms"].(float64) < 299_000 {
		t.Errorf("a device 5 minutes ahead: %v", d)
	}
	var m strings.Builder
	reg.WriteTo(&m)
	if !strings.Contains(m.String(), "\nfarego_devices_drifting 1\n") {
		t.Errorf("metrics do not count the drifting device:\n%s", m.String())
	}
	// The answer says how many taps its last status had not sent (a
	// decommission revoked before its queue drained: field test).
	if err := f.store.UpdateDeviceStatus(t.Context(), "bus-1", ledger.DeviceStatus{Online: true, QueueDepth: 3, LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if out := f.do("POST", "/v1/devices/bus-1/revoke", f.token, "", 200); out["revoked"] != true || out["queue_depth"] != float64(3) || out["status_at"] == nil {
		t.Errorf("revoke of a device whose last status had 3 taps unsent: %v; want queue_depth 3 and status_at", out)
	}
	f.do("POST", "/v1/devices/bus-9/revoke", f.token, "", 404)
	ds = f.do("GET", "/v1/devices", f.token, "", 200)["devices"].([]any)
	if d := ds[0].(map[string]any); d["state"] != "revoked" || d["revoked"] == "" {
		t.Errorf("revoked device: %v", d)
	}
	// A revoked device comes back only with unrevoke: replace alone (a
	// re-flash, a script re-registering its fleet) lifted the revocation
	// of a stolen validator, and the answer did not say so.
	for _, body := range []string{`{"id":"bus-1","public_key":"` + k + `"}`, `{"id":"bus-1","public_key":"` + k + `","replace":true}`,
		`{"id":"bus-1","public_key":"` + devKey(9) + `","replace":true}`} {
		if e := f.do("POST", "/v1/devices", f.token, body, 409); errCode(e) != "device_revoked" {
			t.Errorf("%s on a revoked device: %v; want device_revoked", body, e)
		}
	}
	ds = f.do("GET", "/v1/devices", f.token, "", 200)["devices"].([]any)
	if d := ds[0].(map[string]any); d["state"] != "revoked" {
		t.Errorf("after the refused registrations: %v; want it still revoked", d)
	}
	if b := f.do("POST", "/v1/devices", f.token, `{"id":"bus-1","public_key":"`+k+`","replace":true,"unrevoke":true}`, 201); b["unrevoked"] != true || b["revoked_at"] == nil {
		t.Errorf("registered with unrevoke: %v; want it to say the revocation is lifted, and its time", b)
	}
	ds = f.do("GET", "/v1/devices", f.token, "", 200)["devices"].([]any)
	if d := ds[0].(map[string]any); d["state"] == "revoked" {
		t.Errorf("after unrevoke: %v; want it not revoked", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if changed["bus-1"] != 4 {
		t.Errorf("DeviceChanged called %d times, want 4 (three registrations, one revocation)", changed["bus-1"])
	}
}

// A reduced fare is money, and the rider is not believed about it: an
// account created (or changed) by the rider with a child, senior or
// student profile is pending, and its credentials carry the adult profile
// (so its codes pay the adult fare) until the operator or the payment
// provider confirms it; their token confirms it at once. A merchant or an
// auditor cannot set a profile, and asking again for the profile one
// holds, confirmed, keeps it confirmed.
func TestReducedProfileNeedsConfirmation(t *testing.T) {
	f := newFixture(t)
	psp := f.tokenFor(ledger.RolePayments, "")
	shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
	auditor := f.tokenFor(ledger.RoleAuditor, "")
	out := f.do("POST", "/v1/accounts", "", `{"profile":"child","name":"Ben"}`, 201)
	acct := out["account"].(map[string]any)
	if acct["profile"] != "child" || acct["profile_pending"] != true {
		t.Fatalf("account asked for as child: %v", acct)
	}
	id, secret := uint64(acct["id"].(float64)), out["secret"].(string)
	f.do("POST", path("/v1/accounts/%d/topups", id), f.token, `{"amount":1000,"reference":"ben-1"}`, 200)
	profileOf := func(who string) paycode.Profile {
		t.Helper()
		c := f.do("POST", path("/v1/accounts/%d/credentials", id), secret, "", 201)
		cred, _ := hex.DecodeString(c["credential"].(string))
		seed, _ := hex.DecodeString(c["token_seed"].(string))
		k, err := paycode.RiderKey(seed)
		if err != nil {
			t.Fatal(err)
		}
		b, err := paycode.MakeCode(cred, k, time.Now(), 1)
		if err != nil {
			t.Fatal(err)
		}
		d := paycode.Verify(paycode.EncodeText(b), time.Now(), f.keys.Keyring(), paycode.Policy{})
		if !d.Accepted || d.Code.Profile.String() != c["profile"] {
			t.Fatalf("%s: credential %v, its code %+v", who, c, d)
		}
		return d.Code.Profile
	}
	if p := profileOf("pending child"); p != paycode.Adult {
		t.Errorf("a pending child's credential carries %v, want adult", p)
	}
	// Neither a merchant's scanner nor an auditor sets a profile.
	before := f.snapshot()
	f.do("PUT", path("/v1/accounts/%d/profile", id), shop, `{"profile":"child"}`, 403)
	f.do("PUT", path("/v1/accounts/%d/profile", id), auditor, `{"profile":"child"}`, 403)
	f.do("PUT", path("/v1/accounts/%d/profile", id), secret, `{"profile":"pensioner"}`, 400)
	f.do("PUT", path("/v1/accounts/%d/profile", id), secret, `{"profile":"child","role":"operator"}`, 400)
	if after := f.snapshot(); after != before {
		t.Errorf("refused requests changed the ledger:\n%s\n%s", before, after)
	}
	// The payment provider checks the rider and confirms.
	a := f.do("PUT", path("/v1/accounts/%d/profile", id), psp, `{"profile":"child"}`, 200)
	if a["profile"] != "child" || a["profile_pending"] != nil {
		t.Errorf("confirmed: %v", a)
	}
	if p := profileOf("confirmed child"); p != paycode.Child {
		t.Errorf("a confirmed child's credential carries %v", p)
	}
	// Asking again for it keeps it; asking for another is pending again.
	if a := f.do("PUT", path("/v1/accounts/%d/profile", id), secret, `{"profile":"child"}`, 200); a["profile_pending"] != nil {
		t.Errorf("asked again for the confirmed profile: %v", a)
	}
	if a := f.do("PUT", path("/v1/accounts/%d/profile", id), secret, `{"profile":"student"}`, 200); a["profile_pending"] != true {
		t.Errorf("asked for student: %v", a)
	}
	if p := profileOf("pending student"); p != paycode.Adult {
		t.Errorf("a pending student's credential carries %v", p)
	}
	if a := f.do("PUT", path("/v1/accounts/%d/profile", id), secret, `{"profile":"adult"}`, 200); a["profile"] != "adult" || a["profile_pending"] != nil {
		t.Errorf("back to adult: %v", a)
	}
	// Staff create a confirmed account; a bearer that is not a staff
	// token (a rider's secret, a merchant's token) creates none.
	out = f.do("POST", "/v1/accounts", f.token, `{"profile":"senior"}`, 201)
	if acct := out["account"].(map[string]any); acct["profile"] != "senior" || acct["profile_pending"] != nil {
		t.Errorf("created by the operator: %v", acct)
	}
	before = f.snapshot()
	f.do("POST", "/v1/accounts", secret, `{"profile":"senior"}`, 403)
	f.do("POST", "/v1/accounts", shop, `{"profile":"senior"}`, 403)
	if after := f.snapshot(); after != before {
		t.Errorf("refused account creations changed the ledger:\n%s\n%s", before, after)
	}
	audit := f.do("GET", "/v1/audit", f.token, "", 200)
	b, _ := json.Marshal(audit)
	for _, want := range []string{"set child", "confirmed senior at creation"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("audit log lacks %q: %s", want, b)
		}
	}
}

// Behind a trusted reverse proxy (here: loopback, a real HTTP server) the
// account-creation limit counts each client its X-Forwarded-For names,
// read from the right: entries a client writes itself (to the left of
// what the proxy appends) do not move it to another bucket, nor does a
// malformed one. Without trusted proxies the header is ignored.
func TestAccountCreationBehindProxy(t *testing.T) {
	f := newFixture(t)
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	behind := httptest.NewServer(New(Config{Ledger: f.store, Keys: f.keys, AccountsPerMinute: 1, AccountsBurst: 2, TrustedProxies: loopback}))
	defer behind.Close()
	direct := httptest.NewServer(New(Config{Ledger: f.store, Keys: f.keys, AccountsPerMinute: 1, AccountsBurst: 2}))
	defer direct.Close()
	create := func(srv *httptest.Server, forwarded ...string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+"/v1/accounts", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		for _, v := range forwarded {
			req.Header.Add("X-Forwarded-For", v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		forwarded []string
		want      int
	}{
		{[]string{"198.51.100.1"}, 201},
		{[]string{"198.51.100.1"}, 201},
		{[]string{"198.51.100.1"}, 429},                              // its burst is spent
		{[]string{"203.0.113.9, 198.51.100.1"}, 429},                 // a forged entry to the left changes nothing
		{[]string{"203.0.113.9", "198.51.100.1"}, 429},               // nor in a header of its own
		{[]string{"198.51.100.2"}, 201},                              // another client: its own bucket
		{[]string{"198.51.100.3, 127.0.0.5"}, 201},                   // two proxies: the client left of them
		{[]string{"198.51.100.3 ,127.0.0.5", "127.0.0.9"}, 201},      // the same client, its second
		{[]string{"198.51.100.3, 127.0.0.5"}, 429},                   // and its third
		{[]string{"not-an-address"}, 201},                            // counted against the proxy
		{[]string{"198.51.100.4, [2001:db8::1]:99, 127.0.0.5"}, 201}, // a malformed hop stops at the last proxy, 127.0.0.5
		{[]string{""}, 201},                                          // counted against the proxy: its second
		{[]string{""}, 429},                                          // its burst is spent
		{[]string{"[2001:db8:1:2::7]"}, 429},                         // brackets are not an address: the proxy
		{[]string{"2001:db8:1:2::7"}, 201},
		{[]string{"2001:db8:1:2::8"}, 201}, // the same /64
		{[]string{"2001:db8:1:2::9"}, 429},
	} {
		if got := create(behind, tc.forwarded...); got != tc.want {
			t.Errorf("behind the proxy, X-Forwarded-For %q: %d, want %d", tc.forwarded, got, tc.want)
		}
	}
	// Not a trusted proxy: the header is the client's own, ignored.
	for i, want := range []int{201, 201, 429} {
		if got := create(direct, fmt.Sprintf("198.51.100.%d", 10+i)); got != want {
			t.Errorf("direct, request %d with its own X-Forwarded-For: %d, want %d", i, got, want)
		}
	}
}

// FuzzClientAddr: whatever X-Forwarded-For holds, the address a request is
// counted against is its peer or an address the header holds, and never
// one of the trusted proxies unless the peer is.
func FuzzClientAddr(f *testing.F) {
	f.Add("127.0.0.1:5000", "198.51.100.1, 127.0.0.2")
	f.Add("192.0.2.1:1", "198.51.100.1")
	f.Add("[::1]:2", "2001:db8::1,::1, garbage")
	proxies := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	f.Fuzz(func(t *testing.T, peer, header string) {
		r := httptest.NewRequest("POST", "/v1/accounts", nil)
		r.RemoteAddr = peer
		r.Header.Set("X-Forwarded-For", header)
		got := clientAddr(r, proxies)
		if got == peer {
			return
		}
		if !trusted(peer, proxies) {
			t.Fatalf("peer %q is not a proxy, counted as %q", peer, got)
		}
		ip, err := netip.ParseAddr(got)
		if err != nil {
			t.Fatalf("counted as %q: not an address", got)
		}
		if !strings.Contains(header, ip.String()) && !strings.Contains(header, got) {
			found := false
			for h := range strings.SplitSeq(header, ",") {
				if a, err := netip.ParseAddr(strings.TrimSpace(h)); err == nil && a == ip {
					found = true
				}
			}
			if !found {
				t.Fatalf("counted as %q, which %q does not hold", got, header)
			}
		}
	})
}

// An account holds at most ledger.MaxLiveCredentials credentials not yet
// expired: one more is refused (409 too_many_credentials) and writes
// nothing, so one rider cannot grow the ledger (or the deny entries a code
// reuse brings) without bound.
func TestCredentialsPerAccountBounded(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(5000) // holds credential 1
	for i := 2; i <= ledger.MaxLiveCredentials; i++ {
		f.do("POST", path("/v1/accounts/%d/credentials", r.id), r.secret, "", 201)
	}
	before := f.snapshot()
	if e := f.do("POST", path("/v1/accounts/%d/credentials", r.id), r.secret, "", 409); errCode(e) != "too_many_credentials" {
		t.Errorf("credential %d: %v", ledger.MaxLiveCredentials+1, e)
	}
	if after := f.snapshot(); after != before {
		t.Errorf("the refused credential changed the ledger:\n%s\n%s", before, after)
	}
	creds, err := f.store.Credentials(t.Context(), r.id)
	if err != nil || len(creds) != ledger.MaxLiveCredentials {
		t.Errorf("%d credentials stored (%v), want %d", len(creds), err, ledger.MaxLiveCredentials)
	}
	// Another rider is not held back.
	f.newRider(5000)
}

// A client behind the proxy can pad X-Forwarded-For up to the header limit
// (32 KiB): clientAddr reads the nearest maxForwarded entries only, and
// does not allocate for the rest.
func TestClientAddrPaddedHeader(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	r := httptest.NewRequest("POST", "/v1/accounts", nil)
	r.RemoteAddr = "127.0.0.1:5000"
	r.Header.Set("X-Forwarded-For", strings.Repeat(",", 30000)+"198.51.100.1")
	if got := clientAddr(r, proxies); got != "198.51.100.1" {
		t.Fatalf("counted as %q", got)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		clientAddr(r, proxies)
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 4096 {
		t.Errorf("clientAddr allocates %d bytes for a padded X-Forwarded-For", per)
	}
}

// TestSecretChangeRacesCredentials: credentials asked for with a secret
// while it is being replaced (a thief's wallet renewing in a loop as the
// rider changes the secret) are either issued before the change, and then
// deny-listed by it, or refused (403): none issued with the old secret is
// left valid. Then the other half of a theft: the thief fetched as many
// credentials as an account may hold; the payment provider resets the
// secret; the rider gets a new credential with the new one.
func TestSecretChangeRacesCredentials(t *testing.T) {
	f := newFixture(t)
	for round := range 4 {
		r := f.newRider(5000) // holds credential 1
		var wg sync.WaitGroup
		var mu sync.Mutex
		var issued []float64
		for range 10 {
			wg.Go(func() {
				req, _ := http.NewRequest("POST", f.srv.URL+path("/v1/accounts/%d/credentials", r.id), nil)
				req.Header.Set("Authorization", "Bearer "+r.secret)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				var out map[string]any
				json.NewDecoder(resp.Body).Decode(&out)
				switch resp.StatusCode {
				case http.StatusCreated:
					mu.Lock()
					issued = append(issued, out["serial"].(float64))
					mu.Unlock()
				case http.StatusForbidden:
				default:
					t.Errorf("a credential asked for during the change: %d %v", resp.StatusCode, out)
				}
			})
		}
		time.Sleep(time.Duration(round) * time.Millisecond)
		fresh := f.do("POST", path("/v1/accounts/%d/secret", r.id), r.secret, "", 200)["secret"].(string)
		wg.Wait()
		blocked := map[float64]bool{}
		for _, b := range f.do("GET", path("/v1/accounts/%d", r.id), fresh, "", 200)["blocked_credentials"].([]any) {
			blocked[b.(map[string]any)["serial"].(float64)] = true
		}
		for _, s := range append(issued, 1) {
			if !blocked[s] {
				t.Errorf("round %d: credential %v, issued for the old secret, is not deny-listed after the change (issued %v)",
					round, s, issued)
			}
		}
	}

	r := f.newRider(5000)
	for i := 2; i <= ledger.MaxLiveCredentials; i++ {
		f.do("POST", path("/v1/accounts/%d/credentials", r.id), r.secret, "", 201)
	}
	reset := f.do("POST", path("/v1/accounts/%d/secret", r.id), f.tokenFor(ledger.RolePayments, ""), "", 200)
	if reset["credentials_denied"] != float64(ledger.MaxLiveCredentials) {
		t.Errorf("credentials denied by the reset: %v", reset["credentials_denied"])
	}
	c := f.do("POST", path("/v1/accounts/%d/credentials", r.id), reset["secret"].(string), "", 201)
	if c["serial"] != float64(ledger.MaxLiveCredentials+1) {
		t.Errorf("the rider's credential after the reset: %v", c)
	}
	f.do("POST", path("/v1/accounts/%d/credentials", r.id), r.secret, "", 403)
}

// TestTopUpRetrySaidAsReplay: a payment provider's retry of a top-up (the
// same reference) adds nothing, answers as the first with
// Idempotent-Replayed, and is audited as a replay (two alike entries read
// as two top-ups). The ledger checks.
func TestTopUpRetrySaidAsReplay(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1000)
	topUp := func() (map[string]any, string) {
		out, h := f.doHeader("POST", path("/v1/accounts/%d/topups", r.id), f.token, `{"amount":700,"reference":"psp-retry"}`, 200)
		return out, h.Get("Idempotent-Replayed")
	}
	first, replayed := topUp()
	if replayed != "" || first["balance"].(float64) != 1700 {
		t.Fatalf("first top-up: %v, replayed %q", first, replayed)
	}
	again, replayed := topUp()
	if replayed != "true" || again["balance"].(float64) != 1700 {
		t.Errorf("the retry: %v, Idempotent-Replayed %q; want the same balance, replayed", again, replayed)
	}
	b, _ := json.Marshal(f.do("GET", "/v1/audit", f.token, "", 200))
	if n := strings.Count(string(b), `reference \"psp-retry\"`); n != 2 || strings.Count(string(b), "replayed: nothing added") != 1 {
		t.Errorf("audit: %d entries of the reference, want 2 with one a replay: %s", n, b)
	}
	if err := f.store.CheckInvariants(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestTopUpSaysWhatIsWrong: a top-up refused for its body names the field
// at fault alone (a good amount with no reference was told "amount must be
// positive and reference … is required"), and changes nothing.
func TestTopUpSaysWhatIsWrong(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1000)
	before := f.snapshot()
	for _, c := range []struct{ body, want, not string }{
		{`{"amount":500}`, "reference is required", "amount"},
		{`{"amount":0,"reference":"psp-1"}`, "amount must be positive, in the ledger currency's minor units (1250 is 12.50 EUR), got 0", "reference"},
		{`{"amount":-5,"reference":"psp-1"}`, "got -5", "reference"},
	} {
		out := f.do("POST", path("/v1/accounts/%d/topups", r.id), f.token, c.body, 400)
		msg, _ := out["error"].(map[string]any)["message"].(string)
		if !strings.Contains(msg, c.want) || strings.Contains(msg, c.not) {
			t.Errorf("%s: %q; want it to say %q and not name %q", c.body, msg, c.want, c.not)
		}
	}
	if after := f.snapshot(); after != before {
		t.Errorf("a refused top-up changed the ledger:\n%s\nwant\n%s", after, before)
	}
}

// TestShopCannotSearchWithOneCode: a rogue shop's scanner shown one code
// tries amount after amount. Before, every refusal left the code usable and
// over_limit came before insufficient_funds: a binary search read the
// rider's limit exactly in 37 refused tries, a falling amount then took 99 %
// of the balance (an attack review, 222 requests in 0.4 s). Now the code is
// refused ledger.MaxCodeRefusals times, then it is used up (409
// code_used) whatever the amount: the search ends with nothing paid and
// nothing learned but the first answers.
func TestShopCannotSearchWithOneCode(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(123_456)
	f.do("PUT", path("/v1/accounts/%d/payment_limit", r.id), r.secret, `{"amount":777777}`, 200)
	shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
	code := r.code(t, time.Now(), 1)
	before := f.snapshot()
	tries, refused := 0, 0
	lo, hi := int64(1), int64(ledger.MaxAmount)
	for hi-lo > 1 && tries < 64 {
		tries++
		m := lo + (hi-lo)/2
		b, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": fmt.Sprintf("probe-%d", tries), "code": code, "amount": m})
		req, _ := http.NewRequest("POST", f.srv.URL+"/v1/payments", strings.NewReader(string(b)))
		req.Header.Set("Authorization", "Bearer "+shop)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusForbidden:
			hi, refused = m, refused+1
		case http.StatusPaymentRequired:
			lo, refused = m, refused+1
		case http.StatusConflict: // code_used: the search is over
			hi = lo
		default:
			t.Fatalf("try %d (amount %d) answered %d", tries, m, resp.StatusCode)
		}
	}
	if refused != ledger.MaxCodeRefusals {
		t.Errorf("the code was refused %d times, want %d before it is used up", refused, ledger.MaxCodeRefusals)
	}
	// An amount that fits, the same code: used up.
	b, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": "fits", "code": code, "amount": 100})
	if got := errCode(f.do("POST", "/v1/payments", shop, string(b), http.StatusConflict)); got != "code_used" {
		t.Errorf("an amount that fits after the refusals: %s, want code_used", got)
	}
	if after := f.snapshot(); after != before {
		t.Errorf("refused payments moved money:\n%s\n%s", before, after)
	}
	// The rider's next code pays.
	b, _ = json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": "next", "code": r.code(t, time.Now(), 2), "amount": 100})
	f.do("POST", "/v1/payments", shop, string(b), http.StatusCreated)
}

// TestHealthzSaysNoSecrets: /healthz answers anyone; a failing check's
// error (the database's, naming its address, user and database) goes to
// the server's log, once a minute, and the answer says only which part is
// down (an attack review read the PostgreSQL address and login from it).
func TestHealthzSaysNoSecrets(t *testing.T) {
	var logged strings.Builder
	var mu sync.Mutex
	secret := "failed to connect to `user=postgres database=ledger`: 10.1.2.3:5432"
	f := newFixture(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil))
		c.Health = map[string]Health{"ingest": func(context.Context) error { return errors.New(secret) }}
	})
	for range 3 {
		resp, err := http.Get(f.srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		var h map[string]any
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("healthz: %d, %v", resp.StatusCode, err)
		}
		checks, _ := h["checks"].(map[string]any)
		if h["ok"] != false || checks["ledger"] != "ok" || !strings.HasPrefix(fmt.Sprint(checks["ingest"]), "unavailable") {
			t.Errorf("healthz = %v", h)
		}
		if s := fmt.Sprint(h); strings.Contains(s, "10.1.2.3") || strings.Contains(s, "user=") {
			t.Errorf("healthz tells anyone the check's error: %v", h)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logged.String(), "10.1.2.3"); n != 1 {
		t.Errorf("the check's error logged %d times in three asks, want once:\n%s", n, logged.String())
	}
	// In a start's first moments, before the server was ever healthy, a
	// part not ready yet is not a failure (a warning in every start's log
	// said something was wrong).
	if l := logged.String(); !strings.Contains(l, `level=INFO msg="healthz: starting, a part is not ready yet" check=ingest`) ||
		strings.Contains(l, "level=WARN") {
		t.Errorf("a start's failing check logged:\n%s", l)
	}
}

// Once healthy, or past the start's first 30 s, a failing check is a
// warning.
func TestHealthzWarnsOnceStarted(t *testing.T) {
	var logged strings.Builder
	var mu sync.Mutex
	var down atomic.Bool
	f, _ := clockFixtureAt(t, "", func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil))
		c.Health = map[string]Health{"ingest": func(context.Context) error {
			if down.Load() {
				return errors.New("ingest not connected to the MQTT broker")
			}
			return nil
		}}
	})
	ask := func(want int) {
		t.Helper()
		resp, err := http.Get(f.srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("healthz %d, want %d", resp.StatusCode, want)
		}
	}
	warned := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logged.String(), `level=WARN msg="healthz: a check failed" check=ingest`)
	}
	ask(http.StatusOK)
	down.Store(true)
	ask(http.StatusServiceUnavailable)
	if !warned() {
		t.Errorf("a check failing after the server was healthy was not a warning:\n%s", logged.String())
	}
	// A server never healthy, past its start's first 30 s.
	mu.Lock()
	logged.Reset()
	mu.Unlock()
	g, advanceG := clockFixtureAt(t, "", func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil))
		c.Health = map[string]Health{"ingest": func(context.Context) error { return errors.New("not connected") }}
	})
	advanceG(31 * time.Second)
	f = g
	ask(http.StatusServiceUnavailable)
	if !warned() {
		t.Errorf("a check failing 31 s after the start was not a warning:\n%s", logged.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// createFrom asks h for an anonymous account from the client address
// remote and returns the status.
func createFrom(h http.Handler, remote string) int {
	req := httptest.NewRequest("POST", "/v1/accounts", strings.NewReader(`{}`))
	req.RemoteAddr = remote
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

// TestOperatorPaymentAudited: the operator's token may pay for any shop,
// and such a payment moves a rider's money to that shop like the shop's
// own: it is audited (who, which order, how much), as the operator's
// refund is, or nothing tells it from the shop's. A retry of it (the same
// answer, nothing moved) is not audited again, nor is a shop's own
// payment (it is in its orders).
func TestOperatorPaymentAudited(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1_000)
	shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
	body := func(order string, counter uint16, amount int64) string {
		b, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": order, "code": r.code(t, time.Now(), counter), "amount": amount})
		return string(b)
	}
	f.do("POST", "/v1/payments", shop, body("till-1", 1, 100), 201)
	op := body("ops-1", 2, 250)
	f.do("POST", "/v1/payments", f.token, op, 201)
	f.do("POST", "/v1/payments", f.token, op, 201) // a retry: nothing moves
	entries, err := f.store.AuditLog(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var paid []string
	for _, e := range entries {
		if e.Action == "payment" {
			paid = append(paid, e.Actor+" "+e.Target+" "+e.Detail)
		}
	}
	if len(paid) != 1 || !strings.HasPrefix(paid[0], "token:init (operator) shop-1/ops-1 ") || !strings.Contains(paid[0], "amount 250") {
		t.Errorf("audited payments %q, want the operator's one of 250 for shop-1/ops-1", paid)
	}
}

// TestAuditOutlivesTheRequest: an audited action's entry is written even
// when the client hangs up as the money moves (its request's context is
// cancelled by then): the trail must not depend on the caller waiting.
func TestAuditOutlivesTheRequest(t *testing.T) {
	f := newFixture(t)
	h := New(Config{Ledger: f.store})
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequestWithContext(ctx, "POST", "/v1/payments", nil)
	cancel()
	h.audit(r, principal{role: ledger.RoleOperator, tokenID: "init"}, "payment", "shop-1/ops-1", "payment 1")
	entries, err := f.store.AuditLog(context.Background(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || entries[0].Action != "payment" || entries[0].Target != "shop-1/ops-1" {
		t.Errorf("audit trail after a hung-up request: %+v, want the payment's entry", entries)
	}
}

// TestConcurrentPaymentRetries: a till that sends the same order several
// times at once (a retry before the first answer) moves the money once,
// and every answer but the one that paid says Idempotent-Replayed,
// also those the ledger answered from the order a concurrent first try
// committed after the handler had looked for it; the operator's payment
// is audited once, not once per retry that ran beside it.
func TestConcurrentPaymentRetries(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1_000)
	body, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": "ops-race", "code": r.code(t, time.Now(), 1), "amount": 250})
	const n = 8
	type answer struct {
		status   int
		replayed string
		id       float64
	}
	answers := make([]answer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest("POST", f.srv.URL+"/v1/payments", strings.NewReader(string(body)))
			req.Header.Set("Authorization", "Bearer "+f.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var out map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&out)
			id, _ := out["id"].(float64)
			answers[i] = answer{resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), id}
		})
	}
	close(start)
	wg.Wait()
	first := 0
	for i, a := range answers {
		if a.status != http.StatusCreated || a.id != answers[0].id {
			t.Errorf("answer %d: %+v, want 201 with order %v", i, a, answers[0].id)
		}
		if a.replayed == "" {
			first++
		}
	}
	if first != 1 {
		t.Errorf("%d answers without Idempotent-Replayed, want the one that paid: %+v", first, answers)
	}
	entries, err := f.store.AuditLog(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	audited := 0
	for _, e := range entries {
		if e.Action == "payment" {
			audited++
		}
	}
	if audited != 1 {
		t.Errorf("%d audit entries for one payment retried %d times at once, want 1", audited, n)
	}
	if a, err := f.store.Account(context.Background(), r.id); err != nil || a.Balance != 750 {
		t.Errorf("balance %d, %v; want 750 (paid once)", a.Balance, err)
	}
}

// TestTokenPayments: a shop's payments and refunds say which of its
// tokens made them, and the operator (or an auditor) lists a token's
// payments: a till whose token leaked is told from the shop's others.
// A shop's token lists nothing (another till's orders are not its to
// read this way).
func TestTokenPayments(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(5_000)
	newToken := func(role, merchant, name string) (tok, id string) {
		body, _ := json.Marshal(map[string]string{"role": role, "merchant_id": merchant, "name": name})
		out := f.do("POST", "/v1/tokens", f.token, string(body), 201)
		tok, _ = out["token"].(string)
		id, _ = out["id"].(string)
		if tok == "" || id == "" {
			t.Fatalf("token = %v", out)
		}
		return tok, id
	}
	till1, till1ID := newToken(ledger.RoleMerchant, "shop-1", "till 1")
	till3, till3ID := newToken(ledger.RoleMerchant, "shop-1", "till 3")
	auditor, _ := newToken(ledger.RoleAuditor, "", "books")
	pay := func(tok, order string, counter uint16) map[string]any {
		b, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": order, "code": r.code(t, time.Now(), counter), "amount": 100})
		return f.do("POST", "/v1/payments", tok, string(b), 201)
	}
	p1 := pay(till1, "a", 1)
	p3 := pay(till3, "b", 2)
	p3b := pay(till3, "c", 3)
	if p1["token_id"] != till1ID || p3["token_id"] != till3ID {
		t.Errorf("payments' tokens %v, %v; want %s, %s", p1["token_id"], p3["token_id"], till1ID, till3ID)
	}
	if got := f.do("GET", "/v1/payments/shop-1/b", till1, "", 200); got["token_id"] != till3ID {
		t.Errorf("GET payment: token %v, want %s", got["token_id"], till3ID)
	}
	rf := f.do("POST", "/v1/payments/shop-1/b/refunds", f.token, `{"refund_id":"r-1","amount":40}`, 201)
	if rf["token_id"] != "init" {
		t.Errorf("the operator's refund: token %v, want init", rf["token_id"])
	}
	got := f.do("GET", "/v1/payments/shop-1/b", auditor, "", 200)
	if rs, _ := got["refunds"].([]any); len(rs) != 1 || rs[0].(map[string]any)["token_id"] != "init" {
		t.Errorf("GET payment's refunds: %v, want the one by init", got["refunds"])
	}
	ids := func(out map[string]any) (ids []any) {
		for _, p := range out["payments"].([]any) {
			ids = append(ids, p.(map[string]any)["id"])
		}
		return ids
	}
	for _, tok := range []string{f.token, auditor} {
		out := f.do("GET", "/v1/tokens/"+till3ID+"/payments", tok, "", 200)
		if got := ids(out); fmt.Sprint(got) != fmt.Sprint([]any{p3b["id"], p3["id"]}) {
			t.Errorf("till 3's payments %v, want %v then %v", got, p3b["id"], p3["id"])
		}
	}
	out := f.do("GET", fmt.Sprintf("/v1/tokens/%s/payments?before=%v", till3ID, p3b["id"]), f.token, "", 200)
	if got := ids(out); fmt.Sprint(got) != fmt.Sprint([]any{p3["id"]}) {
		t.Errorf("till 3's payments before %v: %v", p3b["id"], got)
	}
	f.do("GET", "/v1/tokens/"+till3ID+"/payments", till1, "", 403)
	f.do("GET", "/v1/tokens/"+till3ID+"/payments?before=x", f.token, "", 400)
	// A merchant learns nothing of which token ids exist: 403 either way.
	f.do("GET", "/v1/tokens/nobody/payments", till1, "", 403)
	if e := f.do("GET", "/v1/tokens/nobody/payments", f.token, "", 404); errCode(e) != "not_found" {
		t.Errorf("an unknown token's payments: %v", e)
	}
	if out := f.do("GET", "/v1/tokens/"+till1ID+"/payments?before=1", f.token, "", 200); len(out["payments"].([]any)) != 0 {
		t.Errorf("till 1's payments before the first: %v", out)
	}
	// Its refunds: till 3 refunds its shop's order a (till 1's).
	f.do("POST", "/v1/payments/shop-1/a/refunds", till3, `{"refund_id":"r-t3","amount":30}`, 201)
	for _, tok := range []string{f.token, auditor} {
		out := f.do("GET", "/v1/tokens/"+till3ID+"/refunds", tok, "", 200)
		rs, _ := out["refunds"].([]any)
		if len(rs) != 1 || rs[0].(map[string]any)["refund_id"] != "r-t3" || rs[0].(map[string]any)["order_id"] != "a" ||
			rs[0].(map[string]any)["amount"] != float64(30) || rs[0].(map[string]any)["created_ns"] == nil {
			t.Errorf("till 3's refunds: %v, want r-t3 of order a", out)
		}
		// created_ns is a string: as a JSON number (a double here) it was
		// rounded by up to 128 ns, and ?before= of it listed r-t3 again
		// about one run in two.
		if ns, _ := rs[0].(map[string]any)["created_ns"].(string); ns != "" {
			if out := f.do("GET", "/v1/tokens/"+till3ID+"/refunds?before="+ns, tok, "", 200); len(out["refunds"].([]any)) != 0 {
				t.Errorf("till 3's refunds before its first: %v", out)
			}
		} else {
			t.Errorf("created_ns %v, want a string of unix ns", rs[0].(map[string]any)["created_ns"])
		}
	}
	if out := f.do("GET", "/v1/tokens/init/refunds", f.token, "", 200); len(out["refunds"].([]any)) != 1 {
		t.Errorf("the operator's refunds: %v, want r-1", out)
	}
	f.do("GET", "/v1/tokens/"+till3ID+"/refunds", till1, "", 403)
	f.do("GET", "/v1/tokens/"+till3ID+"/refunds?before=x", f.token, "", 400)
	f.do("GET", "/v1/tokens/"+till3ID+"/refunds?before=18446744073709551615", f.token, "", 400)
	if e := f.do("GET", "/v1/tokens/nobody/refunds", f.token, "", 404); errCode(e) != "not_found" {
		t.Errorf("an unknown token's refunds: %v", e)
	}
	// Revoked, its payments are still listed: that is when they are read.
	f.do("DELETE", "/v1/tokens/"+till3ID, f.token, "", 200)
	if got := ids(f.do("GET", "/v1/tokens/"+till3ID+"/payments", f.token, "", 200)); len(got) != 2 {
		t.Errorf("a revoked token's payments: %v", got)
	}
}

// A mangled operator or payment-provider token (its fgt_ cut off: one
// that keeps it is "unknown token") where staff may call (a top-up) is
// answered as a token looked for and not found, not only as a
// rider's wrong secret (a new user read "wrong account or secret" for
// their operator token); a rider-only call keeps its answer. Nothing
// changes either way.
func TestWrongTokenSaidAsSuch(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1000)
	before := f.snapshot()
	msg := func(e map[string]any) string { return e["error"].(map[string]any)["message"].(string) }
	e := f.do("POST", path("/v1/accounts/%d/topups", r.id), strings.Repeat("0", 40), `{"amount":700,"reference":"psp-typo"}`, 403)
	if m := msg(e); m != "wrong account or secret (nor an API token of this server)" {
		t.Errorf("a top-up with a made-up token: %q", m)
	}
	e = f.do("POST", path("/v1/accounts/%d/credentials", r.id), strings.Repeat("a", 64), "", 403)
	if m := msg(e); m != "wrong account or secret" {
		t.Errorf("a rider's call with a wrong secret: %q", m)
	}
	if after := f.snapshot(); after != before {
		t.Errorf("refused calls changed the ledger:\n%s\n%s", before, after)
	}
}

// GET /v1/accounts/{id} says who reads it: the rider with the account's
// secret, else the staff token's role (the rider's tool signs in only as
// the rider).
func TestAccountViewer(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1000)
	for who, tok := range map[string]string{"rider": r.secret, "operator": f.token, "auditor": f.tokenFor(ledger.RoleAuditor, "")} {
		if v := f.do("GET", path("/v1/accounts/%d", r.id), tok, "", 200)["viewer"]; v != who {
			t.Errorf("%s reads the account as viewer %v", who, v)
		}
	}
}

// TestTokensListPaged: GET /v1/tokens answers a page at a time (?limit,
// and next_after, the ?after= of the next page) and filters by role,
// merchant and tokens in force; bad parameters are 400 with what they
// must be. It answered every token ever made in one body.
func TestTokensListPaged(t *testing.T) {
	onBackends(t, func(t *testing.T, dsn string) {
		f, _ := clockFixtureAt(t, dsn)
		for i := range 5 {
			f.tokenFor(ledger.RoleMerchant, fmt.Sprintf("shop-%d", i%2))
		}
		f.tokenFor(ledger.RoleAuditor, "")
		ids := func(out map[string]any) []string {
			var got []string
			for _, tk := range out["tokens"].([]any) {
				got = append(got, fmt.Sprint(tk.(map[string]any)["id"]))
			}
			return got
		}
		all := ids(f.do("GET", "/v1/tokens", f.token, "", 200))
		if len(all) != 6 {
			t.Fatalf("all tokens: %v", all)
		}
		var paged []string
		path := "/v1/tokens?limit=4"
		for range 5 {
			out := f.do("GET", path, f.token, "", 200)
			paged = append(paged, ids(out)...)
			next, ok := out["next_after"].(string)
			if !ok {
				break
			}
			path = "/v1/tokens?limit=4&after=" + next
		}
		if fmt.Sprint(paged) != fmt.Sprint(all) {
			t.Errorf("pages of 4 gave %v, want %v", paged, all)
		}
		if got := ids(f.do("GET", "/v1/tokens?role=merchant&merchant_id=shop-1", f.token, "", 200)); len(got) != 2 {
			t.Errorf("shop-1's merchant tokens: %v, want 2", got)
		}
		if _, err := f.store.RevokeTokenOnce(t.Context(), all[0]); err != nil {
			t.Fatal(err)
		}
		if got := ids(f.do("GET", "/v1/tokens?in_force=true", f.token, "", 200)); len(got) != 5 || slices.Contains(got, all[0]) {
			t.Errorf("tokens in force: %v, want all but %s", got, all[0])
		}
		for q, want := range map[string]string{
			"limit=0": "limit must be", "limit=1001": "limit must be", "role=root": "role must be",
			"in_force=maybe": "in_force must be", "after=nosuch00": "after must be the id of a token",
		} {
			out := f.do("GET", "/v1/tokens?"+q, f.token, "", 400)
			if msg := fmt.Sprint(out["error"].(map[string]any)["message"]); !strings.Contains(msg, want) {
				t.Errorf("?%s: %v, want %q", q, out, want)
			}
		}
	})
}
