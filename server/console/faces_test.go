package console

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// A refund's reason (the shop's or the operator's, typed on this very
// page) was kept by the ledger and shown nowhere: the account's postings
// named the refund's id alone.
func TestAccountPageShowsRefundReason(t *testing.T) {
	f := newFixture(t)
	acct := f.account(10_000)
	ctx := context.Background()
	seed := sha256.Sum256([]byte("rider phone"))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	serial, err := f.store.IssueCredentialSerial(ctx, acct, time.Now().Add(time.Hour), pub)
	if err != nil {
		t.Fatal(err)
	}
	id := paycode.ID{Account: acct, Serial: serial, Time: uint32(time.Now().Unix())}
	if _, _, err := f.store.Pay(ctx, ledger.PaymentRequest{MerchantID: "kiosk-7", OrderID: "o-1", Account: acct, Serial: serial,
		RiderKey: pub, CodeKey: id.Key(), CodeHash: "abc", Amount: 450, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.RefundPayment(ctx, ledger.RefundRequest{MerchantID: "kiosk-7", OrderID: "o-1", RefundID: "r-1",
		Amount: 150, Reason: "charged twice"}); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	b.signIn(f.opToken)
	_, body := b.get(fmt.Sprintf("/console/accounts/%d", acct))
	if !strings.Contains(body, `refund r-1: <span class="reason">charged twice</span>`) {
		t.Errorf("the account page does not show the refund's reason:\n%s", body)
	}
}

// A fleet with no validator said "No devices match." as if a filter
// left them out: a new operator was not told what to do.
func TestFleetEmptySaysHowToRegister(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	b.signIn(f.opToken)
	if _, body := b.get("/console/fleet"); !strings.Contains(body, "No validator is registered yet") {
		t.Errorf("an empty fleet does not say how to register a validator:\n%s", body)
	}
	f.device("bus-1")
	if _, body := b.get("/console/fleet?q=zzz"); !strings.Contains(body, "No devices match.") || strings.Contains(body, "No validator is registered yet") {
		t.Errorf("a filter that matches none of the fleet's devices:\n%s", body)
	}
}

// On a phone the keyring's table showed the key's id and the start of its
// 64 hex digits; which key signs new credentials, and until when, was off
// to the right, with nothing saying the table scrolls (phones hide
// scroll bars). The marker and the dates come first, the key last.
func TestKeysPageShowsSigningKeyOnAPhone(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.EmulateViewport(375, 800), chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"),
		chromedp.Navigate(f.srv.URL+"/console/keys"), chromedp.WaitVisible("#keyring"))
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "keys-phone", "")
	for _, what := range []string{`#keyring .ok`, `#keyring tbody td:nth-child(4)`} {
		out := wallettest.Eval[float64](t, b, `document.querySelector(`+wallettest.JS(what)+`).getBoundingClientRect().right -
			document.querySelector("#keyring").parentElement.getBoundingClientRect().right`)
		if out > 0 {
			t.Errorf("on a 375 px phone %s is %.0f px out of sight to the right", what, out)
		}
	}
}
