package console

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestSkipToContent: an operator on the keyboard alone went through the
// header's twelve links and Sign out on every page before reaching it
// (the deny reason of an account was the fourteenth Tab). The first Tab
// offers "Skip to content", in sight when focused, and Enter on it takes
// the next Tab into the page.
func TestSkipToContent(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	acct := f.account(1000)
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.EmulateViewport(1280, 800))
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"))
	wallettest.Do(t, b, chromedp.Navigate(fmt.Sprintf("%s/console/accounts/%d", f.srv.URL, acct)), chromedp.WaitVisible("#who"))
	focused := `(e => e.id || e.tagName + ":" + e.textContent.trim().slice(0, 30))(document.activeElement)`
	wallettest.Do(t, b, chromedp.KeyEvent(kb.Tab))
	if got := wallettest.Eval[string](t, b, focused); got != "skip" {
		t.Fatalf("the first Tab on a page focuses %s, want Skip to content", got)
	}
	if !wallettest.Eval[bool](t, b, `(r => r.width > 20 && r.height > 10 && r.left >= 0 && r.top >= 0 && r.right <= innerWidth)(document.activeElement.getBoundingClientRect())`) {
		t.Error("Skip to content, focused, is out of sight")
	}
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "skip-focused", "")
	wallettest.Do(t, b, chromedp.KeyEvent(kb.Enter))
	wallettest.Do(t, b, chromedp.KeyEvent(kb.Tab))
	if !wallettest.Eval[bool](t, b, `document.querySelector("main").contains(document.activeElement) && document.activeElement !== document.querySelector("main")`) {
		t.Errorf("after Skip to content, Tab focuses %s, want something in the page", wallettest.Eval[string](t, b, focused))
	}
}

// TestConsoleTextContrast: the notes on a tap ("route_mismatch" on the
// account's rides, the overview and the flagged page) were orange on
// light orange at 12 px, 4.3:1, under what small text needs to be read
// (4.5:1, WCAG AA) on a control-room screen or a laptop in daylight. Every
// text on the main pages reaches it.
func TestConsoleTextContrast(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	acct := f.account(1000)
	at := time.Now()
	key := paycode.ID{Account: acct, Serial: 1, Time: uint32(at.Unix()), Counter: 1}.Key()
	seed := sha256.Sum256([]byte(fmt.Sprint("rider", acct))) // f.account's credential
	riderKey := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	if _, err := f.store.CommitTaps(context.Background(), []ledger.Tap{{ID: ledger.TapID("bus-1", "e1", 1), DeviceID: "bus-1", Seq: 1, Epoch: "e1",
		Time: at, Account: acct, Serial: 1, RiderKey: riderKey, CodeKey: key, CodeHash: "000000000001",
		BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Notes: []string{ledger.NoteRouteMismatch}, Record: []byte("record")}}); err != nil {
		t.Fatal(err)
	}
	c := chromeSignIn(t, f, f.opToken)
	wallettest.Do(t, c.ctx, chromedp.EmulateViewport(1280, 800))
	for _, p := range []string{"", "fleet", "devices/bus-1", fmt.Sprint("accounts/", acct), "flagged", "money", "denylist", "audit", "aside", "tokens", "fares", "keys", "shops"} {
		wallettest.Do(t, c.ctx, chromedp.Navigate(f.srv.URL+"/console/"+p), chromedp.WaitVisible("#who"))
		if low := wallettest.Eval[string](t, c.ctx, lowContrast); low != "" {
			t.Errorf("/console/%s has text too faint to read:\n%s", p, low)
		}
	}
}
