package wallet_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestWalletDatesFollowTheLocale: a rider whose phone is set to British
// English saw every date in US English ("Dec 7, 2026, 2:35 PM": month
// first, AM/PM); a German phone, with the wallet in English, the same.
// Dates follow the browser's locale: day first and 24 hours for both.
func TestWalletDatesFollowTheLocale(t *testing.T) {
	url, g := serveWallet(t)
	for _, c := range []struct{ lang, want string }{
		// "as of 7 Dec 2026, 14:05"
		{"en-GB", `^as of \d{1,2} [A-Z][a-z]{2,3} \d{4}, \d{2}:\d{2}$`},
		// English in Germany (en-DE): "as of 7 Dec 2026, 14:05"
		{"de-DE", `^as of \d{1,2} [A-Z][a-z]{2,3} \d{4}, \d{2}:\d{2}$`},
	} {
		t.Run(c.lang, func(t *testing.T) {
			acct := newAccount(t, url)
			if _, err := g.store.TopUp(context.Background(), acct.ID, 1000, "psp-"+c.lang); err != nil {
				t.Fatal(err)
			}
			b := wallettest.Browser(t, wallettest.Config{Lang: c.lang})
			signIn(t, b, url, acct)
			wallettest.WaitFor(t, b, 30*time.Second, "the balance", `document.getElementById("balance").textContent === "€10.00"`)
			got := wallettest.Eval[string](t, b, `document.getElementById("balance-as-of").textContent`)
			if !regexp.MustCompile(c.want).MatchString(got) {
				t.Errorf("with the browser in %s the balance says %q, want the day first and 24 hours (%s)", c.lang, got, c.want)
			}
			if pass := wallettest.Eval[string](t, b, passState); strings.Contains(pass, " AM") || strings.Contains(pass, " PM") {
				t.Errorf("with the browser in %s the pass says %q (US time)", c.lang, pass)
			}
		})
	}
}

// TestWalletRefreshOfflineSays: Refresh pressed with no network did
// nothing a rider could see (the balance stayed, no word). It says the
// phone is offline and how old what is shown is; a refresh that works
// takes the sentence away.
func TestWalletRefreshOfflineSays(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 1000)
	asOf := wallettest.Eval[string](t, b, `document.getElementById("balance-as-of").textContent`)
	when := strings.TrimPrefix(asOf, "as of ")
	if when == asOf || when == "" {
		t.Fatalf("the set-up: the balance says %q", asOf)
	}
	offline(t, b, true)
	wallettest.WaitFor(t, b, 10*time.Second, "the offline indicator", `document.getElementById("net").dataset.state === "offline"`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "a word on the refresh",
		`!!document.getElementById("refresh-status") && !document.getElementById("refresh-status").hidden`)
	got := wallettest.Eval[string](t, b, `document.getElementById("refresh-status").textContent`)
	if !strings.HasPrefix(got, "Offline") || !strings.Contains(got, when) {
		t.Errorf("a refresh offline says %q, want that it is offline and that what is shown is as of %s", got, when)
	}
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "refresh-offline", "#account")
	offline(t, b, false)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the sentence gone online", `document.getElementById("refresh-status").hidden`)
}

// TestWalletRouteNamedOnAPhone: on a phone the rides are stacked and
// their headings out of sight: a ride showed "42" and its charge, and
// nothing said 42 is the route. It says "Route 42".
func TestWalletRouteNamedOnAPhone(t *testing.T) {
	url, g := serveWallet(t)
	b, acct := passShown(t, url, g, 1000)
	ctx := context.Background()
	seed := sha256.Sum256([]byte("bus-route"))
	if err := g.store.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "bus-route", PublicKey: ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey), MQTTHash: "h"}); err != nil {
		t.Fatal(err)
	}
	text := wallettest.Eval[string](t, b, `(async () => (await (await import("./app.js")).newCodeNow()).text)()`)
	c, err := paycode.ParseText(text)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.store.CommitTaps(ctx, []ledger.Tap{{ID: ledger.TapID("bus-route", "e1", 1), DeviceID: "bus-route", Seq: 1, Epoch: "e1",
		Time: time.Now().Add(-time.Minute), Account: acct.ID, Serial: c.Serial, RiderKey: c.RiderKey[:],
		CodeKey: c.ID().Key(), CodeHash: paycode.ShortHash(text), Profile: c.Profile, ClaimedProfile: c.Profile,
		BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Vehicle: "bus-route", Record: []byte(text)}}); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b, chromedp.EmulateViewport(360, 740))
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the ride", `document.querySelectorAll("#rides-body tr").length === 1`)
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "rides-phone", "#rides")
	if heads := wallettest.Eval[int](t, b, `document.querySelector("#rides-table thead").getBoundingClientRect().height`); heads > 1 {
		t.Fatalf("the set-up: on a 360 px phone the headings are in sight (%d px)", heads)
	}
	got := wallettest.Eval[string](t, b, `(() => { const td = document.querySelector("#rides-body td:nth-child(2)");
		return getComputedStyle(td, "::before").content.replace(/^"|"$/g, "") + td.textContent; })()`)
	if got != "Route 42" {
		t.Errorf("on a phone the ride's route reads %q, want %q", got, "Route 42")
	}
}

// TestWalletRefundSaysWhy: a shop refunded part of a payment and gave its
// reason; the rider saw "Refund from Corner Café" and not why.
func TestWalletRefundSaysWhy(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	ctx := context.Background()
	if _, err := g.store.TopUp(ctx, acct.ID, 10_000, "psp-why"); err != nil {
		t.Fatal(err)
	}
	seed := sha256.Sum256([]byte("the rider's other phone"))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	serial, err := g.store.IssueCredentialSerial(ctx, acct.ID, time.Now().Add(time.Hour), pub)
	if err != nil {
		t.Fatal(err)
	}
	id := paycode.ID{Account: acct.ID, Serial: serial, Time: uint32(time.Now().Unix())}
	if _, _, err := g.store.Pay(ctx, ledger.PaymentRequest{MerchantID: "Corner Café", OrderID: "o-1", Account: acct.ID,
		Serial: serial, RiderKey: pub, CodeKey: id.Key(), CodeHash: "abc", Amount: 450, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.store.RefundPayment(ctx, ledger.RefundRequest{MerchantID: "Corner Café", OrderID: "o-1",
		RefundID: "r-1", Amount: 150, Reason: "Milk was out"}); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "the refund", `!!document.querySelector("#activity-body tr[data-kind=refund]")`)
	if got := wallettest.Eval[string](t, b, `document.querySelector("#activity-body tr[data-kind=refund] td:nth-child(2)").textContent`); got != "Refund from Corner Café: Milk was out" {
		t.Errorf("the refund reads %q, want the shop's reason", got)
	}
}

// TestWalletNewCodeAfterShopRefusals: a shop asked for more than the
// balance three times with the code on screen; the ledger then refuses
// that code for payments (code_used: a scanner may not search the
// balance) and the shop's screen says to show a new code. The wallet
// kept the code on screen until the minute ended, with no word. Online,
// it learns of it at its next refresh and says why beside the code,
// pointing at "New code"; it keeps the code (a code renewed at every
// refresh would give a scanner held over the phone three more tries at
// the balance each time), and "New code" then shows another.
func TestWalletNewCodeAfterShopRefusals(t *testing.T) {
	url, g := serveWallet(t)
	b, acct := passShown(t, url, g, 300)
	// The wallet's clock at the start of a minute (ahead: a pass just
	// issued is valid): its code stays on screen for the rest of the test
	// unless something replaces it.
	wallettest.Eval[bool](t, b, `(async () => { (await import("./clock.js")).setOffset(60000 - (Date.now() % 60000)); return true; })()`)
	text := wallettest.Eval[string](t, b, `(async () => (await (await import("./app.js")).newCodeNow()).text)()`)
	c, err := paycode.ParseText(text)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pay := func(i int) error {
		_, _, err := g.store.Pay(ctx, ledger.PaymentRequest{MerchantID: "kiosk-7", OrderID: fmt.Sprint("o-", i), Account: acct.ID,
			Serial: c.Serial, RiderKey: c.RiderKey[:], CodeKey: c.ID().Key(), CodeHash: paycode.ShortHash(text), Amount: 5_000, Currency: "EUR"})
		return err
	}
	for i := range ledger.MaxCodeRefusals {
		if err := pay(i); !errors.Is(err, ledger.ErrInsufficientFunds) {
			t.Fatalf("payment %d: %v, want insufficient funds", i, err)
		}
	}
	if err := pay(9); !errors.Is(err, ledger.ErrCodeUsed) {
		t.Fatalf("after %d refusals: %v, want the code used", ledger.MaxCodeRefusals, err)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "why the shop wants a new code",
		`!document.getElementById("code-note").hidden`)
	if note := wallettest.Eval[string](t, b, `document.getElementById("code-note").textContent`); !strings.Contains(note, "refused") || !strings.Contains(note, "New code") {
		t.Errorf("the note says %q, want that the shop refused this code and to tap New code", note)
	}
	if now := wallettest.Eval[string](t, b, `(async () => (await import("./app.js")).debugState().code?.text)()`); now != text {
		t.Errorf("the refused code was replaced by itself: a scanner held over the phone would get three more tries at the balance every refresh")
	}
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "refused-code", "#pass")
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("new-code"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "another code, the note gone",
		`(async () => (await import("./app.js")).debugState().code?.text !== `+wallettest.JS(text)+
			` && document.getElementById("code-note").hidden)()`)
}

// A rider on a keyboard (or a screen reader) creates an account with the
// keys alone and presses "I've written it down", or signs in with Enter:
// the button pressed went away with its screen and the focus fell to the
// page's start, so the next Tab began again at the top and a screen
// reader said nothing of the screen that opened. The focus goes to the
// code (the balance when there is no code).
func TestWalletKeyboardFocusFollowsTheScreen(t *testing.T) {
	url, _ := serveWallet(t)
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Open(t, b, url+"/wallet/")
	focused := `(e => e.id || e.tagName)(document.activeElement)`
	// The main screen shown and the focus somewhere in it (the page's
	// body, where it fell, is not).
	mainFocused := `!document.getElementById("main").hidden && document.getElementById("main").contains(document.activeElement)`
	// Tab through the fare type and the name to "Create account".
	for range 3 {
		wallettest.Do(t, b, chromedp.KeyEvent(kb.Tab))
	}
	if got := wallettest.Eval[string](t, b, focused); got != "register" {
		t.Fatalf("three Tabs reach %s, want the Create account button", got)
	}
	wallettest.Do(t, b, chromedp.KeyEvent(kb.Enter))
	wallettest.WaitFor(t, b, 30*time.Second, "the secret screen", `!document.getElementById("secret").hidden`)
	if got := wallettest.Eval[string](t, b, focused); got != "secret-heading" {
		t.Errorf("the secret screen opened with the focus on %s", got)
	}
	wallettest.Eval[bool](t, b, `(document.getElementById("secret-done").focus(), true)`)
	wallettest.Do(t, b, chromedp.KeyEvent(kb.Enter))
	wallettest.WaitFor(t, b, 30*time.Second, "the account screen", mainFocused)
	if got := wallettest.Eval[string](t, b, focused); got != "code-heading" && got != "balance-heading" {
		t.Errorf("after the secret was written down the focus is on %s, want the code or the balance", got)
	}
	// Signed in by hand on another phone, with Enter in the secret field.
	acct := newAccount(t, url)
	b2 := wallettest.Browser(t, wallettest.Config{})
	wallettest.Open(t, b2, url+"/wallet/")
	wallettest.Do(t, b2, chromedp.SetValue(chromedp.ID("signin-account"), fmt.Sprint(acct.ID)),
		chromedp.SetValue(chromedp.ID("signin-secret"), acct.Secret), chromedp.Focus(chromedp.ID("signin-secret")), chromedp.KeyEvent(kb.Enter))
	wallettest.WaitFor(t, b2, 30*time.Second, "the account screen", mainFocused)
	if got := wallettest.Eval[string](t, b2, focused); got != "code-heading" && got != "balance-heading" {
		t.Errorf("after signing in the focus is on %s, want the code or the balance", got)
	}
}
