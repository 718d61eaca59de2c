package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/farego/farego/server/ledger"
)

// TestRefundAtTheRefundLimitToldBeforeTheQuestion: a payment with
// ledger.MaxRefundsPerPayment refunds takes no more, whatever is left of
// it. The console's own check knew only the amount: it asked "Refund 0.01
// EUR …?", and the ledger refused it after the confirmation. It asks the
// ledger's rule (ledger.CheckRefund) now, and says so before the question.
func TestRefundAtTheRefundLimitToldBeforeTheQuestion(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acct := f.account(1000)
	f.pay(acct, "kiosk-1", "o-1", 500)
	for i := range ledger.MaxRefundsPerPayment {
		if _, _, err := f.store.RefundPayment(ctx, ledger.RefundRequest{MerchantID: "kiosk-1", OrderID: "o-1",
			RefundID: fmt.Sprint("r-", i), Amount: 1}); err != nil {
			t.Fatal(err)
		}
	}
	b := f.browser()
	csrf := b.signIn(f.opToken)
	form := url.Values{"csrf": {csrf}, "account": {fmt.Sprint(acct)}, "merchant": {"kiosk-1"}, "order": {"o-1"}, "amount": {"0.01"},
		"reason": {"complaint 13"}, "refund_id": {"console-more"}}
	want := fmt.Sprintf("has %d refunds, the most there may be", ledger.MaxRefundsPerPayment)
	for _, confirm := range []string{"", "yes"} {
		form.Set("confirm", confirm)
		if resp, body := b.post("/console/act/refund", form); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("a refund past the limit (confirm %q): %d, want 400 saying %q:\n%.400s", confirm, resp.StatusCode, want, body)
		}
	}
	if got := balanceOf(t, f, acct); got != 1000-500+ledger.MaxRefundsPerPayment {
		t.Errorf("balance %d, want %d", got, 1000-500+ledger.MaxRefundsPerPayment)
	}
	// A retry of a refund made is still a retry.
	form.Set("refund_id", "r-0")
	form.Set("confirm", "")
	if resp, body := b.post("/console/act/refund", form); resp.StatusCode != http.StatusOK {
		t.Errorf("the question of a retry of r-0: %d\n%.400s", resp.StatusCode, body)
	}
}
