package console

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestCertEndInFleetZone: in Chromium, a device's client certificate that
// ends at 23:30 UTC (00:30 the next day in Berlin, the fleet's zone) is
// named a problem with the same date the Cert ends column and the device
// page show, the fleet's: the problem said the UTC date, a day before the
// column beside it, while every other time on the pages is in the fleet's
// zone.
func TestCertEndInFleetZone(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	ctx := context.Background()
	now := f.clock.now()
	day := now.UTC().AddDate(0, 0, 20)
	end := time.Date(day.Year(), day.Month(), day.Day(), 23, 30, 0, 0, time.UTC)
	ended := end.AddDate(0, 0, -40) // before now
	berlin := mustZone(t, "Europe/Berlin")
	for id, at := range map[string]time.Time{"bus-soon": end, "bus-ended": ended} {
		f.device(id)
		if err := f.store.UpdateDeviceStatus(ctx, id, ledger.DeviceStatus{Online: true, LastSeen: now, Written: now,
			CertNotAfter: at}); err != nil {
			t.Fatal(err)
		}
	}
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"),
		chromedp.Navigate(f.srv.URL+"/console/fleet?sort=cert"), chromedp.WaitVisible("main table"))
	row := func(id string) string {
		return wallettest.Eval[string](t, b, `document.querySelector('tr[data-device="`+id+`"]').innerText`)
	}
	for id, at := range map[string]time.Time{"bus-soon": end, "bus-ended": ended} {
		local, utc := at.In(berlin).Format(time.DateOnly), at.UTC().Format(time.DateOnly)
		text := row(id)
		if !strings.Contains(text, "cert "+local) {
			t.Errorf("%s's Cert ends column does not show %s (Berlin):\n%s", id, local, text)
		}
		if !strings.Contains(text, "client certificate end") || !strings.Contains(text, "certificate ended "+local) &&
			!strings.Contains(text, "certificate ends "+local) {
			t.Errorf("%s's problem does not name its certificate's end on %s, the fleet's date (%s in UTC):\n%s", id, local, utc, text)
		}
		if strings.Contains(text, utc) {
			t.Errorf("%s's row shows the UTC date %s beside the fleet's %s:\n%s", id, utc, local, text)
		}
	}
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/devices/bus-soon"), chromedp.WaitVisible("#cert"))
	text := wallettest.Eval[string](t, b, `document.querySelector("main").innerText`)
	local, utc := end.In(berlin).Format(time.DateOnly), end.UTC().Format(time.DateOnly)
	if !strings.Contains(text, "ends "+local) || strings.Contains(text, utc) {
		t.Errorf("the device page does not name the certificate's end %s alone (Berlin; %s in UTC):\n%s", local, utc, text)
	}
}
