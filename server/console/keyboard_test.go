package console

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// An operator on a keyboard opening the console (or sent back to it with
// a token refused) found the focus on the page's start: two Tabs through
// the brand link to the token's field, and a screen reader began at the
// logo. The sign-in page has one thing to do: the focus is in the token's
// field, and a token typed and Enter sign in.
func TestSignInFocusesTheToken(t *testing.T) {
	f := newFixture(t)
	b := wallettest.Browser(t, wallettest.Config{})
	focused := `(e => e.id || e.tagName)(document.activeElement)`
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"))
	if got := wallettest.Eval[string](t, b, focused); got != "token" {
		t.Errorf("the sign-in page opened with the focus on %s, want the token's field", got)
	}
	wallettest.Do(t, b, chromedp.KeyEvent("not-a-token"), chromedp.KeyEvent(kb.Enter))
	wallettest.WaitFor(t, b, 30*time.Second, "the refusal", `document.readyState === "complete" && !!document.getElementById("signin-error")`)
	if got := wallettest.Eval[string](t, b, focused); got != "token" {
		t.Errorf("a refused token's page has the focus on %s, want the token's field", got)
	}
	wallettest.Do(t, b, chromedp.KeyEvent(f.opToken), chromedp.KeyEvent(kb.Enter))
	wallettest.WaitFor(t, b, 30*time.Second, "the overview", `document.readyState === "complete" && !!document.getElementById("who")`)
}

// The audit trail on a phone (the overview's latest changes, the audit
// page): six columns a screen and a half wide, what was done and on what
// out of sight to the right of who did it, with nothing saying the table
// scrolls. Each entry is a card there, its values named.
func TestAuditFitsAPhone(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	acct := f.account(5000)
	if err := f.store.Audit(context.Background(), ledger.AuditEntry{At: time.Now(), Actor: "token:abcdef012345 (operator) via console",
		Action: "deny", Target: fmt.Sprint(acct), Detail: `serial 0 reason "lost_phone" note "the rider called the help line from a friend's phone"`}); err != nil {
		t.Fatal(err)
	}
	c := chromeSignIn(t, f, f.opToken)
	art := wallettest.ArtifactDir(t)
	for _, w := range []int64{360, 768, 1280} {
		for _, page := range []string{"", "audit"} {
			wallettest.Do(t, c.ctx, chromedp.EmulateViewport(w, 800), chromedp.Navigate(f.srv.URL+"/console/"+page), chromedp.WaitVisible("#audit"))
			wallettest.Screenshot(t, c.ctx, art, fmt.Sprintf("audit-%s-%d", page, w), "")
			if out := wallettest.Eval[string](t, c.ctx, `(t => [...t.querySelectorAll("tbody td")].filter(e => e.offsetParent &&
				e.getBoundingClientRect().right > t.parentElement.getBoundingClientRect().right + 1)
				.map(e => e.textContent.trim().slice(0, 30)).join(" | "))(document.getElementById("audit"))`); out != "" {
				t.Errorf("at %d px the audit entries of /console/%s have these out of sight to the right: %s", w, page, out)
			}
		}
	}
}
