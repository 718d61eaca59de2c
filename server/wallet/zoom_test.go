package wallet_test

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/wallet/wallettest"
)

// TestWalletAtTwiceTheZoom: a rider who zooms a 360 x 640 phone to 200%
// (Chrome's accessibility zoom) gets a page 180 CSS px wide. The
// network's state in the header, "Server unreachable: codes still
// work", was kept on one line: it ran 156 px past the screen's edge,
// white letters off the header's blue onto the page's white, and the
// rider at the door read neither that the server was out of reach nor
// that the code still works. The code ran past its card's edge and the
// screen's too, and the balance was cut in two, "€10.0" above "0". All
// fit the screen, the balance on one line.
func TestWalletAtTwiceTheZoom(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 1000)
	// Browser zoom makes the CSS viewport that much narrower: a 360 x 640
	// phone at 200% lays the page out in 180 x 320 CSS px.
	wallettest.Do(t, b, chromedp.EmulateViewport(180, 320, chromedp.EmulateScale(2)))
	g.mode.Store("down")
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the unreachable indicator", `document.getElementById("net").dataset.state === "unreachable"`)
	wallettest.Eval[bool](t, b, `(window.scrollTo(0, 0), true)`)
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "zoom-200-unreachable", "")
	type fit struct {
		Text                       string
		Right, Width, Over, Scroll float64
	}
	for _, c := range []struct{ what, expr string }{
		{"the network's state", `document.getElementById("net")`},
		{"the code", `document.getElementById("qr")`},
	} {
		f := wallettest.Eval[fit](t, b, `(e => ({text: e.textContent, right: e.getBoundingClientRect().right,
			width: document.documentElement.clientWidth, over: e.scrollWidth - e.clientWidth,
			scroll: document.documentElement.scrollWidth - document.documentElement.clientWidth}))(`+c.expr+`)`)
		if f.Right > f.Width+1 || f.Over > 1 {
			t.Errorf("at 200%% zoom %s %q ends at %.0f px (%.0f px cut inside it), past the %.0f px screen", c.what, f.Text, f.Right, f.Over, f.Width)
		}
		if f.Scroll > 1 {
			t.Errorf("at 200%% zoom the page is %.0f px wider than the screen", f.Scroll)
		}
	}
	// The balance whole on one line: "€10.0" above "0" reads as ten euros.
	if lines := wallettest.Eval[int](t, b, `(() => { const r = document.createRange();
		r.selectNodeContents(document.getElementById("balance")); return new Set([...r.getClientRects()].map((c) => Math.round(c.top))).size; })()`); lines != 1 {
		t.Errorf("at 200%% zoom the balance %q takes %d lines", wallettest.Eval[string](t, b, `document.getElementById("balance").textContent`), lines)
	}
	card := wallettest.Eval[fit](t, b, `(q => ({right: q.getBoundingClientRect().right,
		width: document.getElementById("pass").getBoundingClientRect().right}))(document.getElementById("qr"))`)
	if card.Right > card.Width+1 {
		t.Errorf("at 200%% zoom the code ends at %.0f px, past its card's edge at %.0f", card.Right, card.Width)
	}
}
