package api

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
)

// TestRevenue settles taps of two riders on two routes and two service
// days through the ledger, refreshes the summaries as the server does, and
// reads GET /v1/revenue on SQLite and PostgreSQL: per day and route, per
// day, per route and in all, the charges agree with the riders' balances
// (a transfer and a daily cap included); who may read it; the ranges it
// refuses.
func TestRevenue(t *testing.T) {
	onBackends(t, testRevenue)
}

func testRevenue(t *testing.T, dsn string) {
	f, advance := clockFixtureAt(t, dsn)
	// The table is stored three days back, in force before every tap
	// below: stored now, yesterday's taps claiming it were rated by the
	// fixture's table once more than FareGrace (24 h) before now, and the
	// test failed from 08:00 UTC each day.
	advance(-72 * time.Hour)
	f.do("PUT", "/v1/fares", f.token, `{"version":2,"currency":"EUR","timezone":"UTC","transfer":{"window":"60m","fare":0},
		"daily_cap":{"adult":600},"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180},
		"X1":{"adult":400,"child":200,"senior":200,"student":300}}}`, 200)
	ctx := context.Background()
	now := advance(72 * time.Hour).UTC()
	day1 := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -1)
	d1, d2 := day1.Format(time.DateOnly), day1.AddDate(0, 0, 1).Format(time.DateOnly)
	riders := []*rider{f.newRider(10_000), f.newRider(10_000)}
	seq := uint64(0)
	var taps []ledger.Tap
	tap := func(r *rider, route string, at time.Time) {
		seq++
		c, err := paycode.ParseCredential(r.cred)
		if err != nil {
			t.Fatal(err)
		}
		dev := "bus-" + route
		id := paycode.ID{Account: r.id, Serial: c.Serial, Time: uint32(at.Unix()), Counter: uint16(seq)}
		taps = append(taps, ledger.Tap{ID: ledger.TapID(dev, "e1", seq), DeviceID: dev, Seq: seq, Epoch: "e1", Time: at,
			Account: r.id, Serial: c.Serial, RiderKey: c.RiderKey[:], CodeKey: id.Key(), CodeHash: fmt.Sprintf("%012d", seq),
			BaseFare: 250, Currency: "EUR", FareVersion: 2, Route: route, Record: []byte("record")})
	}
	// Rider 0, day 1: 42 at 08:00 (250), X1 at 08:30 (a transfer), 42 at
	// 12:00 (250), X1 at 18:00 (capped at 600: 100). Rider 1: X1 on day
	// 1 (400) and 42 on day 2 (250).
	tap(riders[0], "42", day1.Add(8*time.Hour))
	tap(riders[0], "X1", day1.Add(8*time.Hour+30*time.Minute))
	tap(riders[0], "42", day1.Add(12*time.Hour))
	tap(riders[0], "X1", day1.Add(18*time.Hour))
	tap(riders[1], "X1", day1.Add(9*time.Hour))
	tap(riders[1], "42", day1.Add(33*time.Hour))
	if _, err := f.store.CommitTaps(ctx, taps); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.RefreshSummaries(ctx); err != nil {
		t.Fatal(err)
	}
	rows := func(v any) []string {
		var out []string
		for _, x := range asList(v) {
			m := x.(map[string]any)
			out = append(out, fmt.Sprintf("%v %v taps %v base %v charged %v transfers %v saved %v capped %v saved %v",
				m["day"], m["route"], m["taps"], m["base_total"], m["charged"], m["transfers"], m["transfer_savings"],
				m["capped"], m["cap_savings"]))
		}
		return out
	}
	check := func(what string, got any, want ...string) {
		t.Helper()
		if g := rows(got); !slices.Equal(g, want) {
			t.Errorf("%s:\n got %s\nwant %s", what, strings.Join(g, "\n     "), strings.Join(want, "\n     "))
		}
	}
	out := f.do("GET", "/v1/revenue?from="+d1+"&to="+d2, f.token, "", 200)
	if out["currency"] != "EUR" || out["from"] != d1 || out["to"] != d2 {
		t.Errorf("answer's range %v to %v, currency %v", out["from"], out["to"], out["currency"])
	}
	total := out["total"].(map[string]any)
	var spent float64
	for _, r := range riders {
		spent += 10_000 - f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 200)["balance"].(float64)
	}
	if total["charged"] != spent || spent == 0 {
		t.Errorf("total charged %v; the riders' balances went down by %v", total["charged"], spent)
	}
	if b, c, ts, cs := total["base_total"].(float64), total["charged"].(float64), total["transfer_savings"].(float64),
		total["cap_savings"].(float64); b != c+ts+cs {
		t.Errorf("base %v != charged %v + transfer savings %v + cap savings %v", b, c, ts, cs)
	}
	byDay := map[string]float64{}
	for _, x := range asList(out["days"]) {
		m := x.(map[string]any)
		byDay[m["day"].(string)] += m["charged"].(float64)
	}
	for _, x := range asList(out["day_totals"]) {
		m := x.(map[string]any)
		if byDay[m["day"].(string)] != m["charged"] {
			t.Errorf("day %v charged %v; its routes add up to %v", m["day"], m["charged"], byDay[m["day"].(string)])
		}
	}
	// The rides the ledger charged, summed by hand, are what it answers.
	type key struct{ day, route string }
	want := map[key]*RevenueDay{}
	var order []key
	for _, r := range riders {
		rides, err := f.store.Rides(ctx, r.id, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, rd := range rides {
			k := key{rd.ServiceDay, rd.Route}
			if want[k] == nil {
				want[k] = &RevenueDay{Day: k.day, Route: k.route}
				order = append(order, k)
			}
			w := want[k]
			w.Taps++
			w.BaseTotal += rd.BaseFare
			w.Charged += rd.Charge
			if rd.Transfer {
				w.Transfers++
			}
			if rd.Capped {
				w.Capped++
			}
		}
	}
	slices.SortFunc(order, func(a, b key) int { return strings.Compare(a.day+" "+a.route, b.day+" "+b.route) })
	var wantRows []string
	for _, k := range order {
		w := want[k]
		wantRows = append(wantRows, fmt.Sprintf("%s %s taps %d base %d charged %d transfers %d capped %d",
			w.Day, w.Route, w.Taps, w.BaseTotal, w.Charged, w.Transfers, w.Capped))
	}
	var gotRows []string
	for _, x := range asList(out["days"]) {
		m := x.(map[string]any)
		gotRows = append(gotRows, fmt.Sprintf("%v %v taps %v base %v charged %v transfers %v capped %v",
			m["day"], m["route"], m["taps"], m["base_total"], m["charged"], m["transfers"], m["capped"]))
	}
	if !slices.Equal(gotRows, wantRows) || len(wantRows) != 3 {
		t.Errorf("by day and route:\n got %s\nwant %s (the ledger's rides)", strings.Join(gotRows, "\n     "), strings.Join(wantRows, "\n     "))
	}
	if total["capped"].(float64) == 0 {
		t.Errorf("no capped tap: the fixture no longer reaches the daily cap")
	}
	check("one day alone", f.do("GET", "/v1/revenue?from="+d2+"&to="+d2, f.token, "", 200)["days"],
		d2+" 42 taps 1 base 250 charged 250 transfers 0 saved 0 capped 0 saved 0")
	if got := rows(out["routes"]); len(got) != 2 || !strings.HasPrefix(got[0], "<nil> 42 taps 3") || !strings.HasPrefix(got[1], "<nil> X1 taps 3") {
		t.Errorf("routes: %v; want 42 and X1, 3 taps each", got)
	}
	if days := f.do("GET", "/v1/revenue?from=2020-01-01&to=2020-01-02", f.token, "", 200)["days"]; days == nil || len(asList(days)) != 0 {
		t.Errorf("a range without taps: days %v; want []", days)
	}

	// Who may read it.
	auditor := f.tokenFor(ledger.RoleAuditor, "")
	f.do("GET", "/v1/revenue?from="+d1+"&to="+d2, auditor, "", 200)
	for _, c := range []struct{ who, token string }{
		{"a merchant", f.tokenFor(ledger.RoleMerchant, "shop-1")},
		{"a payments token", f.tokenFor(ledger.RolePayments, "")},
		{"a rider", riders[0].secret},
	} {
		f.do("GET", "/v1/revenue?from="+d1+"&to="+d2, c.token, "", 403)
	}
	f.do("GET", "/v1/revenue?from="+d1+"&to="+d2, "", "", 401)
	// What it refuses.
	for _, q := range []string{"", "from=" + d1, "from=yesterday&to=" + d2, "from=" + d2 + "&to=" + d1, "from=2020-01-01&to=2021-01-01"} {
		if e := f.do("GET", "/v1/revenue?"+q, f.token, "", 400); fmt.Sprint(e["error"].(map[string]any)["code"]) != "invalid" {
			t.Errorf("?%s: %v; want invalid", q, e)
		}
	}
}
