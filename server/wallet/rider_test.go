package wallet_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/wallet/wallettest"
)

// editPass runs fn(pass, kv) on the current pass in the phone's storage
// (fn is JavaScript: it changes the record, which is written back), as a
// rider with the browser's DevTools open would.
func editPass(t *testing.T, b context.Context, fn string) {
	t.Helper()
	wallettest.Eval[bool](t, b, `(async () => {
		const db = await new Promise((ok, fail) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
		return await new Promise((ok, fail) => {
			const tx = db.transaction(["credentials", "kv"], "readwrite"), st = tx.objectStore("credentials"), kv = tx.objectStore("kv");
			st.openCursor(null, "prev").onsuccess = (e) => { const c = e.target.result; (`+fn+`)(c.value, kv); c.update(c.value); };
			tx.oncomplete = () => { db.close(); ok(true); }; tx.onerror = () => fail(tx.error);
		});
	})()`)
}

// TestWalletPassWithNoFetchTime: the time the pass was fetched, kept
// beside it, is edited away (or damaged) in the phone's storage. The
// wallet renews a pass at half its lifetime measured from that time: with
// none, its age was NaN, never past anything, so the pass was never
// renewed; it ran out, and the wallet, online, said "connect to the
// internet to get it", with no code and no "Get a pass" button, at every
// start, for good. A pass with no fetch time is renewed.
func TestWalletPassWithNoFetchTime(t *testing.T) {
	for _, tc := range []struct{ name, value string }{{"removed", "undefined"}, {"text", `"yesterday"`}} {
		t.Run(tc.name, func(t *testing.T) {
			url, g := serveWalletWith(t, "EUR", api.Config{CredentialTTL: time.Hour})
			b, _ := passShown(t, url, g, 10_000)
			kr := keyring(t, url)
			editPass(t, b, `(p) => { p.fetchedAt = `+tc.value+`; }`)
			// 40 minutes on: past half the pass's hour, still valid.
			wallettest.Eval[bool](t, b, `(async () => { (await import("./clock.js")).setOffset(40 * 60 * 1000); return true; })()`)
			wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
			wallettest.WaitFor(t, b, 30*time.Second, "pass 2 in place of the pass with no fetch time",
				passState+`.startsWith("Pass 2 ") && (async () => (await import("./app.js")).debugState().code?.serial === 2)()`)
			if d := paycode.Verify(wallettest.Eval[string](t, b, walletCodeText), time.Now().Add(40*time.Minute), kr, paycode.Policy{}); !d.Accepted {
				t.Errorf("pass 2's code is refused: %s", d.Reason)
			}
		})
	}
}

// TestWalletAccountNumberEdited: the account number stored on the phone
// is changed to another account's (edited with the DevTools, or a record
// restored from another account's copy); the secret and the pass are the
// rider's. Offline the pass shows no code (it names another account than
// the one stored). Online the server refuses the number with the secret,
// and the wallet took that for a secret changed on another phone: it
// signed out, said so, and dropped the secret with the keys (a rider who
// had not written it down lost the account). The pass names the account
// it was issued to; the server takes the secret for it: the wallet goes
// back to it, says so, and shows its codes. Nothing reaches the other
// account.
func TestWalletAccountNumberEdited(t *testing.T) {
	url, g := serveWallet(t)
	b, acct := passShown(t, url, g, 10_000)
	kr := keyring(t, url)
	other := newAccount(t, url)
	editPass(t, b, `(p, kv) => { kv.get("account").onsuccess = (e) => kv.put({ ...e.target.result, id: "`+fmt.Sprint(other.ID)+`" }, "account"); }`)

	offline(t, b, true)
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 30*time.Second, "the wallet to start offline", `document.body && document.body.dataset.ready === "true"`)
	if text := wallettest.Eval[string](t, b, walletCodeText); text != "" {
		t.Errorf("offline, with the account number edited, the wallet shows a code (pass %q)", wallettest.Eval[string](t, b, passState))
	}

	offline(t, b, false)
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 30*time.Second, "the wallet to start online", `document.body && document.body.dataset.ready === "true"`)
	wallettest.WaitFor(t, b, 30*time.Second, "the wallet back on the rider's account, or signed out",
		`!document.getElementById("welcome").hidden || (async () => (await import("./app.js")).debugState().code?.serial === 1)()`)
	if !wallettest.Eval[bool](t, b, `document.getElementById("welcome").hidden`) {
		t.Fatalf("with the account number edited, the wallet signed out: %q", wallettest.Eval[string](t, b, `document.getElementById("error").textContent`))
	}
	if who := wallettest.Eval[string](t, b, `document.getElementById("who").textContent`); !strings.Contains(who, fmt.Sprint(acct.ID)) {
		t.Errorf("the wallet is signed in as %q, want account %d", who, acct.ID)
	}
	if e := wallettest.Eval[string](t, b, `document.getElementById("error").textContent`); !strings.Contains(e, fmt.Sprint(other.ID)) ||
		!strings.Contains(e, "went back to account "+fmt.Sprint(acct.ID)) {
		t.Errorf("the wallet says %q", e)
	}
	if d := paycode.Verify(wallettest.Eval[string](t, b, walletCodeText), time.Now(), kr, paycode.Policy{}); !d.Accepted || d.Code == nil || d.Code.Account != acct.ID {
		t.Errorf("the code shown: accepted=%v %s", d.Accepted, d.Reason)
	}
	if id := wallettest.Eval[string](t, b, `(async () => (await (await import("./store.js")).get("account")).id)()`); id != fmt.Sprint(acct.ID) {
		t.Errorf("the account stored is %s, want %d", id, acct.ID)
	}
	ctx := context.Background()
	for _, a := range []uint64{acct.ID, other.ID} {
		creds, err := g.store.Credentials(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[uint64]int{acct.ID: 1, other.ID: 0}[a]; len(creds) != want {
			t.Errorf("account %d holds %d passes, want %d", a, len(creds), want)
		}
	}
}

// TestWalletAccountNumberEditedTwoTabs: the account number is edited as in
// TestWalletAccountNumberEdited, with the wallet open in two tabs. Both are
// refused and both set the number right; the second's check with the
// server is answered after the first has written the account back. The
// second found the storage no longer what it had read, took that for a
// failure, and signed out: it cleared the storage the tabs share, the
// first tab's account and secret with it (a rider who had not written the
// secret down lost the account). It takes up what the first tab wrote.
func TestWalletAccountNumberEditedTwoTabs(t *testing.T) {
	url, g := serveWallet(t)
	b, acct := passShown(t, url, g, 10_000)
	other := newAccount(t, url)
	b2, cancel2 := chromedp.NewContext(b)
	defer cancel2()
	wallettest.Open(t, b2, url+"/wallet/")
	wallettest.WaitFor(t, b2, 30*time.Second, "the second tab's code", `!document.getElementById("main").hidden && !document.getElementById("code-view").hidden`)
	editPass(t, b, `(p, kv) => { kv.get("account").onsuccess = (e) => kv.put({ ...e.target.result, id: "`+fmt.Sprint(other.ID)+`" }, "account"); }`)

	// The first check of the account the pass names (the second tab's)
	// is answered when the test says.
	held, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	before := func(r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == fmt.Sprintf("/v1/accounts/%d", acct.ID) && first.CompareAndSwap(false, true) {
			close(held)
			<-release
		}
	}
	g.before.Store(&before)
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	wallettest.Do(t, b2, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the second tab never checked the account its pass names")
	}
	// The first tab sets the number right meanwhile.
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 30*time.Second, "the first tab back on the rider's account, or signed out",
		`!document.getElementById("welcome").hidden || document.getElementById("who").textContent.includes("`+fmt.Sprint(acct.ID)+`")`)
	type stored struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if s := wallettest.Eval[*stored](t, b, `(async () => await `+storedAccount+`)()`); s == nil || s.ID != fmt.Sprint(acct.ID) {
		t.Fatalf("the first tab did not set the number right: %+v", s)
	}
	released = true
	close(release)
	wallettest.WaitFor(t, b2, 30*time.Second, "the second tab on the rider's account, or signed out",
		`!document.getElementById("welcome").hidden || document.getElementById("who").textContent.includes("`+fmt.Sprint(acct.ID)+`")`)
	if !wallettest.Eval[bool](t, b2, `document.getElementById("welcome").hidden`) {
		t.Errorf("the second tab signed out: %q", wallettest.Eval[string](t, b2, `document.getElementById("error").textContent`))
	}
	if s := wallettest.Eval[*stored](t, b, `(async () => await `+storedAccount+`)()`); s == nil || s.ID != fmt.Sprint(acct.ID) || s.Secret != acct.Secret {
		t.Errorf("the browser's storage holds the account %+v, want account %d with its secret", s, acct.ID)
	}
}
