package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// onBackends runs fn on SQLite and on PostgreSQL (FAREGO_TEST_POSTGRES).
func onBackends(t *testing.T, fn func(t *testing.T, dsn string)) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := ""
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			fn(t, dsn)
		})
	}
}

func payBody(merchant, order, code string, amount int64) string {
	b, _ := json.Marshal(map[string]any{"merchant_id": merchant, "order_id": order, "code": code, "amount": amount})
	return string(b)
}

// auditEntries reads GET /v1/audit as the operator does, the entries of
// the action.
func (f *fixture) auditEntries(action string) []map[string]any {
	f.t.Helper()
	var out []map[string]any
	for _, e := range f.do("GET", "/v1/audit", f.token, "", 200)["entries"].([]any) {
		if m := e.(map[string]any); m["action"] == action {
			out = append(out, m)
		}
	}
	return out
}

// TestMerchantRefundAudited: a shop's own refund moves money and is in the
// audit trail the operator reads (GET /v1/audit): which token of which
// merchant, which payment, the amount, when. A retry of it, an over-refund
// and a refund of another merchant's order add nothing. Without the fix
// only the operator's refunds were audited.
func TestMerchantRefundAudited(t *testing.T) {
	onBackends(t, func(t *testing.T, dsn string) {
		f, advance := clockFixtureAt(t, dsn)
		r := f.newRider(10_000)
		shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
		toks := f.do("GET", "/v1/tokens", f.token, "", 200)
		var tokenID string
		for _, tk := range toks["tokens"].([]any) {
			if m := tk.(map[string]any); m["merchant_id"] == "shop-1" {
				tokenID = fmt.Sprint(m["id"])
			}
		}
		if tokenID == "" {
			t.Fatalf("the shop's token is not listed: %v", toks)
		}
		paid := f.do("POST", "/v1/payments", shop, payBody("shop-1", "o-1", r.code(t, advance(0), 1), 2_000), 201)
		refunds := "/v1/payments/shop-1/o-1/refunds"
		f.do("POST", refunds, shop, `{"refund_id":"rf-1","amount":700,"reason":"one item back"}`, 201)
		f.do("POST", refunds, shop, `{"refund_id":"rf-1","amount":700,"reason":"one item back"}`, 201) // retry
		f.do("POST", refunds, shop, `{"refund_id":"rf-2","amount":1301}`, 409)
		f.do("POST", "/v1/payments/shop-2/o-1/refunds", shop, `{"refund_id":"rf-3","amount":1}`, 403)
		es := f.auditEntries("refund")
		if len(es) != 1 {
			t.Fatalf("%d refunds audited, want 1: %v", len(es), es)
		}
		e := es[0]
		actor, _ := e["actor"].(string)
		detail, _ := e["detail"].(string)
		if !strings.Contains(actor, "token:"+tokenID) || !strings.Contains(actor, "merchant") || e["target"] != "shop-1/o-1" ||
			!strings.Contains(detail, fmt.Sprintf("payment %v ", paid["id"])) || !strings.Contains(detail, "amount 700 EUR") ||
			!strings.Contains(detail, `"rf-1"`) || !strings.Contains(detail, "token "+tokenID) || e["at"] == "" || e["at"] == nil {
			t.Errorf("the shop's refund audited as %v", e)
		}
	})
}

// TestMerchantRateLimited: a merchant token's payments and refunds are
// bounded together (here 60 a minute, bursts of 5): one over is 429
// rate_limited with Retry-After, and nothing changes in the ledger; the
// shop's other till (another token) is not held up; a second later the
// till pays again. Without the bound a shop with a rider account of its
// own grew the ledger without end with pay-and-refund pairs.
func TestMerchantRateLimited(t *testing.T) {
	onBackends(t, func(t *testing.T, dsn string) {
		f, advance := clockFixtureAt(t, dsn, func(c *Config) { c.MerchantPerMinute, c.MerchantBurst = 60, 5 })
		r := f.newRider(100_000)
		till1 := f.tokenFor(ledger.RoleMerchant, "shop-1")
		till2 := f.tokenFor(ledger.RoleMerchant, "shop-1")
		var counter uint16
		code := func() string { counter++; return r.code(t, advance(0), counter) }
		for i := range 3 {
			order := fmt.Sprintf("o-%d", i)
			f.do("POST", "/v1/payments", till1, payBody("shop-1", order, code(), 100), 201)
		}
		f.do("POST", "/v1/payments/shop-1/o-0/refunds", till1, `{"refund_id":"rf-0","amount":100}`, 201)
		f.do("POST", "/v1/payments/shop-1/o-1/refunds", till1, `{"refund_id":"rf-1","amount":100}`, 201)
		before := f.snapshot()
		audit := len(f.auditEntries("refund"))
		e, h := f.doHeader("POST", "/v1/payments", till1, payBody("shop-1", "o-9", code(), 100), 429)
		if errCode(e) != "rate_limited" || h.Get("Retry-After") != "1" {
			t.Errorf("a payment over the bound: %v, Retry-After %q", e, h.Get("Retry-After"))
		}
		e, h = f.doHeader("POST", "/v1/payments/shop-1/o-2/refunds", till1, `{"refund_id":"rf-2","amount":100}`, 429)
		if errCode(e) != "rate_limited" || h.Get("Retry-After") == "" {
			t.Errorf("a refund over the bound: %v, Retry-After %q", e, h.Get("Retry-After"))
		}
		if after := f.snapshot(); after != before {
			t.Errorf("a refused request changed the ledger:\n%s\n%s", before, after)
		}
		if n := len(f.auditEntries("refund")); n != audit {
			t.Errorf("a refused refund was audited")
		}
		if _, err := f.store.PaymentByOrder(t.Context(), "shop-1", "o-9"); err == nil {
			t.Errorf("the refused payment was made")
		}
		// The shop's other till has its own bound.
		f.do("POST", "/v1/payments", till2, payBody("shop-1", "o-10", code(), 100), 201)
		// A second later, one more.
		advance(time.Second)
		f.do("POST", "/v1/payments/shop-1/o-2/refunds", till1, `{"refund_id":"rf-2","amount":100}`, 201)
		f.do("POST", "/v1/payments", till1, payBody("shop-1", "o-11", code(), 100), 429)
		if err := f.store.CheckInvariants(t.Context()); err != nil {
			t.Error(err)
		}
	})
}

// TestMerchantRateDefault: by default a till may make a burst of
// DefaultMerchantBurst, then is refused (a flood of a stolen token's
// requests, here concurrent, gets no more through).
func TestMerchantRateDefault(t *testing.T) {
	f, _ := clockFixture(t)
	shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range 3 * DefaultMerchantBurst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Refunds of an order that does not exist: each is counted (404).
			resp, _ := f.doAny("POST", "/v1/payments/shop-1/none/refunds", shop, fmt.Sprintf(`{"refund_id":"r-%d","amount":1}`, i))
			mu.Lock()
			codes[resp]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[404] != DefaultMerchantBurst || codes[429] != 2*DefaultMerchantBurst {
		t.Errorf("answers %v, want %d 404 and the rest 429", codes, DefaultMerchantBurst)
	}
}

// The limiter keeps at most maxTokenBuckets buckets however many tokens
// come, and a token's refused request takes nothing.
func TestTokenLimiterBounded(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := NewTokenLimiter(60, 2, func() time.Time { return now })
	for i := range 3 * maxTokenBuckets {
		l.Allow(fmt.Sprint("t", i))
		if len(l.buckets) > maxTokenBuckets {
			t.Fatalf("%d buckets", len(l.buckets))
		}
	}
	l.Allow("x")
	l.Allow("x")
	for range 10 {
		if ok, wait := l.Allow("x"); ok || wait <= 0 || wait > time.Second {
			t.Fatalf("over the burst: %v %v", ok, wait)
		}
	}
	now = now.Add(time.Second)
	if ok, _ := l.Allow("x"); !ok {
		t.Error("refused after refilling one")
	}
}

// doAny sends a request (from any goroutine) and returns its status.
func (f *fixture) doAny(method, path, token, body string) (int, error) {
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
