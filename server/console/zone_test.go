package console

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestTimesInFleetZone: the console shows times in the fleet's zone (the
// fare table's, Europe/Berlin here), named as the clocks read then: two
// taps an hour apart across the change to summer time (01:00 UTC on 29
// March 2026) read 01:30 CET and 03:30 CEST, as the bus's clock showed
// them. They were shown as 00:30 and 01:30 UTC, an hour or two off what
// the operator's back office reads on its walls.
func TestTimesInFleetZone(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	ctx := context.Background()
	f.device("bus-dst")
	before := time.Date(2026, 3, 29, 0, 30, 0, 0, time.UTC)
	var taps []ledger.Tap
	for i, at := range []time.Time{before, before.Add(time.Hour)} {
		key := paycode.ID{Account: 4242, Serial: 1, Time: uint32(at.Unix()), Counter: uint16(i)}.Key()
		taps = append(taps, ledger.Tap{ID: ledger.TapID("bus-dst", "e", uint64(i+1)), DeviceID: "bus-dst", Seq: uint64(i + 1), Epoch: "e",
			Time: at, Account: 4242, Serial: 1, RiderKey: make([]byte, 32), CodeKey: key, CodeHash: "0123456789ab",
			BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "R1", Record: make([]byte, 120)})
	}
	if _, err := f.store.CommitTaps(ctx, taps); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"),
		chromedp.Navigate(f.srv.URL+"/console/devices/bus-dst"), chromedp.WaitVisible("footer"))
	text := wallettest.Eval[string](t, b, `document.body.innerText`)
	for _, want := range []string{"2026-03-29 01:30:00 CET", "2026-03-29 03:30:00 CEST"} {
		if !strings.Contains(text, want) {
			t.Errorf("the device page does not show a tap at %q (the fleet's zone, Europe/Berlin):\n%s", want, text)
		}
	}
	if strings.Contains(text, "00:30:00 UTC") {
		t.Error("the device page shows a tap's time in UTC, not the fleet's zone")
	}
	// The footer's server time too, in the zone's name of now.
	now := time.Now().In(mustZone(t, "Europe/Berlin")).Format("MST")
	if foot := wallettest.Eval[string](t, b, `document.querySelector("footer").innerText`); !strings.Contains(foot, now) {
		t.Errorf("the footer %q does not name the fleet's zone (%s)", foot, now)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("no zone %s on this machine: %v", name, err)
	}
	return loc
}
