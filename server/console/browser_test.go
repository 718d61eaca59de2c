package console

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// Every page in a real headless Chromium, on a phone and on a desktop,
// over a ledger seeded with 300 devices and 20,000 taps over 30 days:
// each renders (no error page), the money page draws its charts, and the
// tables fit the screen (they scroll inside their box, the page does not
// scroll sideways). Screenshots of the main pages are kept as artifacts;
// FAREGO_UPDATE_SCREENSHOTS=1 also writes the README's two to
// testdata/console.
func TestPagesInBrowser(t *testing.T) {
	wallettest.Chromium(t)
	art := wallettest.ArtifactDir(t)
	ctx := context.Background()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
	st, err := ledger.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tbl, _ := fare.Parse([]byte(testFares))
	if err := st.PutFareTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	if err := seed(ctx, "sqlite", dsn, 20_000, 300); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RefreshSummaries(ctx); err != nil {
		t.Fatal(err)
	}
	kd, err := keys.Init(filepath.Join(t.TempDir(), "keys"), keys.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(kd.Path(), keys.TokenFile))
	a := api.New(api.Config{Ledger: st, Keys: kd})
	srv := newServer(New(Config{Ledger: st, Keys: kd, API: a, Started: seedNow.Add(-time.Hour)}), a)
	defer srv.Close()

	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.Navigate(srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", strings.TrimSpace(string(tok))), chromedp.Click("#signin"), chromedp.WaitVisible("#who"))
	pages := []string{"", "fleet", "devices/bus-0037", "money", "shops", "flagged", "aside", "accounts/1042", "denylist", "fares", "keys", "tokens", "audit"}
	shots := map[string]bool{"": true, "fleet": true, "devices/bus-0037": true, "money": true, "accounts/1042": true}
	for _, size := range []struct {
		name string
		w, h int64
	}{{"phone", 400, 860}, {"desktop", 1280, 900}} {
		wallettest.Do(t, b, chromedp.EmulateViewport(size.w, size.h))
		for _, p := range pages {
			wallettest.Do(t, b, chromedp.Navigate(srv.URL+"/console/"+p))
			if wallettest.Eval[bool](t, b, `document.getElementById("error") !== null`) {
				t.Fatalf("/console/%s shows an error: %s", p, wallettest.Eval[string](t, b, `document.getElementById("error").textContent`))
			}
			if over := wallettest.Eval[int](t, b, `document.documentElement.scrollWidth - document.documentElement.clientWidth`); over > 2 {
				t.Errorf("/console/%s on a %s is %d px wider than the screen", p, size.name, over)
			}
			if p == "money" {
				// A chart's labels stay readable on a phone (shrunk to
				// the screen's width they were 4 px tall): the chart
				// scrolls sideways in its frame instead.
				if h := wallettest.Eval[float64](t, b, `document.querySelector("#chart-revenue text.axis").getBoundingClientRect().height`); h < 8 {
					t.Errorf("the revenue chart's labels on a %s are %.1f px tall", size.name, h)
				}
				// It shows its newest days first (scrolled to the right
				// end): its left end showed a month ago, often blank.
				if off := wallettest.Eval[float64](t, b, `(() => { const f = document.getElementById("chart-revenue");
					return f.querySelector("svg").getBoundingClientRect().right - f.getBoundingClientRect().right; })()`); off > 2 {
					t.Errorf("the revenue chart on a %s ends %.0f px beyond its frame's right edge: today is out of view", size.name, off)
				}
			}
			if shots[p] {
				name := strings.NewReplacer("/", "-").Replace(p)
				if name == "" {
					name = "overview"
				}
				wallettest.Screenshot(t, b, art, size.name+"-"+name, "")
			}
		}
	}
	wallettest.Do(t, b, chromedp.Navigate(srv.URL+"/console/money"))
	if n := wallettest.Eval[int](t, b, `document.querySelectorAll("#chart-revenue rect.c-charged").length`); n < 28 {
		t.Errorf("the revenue chart has %d days of bars, want about 30", n)
	}
	if n := wallettest.Eval[int](t, b, `document.querySelectorAll("#chart-routes rect").length`); n < 12 {
		t.Errorf("the route chart has %d bars", n)
	}
	wallettest.Do(t, b, chromedp.Navigate(srv.URL+"/console/fleet"))
	if first := wallettest.Eval[string](t, b, `document.querySelector("#fleet tbody tr").dataset.state`); first == "online" &&
		!wallettest.Eval[bool](t, b, `document.querySelector("#fleet tbody tr").classList.contains("problem")`) {
		t.Error("the fleet page does not put problems first")
	}
	if os.Getenv("FAREGO_UPDATE_SCREENSHOTS") != "" {
		// The README's pictures: the top of a page, as a screen shows it.
		for _, shot := range []struct {
			name, page string
			w, h       int64
		}{{"desktop-money", "money", 1280, 1300}, {"phone-fleet", "fleet", 400, 860}} {
			wallettest.Do(t, b, chromedp.EmulateViewport(shot.w, shot.h), chromedp.Navigate(srv.URL+"/console/"+shot.page))
			sctx, cancel := context.WithTimeout(b, time.Minute)
			png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("..", "..", "testdata", "console", shot.name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
