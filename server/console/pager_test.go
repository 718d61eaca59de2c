package console

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// open loads a console page in the signed-in tab and waits for it.
func (c *chromeTab) open(url, what, cond string) {
	c.t.Helper()
	wallettest.Do(c.t, c.ctx, chromedp.Navigate(url))
	if c.settle(what, cond) {
		c.t.Fatalf("%s: the sign-in form", what)
	}
}

// The deny list in pages of 200: an operator with exactly 200 entries
// (or 400, …) was offered "More", which opened a page saying "The deny
// list is empty." under "200 entries"; and a page after the first had no
// way back but the browser's. The last page offers no "More", a later
// page links the first, and the count says "entry" for one.
func TestDenyListLastPageHasNoMore(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acct := f.account(1000)
	made := 0
	deny := func(n int) {
		for range n {
			made++
			if err := f.store.Deny(ctx, acct, 0, fmt.Sprintf("r%03d", made)); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := chromeSignIn(t, f, f.opToken)
	deny(1)
	c.open(f.srv.URL+"/console/denylist", "the deny list", `!!document.getElementById("denylist")`)
	if got := wallettest.Eval[string](t, c.ctx, `document.querySelector("main p").textContent`); !strings.Contains(got, "· 1 entry.") {
		t.Errorf("one entry is counted as %q", got)
	}
	deny(199)
	c.open(f.srv.URL+"/console/denylist", "the deny list", `!!document.getElementById("denylist")`)
	rows := `document.querySelectorAll("#denylist tbody tr[data-account]").length`
	if n := wallettest.Eval[int](t, c.ctx, rows); n != 200 {
		t.Fatalf("the set-up: the first page has %d entries, want 200", n)
	}
	wallettest.Screenshot(t, c.ctx, wallettest.ArtifactDir(t), "denylist-200", ".pager, #denylist tbody tr:last-child")
	if next := wallettest.Eval[string](t, c.ctx, `(a => a ? a.href : "")(document.getElementById("denylist-next") || [...document.querySelectorAll("main a")].find(a => a.textContent === "More"))`); next != "" {
		c.open(next, "the next page", `!!document.getElementById("denylist")`)
		t.Errorf("200 entries in all offer a next page, which says %q", wallettest.Eval[string](t, c.ctx, `document.querySelector("#denylist tbody").textContent`))
	}
	deny(1)
	c.open(f.srv.URL+"/console/denylist", "the deny list", `!!document.getElementById("denylist")`)
	next := wallettest.Eval[string](t, c.ctx, `(a => a ? a.href : "")(document.getElementById("denylist-next"))`)
	if next == "" {
		t.Fatal("201 entries offer no next page")
	}
	c.open(next, "the next page", `!!document.getElementById("denylist")`)
	if n := wallettest.Eval[int](t, c.ctx, rows); n != 1 {
		t.Errorf("the second page of 201 entries has %d", n)
	}
	if first := wallettest.Eval[string](t, c.ctx, `(a => a ? a.getAttribute("href") : "")(document.getElementById("denylist-first"))`); first != "/console/denylist" {
		t.Errorf("the second page links the first as %q", first)
	}
}

// The audit trail in pages of 100: exactly 100 entries offered "Older
// entries", a page of "No entries."; an older page had no link back to
// the newest.
func TestAuditLastPageHasNoOlder(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := chromeSignIn(t, f, f.opToken)
	have, err := f.store.AuditLog(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(have); i < 100; i++ {
		if err := f.store.Audit(ctx, ledger.AuditEntry{At: time.Now(), Actor: "cli", Action: "test", Target: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.open(f.srv.URL+"/console/audit", "the audit trail", `!!document.getElementById("audit")`)
	rows := `[...document.querySelectorAll("#audit tbody tr")].filter(tr => !tr.querySelector(".empty")).length`
	if n := wallettest.Eval[int](t, c.ctx, rows); n != 100 {
		t.Fatalf("the set-up: %d entries shown, want 100", n)
	}
	if older := wallettest.Eval[string](t, c.ctx, `(a => a ? a.href : "")([...document.querySelectorAll("main a")].find(a => a.textContent === "Older entries"))`); older != "" {
		c.open(older, "the older page", `!!document.getElementById("audit")`)
		t.Errorf("100 entries in all offer older ones, a page of %d", wallettest.Eval[int](t, c.ctx, rows))
	}
	if err := f.store.Audit(ctx, ledger.AuditEntry{At: time.Now(), Actor: "cli", Action: "test", Target: "last"}); err != nil {
		t.Fatal(err)
	}
	c.open(f.srv.URL+"/console/audit", "the audit trail", `!!document.getElementById("audit")`)
	older := wallettest.Eval[string](t, c.ctx, `(a => a ? a.href : "")(document.getElementById("audit-next"))`)
	if older == "" {
		t.Fatal("101 entries offer no older page")
	}
	c.open(older, "the older page", `!!document.getElementById("audit")`)
	if n := wallettest.Eval[int](t, c.ctx, rows); n != 1 {
		t.Errorf("the older page of 101 entries has %d", n)
	}
	if first := wallettest.Eval[string](t, c.ctx, `(a => a ? a.getAttribute("href") : "")(document.getElementById("audit-first"))`); first != "/console/audit" {
		t.Errorf("the older page links the newest as %q", first)
	}
}
