package wallet_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/farego/farego/server/wallet/wallettest"
)

// TestWalletClockWarningBesideTheCode: on a phone (360 x 640) a clock two
// hours ahead was named under the pass's line, below "New code", out of
// sight, while the code it makes useless filled the screen as if good:
// the rider held it up at the door, got a red light, and saw no reason.
// The warning is in sight with the code, and the code still whole.
func TestWalletClockWarningBesideTheCode(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 1000)
	wallettest.Do(t, b, chromedp.EmulateViewport(360, 640))
	wallettest.Eval[bool](t, b, `(async () => { (await import("./clock.js")).setOffset(2 * 3600e3); return true; })()`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	warning := `document.getElementById("clock-warning")`
	wallettest.WaitFor(t, b, 30*time.Second, "the clock warning", "!"+warning+".hidden && "+warning+`.textContent.includes("2 h ahead")`)
	wallettest.WaitFor(t, b, 30*time.Second, "the code", `!document.getElementById("code-view").hidden`)
	wallettest.Eval[bool](t, b, `(window.scrollTo(0, 0), true)`)
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "clock-warning-phone", "")
	type box struct{ Top, Bottom, Height float64 }
	w := wallettest.Eval[box](t, b, `(r => ({top: r.top, bottom: r.bottom, height: innerHeight}))(`+warning+`.getBoundingClientRect())`)
	if w.Bottom > w.Height {
		t.Errorf("on a 360 x 640 phone the clock warning is at %.0f-%.0f px, below the screen's %.0f: the rider sees the code and not that it is refused", w.Top, w.Bottom, w.Height)
	}
	if q := wallettest.Eval[box](t, b, `(r => ({top: r.top, bottom: r.bottom, height: innerHeight}))(document.getElementById("qr").getBoundingClientRect())`); q.Bottom > q.Height {
		t.Errorf("with the warning the code reaches %.0f px, below the screen's %.0f", q.Bottom, q.Height)
	}
}

// TestWalletSaysWhenThePassExpired: offline at the door, a pass past its
// end said "Your pass has expired": not since when (a minute ago, or
// yesterday, and the phone's clock or the pass to blame?). It says the
// time it ended, the same time the pass's line gave before.
func TestWalletSaysWhenThePassExpired(t *testing.T) {
	for _, lang := range []string{"en-US", "zh-CN"} {
		t.Run(lang, func(t *testing.T) {
			url, g := serveWallet(t)
			acct := newAccount(t, url)
			if _, err := g.store.TopUp(t.Context(), acct.ID, 1000, "psp-first"); err != nil {
				t.Fatal(err)
			}
			b := wallettest.Browser(t, wallettest.Config{Lang: lang})
			signIn(t, b, url, acct)
			wallettest.WaitFor(t, b, 30*time.Second, "the code", `!document.getElementById("code-view").hidden`)
			valid := wallettest.Eval[string](t, b, passState)
			// "Pass 1 is valid until Dec 8, 2026, 12:16 PM." / "乘车凭证 1 有效期至 2026年12月8日 12:17。"
			until := valid
			for _, sep := range []string{"valid until ", "有效期至 "} {
				if i := strings.Index(until, sep); i >= 0 {
					until = until[i+len(sep):]
				}
			}
			until = strings.TrimRight(until, ".。")
			if until == valid || until == "" {
				t.Fatalf("the set-up: the pass says %q", valid)
			}
			offline(t, b, true)
			wallettest.Eval[bool](t, b, `(async () => { (await import("./clock.js")).setOffset(25 * 3600e3); return true; })()`)
			wallettest.WaitFor(t, b, 30*time.Second, "the code to go", `document.getElementById("code-view").hidden`)
			wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "pass-expired", "#pass")
			if got := wallettest.Eval[string](t, b, passState); !strings.Contains(got, until) {
				t.Errorf("past its end the pass says %q, want when it ended (%s)", got, until)
			}
		})
	}
}

// TestWalletNoFocusStopOnNothing: with no rides yet, the keyboard's Tab
// after "Save the limit" stopped on the rides' empty scrolling frame: a
// thin focus ring under "No rides yet." and nothing for a screen reader.
// The next stop is a thing to read or press.
func TestWalletNoFocusStopOnNothing(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 1000)
	wallettest.WaitFor(t, b, 30*time.Second, "the activity", `document.querySelectorAll("#activity-body tr").length === 1`)
	if n := wallettest.Eval[int](t, b, `document.querySelectorAll("#rides-body tr").length`); n != 0 {
		t.Fatalf("the set-up: %d rides", n)
	}
	wallettest.Eval[bool](t, b, `(document.getElementById("limit-save").focus(), true)`)
	wallettest.Do(t, b, chromedp.KeyEvent(kb.Tab))
	got := wallettest.Eval[string](t, b, `(e => (e.id || e.tagName) + " " + JSON.stringify(e.innerText.trim().slice(0, 40)))(document.activeElement)`)
	if !wallettest.Eval[bool](t, b, `document.getElementById("activity").contains(document.activeElement) && document.activeElement.innerText.trim() !== ""`) {
		t.Errorf("Tab after Save the limit, with no rides, stops on %s; want the activity", got)
	}
}

// TestWalletBalanceHeadingOverItsFigures: on a tablet or a desktop the
// activity's "Balance" heading stood at the left of its column while the
// balances, amounts, are aligned right: "Balance" over empty space, the
// figures under the next heading's edge. The heading ends where they do.
func TestWalletBalanceHeadingOverItsFigures(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 123_456)
	wallettest.Do(t, b, chromedp.EmulateViewport(768, 1024))
	wallettest.WaitFor(t, b, 30*time.Second, "the activity", `document.querySelectorAll("#activity-body tr").length === 1`)
	right := func(sel string) float64 {
		return wallettest.Eval[float64](t, b, `(() => { const r = document.createRange(); r.selectNodeContents(document.querySelector(`+wallettest.JS(sel)+`));
			return r.getBoundingClientRect().right; })()`)
	}
	for _, col := range []int{3, 4} {
		h, v := right(fmt.Sprintf("#activity-table th:nth-child(%d)", col)), right(fmt.Sprintf("#activity-body td:nth-child(%d)", col))
		if h < v-2 || h > v+2 {
			t.Errorf("column %d: its heading ends at %.0f px, its figures at %.0f", col, h, v)
		}
	}
}

// TestWalletIndicatorAgreesWithTheClock: a phone whose clock was found
// 5 minutes ahead, then offline, said at the top "Offline: codes still
// work" and under it "validators refuse codes from the future": two
// answers to the one question a rider at the door has. The indicator
// says "Offline" alone while the clock is known wrong.
func TestWalletIndicatorAgreesWithTheClock(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 1000)
	warning := `document.getElementById("clock-warning")`
	wallettest.Eval[bool](t, b, `(async () => { (await import("./clock.js")).setOffset(300000); return true; })()`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the clock warning", "!"+warning+".hidden")
	offline(t, b, true)
	wallettest.WaitFor(t, b, 30*time.Second, "the offline indicator", `document.getElementById("net").dataset.state === "offline"`)
	if got := wallettest.Eval[string](t, b, `document.getElementById("net").textContent`); strings.Contains(got, "codes still work") {
		t.Errorf("offline with a clock known 5 min ahead the indicator says %q, beside %q", got, wallettest.Eval[string](t, b, warning+".textContent"))
	}
	// With the clock right again (found online), codes work offline.
	offline(t, b, false)
	wallettest.Eval[bool](t, b, `(async () => { (await import("./clock.js")).setOffset(0); return true; })()`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the warning to go", warning+".hidden")
	offline(t, b, true)
	wallettest.WaitFor(t, b, 30*time.Second, "codes still work offline", `document.getElementById("net").textContent === "Offline: codes still work"`)
}
