package console

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/api/apitest"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestHourlyChartsAcrossTheChangeFromSummerTime: in Chromium, the money
// page's hourly charts in Europe/Berlin on the night clocks go back
// (25 October 2026, 03:00 CEST → 02:00 CET at 01:00 UTC). Taps settled
// in the two hours that both read 02:00 on the walls were labelled
// "02:00" both, the hours in the fleet's zone without its name, as if one
// hour were drawn twice; each hour not of the zone now names its zone.
func TestHourlyChartsAcrossTheChangeFromSummerTime(t *testing.T) {
	wallettest.Chromium(t)
	berlin := mustZone(t, "Europe/Berlin")
	var mu sync.Mutex
	ledgerNow := time.Date(2026, 10, 25, 0, 30, 5, 0, time.UTC)
	f := newFixtureWith(t, apitest.Options{Currency: "EUR", Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return ledgerNow
	}}, testFares)
	setLedger := func(at time.Time) {
		mu.Lock()
		ledgerNow = at
		mu.Unlock()
	}
	ctx := context.Background()
	f.device("bus-dst")
	acct := f.account(5000)
	seed := sha256.Sum256([]byte("rider"))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	// One tap in each of the hours 00:00 and 01:00 UTC: 02:00 CEST and
	// 02:00 CET.
	for i, at := range []time.Time{time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC), time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC)} {
		setLedger(at.Add(5 * time.Second))
		key := paycode.ID{Account: acct, Serial: 1, Time: uint32(at.Unix()), Counter: uint16(i)}.Key()
		if _, err := f.store.CommitTaps(ctx, []ledger.Tap{{ID: ledger.TapID("bus-dst", "e", uint64(i+1)), DeviceID: "bus-dst",
			Seq: uint64(i + 1), Epoch: "e", Time: at, Account: acct, Serial: 1, RiderKey: pub, CodeKey: key, CodeHash: "0123456789ab",
			BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Record: []byte("record")}}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2026, 10, 25, 4, 20, 0, 0, time.UTC)
	setLedger(now)
	if _, err := f.store.RefreshSummaries(ctx); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(time.Until(now))
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"),
		chromedp.Navigate(f.srv.URL+"/console/money"), chromedp.WaitVisible("#chart-lag"))
	points := wallettest.Eval[[]string](t, b, `Array.from(document.querySelectorAll("#chart-lag circle.l-p50 title")).map(t => t.textContent)`)
	bars := wallettest.Eval[[]string](t, b, `Array.from(document.querySelectorAll("#chart-rate title")).map(t => t.textContent)`)
	if len(points) != 2 {
		t.Fatalf("the lag chart has %d p50 points, want 2: %q", len(points), points)
	}
	cest, cet := time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC).In(berlin), time.Date(2026, 10, 25, 1, 0, 0, 0, time.UTC).In(berlin)
	if cest.Format("15:04") != cet.Format("15:04") {
		t.Fatalf("this machine's zone data has no change at 01:00 UTC: %v, %v", cest, cet)
	}
	if !strings.HasPrefix(points[0], "02:00 CEST p50:") || !strings.HasPrefix(points[1], "02:00 p50:") {
		t.Errorf("the lag chart's points across the change read %q: the first hour 02:00 is not told from the second", points)
	}
	var rate []string
	for _, bar := range bars {
		if strings.HasPrefix(bar, "02:00") {
			rate = append(rate, bar)
		}
	}
	if len(rate) != 2 || !strings.HasPrefix(rate[0], "02:00 CEST") || strings.HasPrefix(rate[1], "02:00 CEST") {
		t.Errorf("the taps-per-hour bars of the two hours 02:00 read %q: not told apart", rate)
	}
}
