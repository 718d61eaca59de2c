package rig

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/wallet/wallettest"
	"github.com/farego/farego/sync/wire"
)

// hostile is markup an attacker puts in a text field n: shown as HTML, it
// adds an element with id xss-n (and runs a script, if the page's CSP let
// it).
func hostile(n int) string {
	return fmt.Sprintf(`<img src=x id=xss-%d onerror=alert(%d)>`, n, n)
}

// injected counts the page's elements that markup from the ledger made.
const injected = `document.querySelectorAll("[id^=xss-], [onerror], [onload]").length`

// TestHostileTextInert: every text an attacker controls that the console
// or the wallet shows — a rider's name, a shop's merchant and order ids,
// its refund's id and reason, a token's name, a validator's route and
// vehicle, a stolen validator's out-of-service and update-failure reasons,
// the audit trail that repeats them, an error page echoing a path — is
// markup, and each page shows it as text in a real Chromium: no element is
// made from it and no dialog opens. The pages are checked to show the text
// (a page that leaves it out proves nothing).
func TestHostileTextInert(t *testing.T) {
	wallettest.Chromium(t)
	r, ctx := newRig(t)
	base := "http://" + r.HTTP

	// A rider with a hostile name, a credential and a code.
	var acct struct {
		Account struct {
			ID uint64 `json:"id"`
		} `json:"account"`
		Secret string `json:"secret"`
	}
	must(t, cli.CallJSON(ctx, "POST", base+"/v1/accounts", "", map[string]string{"profile": "adult", "name": hostile(1)}, &acct))
	id := acct.Account.ID
	must(t, r.API(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/topups", id), map[string]any{"amount": 10_000, "reference": "hostile"}, nil))
	var c struct {
		Credential string `json:"credential"`
		TokenSeed  string `json:"token_seed"`
	}
	must(t, cli.CallJSON(ctx, "POST", fmt.Sprintf("%s/v1/accounts/%d/credentials", base, id), acct.Secret, map[string]string{}, &c))
	cred, err := hex.DecodeString(c.Credential)
	must(t, err)
	seed, err := hex.DecodeString(c.TokenSeed)
	must(t, err)
	key, err := paycode.RiderKey(seed)
	must(t, err)
	var counter uint16
	code := func() string {
		counter++
		b, err := paycode.MakeCode(cred, key, time.Now(), counter)
		must(t, err)
		return paycode.EncodeText(b)
	}

	// A validator on a hostile route takes the rider's code.
	d, err := r.Provision(ctx, "bus-h", hostile(2))
	must(t, err)
	must(t, d.SetPolicy("passback_window", `"-1s"`))
	must(t, d.Start(ctx))
	t.Cleanup(d.Close)
	if line, err := d.Scan(ctx, code()); err != nil || !strings.Contains(line, "ACCEPTED") {
		t.Fatalf("tap: %q, %v", line, err)
	}
	waitBalance(t, ctx, r, id, 10_000-250)
	must(t, r.API(ctx, "PUT", "/v1/devices/bus-h/assignment", map[string]string{"route": hostile(3), "vehicle": hostile(4)}, nil))

	// A shop with a hostile merchant id pays with a hostile order id and
	// refunds part with a hostile refund id and reason.
	merchant := hostile(5)
	shop, err := r.MerchantToken(ctx, merchant)
	must(t, err)
	order := hostile(6)
	must(t, cli.CallJSON(ctx, "POST", base+"/v1/payments", shop,
		map[string]any{"merchant_id": merchant, "order_id": order, "code": code(), "amount": 500}, nil))
	must(t, cli.CallJSON(ctx, "POST", base+"/v1/payments/"+url.PathEscape(merchant)+"/"+url.PathEscape(order)+"/refunds", shop,
		map[string]any{"refund_id": hostile(7), "amount": 100, "reason": hostile(8)}, nil))

	// A token with a hostile name.
	var tok struct {
		ID string `json:"id"`
	}
	must(t, r.API(ctx, "POST", "/v1/tokens", map[string]string{"role": "auditor", "name": hostile(9)}, &tok))

	// A stolen validator reports hostile reasons in its status.
	a := provisionAttacker(t, ctx, r, "bus-stolen")
	cl, _, err := a.dial("", true)
	must(t, err)
	defer cl.Disconnect(0)
	st := wire.Status{DeviceID: a.id, Online: true, Time: time.Now(), OutOfService: hostile(10),
		Update: &wire.UpdateStatus{Failed: "1.2.3", FailedReason: hostile(11), FailedAt: time.Now().Add(-time.Minute)}}
	p, err := st.MarshalBinary()
	must(t, err)
	msg, err := wire.Seal(wire.TypeStatus, p, false, a.key)
	must(t, err)
	if tk := cl.Publish("farego/dev/"+a.id+"/status", 1, false, msg); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("publish the status: %v", tk.Error())
	}
	must(t, WaitFor(ctx, 60*time.Second, "the stolen validator's status", func() bool {
		var out struct {
			Devices []struct {
				ID           string `json:"id"`
				OutOfService string `json:"out_of_service"`
			} `json:"devices"`
		}
		if err := r.API(ctx, "GET", "/v1/devices", nil, &out); err != nil {
			return false
		}
		for _, dv := range out.Devices {
			if dv.ID == a.id && dv.OutOfService == hostile(10) {
				return true
			}
		}
		return false
	}))

	b := wallettest.Browser(t, wallettest.Config{})
	var dialogs atomic.Int32
	// A dialog left open would also stop the page: the next step fails.
	must(t, chromedp.Listen(b, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
		}
	}))
	check := func(where string, want ...int) {
		t.Helper()
		if n := wallettest.Eval[int](t, b, injected); n != 0 {
			t.Errorf("%s: %d elements made from the ledger's text: %s", where, n, wallettest.Eval[string](t, b,
				`Array.from(document.querySelectorAll("[id^=xss-], [onerror], [onload]")).map(e => e.outerHTML).join(" ")`))
		}
		text := wallettest.Eval[string](t, b, `document.body.innerText`)
		for _, n := range want {
			if !strings.Contains(text, hostile(n)) {
				t.Errorf("%s does not show text %d as text (%q)", where, n, hostile(n))
			}
		}
	}

	consoleSignIn(t, b, base, r.Token)
	for _, pg := range []struct {
		path string
		want []int
	}{
		{"", nil},
		{"fleet", []int{10}},
		{"devices/bus-h", []int{3, 4}},
		{"devices/bus-stolen", []int{10, 11}},
		{fmt.Sprintf("accounts/%d", id), []int{1, 2, 5, 6, 8}},
		{"accounts?q=" + url.QueryEscape(hostile(12)), nil},
		{"shops", []int{5}},
		{"money", nil},
		{"flagged", nil},
		{"aside", nil},
		{"denylist", nil},
		{"tokens", []int{5, 9}},
		{"tokens/" + tok.ID + "/payments", nil},
		{"tokens/" + strings.Split(shop, "_")[1] + "/payments", []int{5, 6, 7}},
		{"audit", []int{3, 4, 9}},
		{"devices/" + url.PathEscape(hostile(13)), nil},
		{"accounts/" + url.PathEscape(hostile(14)), nil},
	} {
		visit(t, b, base+"/console/"+pg.path)
		check("/console/"+pg.path, pg.want...)
	}

	wallettest.Open(t, b, base+"/wallet/")
	wallettest.Do(t, b,
		chromedp.SetValue(chromedp.ID("signin-account"), fmt.Sprint(id)),
		chromedp.SetValue(chromedp.ID("signin-secret"), acct.Secret),
		chromedp.Click(chromedp.ID("signin")),
	)
	wallettest.WaitFor(t, b, 30*time.Second, "the refund in the wallet", `!!document.querySelector("#activity-body tr[data-kind=refund]")`)
	check("the wallet", 1, 2, 5, 8)
	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d dialogs opened", n)
	}
	verifyClean(t, ctx, r)
}
