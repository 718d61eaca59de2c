package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

type notes struct {
	mu    sync.Mutex
	kinds []string
}

func (n *notes) Changed(kind string) { n.mu.Lock(); n.kinds = append(n.kinds, kind); n.mu.Unlock() }
func (n *notes) count(kind string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, k := range n.kinds {
		if k == kind {
			c++
		}
	}
	return c
}

type fixture struct {
	t     *testing.T
	srv   *httptest.Server
	store *ledger.Store
	keys  *keys.Dir
	token string
	notes *notes
}

func newFixture(t *testing.T, opts ...func(*Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	store, err := ledger.Open(context.Background(), filepath.Join(dir, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "keys", keys.TokenFile))
	n := &notes{}
	cfg := Config{Ledger: store, Keys: kd, Notifier: n}
	for _, o := range opts {
		o(&cfg)
	}
	h := New(cfg)
	srv := httptest.NewServer(h)
	f := &fixture{t: t, srv: srv, store: store, keys: kd, token: strings.TrimSpace(string(tok)), notes: n}
	t.Cleanup(func() {
		srv.Close()
		if err := store.CheckInvariants(context.Background()); err != nil {
			t.Errorf("ledger invariants: %v", err)
		}
		store.Close()
	})
	f.do("PUT", "/v1/fares", f.token, `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`, 200)
	return f
}

// do sends a request and checks the status; it returns the decoded body.
func (f *fixture) do(method, path, token, body string, want int) map[string]any {
	f.t.Helper()
	out, _ := f.doHeader(method, path, token, body, want)
	return out
}

// doHeader is do that also returns the answer's header.
func (f *fixture) doHeader(method, path, token, body string, want int) (map[string]any, http.Header) {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		f.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, resp.StatusCode, want, data)
	}
	var out map[string]any
	if len(data) > 0 && data[0] == '{' {
		if err := json.Unmarshal(data, &out); err != nil {
			f.t.Fatalf("%s %s: bad JSON %s", method, path, data)
		}
	}
	if want >= 400 {
		e, _ := out["error"].(map[string]any)
		if e == nil || e["code"] == "" || e["message"] == "" {
			f.t.Fatalf("%s %s: error body without code and message: %s", method, path, data)
		}
	}
	return out, resp.Header
}

func errCode(m map[string]any) string { return m["error"].(map[string]any)["code"].(string) }

// noFigures returns an error answer's message if it holds a number (a
// balance, a limit), else "".
func noFigures(m map[string]any) string {
	msg, _ := m["error"].(map[string]any)["message"].(string)
	if strings.ContainsAny(msg, "0123456789") {
		return msg
	}
	return ""
}

type rider struct {
	id     uint64
	secret string
	key    []byte // token seed
	cred   []byte
}

func (f *fixture) newRider(topUp int64) *rider {
	f.t.Helper()
	out := f.do("POST", "/v1/accounts", "", `{"profile":"adult","name":"Ada"}`, 201)
	r := &rider{id: uint64(out["account"].(map[string]any)["id"].(float64)), secret: out["secret"].(string)}
	if topUp > 0 {
		f.do("POST", path("/v1/accounts/%d/topups", r.id), f.token, `{"amount":`+itoa(topUp)+`,"reference":"psp-`+itoa(int64(r.id))+`"}`, 200)
	}
	c := f.do("POST", path("/v1/accounts/%d/credentials", r.id), r.secret, "", 201)
	r.key, _ = hex.DecodeString(c["token_seed"].(string))
	r.cred, _ = hex.DecodeString(c["credential"].(string))
	return r
}

func (r *rider) code(t *testing.T, at time.Time, counter uint16) string {
	t.Helper()
	k, err := paycode.RiderKey(r.key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := paycode.MakeCode(r.cred, k, at, counter)
	if err != nil {
		t.Fatal(err)
	}
	return paycode.EncodeText(b)
}

func path(format string, id uint64) string { return strings.Replace(format, "%d", itoa(int64(id)), 1) }
func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestAccountsAndCredentials(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1000)
	acct := f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 200)
	if acct["balance"].(float64) != 1000 || acct["currency"] != "EUR" || acct["profile"] != "adult" {
		t.Errorf("account = %v", acct)
	}
	// The issued credential verifies against the published keyring.
	kr := f.keys.Keyring()
	d := paycode.Verify(r.code(t, time.Now(), 1), time.Now(), kr, paycode.Policy{})
	if !d.Accepted || d.Code.Account != r.id || d.Code.Serial != 1 {
		t.Fatalf("issued credential: %+v", d)
	}
	// A second credential gets the next serial; a rider-supplied key gets no seed.
	pub := hex.EncodeToString(ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey))
	c2 := f.do("POST", path("/v1/accounts/%d/credentials", r.id), r.secret, `{"rider_public_key":"`+pub+`"}`, 201)
	if c2["serial"].(float64) != 2 || c2["token_seed"] != nil {
		t.Errorf("second credential = %v", c2)
	}
	other := f.newRider(300)
	f.do("GET", path("/v1/accounts/%d", r.id), other.secret, "", 403)
	f.do("GET", path("/v1/accounts/%d", r.id), "", "", 401)
	f.do("GET", path("/v1/accounts/%d", r.id), f.token, "", 200) // the operator may look
	f.do("POST", path("/v1/accounts/%d/credentials", r.id), f.token, "", 403)
	f.do("GET", "/v1/accounts/99999999", r.secret, "", 403)
	f.do("GET", "/v1/accounts/x", r.secret, "", 400)
	f.do("POST", "/v1/accounts", "", `{"profile":"pensioner"}`, 400)
	f.do("POST", "/v1/accounts", "", `{"profile":"adult","admin":true}`, 400)
	f.do("POST", "/v1/accounts", "", `{"name":"`+strings.Repeat("x", maxBody)+`"}`, 413)
	f.do("POST", path("/v1/accounts/%d/topups", r.id), r.secret, `{"amount":5,"reference":"r"}`, 403)
	f.do("POST", path("/v1/accounts/%d/topups", r.id), f.token, `{"amount":-5,"reference":"r"}`, 400)
	f.do("GET", "/v1/nothing", "", "", 404)
}

// TestRotationActivation: a rotation without a body publishes the new key
// at once and signs with it only after the activation delay (24 h by
// default), so a validator offline today does not refuse riders who renew
// their pass; credentials are never valid beyond their key's window.
func TestRotationActivation(t *testing.T) {
	f := newFixture(t)
	kr := f.do("POST", "/v1/keyring/rotate", f.token, "", 200)
	if kr["version"].(float64) != 2 || len(kr["keys"].([]any)) != 2 {
		t.Fatalf("rotated keyring = %v", kr)
	}
	r := f.newRider(1000)
	d := paycode.Verify(r.code(t, time.Now(), 1), time.Now(), f.keys.Keyring(), paycode.Policy{})
	if !d.Accepted || d.Code.KeyID != 1 {
		t.Fatalf("credential right after the rotation: %+v; want key 1's until the new key is active", d)
	}
	if id, _, _ := f.keys.SigningKey(time.Now().Add(keys.DefaultKeyActivation + time.Minute)); id != 2 {
		t.Errorf("signing key after the activation delay: %d; want 2", id)
	}
	if end := time.Unix(int64(d.Code.NotAfter), 0); end.After(f.keys.KeyEnd(1)) {
		t.Errorf("credential ends %s, after its key (%s)", end, f.keys.KeyEnd(1))
	}
}

// TestCredentialWithinKeyWindow: a credential issued an hour before its
// key's window ends ends with the key, not 24 h later (validators refuse a
// code of a key past its end: the rider held a "valid" pass that failed).
func TestCredentialWithinKeyWindow(t *testing.T) {
	dir := t.TempDir()
	store, err := ledger.Open(context.Background(), filepath.Join(dir, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{KeyValidity: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "keys", keys.TokenFile))
	srv := httptest.NewServer(New(Config{Ledger: store, Keys: kd, Notifier: &notes{}}))
	defer srv.Close()
	f := &fixture{t: t, srv: srv, store: store, keys: kd, token: strings.TrimSpace(string(tok)), notes: &notes{}}
	f.do("PUT", "/v1/fares", f.token, `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`, 200)
	r := f.newRider(1000)
	d := paycode.Verify(r.code(t, time.Now(), 1), time.Now(), kd.Keyring(), paycode.Policy{})
	if !d.Accepted {
		t.Fatalf("credential: %+v", d)
	}
	if end := time.Unix(int64(d.Code.NotAfter), 0); end.After(kd.KeyEnd(1)) || end.Before(time.Now().Add(time.Hour)) {
		t.Errorf("credential ends %s; want the key's end %s", end, kd.KeyEnd(1))
	}
}

func TestOnlinePayment(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(500)
	now := time.Now()
	code := r.code(t, now, 1)
	body := func(order string, code string, amount int64) string {
		b, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": order, "code": code, "amount": amount})
		return string(b)
	}
	p := f.do("POST", "/v1/payments", f.token, body("o-1", code, 300), 201)
	if p["status"] != "paid" || p["amount"].(float64) != 300 || p["account"].(float64) != float64(r.id) {
		t.Errorf("payment = %v", p)
	}
	// The same order again: the same payment, charged once.
	again := f.do("POST", "/v1/payments", f.token, body("o-1", code, 300), 201)
	if again["id"] != p["id"] {
		t.Errorf("retry made a new payment: %v vs %v", again["id"], p["id"])
	}
	if e := f.do("POST", "/v1/payments", f.token, body("o-1", code, 301), 409); errCode(e) != "conflict" {
		t.Errorf("same order, other amount: %v", e)
	}
	// What a shop's scanner shows says what to do, in words (it said
	// "ledger: payment code already used", and a bare "code_expired").
	if e := f.do("POST", "/v1/payments", f.token, body("o-2", code, 100), 409); errCode(e) != "code_used" ||
		!strings.Contains(e["error"].(map[string]any)["message"].(string), "ask the rider to show a new code") {
		t.Errorf("the same code for another order: %v", e)
	}
	if e := f.do("POST", "/v1/payments", f.token, body("o-3", r.code(t, now, 2), 300), 402); errCode(e) != "insufficient_funds" || noFigures(e) != "" ||
		e["error"].(map[string]any)["minimum_balance"] != nil {
		t.Errorf("over the balance: %v; the shop must not read the rider's figures (%s)", e, noFigures(e))
	}
	if e := f.do("POST", "/v1/payments", f.token, body("o-4", r.code(t, now.Add(-10*time.Minute), 3), 10), 422); errCode(e) != "invalid_code" ||
		e["error"].(map[string]any)["reason"] != "code_expired" ||
		!strings.HasPrefix(e["error"].(map[string]any)["message"].(string), "code_expired: the code is too old: ask the rider to show a new one") {
		t.Errorf("expired code: %v", e)
	}
	if e := f.do("POST", "/v1/payments", f.token, body("o-6", "not a code", 10), 422); e["error"].(map[string]any)["reason"] != "malformed" ||
		!strings.Contains(e["error"].(map[string]any)["message"].(string), "not a farego payment code") {
		t.Errorf("a misread code: %v", e)
	}
	f.do("POST", "/v1/payments", "", body("o-5", r.code(t, now, 4), 10), 401)
	acct := f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 200)
	if acct["balance"].(float64) != 200 {
		t.Errorf("balance after one payment of 300 from 500 = %v", acct["balance"])
	}
}

func TestFleetEndpoints(t *testing.T) {
	f := newFixture(t)
	k1, k2 := devKey(1), devKey(2)
	reg := f.do("POST", "/v1/devices", f.token, `{"id":"bus-1","public_key":"`+k1+`"}`, 201)
	if pw, _ := reg["mqtt_password"].(string); len(pw) != 64 || reg["mqtt_client_id"] != "farego-dev-bus-1" {
		t.Errorf("registration = %v", reg)
	}
	f.do("POST", "/v1/devices", f.token, `{"id":"bus-1","public_key":"`+k2+`"}`, 409)
	f.do("POST", "/v1/devices", f.token, `{"id":"bus/1","public_key":"`+k2+`"}`, 400)
	f.do("POST", "/v1/devices", "", `{"id":"bus-2","public_key":"`+k2+`"}`, 401)
	f.do("POST", "/v1/devices/bus-1/replay", f.token, `{"from":1}`, 503) // no MQTT link in this fixture
	f.do("POST", "/v1/devices/bus-1/replay", "", `{"from":1}`, 401)
	ds := f.do("GET", "/v1/devices", f.token, "", 200)
	if n := len(ds["devices"].([]any)); n != 1 {
		t.Errorf("%d devices, want 1", n)
	}
	if f.notes.count(record.DocFares) != 1 {
		t.Errorf("fare upload did not notify the publisher")
	}
	f.do("PUT", "/v1/fares", f.token, `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":1,"child":1,"senior":1,"student":1}}}`, 409)
	f.do("PUT", "/v1/fares", f.token, `{"version":2}`, 400)
	// A table naming no zone would rate every day in UTC (for a Berlin
	// operator, one or two hours off): refused when published.
	if e := f.do("PUT", "/v1/fares", f.token, `{"version":2,"currency":"EUR","fares":{"*":{"adult":300,"child":1,"senior":1,"student":1}}}`, 400); !strings.Contains(fmt.Sprint(e), "names no timezone") {
		t.Errorf("a table without a timezone: %v", e)
	}
	// Route names as every other route name: no control or bidi-override
	// characters (a route shown reversed in the console), no surrounding
	// spaces.
	for _, route := range []string{`42\u0000`, `\u202e42`, ` 42`} {
		if e := f.do("PUT", "/v1/fares", f.token, `{"version":2,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":300,"child":1,"senior":1,"student":1},"`+
			route+`":{"adult":1}}}`, 400); !strings.Contains(fmt.Sprint(e), "route") {
			t.Errorf("a table with route %s: %v", route, e)
		}
	}
	f.do("PUT", "/v1/fares", f.token, `{"version":2,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":300,"child":1,"senior":1,"student":1}}}`, 200)
	if fares := f.do("GET", "/v1/fares", "", "", 200); fares["version"].(float64) != 2 {
		t.Errorf("fares = %v", fares)
	}
	f.do("POST", "/v1/keyring/rotate", f.token, `{"activate_in":"-1h"}`, 400)
	f.do("POST", "/v1/keyring/rotate", f.token, `{"activate_in":"soon"}`, 400)
	f.do("POST", "/v1/keyring/rotate", f.token, `{"activate_in":"900h"}`, 400)
	kr := f.do("POST", "/v1/keyring/rotate", f.token, `{"activate_in":"0s"}`, 200)
	if kr["version"].(float64) != 2 || len(kr["keys"].([]any)) != 2 || f.notes.count(record.DocKeyring) != 1 {
		t.Errorf("rotated keyring = %v", kr)
	}
	if audit := fmt.Sprint(f.do("GET", "/v1/audit", f.token, "", 200)["entries"]); strings.Contains(audit, "superseded") {
		t.Errorf("a rotation superseding no pending key says it does: %s", audit)
	}
	// New credentials are signed by the new key (at once, as asked).
	r := f.newRider(1000)
	if d := paycode.Verify(r.code(t, time.Now(), 1), time.Now(), f.keys.Keyring(), paycode.Policy{}); !d.Accepted || d.Code.KeyID != 2 {
		t.Errorf("credential after rotation: %+v", d)
	}
	before := f.notes.count(record.DocDenyList)
	f.do("POST", "/v1/denylist", f.token, `{"account":`+itoa(int64(r.id))+`,"reason":"lost_phone"}`, 200)
	dl := f.do("GET", "/v1/denylist", f.token, "", 200)
	if len(dl["entries"].([]any)) != 1 || f.notes.count(record.DocDenyList) != before+1 {
		t.Errorf("deny list = %v", dl)
	}
	if e := f.do("POST", path("/v1/accounts/%d/credentials", r.id), r.secret, "", 403); errCode(e) != "not_in_good_standing" {
		t.Errorf("credential for a denied account: %v", e)
	}
	// A note the audit trail would not keep clears nothing.
	f.do("DELETE", "/v1/denylist", f.token, `{"account":`+itoa(int64(r.id))+`,"reason":"lost_phone","note":"found \u0007"}`, 400)
	if dl := f.do("GET", "/v1/denylist", f.token, "", 200); len(dl["entries"].([]any)) != 1 {
		t.Errorf("a refused clear changed the deny list: %v", dl)
	}
	f.do("DELETE", "/v1/denylist", f.token, `{"account":`+itoa(int64(r.id))+`,"reason":"lost_phone","note":"phone found"}`, 200)
	if audit := fmt.Sprint(f.do("GET", "/v1/audit", f.token, "", 200)["entries"]); !strings.Contains(audit, `reason "lost_phone" note "phone found"`) {
		t.Errorf("the clear's note is not in the audit trail: %s", audit)
	}
	f.do("POST", path("/v1/accounts/%d/credentials", r.id), r.secret, "", 201)
	if h := f.do("GET", "/healthz", "", "", 200); h["ok"] != true {
		t.Errorf("healthz = %v", h)
	}
	resp, err := http.Get(f.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(m, []byte(`farego_http_requests_total{route="POST /v1/accounts",status="2xx"}`)) {
		t.Errorf("metrics lack request counts:\n%s", m)
	}
}

func FuzzAPI(f *testing.F) {
	f.Add("POST", "/v1/accounts", `{"profile":"child"}`)
	f.Add("PUT", "/v1/accounts/1000/profile", `{"profile":"senior"}`)
	f.Add("PUT", "/v1/accounts/1000/payment_limit", `{"amount":1e30}`)
	f.Add("POST", "/v1/payments", `{"merchant_id":"m","order_id":"o","code":"FG1:","amount":1}`)
	f.Add("POST", "/v1/payments/m/o/refunds", `{"refund_id":"r","amount":9223372036854775807,"reason":"\u0000"}`)
	f.Add("PUT", "/v1/fares", `{"version":9}`)
	f.Add("POST", "/v1/devices", `{"id":"a","public_key":"00"}`)
	f.Add("POST", "/v1/denylist", `{"account":1,"reason":"x"}`)
	f.Add("GET", "/v1/accounts/1000/rides?limit=-1", ``)
	f.Add("GET", "/v1/accounts/1000/statement?limit=1&before=18446744073709551615", ``)
	dir := f.TempDir()
	store, err := ledger.Open(context.Background(), filepath.Join(dir, "ledger.db"), nil)
	if err != nil {
		f.Fatal(err)
	}
	defer store.Close()
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{})
	if err != nil {
		f.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "keys", keys.TokenFile))
	h := New(Config{Ledger: store, Keys: kd})
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") {
			return
		}
		switch method {
		case "GET", "POST", "PUT", "DELETE":
		default:
			return
		}
		req, err := http.NewRequest(method, "http://x"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: status %d: %s", method, target, body, rec.Code, rec.Body)
		}
	})
	if err := store.CheckInvariants(context.Background()); err != nil {
		f.Fatal(err)
	}
}

// devKey is a device public key (hex) made from a seed byte.
func devKey(n byte) string {
	seed := make([]byte, 32)
	seed[0] = n
	return hex.EncodeToString(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
}

// TestResponsesAreNotPages: every API answer (a result, an error quoting
// the request's path, the metrics) tells a browser not to sniff it as a
// page, run anything from it or frame it (the wallet and the console share
// the API's origin).
func TestResponsesAreNotPages(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		path string
		want int
	}{
		{"/v1/fares", 200},
		{"/v1/<script>alert(1)</script>", 404},
		{"/healthz", 200},
	} {
		resp, err := http.Get(f.srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("GET %s: status %d, want %d", c.path, resp.StatusCode, c.want)
		}
		h := resp.Header
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" ||
			!strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") ||
			!strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("GET %s: headers %v: want nosniff, no framing and nothing allowed to run", c.path, h)
		}
	}
}

// TestReplaceSecret: a rider replaces their secret (a phone lost, a secret
// seen): the old one stops working at once, the new one works; a second
// replacement with the old secret is refused; the operator or the payment
// provider resets a lost one (audited), a merchant or another rider may
// not; the ledger checks clean.
func TestReplaceSecret(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(1000)
	other := f.newRider(1000)
	payment := func(order string, rd *rider, counter uint16) string {
		b, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": order, "code": rd.code(t, time.Now(), counter),
			"amount": 100})
		return string(b)
	}
	out := f.do("POST", path("/v1/accounts/%d/secret", r.id), r.secret, "", 200)
	fresh, _ := out["secret"].(string)
	if len(fresh) != 64 || fresh == r.secret {
		t.Fatalf("new secret %q", fresh)
	}
	if out["credentials_denied"] != float64(1) {
		t.Errorf("credentials_denied = %v, want 1 (the pass issued before)", out["credentials_denied"])
	}
	f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 403)
	f.do("GET", path("/v1/accounts/%d", r.id), fresh, "", 200)
	// The pass issued before the change (a lost phone's) pays no more; a
	// new one, fetched with the new secret, does.
	if e := f.do("POST", "/v1/payments", f.token, payment("lost-1", r, 1), 403); errCode(e) != "denied" {
		t.Errorf("a code of a credential issued before the change: %v", e)
	}
	renewed := *r
	c := f.do("POST", path("/v1/accounts/%d/credentials", r.id), fresh, "", 201)
	renewed.key, _ = hex.DecodeString(c["token_seed"].(string))
	renewed.cred, _ = hex.DecodeString(c["credential"].(string))
	f.do("POST", "/v1/payments", f.token, payment("new-1", &renewed, 1), 201)
	if bl, _ := f.do("GET", path("/v1/accounts/%d", r.id), fresh, "", 200)["blocked_credentials"].([]any); len(bl) != 1 {
		t.Errorf("blocked credentials after the change: %v, want serial 1 alone", bl)
	}
	f.do("POST", path("/v1/accounts/%d/secret", r.id), r.secret, "", 403)
	f.do("POST", path("/v1/accounts/%d/secret", r.id), other.secret, "", 403)
	f.do("POST", path("/v1/accounts/%d/secret", r.id), f.tokenFor(ledger.RoleMerchant, "shop-1"), "", 403)
	f.do("POST", path("/v1/accounts/%d/secret", r.id), "", "", 401)
	f.do("POST", path("/v1/accounts/%d/secret", r.id), fresh, `{"secret":"mine"}`, 400)

	psp := f.tokenFor(ledger.RolePayments, "")
	reset := f.do("POST", path("/v1/accounts/%d/secret", r.id), psp, "", 200)["secret"].(string)
	f.do("GET", path("/v1/accounts/%d", r.id), fresh, "", 403)
	f.do("GET", path("/v1/accounts/%d", r.id), reset, "", 200)
	entries, err := f.store.AuditLog(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		found = found || (e.Action == "replace_secret" && e.Target == itoa(int64(r.id)))
	}
	if !found {
		t.Errorf("the payment provider's reset is not in the audit trail: %+v", entries)
	}
	f.do("POST", "/v1/accounts/99999/secret", psp, "", 404)
}

// TestPaymentLimit: a rider bounds what one payment by code may take; a
// shop's scanner asking for more is refused (403 over_limit), nothing
// written and the code still good for an amount within the limit. Only the
// rider (with their secret) and the operator (audited) set it.
func TestPaymentLimit(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(10_000)
	other := f.newRider(1_000)
	limit := path("/v1/accounts/%d/payment_limit", r.id)
	if a := f.do("PUT", limit, r.secret, `{"amount":500}`, 200); a["payment_limit"] != float64(500) {
		t.Fatalf("the rider's limit: %v", a)
	}
	f.do("PUT", limit, other.secret, `{"amount":100000}`, 403)
	f.do("PUT", limit, f.tokenFor(ledger.RoleMerchant, "shop-1"), `{"amount":100000}`, 403)
	f.do("PUT", limit, f.tokenFor(ledger.RolePayments, ""), `{"amount":100000}`, 403)
	f.do("PUT", limit, r.secret, `{"amount":-1}`, 400)
	f.do("PUT", limit, r.secret, `{}`, 400)
	f.do("PUT", limit, "", `{"amount":1}`, 401)

	shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
	code := r.code(t, time.Now(), 1)
	pay := func(order string, amount int64, want int) map[string]any {
		b, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": order, "code": code, "amount": amount})
		return f.do("POST", "/v1/payments", shop, string(b), want)
	}
	before := f.snapshot()
	if e := pay("o-1", 9_000, 403); errCode(e) != "over_limit" || noFigures(e) != "" {
		t.Errorf("a payment over the rider's limit: %v; the shop must not read the rider's limit (%s)", e, noFigures(e))
	}
	if after := f.snapshot(); after != before {
		t.Errorf("a refused payment changed the ledger: %s → %s", before, after)
	}
	pay("o-2", 500, 201) // the same code, within the limit
	if a := f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 200); a["balance"] != float64(9_500) {
		t.Errorf("balance after a payment of 500: %v", a["balance"])
	}
	if a := f.do("PUT", limit, f.token, `{"amount":0}`, 200); a["payment_limit"] != nil {
		t.Errorf("the operator removed the limit: %v", a)
	}
	entries, err := f.store.AuditLog(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || entries[0].Action != "payment_limit" || entries[0].Target != itoa(int64(r.id)) {
		t.Errorf("the operator's change is not the newest audit entry: %+v", entries)
	}
}

// A shop refunds its own payment, in parts, never more than was paid; a
// till's retry is the same refund; a rogue shop cannot refund another's
// order (nor can a rider, the payment provider or an auditor); the
// operator can, and is audited. The ledger's invariants hold at cleanup.
func TestRefund(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(10_000)
	shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
	b, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": "o-1", "code": r.code(t, time.Now(), 1), "amount": 2_000})
	paid := f.do("POST", "/v1/payments", shop, string(b), 201)
	if paid["refunded"] != float64(0) {
		t.Errorf("a new payment: %v", paid)
	}
	refunds := "/v1/payments/shop-1/o-1/refunds"
	first := f.do("POST", refunds, shop, `{"refund_id":"rf-1","amount":500,"reason":"one item back"}`, 201)
	if first["amount"] != float64(500) || first["refunded"] != float64(500) || first["refundable"] != float64(1_500) ||
		first["account"] != float64(r.id) || first["payment_id"] != paid["id"] {
		t.Errorf("refund: %v", first)
	}
	before := f.snapshot()
	if again := f.do("POST", refunds, shop, `{"refund_id":"rf-1","amount":500}`, 201); again["refunded"] != float64(500) ||
		again["created_at"] != first["created_at"] {
		t.Errorf("the retry: %v, want %v", again, first)
	}
	for _, tc := range []struct {
		path, token, body string
		status            int
		code              string
	}{
		{refunds, shop, `{"refund_id":"rf-1","amount":501}`, 409, "conflict"},
		{refunds, shop, `{"refund_id":"rf-2","amount":1501}`, 409, "over_refund"},
		{refunds, shop, `{"refund_id":"rf-2","amount":0}`, 400, "invalid"},
		{refunds, shop, `{"refund_id":"","amount":5}`, 400, "invalid"},
		{refunds, shop, `{"refund_id":"rf-2","amount":5,"extra":1}`, 400, "bad_json"},
		{refunds, shop, `{"refund_id":"` + strings.Repeat("x", 200) + `","amount":5}`, 400, "invalid"},
		{"/v1/payments/shop-1/o-404/refunds", shop, `{"refund_id":"rf-2","amount":5}`, 404, "not_found"},
		{refunds, f.tokenFor(ledger.RoleMerchant, "shop-2"), `{"refund_id":"rf-2","amount":5}`, 403, "forbidden"},
		{"/v1/payments/shop-2/o-1/refunds", shop, `{"refund_id":"rf-2","amount":5}`, 403, "forbidden"},
		{refunds, f.tokenFor(ledger.RolePayments, ""), `{"refund_id":"rf-2","amount":5}`, 403, "forbidden"},
		{refunds, f.tokenFor(ledger.RoleAuditor, ""), `{"refund_id":"rf-2","amount":5}`, 403, "forbidden"},
		{refunds, r.secret, `{"refund_id":"rf-2","amount":5}`, 403, "forbidden"},
		{refunds, "", `{"refund_id":"rf-2","amount":5}`, 401, "unauthorized"},
	} {
		if e := f.do("POST", tc.path, tc.token, tc.body, tc.status); errCode(e) != tc.code {
			t.Errorf("POST %s %s: %v, want %s", tc.path, tc.body, e, tc.code)
		}
	}
	if after := f.snapshot(); after != before {
		t.Errorf("a retry or a refused refund changed the ledger: %s → %s", before, after)
	}
	// The refusal names the role with its article (it said "a auditor").
	for role, want := range map[string]string{ledger.RoleAuditor: "an auditor token may not do this",
		ledger.RolePayments: "a payments token may not do this"} {
		e := f.do("POST", refunds, f.tokenFor(role, ""), `{"refund_id":"rf-2","amount":5}`, 403)
		if msg, _ := e["error"].(map[string]any)["message"].(string); msg != want {
			t.Errorf("a %s token's refund refused with %q, want %q", role, msg, want)
		}
	}
	// The operator refunds the rest, audited; then nothing is left.
	f.do("POST", refunds, f.token, `{"refund_id":"ops-1","amount":1500,"reason":"complaint 77"}`, 201)
	if audit := fmt.Sprint(f.do("GET", "/v1/audit", f.token, "", 200)["entries"]); !strings.Contains(audit, `refund "ops-1" of payment`) ||
		!strings.Contains(audit, `amount 1500 EUR, refunded 2000 of 2000; token init; reason "complaint 77"`) {
		t.Errorf("the operator's refund audited without its reason: %s", audit)
	}
	if e := f.do("POST", refunds, shop, `{"refund_id":"rf-3","amount":1}`, 409); errCode(e) != "over_refund" {
		t.Errorf("refund beyond the payment: %v", e)
	}
	got := f.do("GET", "/v1/payments/shop-1/o-1", shop, "", 200)
	list, _ := got["refunds"].([]any)
	if got["refunded"] != float64(2_000) || len(list) != 2 {
		t.Errorf("the payment with its refunds: %v", got)
	}
	// The till's retry of the payment now: the same order, nothing
	// moved, and what it was refunded by now (it said 0 before).
	if again := f.do("POST", "/v1/payments", shop, string(b), 201); again["id"] != paid["id"] || again["refunded"] != float64(2_000) {
		t.Errorf("the payment's retry after its refunds: %v, want order %v refunded 2000", again, paid["id"])
	}
	a := f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 200)
	if a["balance"] != float64(10_000) {
		t.Errorf("balance %v, want 10000 (the payment all given back)", a["balance"])
	}
	// The rider sees the shop's payment and its refunds, newest first,
	// with the balance after each; nobody else's token reads them.
	statement := path("/v1/accounts/%d/statement", r.id)
	st := f.do("GET", statement, r.secret, "", 200)
	got2, _ := st["entries"].([]any)
	want := []string{"refund ops-1 1500 10000", "refund rf-1 500 8500", "payment  -2000 8000", "topup  10000 10000"}
	if len(got2) != len(want) {
		t.Fatalf("statement: %v", st)
	}
	for i, e := range got2 {
		m := e.(map[string]any)
		line := fmt.Sprintf("%v %v %v %v", m["kind"], m["refund_id"], m["amount"], m["balance"])
		line = strings.ReplaceAll(line, "<nil>", "")
		if line != want[i] || (m["kind"] != "topup" && (m["merchant_id"] != "shop-1" || m["order_id"] != "o-1")) {
			t.Errorf("statement entry %d: %v, want %q of shop-1's order o-1", i, m, want[i])
		}
	}
	if act, _ := a["recent_activity"].([]any); len(act) != 4 {
		t.Errorf("the account's recent activity: %v", a["recent_activity"])
	}
	f.do("GET", statement, f.newRider(1_000).secret, "", 403)
	f.do("GET", statement, shop, "", 403)
	f.do("GET", statement+"?limit=0", r.secret, "", 400)
	f.do("GET", statement+"?limit=1001", r.secret, "", 400)
	for _, bad := range []string{"0", "-1", "x", "9223372036854775808", "1.5"} {
		f.do("GET", statement+"?before="+bad, r.secret, "", 400)
	}
	// Paged: the same entries, each page but the last naming the next.
	var paged []string
	next := ""
	for range 5 {
		page := f.do("GET", statement+"?limit=3"+next, r.secret, "", 200)
		for _, e := range page["entries"].([]any) {
			m := e.(map[string]any)
			paged = append(paged, fmt.Sprintf("%v %v %v", m["seq"], m["amount"], m["balance"]))
		}
		nb, ok := page["next_before"]
		if !ok {
			break
		}
		next = fmt.Sprintf("&before=%v", nb)
	}
	var whole []string
	for _, e := range got2 {
		m := e.(map[string]any)
		whole = append(whole, fmt.Sprintf("%v %v %v", m["seq"], m["amount"], m["balance"]))
	}
	if strings.Join(paged, ", ") != strings.Join(whole, ", ") {
		t.Errorf("the statement in pages of 3: %v, whole: %v", paged, whole)
	}
	if st := f.do("GET", statement+"?limit=4", r.secret, "", 200); st["next_before"] != nil {
		t.Errorf("a last page names a next one: %v", st)
	}
	if st := f.do("GET", statement+"?limit=1", f.tokenFor(ledger.RoleAuditor, ""), "", 200); len(st["entries"].([]any)) != 1 {
		t.Errorf("the auditor's statement of 1: %v", st)
	}
	entries, err := f.store.AuditLog(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	audited := 0
	for _, e := range entries {
		if e.Action == "refund" {
			audited++
			if e.Target != "shop-1/o-1" {
				t.Errorf("a refund audited as %+v", e)
			}
			if strings.Contains(e.Detail, `"ops-1"`) && !strings.Contains(e.Detail, "amount 1500 EUR") {
				t.Errorf("the operator's refund audited as %+v", e)
			}
		}
	}
	if audited != 2 {
		t.Errorf("%d refunds audited, want 2 (the shop's and the operator's; a retry is not another): %+v", audited, entries)
	}
}

// An operator who sends the earlier file to roll back a mistaken table is
// told it changes nothing (409, the version to publish it as), not 200
// {"version": 1} while the mistaken table goes on charging; a retry of the
// latest table is still 200, and nothing is audited or published for the
// refused one.
func TestFaresOlderVersionRefused(t *testing.T) {
	f := newFixture(t) // version 1: adult 250
	v1 := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	typo := `{"version":2,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":2500,"child":120,"senior":120,"student":180}}}`
	f.do("PUT", "/v1/fares", f.token, typo, 200)
	f.do("PUT", "/v1/fares", f.token, typo, 200) // a retry
	published := f.notes.count(record.DocFares)
	audit := f.do("GET", "/v1/audit", f.token, "", 200)["entries"].([]any)
	e := f.do("PUT", "/v1/fares", f.token, v1, http.StatusConflict)
	if msg := fmt.Sprint(e); !strings.Contains(msg, "stale_version") || !strings.Contains(msg, "as version 3") {
		t.Errorf("the earlier table again: %v; want stale_version naming version 3", e)
	}
	if fares := f.do("GET", "/v1/fares", "", "", 200); fares["version"].(float64) != 2 {
		t.Errorf("fares in force = %v, want version 2", fares["version"])
	}
	if n := f.notes.count(record.DocFares); n != published {
		t.Errorf("the refused table was published (%d, want %d)", n, published)
	}
	if after := f.do("GET", "/v1/audit", f.token, "", 200)["entries"].([]any); len(after) != len(audit) {
		t.Errorf("the refused table was audited: %v", after[0])
	}
	// Its fares published as the next version roll the mistake back.
	f.do("PUT", "/v1/fares", f.token, strings.Replace(v1, `"version":1`, `"version":3`, 1), 200)
}

// A fare table whose route list leaves out a route a validator serves puts
// that validator out of service once it applies it (route_not_in_fares).
// The console's confirmation names such devices; the API's answer said only
// {"version": 3}, so a script publishing tables took buses off their route
// unawares. It names them now (revoked devices and covered routes not).
func TestFaresNameDevicesLeftOut(t *testing.T) {
	f := newFixture(t)
	for i, id := range []string{"bus-42", "bus-x1", "bus-old", "bus-new"} {
		f.do("POST", "/v1/devices", f.token, `{"id":"`+id+`","public_key":"`+devKey(byte(i+1))+`"}`, 201)
	}
	f.do("POST", "/v1/devices/bus-old/revoke", f.token, "", 200)
	ctx := context.Background()
	// A device that has not tapped yet is on the route its status
	// reports (it was not named: only taps told a route).
	if err := f.store.UpdateDeviceStatus(ctx, "bus-new", ledger.DeviceStatus{Online: true, LastSeen: time.Now(), Route: "42", Vehicle: "v9"}); err != nil {
		t.Fatal(err)
	}
	a, err := f.store.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult, Name: "rider", SecretHash: []byte("hash")})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var taps []ledger.Tap
	for i, d := range []struct{ dev, route string }{{"bus-42", "42"}, {"bus-x1", "X1"}} {
		key := paycode.ID{Account: a.ID, Serial: 1, Time: uint32(now.Unix()), Counter: uint16(i + 1)}.Key()
		taps = append(taps, ledger.Tap{ID: ledger.TapID(d.dev, "e1", 1), DeviceID: d.dev, Seq: 1, Epoch: "e1", Time: now,
			Account: a.ID, Serial: 1, RiderKey: make([]byte, 32), CodeKey: key, CodeHash: fmt.Sprintf("00000000000%d", i),
			BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: d.route, Flag: ledger.FlagInvalidCode, Record: []byte("record")})
	}
	if _, err := f.store.CommitTaps(ctx, taps); err != nil {
		t.Fatal(err)
	}
	all := `{"version":2,"currency":"EUR","timezone":"UTC","routes":["X1","42"],"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	if got := f.do("PUT", "/v1/fares", f.token, all, 200); got["out_of_service"] != nil {
		t.Errorf("a table serving every route: %v", got)
	}
	only := `{"version":3,"currency":"EUR","timezone":"UTC","routes":["X1"],"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	got := f.do("PUT", "/v1/fares", f.token, only, 200)
	if fmt.Sprint(got["out_of_service"]) != "[bus-42 bus-new]" || got["out_of_service_count"] != float64(2) {
		t.Errorf("a table leaving route 42 out: %v; want bus-42 and bus-new named out of service", got)
	}
}

// TestFaresAboveTheDailyCap: a fare above its profile's daily cap (a cap
// typed 70 for 700) makes such a rider pay the cap from the first ride;
// the console's preview marks it, and the API's answer names it too
// (operator review: it said nothing).
func TestFaresAboveTheDailyCap(t *testing.T) {
	f := newFixture(t)
	ok := `{"version":2,"currency":"EUR","timezone":"UTC","daily_cap":{"adult":700},"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	if got := f.do("PUT", "/v1/fares", f.token, ok, 200); got["above_daily_cap"] != nil {
		t.Errorf("caps above every fare: %v", got)
	}
	typo := `{"version":3,"currency":"EUR","timezone":"UTC","daily_cap":{"adult":70,"child":500},"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180},"42":{"adult":300}}}`
	got := f.do("PUT", "/v1/fares", f.token, typo, 200)
	want := "[map[daily_cap:70 fare:250 profile:adult route:*] map[daily_cap:70 fare:300 profile:adult route:42]]"
	if fmt.Sprint(got["above_daily_cap"]) != want {
		t.Errorf("an adult cap of 70: above_daily_cap %v, want %s", got["above_daily_cap"], want)
	}
}

// TestRotationSaysWhatItSupersedes: a rotation made while another's key
// waits to sign cuts that key's window; the first rotation's audit entry
// named a date from which it would sign that never comes, and nothing said
// otherwise (operator review). The second entry says so.
func TestRotationSaysWhatItSupersedes(t *testing.T) {
	f := newFixture(t)
	f.do("POST", "/v1/keyring/rotate", f.token, `{"activate_in":"720h"}`, 200)
	kr := f.do("POST", "/v1/keyring/rotate", f.token, `{"activate_in":"0s"}`, 200)
	entries := f.do("GET", "/v1/audit", f.token, "", 200)["entries"].([]any)
	newest := fmt.Sprint(entries[0])
	if !strings.Contains(newest, "rotate_keyring") || !strings.Contains(newest, "key 2, which was to sign from ") || !strings.Contains(newest, "is superseded") {
		t.Errorf("the second rotation's audit entry: %s (keyring %v)", newest, kr)
	}
	if older := fmt.Sprint(entries[1]); strings.Contains(older, "superseded") {
		t.Errorf("the first rotation's entry: %s", older)
	}
}
