package console

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestAsidePaged: in Chromium, 250 held taps (held in one batch, so one
// received time) are listed 100 a page, newest first: Older leads to the
// next 100 and then the last 50, each tap once, and a later page links
// back to the newest. The page listed the newest 100 alone, with no way
// to the other 150 (a keyring restored from an older backup holds every
// tap of the fleet). A hand-made ?before_ns= that is not a number is a
// clear error.
func TestAsidePaged(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	recs := make([]ledger.HeldTap, 250)
	for i := range recs {
		recs[i] = ledger.HeldTap{DeviceID: fmt.Sprintf("bus-%d", i%7), Epoch: "e", Seq: uint64(i + 1), Reason: "unknown_issuer_key",
			Record: []byte("record")}
	}
	if err := f.store.Hold(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.EmulateViewport(400, 860), chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"),
		chromedp.Navigate(f.srv.URL+"/console/aside?kind=held"), chromedp.WaitVisible("#records"))
	seen := map[string]bool{}
	var pages []int
	for page := 0; ; page++ {
		if page == 4 {
			t.Fatal("more than 3 pages of 100 for 250 held taps")
		}
		keys := wallettest.Eval[[]string](t, b, `Array.from(document.querySelectorAll("#records tbody tr")).map(r =>
			Array.from(r.cells).slice(1, 4).map(c => c.innerText).join("/"))`)
		pages = append(pages, len(keys))
		for _, k := range keys {
			if seen[k] {
				t.Errorf("page %d lists %s again", page+1, k)
			}
			seen[k] = true
		}
		if page > 0 && !wallettest.Eval[bool](t, b, `document.getElementById("aside-first") !== null`) {
			t.Errorf("page %d has no link back to the newest", page+1)
		}
		if over := wallettest.Eval[int](t, b, `document.documentElement.scrollWidth - document.documentElement.clientWidth`); over > 2 {
			t.Errorf("page %d on a 400 px phone is %d px wider than the screen", page+1, over)
		}
		if !wallettest.Eval[bool](t, b, `document.getElementById("aside-older") !== null`) {
			break
		}
		wallettest.Do(t, b, chromedp.Click("#aside-older"), chromedp.WaitVisible("#aside-first"))
	}
	if len(seen) != 250 || fmt.Sprint(pages) != "[100 100 50]" {
		t.Errorf("the pages list %v held taps, %d of them distinct; want [100 100 50], 250", pages, len(seen))
	}
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/aside?kind=held&before_ns=soon"), chromedp.WaitVisible("main"))
	if msg := wallettest.Eval[string](t, b, `document.body.innerText`); !strings.Contains(msg, "Bad request") || !strings.Contains(msg, "Older link") {
		t.Errorf("a bad ?before_ns= is not a clear error:\n%s", msg)
	}
}

// TestAsidePagedPastAHugeSeq: in Chromium, a quarantined record of a
// damaged device whose sequence number is above 2^63-1 ends the first
// page; Older leads on past it to the record before. Its Older link was
// refused ("Bad request": before_seq must fit 63 bits), and no record
// older than it could be listed.
func TestAsidePagedPastAHugeSeq(t *testing.T) {
	wallettest.Chromium(t)
	f := newFixture(t)
	huge := uint64(math.MaxInt64) + 5
	// One call, one received time: bus-q's 99 records, newest first by
	// key, then its huge seq (stored as a negative number), then a-bus's.
	recs := []ledger.QuarantinedRecord{{DeviceID: "bus-q", Epoch: "e", Seq: huge, Reason: "bad_record", Record: []byte("x")},
		{DeviceID: "a-bus", Epoch: "e", Seq: 1, Reason: "bad_record", Record: []byte("x")}}
	for i := range 99 {
		recs = append(recs, ledger.QuarantinedRecord{DeviceID: "bus-q", Epoch: "e", Seq: uint64(i + 1), Reason: "bad_record", Record: []byte("x")})
	}
	if err := f.store.Quarantine(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who"),
		chromedp.Navigate(f.srv.URL+"/console/aside"), chromedp.WaitVisible("#records"))
	rows := `Array.from(document.querySelectorAll("#records tbody tr")).map(r => Array.from(r.cells).slice(1, 4).map(c => c.innerText).join("/"))`
	first := wallettest.Eval[[]string](t, b, rows)
	if len(first) != 100 || first[99] != fmt.Sprint("bus-q/e/", huge) {
		t.Fatalf("the first page lists %d records, the last %q; want 100, the last bus-q/e/%d", len(first), first[len(first)-1], huge)
	}
	wallettest.Do(t, b, chromedp.Click("#aside-older"), chromedp.WaitVisible("main"))
	text := wallettest.Eval[string](t, b, `document.body.innerText`)
	if strings.Contains(text, "Bad request") {
		t.Fatalf("the Older link after a record of seq %d is refused:\n%.400s", huge, text)
	}
	if older := wallettest.Eval[[]string](t, b, rows); fmt.Sprint(older) != "[a-bus/e/1]" {
		t.Errorf("the older page lists %v, want [a-bus/e/1]", older)
	}
}
