package console

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestRefundQuestionShowsThePayment: in Chromium, the operator types a
// refund of 50.00 on the account page (meaning 5.00) for a payment of
// 60.00 refunded 10.00 before; the question shows the payment, what was
// refunded and what this leaves (nothing), so the slip of a digit is seen
// before the confirmation. It said only "Refund 50.00 EUR of …?", which
// reads as right as the amount meant; the ledger took it (within the
// payment). Cancelled, nothing changed.
func TestRefundQuestionShowsThePayment(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	ctx := context.Background()
	acct := f.account(10000)
	f.pay(acct, "kiosk-7", "o-60", 6000)
	if _, _, err := f.store.RefundPayment(ctx, ledger.RefundRequest{MerchantID: "kiosk-7", OrderID: "o-60", RefundID: "r-1",
		Amount: 1000}); err != nil {
		t.Fatal(err)
	}
	before := balanceOf(t, f, acct)
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.EmulateViewport(400, 860), chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"),
		chromedp.Navigate(f.srv.URL+"/console/accounts/"+strconv.FormatUint(acct, 10)),
		chromedp.WaitVisible(`form.act input[name="amount"]`),
		chromedp.SetValue(`form.act input[name="amount"]`, "50.00"),
		chromedp.SetValue(`form.act input[name="reason"]`, "complaint"),
		chromedp.Click(`button[data-action="refund"]`),
		chromedp.WaitVisible("#confirm"))
	text := wallettest.Eval[string](t, b, `document.getElementById("confirm").innerText`)
	for _, want := range []string{"The payment was 60.00 EUR", "10.00 EUR of it was refunded before", "leaves 0.00 EUR to refund"} {
		if !strings.Contains(text, want) {
			t.Errorf("the refund's question does not say %q:\n%s", want, text)
		}
	}
	wallettest.Do(t, b, chromedp.Click("#confirm-cancel"), chromedp.WaitVisible("#who"))
	if got := balanceOf(t, f, acct); got != before {
		t.Errorf("balance %d after the question was cancelled, want %d", got, before)
	}
}
