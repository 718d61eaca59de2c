package console

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestLongTextWraps: the longest ids and texts the server takes (a 64-
// character device id, a 128-byte account name without a space, an audit
// entry's 1 KiB detail, a long deny reason) wrap inside a phone's screen
// instead of widening the page.
func TestLongTextWraps(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	ctx := context.Background()
	dev := strings.Repeat("bus-0417-front-", 5)[:64]
	f.device(dev)
	a, err := f.store.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult, Name: strings.Repeat("Wolfeschlegelstein", 8)[:128], SecretHash: []byte("h")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Audit(ctx, ledger.AuditEntry{Actor: "cli", Action: "release_add", Target: dev,
		Detail: "sha256 " + strings.Repeat("0123456789abcdef", 60)}); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.EmulateViewport(360, 800), chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"))
	for _, p := range []string{"", "fleet", "devices/" + dev, fmt.Sprintf("accounts/%d", a.ID), "audit"} {
		wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"+p))
		if wallettest.Eval[bool](t, b, `document.getElementById("error") !== null`) {
			t.Fatalf("/console/%s shows an error: %s", p, wallettest.Eval[string](t, b, `document.getElementById("error").textContent`))
		}
		if over := wallettest.Eval[int](t, b, `document.documentElement.scrollWidth - document.documentElement.clientWidth`); over > 2 {
			t.Errorf("/console/%s on a 360 px phone is %d px wider than the screen", p, over)
		}
	}
}
