package wallet_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/farego/farego/server/wallet/wallettest"
)

// focused names the element the keyboard's focus is on (BODY: none).
const focused = `(e => e.id || e.tagName)(document.activeElement)`

// pressOn moves the keyboard's focus to the element id and presses Enter
// there, as a rider on a keyboard does.
func pressOn(t *testing.T, b context.Context, id string) {
	t.Helper()
	wallettest.Do(t, b, chromedp.Focus(chromedp.ID(id), chromedp.NodeVisible), chromedp.KeyEvent(kb.Enter))
}

// TestWalletGetPassKeepsTheFocus: a rider on a keyboard (or a screen
// reader) with no pass yet, topped up, presses "Get a pass": the pass came
// and the button went with it, and the focus fell to the page's start
// (the next Tab began again at the top; a screen reader said nothing of
// the code now shown). The focus goes to the code.
func TestWalletGetPassKeepsTheFocus(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	// The account's answers keep showing no money: the wallet's own
	// refresh every 10 s would otherwise fetch the pass itself on seeing
	// the top-up, and take the button away before the rider pressed it.
	accountPath := fmt.Sprintf("/v1/accounts/%d", acct.ID)
	g.rewrite.Store(func(path string, body map[string]any) {
		if path == accountPath {
			body["balance"] = 0
		}
	})
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "Get a pass", `!document.getElementById("get-pass").hidden`)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 10_000, "psp-keyboard"); err != nil {
		t.Fatal(err)
	}
	pressOn(t, b, "get-pass")
	wallettest.WaitFor(t, b, 30*time.Second, "pass 1 and its code", passState+`.startsWith("Pass 1 ") && !document.getElementById("code-view").hidden`)
	if got := wallettest.Eval[string](t, b, focused); got != "code-heading" {
		t.Errorf("after Get a pass brought the code the focus is on %s, want the code's heading", got)
	}
}

// TestWalletEarlierActivityKeepsTheFocus: "Earlier activity" pressed on
// the keyboard loads the statement back to its first entry and goes: the
// focus fell to the page's start, a screen away from the entries just
// loaded. It goes to the activity's heading.
func TestWalletEarlierActivityKeepsTheFocus(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	for i := range 15 {
		if _, err := g.store.TopUp(context.Background(), acct.ID, int64(100*(i+1)), fmt.Sprintf("psp-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	const rows = `document.querySelectorAll("#activity-body tr").length`
	wallettest.WaitFor(t, b, 30*time.Second, "the newest 10 and the button", rows+` === 10 && !document.getElementById("activity-more").hidden`)
	pressOn(t, b, "activity-more")
	wallettest.WaitFor(t, b, 30*time.Second, "all 15 entries", rows+` === 15 && document.getElementById("activity-more").hidden`)
	if got := wallettest.Eval[string](t, b, focused); got != "activity-heading" {
		t.Errorf("after the last Earlier activity the focus is on %s, want the activity's heading", got)
	}
}

// TestWalletSignOutSaysSo: a rider signs out from the footer, a long
// phone screen down: the welcome screen came with the page still
// scrolled where the footer was (the middle of the sign-in forms), the
// focus at the page's start, and no word that the account, its pass and
// keys had left the phone. It says so at the top, with the focus there.
func TestWalletSignOutSaysSo(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 1000)
	wallettest.Do(t, b, chromedp.EmulateViewport(360, 640))
	pressOn(t, b, "sign-out")
	if got := wallettest.Eval[string](t, b, focused); got != "sign-out-no" {
		t.Fatalf("the set-up: Sign out's question opened with the focus on %s", got)
	}
	pressOn(t, b, "sign-out-yes")
	wallettest.WaitFor(t, b, 30*time.Second, "the welcome screen", `!document.getElementById("welcome").hidden`)
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "signed-out", "")
	note := wallettest.Eval[string](t, b, `(e => e && !e.hidden && e.getBoundingClientRect().top >= 0 &&
		e.getBoundingClientRect().bottom <= innerHeight ? e.textContent : "")(document.getElementById("signed-out"))`)
	if !strings.HasPrefix(note, "Signed out") {
		t.Errorf("after signing out nothing in sight says so (%q)", note)
	}
	if got := wallettest.Eval[string](t, b, focused); got != "signed-out" {
		t.Errorf("after signing out the focus is on %s, want the sentence that says so", got)
	}
}

// TestWalletUnreachableErrorGoes: a rider saves a limit for shops while
// the server is down: "The server cannot be reached" at the top of the
// page, rightly. The server came back, the indicator said Online, and
// the sentence stayed until the rider did something else. It goes with
// the next answer from the server.
func TestWalletUnreachableErrorGoes(t *testing.T) {
	b, g := signedIn(t, "en-US")
	g.mode.Store("down")
	wallettest.Do(t, b, chromedp.SetValue(chromedp.ID("limit-amount"), "5"))
	pressOn(t, b, "limit-save")
	wallettest.WaitFor(t, b, 30*time.Second, "the error", `!document.getElementById("error").hidden`)
	if got := wallettest.Eval[string](t, b, `document.getElementById("error").textContent`); !strings.Contains(got, "cannot be reached") {
		t.Fatalf("the set-up: saving the limit with the server down says %q", got)
	}
	g.mode.Store("up")
	pressOn(t, b, "refresh")
	wallettest.WaitFor(t, b, 30*time.Second, "the indicator online", `document.getElementById("net").dataset.state === "online"`)
	if got := wallettest.Eval[string](t, b, `(e => e.hidden ? "" : e.textContent)(document.getElementById("error"))`); got != "" {
		t.Errorf("with the server answering again (Online) the page still says %q", got)
	}
}

// TestWalletRefusedSignInKeepsTheFocus: a rider on a keyboard tabs to
// "Sign in" and presses it with a mistyped secret: the sentence saying
// so came, and the focus had gone to the page's start with the button
// (disabled while the server was asked, which drops the focus), so the
// next Tab began again at the top instead of going back to the secret.
// It stays on the button; so it does on "Save the limit".
func TestWalletRefusedSignInKeepsTheFocus(t *testing.T) {
	url, _ := serveWallet(t)
	acct := newAccount(t, url)
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Open(t, b, url+"/wallet/")
	wallettest.Do(t, b,
		chromedp.SetValue(chromedp.ID("signin-account"), fmt.Sprint(acct.ID)),
		chromedp.SetValue(chromedp.ID("signin-secret"), "not-the-secret"))
	pressOn(t, b, "signin")
	wallettest.WaitFor(t, b, 30*time.Second, "the error", `!document.getElementById("error").hidden && !document.getElementById("signin").disabled`)
	if got := wallettest.Eval[string](t, b, focused); got != "signin" {
		t.Errorf("after a refused sign-in the focus is on %s, want the Sign in button", got)
	}
	// Signed in, the limit saved with its button.
	wallettest.Do(t, b, chromedp.SetValue(chromedp.ID("signin-secret"), acct.Secret))
	pressOn(t, b, "signin")
	wallettest.WaitFor(t, b, 30*time.Second, "the account screen", `!document.getElementById("main").hidden && document.getElementById("limit-state").textContent !== ""`)
	wallettest.Do(t, b, chromedp.SetValue(chromedp.ID("limit-amount"), "5"))
	pressOn(t, b, "limit-save")
	wallettest.WaitFor(t, b, 30*time.Second, "the limit", `document.getElementById("limit-state").textContent.includes("€5.00") && !document.getElementById("limit-save").disabled`)
	if got := wallettest.Eval[string](t, b, focused); got != "limit-save" {
		t.Errorf("after saving the limit the focus is on %s, want the Save button", got)
	}
}

// TestWalletBlockedPassNoNewOne: the operator blocks the wallet's pass
// while the balance is below what a new pass needs: the new pass is
// refused, and the pass said "Getting a new pass…" above "Top up your
// account first" for good (and, offline, the same). It says the pass is
// blocked and leaves the rest to the sentence beside it; topped up, the
// new pass comes.
func TestWalletBlockedPassNoNewOne(t *testing.T) {
	url, g := serveWallet(t)
	b, acct := passShown(t, url, g, 1000)
	shopActivity(t, g, acct, "EUR", 100, 1000, 1) // €1.01 left, below one fare of €2.50
	if err := g.store.Deny(context.Background(), acct.ID, 1, "lost_phone"); err != nil {
		t.Fatal(err)
	}
	pressOn(t, b, "refresh")
	wallettest.WaitFor(t, b, 30*time.Second, "the pass blocked and a new one refused",
		passState+`.startsWith("Pass 1 is blocked") && !document.getElementById("pass-warning").hidden && `+
			`document.getElementById("pass-warning").textContent.includes("Top up")`)
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "blocked-low", "#pass")
	if got := wallettest.Eval[string](t, b, passState); strings.Contains(got, "Getting a new pass") {
		t.Errorf("with a new pass refused (top up first) the pass says %q", got)
	}
	if _, err := g.store.TopUp(context.Background(), acct.ID, 1000, "psp-again"); err != nil {
		t.Fatal(err)
	}
	pressOn(t, b, "refresh")
	wallettest.WaitFor(t, b, 30*time.Second, "pass 3 and its code", passState+`.startsWith("Pass 3 ") && !document.getElementById("code-view").hidden`)
}
