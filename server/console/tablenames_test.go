package console

import (
	"fmt"
	"testing"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/wallet/wallettest"
)

// TestTablesNamed: in Chromium, every table on every page has a name in
// the accessibility tree (what a screen reader's list of tables reads
// out, and says as it enters one): the fleet's devices, an account's
// postings, the deny list, the audit trail. None had one, so a screen
// reader user heard "table, 9 columns, 101 rows" eight times over on the
// money page and had to read the headers to tell which one.
func TestTablesNamed(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	f.device("bus-1")
	acct := f.account(1000)
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"))
	tables := 0
	for _, p := range []string{"", "fleet", "devices/bus-1", "money", "shops", "flagged", "aside", "aside?kind=held",
		fmt.Sprint("accounts/", acct), "denylist", "fares", "keys", "tokens", "tokens/init/payments", "audit"} {
		wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"+p), chromedp.WaitVisible("footer"))
		tree, err := chromedp.Call(b, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tree.Nodes {
			if n.Ignored || n.Role == nil || string(n.Role.Value) != `"table"` {
				continue
			}
			tables++
			if n.Name == nil || len(n.Name.Value) <= 2 { // a JSON string: "" is 2 bytes
				t.Errorf("/console/%s: a table has no accessible name", p)
			}
		}
	}
	if tables < 20 {
		t.Errorf("%d tables on the pages, want 20 or more (the test reads the accessibility tree wrong)", tables)
	}
}
