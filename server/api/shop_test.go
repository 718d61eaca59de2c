package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

// clockFixture is a fixture whose API and ledger share one clock the test
// moves.
func clockFixture(t *testing.T) (*fixture, func(time.Duration) time.Time) {
	t.Helper()
	return clockFixtureAt(t, "")
}

// clockFixtureAt is clockFixture on the ledger at dsn ("": SQLite in
// t.TempDir()).
func clockFixtureAt(t *testing.T, dsn string, opts ...func(*Config)) (*fixture, func(time.Duration) time.Time) {
	t.Helper()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(d); return now }
	dir := t.TempDir()
	if dsn == "" {
		dsn = filepath.Join(dir, "ledger.db")
	}
	store, err := ledger.Open(context.Background(), dsn, &ledger.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "keys", keys.TokenFile))
	n := &notes{}
	cfg := Config{Ledger: store, Keys: kd, Notifier: n, Now: clock}
	for _, o := range opts {
		o(&cfg)
	}
	srv := httptest.NewServer(New(cfg))
	f := &fixture{t: t, srv: srv, store: store, keys: kd, token: strings.TrimSpace(string(tok)), notes: n}
	t.Cleanup(func() {
		srv.Close()
		if err := store.CheckInvariants(context.Background()); err != nil {
			t.Errorf("ledger invariants: %v", err)
		}
		store.Close()
	})
	f.do("PUT", "/v1/fares", f.token, `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`, 200)
	return f, advance
}

// TestReplacedSecretStopsPassInItsSkew: a lost phone's secret is replaced
// just after its pass expired. Shops (and validators) take the pass's codes
// for the clock skew after its end, so the replacement must deny it too:
// it denied only the passes "not yet expired", and a thief's code paid at
// a shop for up to 30 s after the rider had replaced the secret.
func TestReplacedSecretStopsPassInItsSkew(t *testing.T) {
	f, advance := clockFixture(t)
	r := f.newRider(5_000)
	shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
	cred, err := paycode.ParseCredential(r.cred)
	if err != nil {
		t.Fatal(err)
	}
	now := advance(time.Unix(int64(cred.NotAfter), 0).Add(10 * time.Second).Sub(advance(0)))
	// The code verifies now: within the skew after the pass's end.
	if d := paycode.Verify(r.code(t, now, 1), now, f.keys.Keyring(), paycode.Policy{}); !d.Accepted {
		t.Fatalf("the code 10 s after the pass's end: %+v; want accepted (skew)", d)
	}
	out := f.do("POST", path("/v1/accounts/%d/secret", r.id), r.secret, "", 200)
	if n := out["credentials_denied"].(float64); n != 1 {
		t.Errorf("credentials_denied = %v; want 1 (the pass still takes codes within the skew)", n)
	}
	before := f.snapshot()
	body, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": "thief-1", "code": r.code(t, now, 2), "amount": 4_000})
	if e := f.do("POST", "/v1/payments", shop, string(body), 403); errCode(e) != "denied" {
		t.Errorf("a code of the lost phone's pass after the secret was replaced: %v; want denied", e)
	}
	if after := f.snapshot(); after != before {
		t.Errorf("the thief's payment moved money:\n%s\n%s", before, after)
	}
}

// TestPaidCodeNotHiddenByRefunds: the rider's account names the codes
// shops took lately, however many entries came after the payment. The
// wallet renews a code on screen that a shop took (shown on a bus, it is a
// code used twice and blocks the pass) by finding it in the account's
// answer; it read the newest ten statement entries, and a rogue shop that
// sent ten refunds of a cent right after its payment pushed the payment out
// of them: the wallet kept the shop's code on screen.
func TestPaidCodeNotHiddenByRefunds(t *testing.T) {
	f := newFixture(t)
	r := f.newRider(5_000)
	shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
	code := r.code(t, time.Now(), 1)
	body, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": "o-1", "code": code, "amount": 350})
	f.do("POST", "/v1/payments", shop, string(body), 201)
	for i := range 10 {
		f.do("POST", "/v1/payments/shop-1/o-1/refunds", shop, fmt.Sprintf(`{"refund_id":"r-%d","amount":1}`, i), 201)
	}
	acct := f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 200)
	hash := paycode.ShortHash(code)
	for _, e := range acct["recent_activity"].([]any) {
		if e := e.(map[string]any); e["kind"] == "payment" {
			t.Fatalf("the payment is among the newest entries (%v): the test does not push it out", e)
		}
	}
	var found map[string]any
	for _, p := range asList(acct["paid_codes"]) {
		if p := p.(map[string]any); p["code_hash"] == hash {
			found = p
		}
	}
	if found == nil || found["merchant_id"] != "shop-1" || found["amount"] != 350.0 {
		t.Errorf("the account's paid_codes %v do not name the code shop-1 took (%s) for 350", acct["paid_codes"], hash)
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }
