package api

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/farego/farego/server/ledger"
)

// TestRogueShop: a dishonest shop (or one whose till token was stolen)
// tries, through the HTTP API, to move more money than a rider paid it:
// refunds above the payment (one at a time and many at once), another
// shop's order, one code at two shops, amounts that are negative, zero,
// above the ledger's bound or past int64, another currency, an order id
// again with another amount, a body past the limit. Each is refused with
// nothing moved; the ledger's invariants hold; the rider ends with what the
// honest payments and refunds leave.
func TestRogueShop(t *testing.T) {
	onBackends(t, func(t *testing.T, dsn string) {
		f, advance := clockFixtureAt(t, dsn, func(c *Config) { c.MerchantPerMinute = -1 })
		r := f.newRider(10_000)
		shop := f.tokenFor(ledger.RoleMerchant, "shop-1")
		other := f.tokenFor(ledger.RoleMerchant, "shop-2")
		var counter uint16
		code := func() string { counter++; return r.code(t, advance(0), counter) }
		c1 := code()
		f.do("POST", "/v1/payments", shop, payBody("shop-1", "o-1", c1, 1_000), 201)
		f.do("POST", "/v1/payments", other, payBody("shop-2", "o-1", code(), 500), 201)
		before := f.snapshot()
		refused := []struct {
			tok, method, path, body string
			want                    int
		}{
			{shop, "POST", "/v1/payments/shop-1/o-1/refunds", `{"refund_id":"x1","amount":1001}`, 409},
			{shop, "POST", "/v1/payments/shop-1/o-1/refunds", `{"refund_id":"x1","amount":-5}`, 400},
			{shop, "POST", "/v1/payments/shop-1/o-1/refunds", `{"refund_id":"x1","amount":0}`, 400},
			{shop, "POST", "/v1/payments/shop-1/o-1/refunds", `{"refund_id":"x1","amount":9223372036854775807}`, 400},
			{shop, "POST", "/v1/payments/shop-1/o-1/refunds", `{"refund_id":"x1","amount":9223372036854775808}`, 400},
			{shop, "POST", "/v1/payments/shop-1/o-1/refunds", `{"refund_id":"x1","amount":1e30}`, 400},
			{shop, "POST", "/v1/payments/shop-1/o-1/refunds", `{"refund_id":"x1","amount":1.5}`, 400},
			{shop, "POST", "/v1/payments/shop-2/o-1/refunds", `{"refund_id":"x1","amount":1}`, 403},
			{shop, "GET", "/v1/payments/shop-2/o-1", "", 403},
			// The code that paid shop-1, at shop-2.
			{other, "POST", "/v1/payments", payBody("shop-2", "o-2", c1, 1_000), 409},
			// Amounts.
			{shop, "POST", "/v1/payments", payBody("shop-1", "o-3", code(), -1), 400},
			{shop, "POST", "/v1/payments", payBody("shop-1", "o-3", code(), 0), 400},
			{shop, "POST", "/v1/payments", payBody("shop-1", "o-3", code(), 1<<62), 400},
			{shop, "POST", "/v1/payments", `{"merchant_id":"shop-1","order_id":"o-3","code":"` + code() + `","amount":18446744073709551616}`, 400},
			// Another currency than the rider's.
			{shop, "POST", "/v1/payments", `{"merchant_id":"shop-1","order_id":"o-3","code":"` + code() + `","amount":100,"currency":"USD"}`, 400},
			{shop, "POST", "/v1/payments", `{"merchant_id":"shop-1","order_id":"o-3","code":"` + code() + `","amount":100,"currency":"eur"}`, 400},
			// The order id again: another amount, another code, another currency.
			{shop, "POST", "/v1/payments", payBody("shop-1", "o-1", c1, 2_000), 409},
			{shop, "POST", "/v1/payments", payBody("shop-1", "o-1", code(), 1_000), 409},
			{shop, "POST", "/v1/payments", `{"merchant_id":"shop-1","order_id":"o-1","code":"` + c1 + `","amount":1000,"currency":"USD"}`, 409},
			// Another shop's id in the body.
			{shop, "POST", "/v1/payments", payBody("shop-2", "o-9", code(), 100), 403},
			// A body past the limit.
			{shop, "POST", "/v1/payments", `{"merchant_id":"shop-1","order_id":"` + strings.Repeat("x", 20<<10) + `","code":"","amount":1}`, 413},
			{shop, "POST", "/v1/payments/shop-1/o-1/refunds", `{"refund_id":"x1","amount":1,"reason":"` + strings.Repeat("x", 20<<10) + `"}`, 413},
		}
		for _, c := range refused {
			if c.method == "GET" {
				f.do(c.method, c.path, c.tok, c.body, c.want)
				continue
			}
			f.do(c.method, c.path, c.tok, c.body, c.want)
		}
		if after := f.snapshot(); after != before {
			t.Errorf("a refused request changed the ledger:\n%s\n%s", before, after)
		}
		// Many refunds at once, each of the whole payment: one goes through.
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := f.doAny("POST", "/v1/payments/shop-1/o-1/refunds", shop, fmt.Sprintf(`{"refund_id":"c-%d","amount":1000}`, i))
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				codes[st]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if codes[201] != 1 || codes[409] != 11 {
			t.Errorf("12 concurrent refunds of the whole payment: %v, want one 201 and 11 409", codes)
		}
		acct := f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 200)
		if acct["balance"] != float64(10_000-500) {
			t.Errorf("the rider's balance %v, want %d", acct["balance"], 10_000-500)
		}
		if n := len(f.auditEntries("refund")); n != 1 {
			t.Errorf("%d refunds audited, want 1", n)
		}
		if err := f.store.CheckInvariants(t.Context()); err != nil {
			t.Error(err)
		}
	})
}
