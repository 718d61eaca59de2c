package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestRevokeSaysQueue: in Chromium, the confirmation of a device's
// revocation says what the device last reported — offline, 7 taps
// waiting, the oldest 2h 10m old now — before the operator revokes it
// (it said that taps in its queue are not lost, never whether there were
// any); revoking a device no longer registered is a clear error before
// the confirmation.
func TestRevokeSaysQueue(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	ctx := context.Background()
	now := f.clock.now()
	f.device("bus-q")
	if err := f.store.UpdateDeviceStatus(ctx, "bus-q", ledger.DeviceStatus{Online: false, Epoch: "e", QueueDepth: 7,
		OldestUnsent: 10 * time.Minute, LastSeen: now.Add(-2 * time.Hour), Written: now.Add(-2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(2 * time.Hour) // the status arrived 2 h ago
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"),
		chromedp.Navigate(f.srv.URL+"/console/devices/bus-q"), chromedp.WaitVisible(`button[data-action="revoke_device"]`),
		chromedp.Click(`button[data-action="revoke_device"]`), chromedp.WaitVisible("#confirm-yes"))
	text := wallettest.Eval[string](t, b, `document.getElementById("confirm").innerText`)
	for _, want := range []string{"It is offline", "reported 7 taps waiting in its queue", "the oldest 2h 10m old now"} {
		if !strings.Contains(text, want) {
			t.Errorf("the revocation's confirmation does not say %q:\n%s", want, text)
		}
	}
	if f.revoked("bus-q") {
		t.Fatal("revoked before the operator confirmed")
	}
	wallettest.Do(t, b, chromedp.Click("#confirm-yes"), chromedp.WaitVisible("#result-message"))
	if !f.revoked("bus-q") {
		t.Error("not revoked after the operator confirmed")
	}
	hb := f.browser()
	csrf := hb.signIn(f.opToken)
	if resp, body := hb.post("/console/act/revoke_device", url.Values{"device": {"bus-gone"}, "csrf": {csrf}}); resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(body, "no device bus-gone is registered") || strings.Contains(body, "Revoke device bus-gone?") {
		t.Errorf("revoke an unknown device: %d, want 400 saying it is not registered:\n%.400s", resp.StatusCode, body)
	}
}
