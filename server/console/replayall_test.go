package console

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/api/apitest"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestReplayAllFigures: in Chromium, an operator of a fleet of 30 (24
// online, 5 offline, 1 revoked) asks the fleet to replay from the fleet
// page: the confirmation gives those figures before anything is sent, and
// the result counts the devices asked and kept for, naming the first 20
// of each list, not all of them. The confirmation said "every online
// device" alone, and the result listed every id (a page of 10,000 names
// for a large fleet) with no count. The broker link is a stand-in
// (ReplayFleet answers the devices it is given as asked): the console's
// pages are what is checked, through the API's own handler.
func TestReplayAllFigures(t *testing.T) {
	wallettest.Chromium(t)
	as := apitest.StartWith(t, apitest.Options{})
	ctx := context.Background()
	tok, err := os.ReadFile(as.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	var sent int
	a := api.New(api.Config{Ledger: as.Store, Keys: as.Keys, ReplayFleet: func(_ context.Context, sends map[string]string) ([]string, error) {
		sent++
		var asked []string
		for id := range sends {
			asked = append(asked, id)
		}
		return asked, nil
	}})
	f := &fixture{t: t, store: as.Store, keys: as.Keys, opToken: strings.TrimSpace(string(tok)), clock: &testClock{}}
	f.h = New(Config{Ledger: as.Store, Keys: as.Keys, API: a, Now: f.clock.now})
	f.srv = newServer(f.h, a)
	t.Cleanup(f.srv.Close)
	now := f.clock.now()
	for i := range 30 {
		id := fmt.Sprintf("bus-%02d", i)
		f.device(id)
		if err := f.store.UpdateDeviceStatus(ctx, id, ledger.DeviceStatus{Online: i < 25, Epoch: "e", LastSeen: now, Written: now}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.store.RevokeDevice(ctx, "bus-24"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"),
		chromedp.Navigate(f.srv.URL+"/console/fleet"), chromedp.WaitVisible(`button[data-action="replay_all"]`),
		chromedp.Click(`button[data-action="replay_all"]`), chromedp.WaitVisible("#confirm-yes"))
	text := wallettest.Eval[string](t, b, `document.getElementById("confirm").innerText`)
	for _, want := range []string{"24 devices online now are asked at once", "5 devices not online", "1 device revoked is left out"} {
		if !strings.Contains(text, want) {
			t.Errorf("the confirmation does not say %q:\n%s", want, text)
		}
	}
	if sent != 0 {
		t.Fatal("the fleet was asked before the operator confirmed")
	}
	wallettest.Do(t, b, chromedp.Click("#confirm-yes"), chromedp.WaitVisible("#result-message"))
	msg := wallettest.Eval[string](t, b, `document.getElementById("result-message").innerText`)
	if sent != 1 || !strings.Contains(msg, "Asked 24 devices (bus-00, ") || !strings.Contains(msg, " and 4 more)") ||
		!strings.Contains(msg, ": 5 devices (bus-25, bus-26, bus-27, bus-28, bus-29)") || strings.Contains(msg, "bus-23") {
		t.Errorf("after the replay (sent %d times) the result says:\n%s\nwant 24 asked, the first 20 named, and the 5 offline", sent, msg)
	}
}
