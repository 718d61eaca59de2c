package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/server/ledger"
)

// TestMerchantSettlement makes online payments and refunds through the API
// on either side of a service day's start in New York (04:00 local, the
// fare table's), one nanosecond apart, on SQLite and PostgreSQL, and reads
// GET /v1/merchants/settlement: each merchant's payments and refunds of
// each service day (a refund on the day it was made, whatever the
// payment's), their totals, one merchant, one day; who may read it; what
// range it refuses.
func TestMerchantSettlement(t *testing.T) {
	onBackends(t, testMerchantSettlement)
}

func testMerchantSettlement(t *testing.T, dsn string) {
	f, advance := clockFixtureAt(t, dsn)
	f.do("PUT", "/v1/fares", f.token, `{"version":2,"currency":"EUR","timezone":"America/New_York","service_day_start":"04:00",
		"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`, 200)
	// Three days on: a ride's day is never before the day the table
	// before gave the instant of the change (ledger serviceDayAt), which
	// for a day or two after it can hold New York's days back or ahead
	// of New York's own, by the time of day the test runs.
	advance(72 * time.Hour)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	// The next service day's start, a minute or more ahead (04:00 always
	// exists in New York: its clocks change at 02:00).
	now := advance(0).In(ny)
	start := time.Date(now.Year(), now.Month(), now.Day(), 4, 0, 0, 0, ny)
	for !start.After(now.Add(time.Minute)) {
		start = start.AddDate(0, 0, 1)
	}
	day2 := start.Format(time.DateOnly)
	day1 := start.AddDate(0, 0, -1).Format(time.DateOnly)
	day3 := start.AddDate(0, 0, 1).Format(time.DateOnly)
	if start.UTC().Format(time.DateOnly) != start.Add(-time.Nanosecond).UTC().Format(time.DateOnly) {
		t.Fatalf("the service day starts at a UTC date's start: the test would not tell New York's days from UTC's")
	}
	advance(start.Add(-2 * time.Second).Sub(advance(0)))
	r := f.newRider(5_000)
	shop1, shop2 := f.tokenFor(ledger.RoleMerchant, "shop-1"), f.tokenFor(ledger.RoleMerchant, "shop-2")
	counter := uint16(0)
	pay := func(token, merchant, order string, amount int64) {
		t.Helper()
		counter++
		body, _ := json.Marshal(map[string]any{"merchant_id": merchant, "order_id": order, "code": r.code(t, advance(0), counter), "amount": amount})
		f.do("POST", "/v1/payments", token, string(body), 201)
	}
	refund := func(token, merchant, order, id string, amount int64) {
		t.Helper()
		f.do("POST", "/v1/payments/"+merchant+"/"+order+"/refunds", token, fmt.Sprintf(`{"refund_id":%q,"amount":%d}`, id, amount), 201)
	}
	pay(shop1, "shop-1", "o-1", 1_000) // day 1, 2 s before its end
	advance(2*time.Second - time.Nanosecond)
	pay(shop2, "shop-2", "o-2", 500) // day 1, its last nanosecond
	advance(time.Nanosecond)
	pay(shop1, "shop-1", "o-3", 700) // day 2, its first nanosecond
	refund(shop1, "shop-1", "o-1", "r-1", 300)
	refund(shop2, "shop-2", "o-2", "r-2", 100)
	advance(time.Hour)
	refund(shop1, "shop-1", "o-3", "r-3", 50)

	get := func(token, query string, want int) map[string]any {
		t.Helper()
		return f.do("GET", "/v1/merchants/settlement?"+query, token, "", want)
	}
	rows := func(v any) []string {
		var out []string
		for _, x := range asList(v) {
			m := x.(map[string]any)
			out = append(out, fmt.Sprintf("%v %v payments %v paid %v refunds %v refunded %v net %v", m["day"], m["merchant_id"],
				m["payments"], m["paid"], m["refunds"], m["refunded"], m["net"]))
		}
		return out
	}
	check := func(what string, got any, want ...string) {
		t.Helper()
		if g := rows(got); !slices.Equal(g, want) {
			t.Errorf("%s:\n got %s\nwant %s", what, strings.Join(g, "\n     "), strings.Join(want, "\n     "))
		}
	}
	out := get(f.token, "from="+day1+"&to="+day2, 200)
	check("the days of both merchants", out["days"],
		day1+" shop-1 payments 1 paid 1000 refunds 0 refunded 0 net 1000",
		day1+" shop-2 payments 1 paid 500 refunds 0 refunded 0 net 500",
		day2+" shop-1 payments 1 paid 700 refunds 2 refunded 350 net 350",
		day2+" shop-2 payments 0 paid 0 refunds 1 refunded 100 net -100")
	check("the merchants' totals", out["merchants"],
		"<nil> shop-1 payments 2 paid 1700 refunds 2 refunded 350 net 1350",
		"<nil> shop-2 payments 1 paid 500 refunds 1 refunded 100 net 400")
	check("the total", []any{out["total"]}, "<nil> <nil> payments 3 paid 2200 refunds 3 refunded 450 net 1750")
	if out["currency"] != "EUR" || out["timezone"] != "America/New_York" || out["service_day_start"] != "04:00" ||
		out["from"] != day1 || out["to"] != day2 {
		t.Errorf("answer's range %v to %v, currency %v, zone %v from %v", out["from"], out["to"], out["currency"], out["timezone"], out["service_day_start"])
	}

	// The figures are what the payments and refunds say.
	var paid, refunded float64
	for _, o := range []struct{ merchant, order string }{{"shop-1", "o-1"}, {"shop-2", "o-2"}, {"shop-1", "o-3"}} {
		p := f.do("GET", "/v1/payments/"+o.merchant+"/"+o.order, f.token, "", 200)
		paid += p["amount"].(float64)
		refunded += p["refunded"].(float64)
	}
	if total := out["total"].(map[string]any); total["paid"] != paid || total["refunded"] != refunded {
		t.Errorf("total paid %v refunded %v; the payments say %v and %v", total["paid"], total["refunded"], paid, refunded)
	}

	auditor := f.tokenFor(ledger.RoleAuditor, "")
	check("one merchant (an auditor)", get(auditor, "from="+day1+"&to="+day3+"&merchant=shop-2", 200)["days"],
		day1+" shop-2 payments 1 paid 500 refunds 0 refunded 0 net 500",
		day2+" shop-2 payments 0 paid 0 refunds 1 refunded 100 net -100")
	check("the first day alone", get(f.token, "from="+day1+"&to="+day1, 200)["days"],
		day1+" shop-1 payments 1 paid 1000 refunds 0 refunded 0 net 1000",
		day1+" shop-2 payments 1 paid 500 refunds 0 refunded 0 net 500")
	if days := get(f.token, "from="+day3+"&to="+day3, 200)["days"]; days == nil || len(asList(days)) != 0 {
		t.Errorf("a day without payments: days %v; want []", days)
	}
	check("a merchant without payments", get(f.token, "from="+day1+"&to="+day2+"&merchant=shop-9", 200)["days"])

	// Who may read it.
	payments := f.tokenFor(ledger.RolePayments, "")
	for _, c := range []struct {
		who, token string
		status     int
	}{{"shop-1's token", shop1, 403}, {"the payment provider's token", payments, 403}, {"a rider", r.secret, 403}, {"no token", "", 401}} {
		if e := get(c.token, "from="+day1+"&to="+day2, c.status); e["days"] != nil {
			t.Errorf("%s read the settlement: %v", c.who, e)
		}
	}

	// What it refuses.
	first, _ := time.Parse(time.DateOnly, day1)
	for _, c := range []struct{ query, says string }{
		{"", "from must be a date"},
		{"from=" + day1, "to must be a date"},
		{"from=2026-02-30&to=2026-03-01", "from must be a date"},
		{"from=" + day1 + "&to=" + url.QueryEscape(day2+"T00:00"), "to must be a date"},
		{"from=" + day2 + "&to=" + day1, "is before from"},
		{"from=" + day1 + "&to=" + first.AddDate(0, 0, ledger.MaxSettlementDays).Format(time.DateOnly), "93 service days; at most 92"},
		{"from=" + day1 + "&to=" + day2 + "&merchant=", "merchant is empty"},
		{"from=0001-01-01&to=0001-01-02", "from 1970 to 2200 only"},
		{"from=9999-12-30&to=9999-12-31", "from 1970 to 2200 only"},
		{"from=" + day1 + "&to=" + day2 + "&merchant=" + strings.Repeat("m", 65), "merchant id"},
	} {
		e := get(f.token, c.query, 400)
		if msg, _ := e["error"].(map[string]any)["message"].(string); errCode(e) != "invalid" || !strings.Contains(msg, c.says) {
			t.Errorf("?%s: %v; want invalid saying %q", c.query, e, c.says)
		}
	}
	get(f.token, "from="+day1+"&to="+first.AddDate(0, 0, ledger.MaxSettlementDays-1).Format(time.DateOnly), 200)
}
