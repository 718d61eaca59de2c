package wallet_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/wallet/wallettest"
)

// storedAccount is the account the wallet keeps in the browser's storage
// (IndexedDB "kv"/"account"), as {id, secret}, or null.
const storedAccount = `new Promise((ok, fail) => {
	const r = indexedDB.open("farego-wallet");
	r.onerror = () => fail(r.error);
	r.onsuccess = () => {
		const g = r.result.transaction("kv").objectStore("kv").get("account");
		g.onsuccess = () => { r.result.close(); ok(g.result ? {id: g.result.id, secret: g.result.secret} : null); };
		g.onerror = () => fail(g.error);
	};
})`

// TestWalletSecretChangedInAnotherTab: the rider has the wallet open in two
// tabs of one browser (one profile, one storage) and changes the account
// secret in the first. The second tab still holds the old secret: at its
// next refresh the server refuses it. That is not the secret changed
// elsewhere (TestWalletSecretChangedElsewhere): the new one is in this
// browser's storage. The second tab signed the whole browser out (it
// cleared the storage shared with the first: the account with its new
// secret, the new pass and its key), so the wallet reopened later, on the
// bus with no network, was on the sign-in screen with no code, and a
// rider who had not yet written the new secret down lost the account.
func TestWalletSecretChangedInAnotherTab(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 10_000, "psp-two-tabs"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "pass 1", passState+`.startsWith("Pass 1 ")`)

	// The second tab opens signed in, from the storage.
	b2, cancel2 := chromedp.NewContext(b)
	defer cancel2()
	wallettest.Open(t, b2, url+"/wallet/")
	wallettest.WaitFor(t, b2, 30*time.Second, "the second tab's code", `!document.getElementById("main").hidden && !document.getElementById("code-view").hidden`)

	// The first tab changes the secret.
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("change-secret"), chromedp.NodeVisible))
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("change-secret-yes"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the new secret", `!document.getElementById("secret").hidden`)
	fresh := wallettest.Eval[string](t, b, `document.getElementById("secret-value").textContent`)
	if len(fresh) != 64 || fresh == acct.Secret {
		t.Fatalf("shown secret %q", fresh)
	}

	// The second tab refreshes (as its poll does every 10 s) with the old
	// secret, which the server refuses.
	wallettest.Do(t, b2, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	// It goes on with the new secret: signed in, with a code of the new pass.
	wallettest.WaitFor(t, b2, 30*time.Second, "the second tab on the new secret, or signed out",
		`!document.getElementById("welcome").hidden || `+passState+`.startsWith("Pass 2 ")`)
	if !wallettest.Eval[bool](t, b2, `document.getElementById("welcome").hidden`) {
		t.Errorf("the second tab signed out after a secret change in the first: %q",
			wallettest.Eval[string](t, b2, `document.getElementById("error").textContent`))
	}
	type stored struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if s := wallettest.Eval[*stored](t, b, `(async () => await `+storedAccount+`)()`); s == nil || s.Secret != fresh {
		t.Errorf("after the second tab's refresh, the browser's storage holds the account %+v, want it with the new secret", s)
	}

	// The rider writes the new secret down, and later opens the wallet
	// again on the bus, with no network: it opens on the account, with a
	// code of the new pass.
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("secret-done"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "pass 2 in the first tab", passState+`.startsWith("Pass 2 ") && !document.getElementById("code-view").hidden`)
	cancel2()
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 30*time.Second, "the wallet after a reload", `document.body && document.body.dataset.ready === "true"`)
	if !wallettest.Eval[bool](t, b, `!document.getElementById("main").hidden && !document.getElementById("code-view").hidden`) {
		t.Errorf("reopened, the wallet shows no code: welcome screen %v, pass %q", wallettest.Eval[bool](t, b, `!document.getElementById("welcome").hidden`),
			wallettest.Eval[string](t, b, passState))
	}
}

// storedCount is how many records the wallet's storage holds in a store
// of its IndexedDB ("credentials", or "kv").
func storedCount(t *testing.T, b context.Context, name string) int {
	t.Helper()
	return wallettest.Eval[int](t, b, `new Promise((ok, fail) => {
		const r = indexedDB.open("farego-wallet");
		r.onerror = () => fail(r.error);
		r.onsuccess = () => {
			const c = r.result.transaction("`+name+`").objectStore("`+name+`").count();
			c.onsuccess = () => { r.result.close(); ok(c.result); };
			c.onerror = () => fail(c.error);
		};
	})`)
}

// TestWalletSignOutInAnotherTab: the rider signs out in one tab ("removes
// keys and pass from the browser") while a second tab of the wallet is
// open. At its next refresh the second tab, still signed in in memory,
// asked for a new pass and wrote it, with a new private key that signs
// codes, and the account's balance, rides and activity, back into the
// storage the sign-out had just emptied: the browser kept a working pass
// of an account signed out of it (codes from it are charged to the
// account for a day), and the second tab went on showing codes.
func TestWalletSignOutInAnotherTab(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 10_000, "psp-sign-out"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "pass 1", `document.getElementById("pass-state").textContent.startsWith("Pass 1 ")`)
	b2, cancel2 := chromedp.NewContext(b)
	defer cancel2()
	wallettest.Open(t, b2, url+"/wallet/")
	wallettest.WaitFor(t, b2, 30*time.Second, "the second tab's code", `!document.getElementById("main").hidden && !document.getElementById("code-view").hidden`)

	wallettest.Eval[bool](t, b, `(document.getElementById("sign-out").click(), document.getElementById("sign-out-yes").click(), true)`)
	wallettest.WaitFor(t, b, 30*time.Second, "the welcome screen", `!document.getElementById("welcome").hidden`)
	if n := storedCount(t, b, "credentials"); n != 0 {
		t.Fatalf("%d credentials stored right after signing out", n)
	}

	// The second tab's refresh, as its poll does every 10 s: it either
	// follows the sign-out, or asks for a pass.
	// (By the element: the tab may have followed the sign-out already.)
	wallettest.Eval[bool](t, b2, `(document.getElementById("refresh").click(), true)`)
	wallettest.WaitFor(t, b2, 30*time.Second, "the second tab signed out, or a pass stored",
		`(async () => (document.body.dataset.ready === "true" && !document.getElementById("welcome").hidden) ||
			(await new Promise((ok) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => {
				const c = r.result.transaction("credentials").objectStore("credentials").count();
				c.onsuccess = () => { r.result.close(); ok(c.result > 0); }; }; })))()`)
	if n := storedCount(t, b, "credentials"); n != 0 {
		t.Errorf("after signing out in one tab, the other stored %d pass(es) and key(s) of the account again", n)
	}
	if n := storedCount(t, b, "kv"); n != 0 {
		t.Errorf("after signing out in one tab, the other stored %d account record(s) (balance, rides) again", n)
	}
	if !wallettest.Eval[bool](t, b2, `!document.getElementById("welcome").hidden && document.getElementById("main").hidden`) {
		t.Errorf("the other tab still shows the account (and its code) after signing out: pass %q",
			wallettest.Eval[string](t, b2, `document.getElementById("pass-state").textContent`))
	}
}

// TestWalletSecretChangeNotUndoneByFollowing: the tab that changes the
// secret sets it in memory when the server answers, then writes it to the
// storage. A followStorage of the same tab (its poll, a return to the
// tab: visibilitychange) that read the storage just before that write
// took the old secret it read for one written by another tab, and put it
// back in memory: the screen "write your new secret down" showed the old,
// dead secret, while the storage held the new one. A rider who wrote it
// down had a secret that signs in nowhere. The storage read is held
// (another connection's transaction on "kv") from the server's answer
// until the tab writes the new secret, so the read is the one just
// before the write, every run.
func TestWalletSecretChangeNotUndoneByFollowing(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 10_000, "psp-follow-own"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "pass 1", `document.getElementById("pass-state").textContent.startsWith("Pass 1 ")`)
	wallettest.Eval[bool](t, b, `(() => {
		let release = null;
		const hold = () => new Promise((ok) => {
			const r = indexedDB.open("farego-wallet");
			r.onsuccess = () => {
				const db = r.result;
				const tx = db.transaction("kv", "readwrite");
				const st = tx.objectStore("kv");
				let held = true;
				release = () => { held = false; };
				const spin = () => { st.get("secretKept").onsuccess = () => { if (held) spin(); }; };
				spin();
				tx.oncomplete = () => db.close();
				ok();
			};
		});
		const put = IDBObjectStore.prototype.put;
		IDBObjectStore.prototype.put = function (v, k) {
			if (release && this.name === "kv" && k === "account") { const f = release; release = null; f(); }
			return put.apply(this, arguments);
		};
		const realFetch = window.fetch;
		window.fetch = async function (input, init) {
			const resp = await realFetch.apply(this, arguments);
			if (init && init.method === "POST" && String(input).endsWith("/secret")) {
				await hold();
				document.dispatchEvent(new Event("visibilitychange")); // the tab followStorage()s
			}
			return resp;
		};
		return true;
	})()`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("change-secret"), chromedp.NodeVisible))
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("change-secret-yes"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the new secret", `!document.getElementById("secret").hidden`)
	shown := wallettest.Eval[string](t, b, `document.getElementById("secret-value").textContent`)
	type stored struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	s := wallettest.Eval[*stored](t, b, `(async () => await `+storedAccount+`)()`)
	if s == nil || s.Secret == acct.Secret {
		t.Fatalf("the storage holds %+v after the change, want the new secret", s)
	}
	if shown != s.Secret {
		t.Errorf("the wallet asks the rider to write down %q (the old secret: %v), the account's new secret is %q", shown, shown == acct.Secret, s.Secret)
	}
}
