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

// On a phone the fleet's table was ten columns and three screens wide:
// the device and its state were in sight, its queue, the age of its
// oldest unsent tap, when it was last heard and its route were off to the
// right, with nothing saying the table scrolls (phones hide scroll bars).
// Each device is a card there, every value named and in sight, the column
// heads kept as the sort links; on a desktop it stays a table, all of it
// in sight at 1280 px.
func TestFleetFitsAPhone(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	ctx := context.Background()
	for i, id := range []string{"bus-1", "bus-2", "tram-with-a-long-name-17"} {
		f.device(id)
		failed := ledger.DeviceUpdate{}
		if i == 0 {
			failed = ledger.DeviceUpdate{Failed: "1.4.0", FailedReason: "version 1.4.0 did not report healthy within 2m0s", FailedAt: time.Now()}
		}
		if err := f.store.UpdateDeviceStatus(ctx, id, ledger.DeviceStatus{Online: i != 1, LastSeen: time.Now(), Software: "1.3.0",
			QueueDepth: 1234 * i, OldestUnsent: time.Duration(i) * 17 * time.Minute, Update: failed,
			CertNotAfter: time.Now().Add(time.Duration(20+400*i) * 24 * time.Hour)}); err != nil { // its client certificate's end: a problem on bus-1
			t.Fatal(err)
		}
	}
	b := wallettest.Browser(t, wallettest.Config{})
	art := wallettest.ArtifactDir(t)
	wallettest.Do(t, b, chromedp.EmulateViewport(375, 800), chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"))
	for _, w := range []int64{360, 390, 1280} {
		wallettest.Do(t, b, chromedp.EmulateViewport(w, 800), chromedp.Navigate(f.srv.URL+"/console/fleet"), chromedp.WaitVisible("#fleet"))
		wallettest.Screenshot(t, b, art, fmt.Sprintf("fleet-%d", w), "")
		if over := wallettest.Eval[float64](t, b, `(() => { const t = document.getElementById("fleet");
			return t.scrollWidth - t.parentElement.clientWidth })()`); over > 1 {
			t.Errorf("at %d px the fleet's table is %.0f px wider than its box", w, over)
		}
		// Every cell of every row in sight: none past the right edge.
		if out := wallettest.Eval[string](t, b, `[...document.querySelectorAll("#fleet tbody td")].filter(td => td.offsetParent &&
			td.getBoundingClientRect().right > document.getElementById("fleet").parentElement.getBoundingClientRect().right + 1)
			.map(td => td.textContent.trim()).join(" | ")`); out != "" {
			t.Errorf("at %d px these cells are out of sight to the right: %s", w, out)
		}
		// Every text readable: 4.5:1 against its background (3:1 when
		// large), as WCAG AA asks; the online badge was 4.3:1.
		if low := wallettest.Eval[string](t, b, lowContrast); low != "" {
			t.Errorf("at %d px the fleet has text of too little contrast:\n%s", w, low)
		}
		if w > 640 {
			continue
		}
		// On a phone each value says what it is (the heads are not above it).
		if got := wallettest.Eval[string](t, b, `(() => { const td = document.querySelector('#fleet tr[data-device="tram-with-a-long-name-17"] td[data-label="Queue"]');
			return getComputedStyle(td, "::before").content + td.textContent })()`); got != `"Queue: "2468` {
			t.Errorf("at %d px the queue of tram-with-a-long-name-17 reads %q", w, got)
		}
		// The sort links stay, in sight.
		if n := wallettest.Eval[int](t, b, `[...document.querySelectorAll("#fleet thead th a")].filter(a => a.offsetParent &&
			a.getBoundingClientRect().right <= innerWidth).length`); n != 9 {
			t.Errorf("at %d px %d of the fleet's 9 sort links are in sight", w, n)
		}
	}
}

// A new ledger: the overview said 0 devices and nothing else, the money
// page drew empty grids (a frame with no bars for the routes) as if the
// charts were broken, and the empty fleet's sentence on how to register
// a validator ran on one line past the right edge of a desktop. The
// overview names the first steps until a validator is registered, the
// money page says why there is nothing to draw, and the sentence wraps.
func TestNewLedgerSaysWhatToDo(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	b := wallettest.Browser(t, wallettest.Config{})
	art := wallettest.ArtifactDir(t)
	wallettest.Do(t, b, chromedp.EmulateViewport(375, 800), chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"))
	for _, w := range []int64{375, 1280} {
		wallettest.Do(t, b, chromedp.EmulateViewport(w, 900), chromedp.Navigate(f.srv.URL+"/console/"))
		wallettest.Screenshot(t, b, art, fmt.Sprintf("overview-%d", w), "")
		if got := wallettest.Eval[string](t, b, `[...document.querySelectorAll("#first-steps a")].filter(a => a.offsetParent).map(a => a.textContent).join(",")`); got != "fare table,fleet,tokens" {
			t.Errorf("at %d px the overview of a new ledger links to %q, want its first steps' fare table, fleet and tokens", w, got)
		}
		wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/money"))
		wallettest.Screenshot(t, b, art, fmt.Sprintf("money-%d", w), "")
		if got := wallettest.Eval[string](t, b, `[...document.querySelectorAll("figure")].map(f => f.id).join(",")`); got != "" {
			t.Errorf("at %d px the money page of a new ledger draws the empty charts %s", w, got)
		}
		for _, id := range []string{"revenue-none", "lag-none"} {
			if !wallettest.Eval[bool](t, b, `!!document.getElementById(`+wallettest.JS(id)+`)?.offsetParent`) {
				t.Errorf("at %d px the money page of a new ledger does not say why #%s's chart is empty", w, id)
			}
		}
		wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/fleet"), chromedp.WaitVisible("#fleet-empty"))
		if out := wallettest.Eval[float64](t, b, `document.getElementById("fleet-empty").getBoundingClientRect().right -
			document.getElementById("fleet").parentElement.getBoundingClientRect().right`); out > 1 {
			t.Errorf("at %d px the empty fleet's sentence runs %.0f px past its box", w, out)
		}
	}
	f.device("bus-1")
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"))
	if wallettest.Eval[bool](t, b, `!!document.getElementById("first-steps")`) {
		t.Error("the overview still shows the first steps with a validator registered")
	}
}

// An account number pasted from a chat or an e-mail comes with a space
// around it: the browser refused it before the server (which trims it)
// saw it, with its bare "Please match the requested format." It opens
// the account; what is not a number is refused, saying what is asked.
func TestAccountSearchTakesAPastedNumber(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	acct := f.account(500)
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.EmulateViewport(375, 800), chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"))
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/accounts"), chromedp.WaitVisible("#account-id"),
		chromedp.SetValue("#account-id", "abc"))
	// Chromium shows the title under its own message.
	if msg := wallettest.Eval[string](t, b, `(e => e.validity.patternMismatch ? e.title : "accepted")(document.getElementById("account-id"))`); !strings.Contains(msg, "digits only") {
		t.Errorf("a name typed for an account number: %q", msg)
	}
	wallettest.Do(t, b, chromedp.SetValue("#account-id", fmt.Sprintf(" %d\t", acct)))
	if !wallettest.Eval[bool](t, b, `document.getElementById("account-search").checkValidity()`) {
		t.Fatalf("the browser refuses the pasted number: %s", wallettest.Eval[string](t, b, `document.getElementById("account-id").validationMessage`))
	}
	wallettest.Do(t, b, chromedp.Click("#account-search button"), chromedp.WaitVisible("#account"))
	if got := wallettest.Eval[string](t, b, `location.pathname`); got != fmt.Sprintf("/console/accounts/%d", acct) {
		t.Errorf("the pasted number opened %s", got)
	}
}

// On a phone an account's credentials, rides and postings were tables
// wider than the screen, their Deny…, Void… and Refund… out of sight to
// the right, with nothing saying the tables scroll: a refund at the
// counter meant finding the form sideways. Each row is a card there, its
// values named and its action in sight; a refund is asked from the phone.
func TestAccountFitsAPhone(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	f.device("bus-1")
	acct := f.account(5000)
	seed := sha256.Sum256([]byte(fmt.Sprint("rider", acct)))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	ctx := context.Background()
	serial, err := f.store.IssueCredentialSerial(ctx, acct, time.Now().Add(time.Hour), pub)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	key := paycode.ID{Account: acct, Serial: serial, Time: uint32(now.Unix()), Counter: 1}.Key()
	if _, err := f.store.CommitTaps(ctx, []ledger.Tap{{ID: ledger.TapID("bus-1", "e1", 1), DeviceID: "bus-1", Seq: 1, Epoch: "e1", Time: now,
		Account: acct, Serial: serial, RiderKey: pub, CodeKey: key, CodeHash: "0123456789ab",
		BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Vehicle: "v7", Record: []byte("record")}}); err != nil {
		t.Fatal(err)
	}
	f.pay(acct, "kiosk-7", "order-with-a-long-number-20261207-0042", 450)
	b := wallettest.Browser(t, wallettest.Config{})
	art := wallettest.ArtifactDir(t)
	wallettest.Do(t, b, chromedp.EmulateViewport(360, 800), chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"))
	for _, w := range []int64{360, 390, 1280} {
		wallettest.Do(t, b, chromedp.EmulateViewport(w, 800), chromedp.Navigate(fmt.Sprintf("%s/console/accounts/%d", f.srv.URL, acct)),
			chromedp.WaitVisible("#postings"))
		wallettest.Screenshot(t, b, art, fmt.Sprintf("account-%d", w), "")
		for _, table := range []string{"credentials", "rides", "postings"} {
			if out := wallettest.Eval[string](t, b, `(t => [...t.querySelectorAll("tbody td, tbody button, tbody input")].filter(e => e.offsetParent &&
				e.getBoundingClientRect().right > t.parentElement.getBoundingClientRect().right + 1)
				.map(e => e.tagName + ":" + (e.textContent || e.getAttribute("aria-label") || e.name || "").trim()).join(" | "))(document.getElementById(`+wallettest.JS(table)+`))`); out != "" {
				t.Errorf("at %d px the account's %s have these out of sight to the right: %s", w, table, out)
			}
		}
	}
	wallettest.Do(t, b, chromedp.EmulateViewport(360, 800), chromedp.Navigate(fmt.Sprintf("%s/console/accounts/%d", f.srv.URL, acct)),
		chromedp.WaitVisible(`#postings button[data-action="refund"]`),
		chromedp.SetValue(`#postings input[name="amount"]`, "1.50"), chromedp.SetValue(`#postings input[name="reason"]`, "one item back"),
		chromedp.Click(`#postings button[data-action="refund"]`), chromedp.WaitVisible("#confirm-yes"))
	if got := wallettest.Eval[string](t, b, `document.querySelector("h1").textContent`); !strings.Contains(got, "Refund 1.50 EUR") {
		t.Errorf("the refund asked from a phone: %q", got)
	}
}

// lowContrast lists the page's visible texts whose contrast against the
// background they are drawn on is under WCAG AA's (4.5:1, or 3:1 for
// large text), one a line ("" for none).
const lowContrast = `(() => {
  const parse = c => { const p = c.match(/rgba?\(([^)]+)\)/)[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 }; };
  const over = (top, bot) => ({ r: top.r * top.a + bot.r * (1 - top.a), g: top.g * top.a + bot.g * (1 - top.a),
    b: top.b * top.a + bot.b * (1 - top.a), a: 1 });
  const lum = c => { const f = v => (v /= 255) <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const background = el => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
      if (c.a > 0) { layers.push(c); if (c.a >= 1) break; } }
    return layers.reverse().reduce((bot, top) => over(top, bot), { r: 255, g: 255, b: 255, a: 1 }); };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    if (!el.offsetParent || ![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const cs = getComputedStyle(el), bg = background(el), fg = over(parse(cs.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a), ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(cs.fontSize), large = size >= 24 || (parseInt(cs.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) low.push(ratio.toFixed(2) + ":1 " + el.className + " " + JSON.stringify(el.textContent.trim().slice(0, 40)));
  }
  return low.join("\n");
})()`
