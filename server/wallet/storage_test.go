package wallet_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/wallet/wallettest"
)

// TestWalletRegisterLeavesNoOtherPass: two tabs of the wallet are open
// on the welcome screen; in the first the rider signs in to account X
// (a rider of long standing: its pass has serial 6), in the second
// someone registers account Y. Signing in empties the storage of the
// passes before it; registering did not: X's pass stayed, with a higher
// serial than any Y had. Y's wallet took it for its current pass, said
// it was damaged, fetched a pass for Y, and kept X's (a new pass
// dropped only those of lower serials): a new pass every poll, until
// Y's serial passed X's or the server refused a 17th (a day without a
// code).
func TestWalletRegisterLeavesNoOtherPass(t *testing.T) {
	url, g := serveWallet(t)
	ctx := context.Background()
	x := newAccount(t, url)
	if _, err := g.store.TopUp(ctx, x.ID, 10_000, "psp-x"); err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 { // passes X fetched before, on this or another phone
		if _, err := g.store.IssueCredentialSerial(ctx, x.ID, time.Now().Add(time.Hour), pub); err != nil {
			t.Fatal(err)
		}
	}
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Open(t, b, url+"/wallet/")
	b2, cancel2 := chromedp.NewContext(b)
	defer cancel2()
	wallettest.Open(t, b2, url+"/wallet/")
	wallettest.WaitFor(t, b2, 30*time.Second, "the second tab's welcome screen", `!document.getElementById("welcome").hidden`)

	signIn(t, b, url, x)
	wallettest.WaitFor(t, b, 30*time.Second, "X's pass 6", passState+`.startsWith("Pass 6 ")`)

	wallettest.Do(t, b2, chromedp.Click(chromedp.ID("register"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b2, 30*time.Second, "Y's secret", `!document.getElementById("secret").hidden`)
	y, err := strconv.ParseUint(wallettest.Eval[string](t, b2, `document.getElementById("secret-account").textContent`), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.store.TopUp(ctx, y, 10_000, "psp-y"); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b2, chromedp.Click(chromedp.ID("secret-done"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b2, 30*time.Second, "Y's pass and its code", passState+`.startsWith("Pass ") && !document.getElementById("code-view").hidden`)
	if s := wallettest.Eval[string](t, b2, passState); s[:7] != "Pass 1 " {
		t.Errorf("Y's wallet shows %q, want its first pass", s)
	}
	creds, err := g.store.Credentials(ctx, y)
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != 1 {
		t.Errorf("the server issued Y %d passes, want 1", len(creds))
	}
}

// TestWalletDamagedViewStillShowsCodes: the account view the wallet keeps
// for offline display (balance, rides, activity) is damaged in the
// phone's storage. The wallet rendered it before it showed the code, and
// the error stopped it there: opened on the bus with no network it
// showed no code, no pass and no message, and online it never refreshed
// to replace the view (the same blank page at every reload). The view
// is only what was last seen; the pass is intact and its codes pay.
func TestWalletDamagedViewStillShowsCodes(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 10_000)
	wallettest.WaitFor(t, b, 30*time.Second, "the service worker to control the page", `navigator.serviceWorker.controller !== null`)
	damage := `new Promise((ok, fail) => {
		const r = indexedDB.open("farego-wallet");
		r.onerror = () => fail(r.error);
		r.onsuccess = () => {
			const tx = r.result.transaction("kv", "readwrite");
			tx.objectStore("kv").put({ at: Date.now() }, "view");
			tx.oncomplete = () => { r.result.close(); ok(true); };
			tx.onerror = () => fail(tx.error);
		};
	})`
	kr := keyring(t, url)
	for _, off := range []bool{true, false} {
		wallettest.Eval[bool](t, b, damage)
		offline(t, b, off)
		wallettest.Do(t, b, chromedp.Reload())
		wallettest.WaitFor(t, b, 30*time.Second, "the wallet to start", `document.body && document.body.dataset.ready === "true"`)
		text := wallettest.Eval[string](t, b, walletCodeText)
		if text == "" {
			t.Fatalf("offline=%v: with its account view damaged, the wallet shows no code; pass %q", off, wallettest.Eval[string](t, b, passState))
		}
		if d := paycode.Verify(text, time.Now(), kr, paycode.Policy{}); !d.Accepted {
			t.Errorf("offline=%v: the code shown is refused: %s", off, d.Reason)
		}
	}
	// Online, the refresh replaces the view.
	wallettest.WaitFor(t, b, 30*time.Second, "the balance", `document.getElementById("balance").textContent === "€100.00"`)
}

// TestWalletDamagedAccountRecord: the account record in the phone's
// storage is damaged (its number written as a number, not the decimal
// text the wallet compares with its passes'). Every pass then looked like
// another account's: the wallet called it damaged, and online fetched a
// new one, found it "not this account's" and dropped it ("The server
// found the request invalid"), once a minute while the page was open:
// in a quarter of an hour the account held 16 passes and the server
// refused a pass to its other phones for a day. The wallet says the
// account data was damaged and asks to sign in again.
func TestWalletDamagedAccountRecord(t *testing.T) {
	url, g := serveWallet(t)
	b, acct := passShown(t, url, g, 10_000)
	ctx := context.Background()
	wallettest.Eval[bool](t, b, `new Promise((ok, fail) => {
		const r = indexedDB.open("farego-wallet");
		r.onerror = () => fail(r.error);
		r.onsuccess = () => {
			const tx = r.result.transaction("kv", "readwrite"), st = tx.objectStore("kv");
			st.get("account").onsuccess = (e) => st.put({ ...e.target.result, id: Number(e.target.result.id) }, "account");
			tx.oncomplete = () => { r.result.close(); ok(true); };
			tx.onerror = () => fail(tx.error);
		};
	})`)
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 30*time.Second, "the wallet to start", `document.body && document.body.dataset.ready === "true"`)
	time.Sleep(2 * time.Second) // the refresh that follows a start
	if !wallettest.Eval[bool](t, b, `!document.getElementById("welcome").hidden`) {
		t.Errorf("with its account record damaged, the wallet shows pass %q, warning %q", wallettest.Eval[string](t, b, passState),
			wallettest.Eval[string](t, b, `document.getElementById("pass-warning").textContent`))
	} else if e := wallettest.Eval[string](t, b, `document.getElementById("error").textContent`); !strings.Contains(e, "damaged") {
		t.Errorf("with its account record damaged, the wallet says %q", e)
	}
	creds, err := g.store.Credentials(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != 1 {
		t.Errorf("the server issued %d passes, want 1 (the one before the damage)", len(creds))
	}
}

// TestWalletPassBytesDamaged: a byte of the stored pass that names
// nothing the wallet keeps beside it is damaged (the issuer's signature,
// the issuer key's id, the fare type). The wallet called the pass valid
// and showed its codes, offline and online, while every validator refused
// them (bad_credential_signature, unknown_issuer_key); online it did not
// replace it until the pass was past half its lifetime (half a day). The
// pass is shown damaged, with no code, and online replaced at once.
func TestWalletPassBytesDamaged(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   int // the byte flipped
	}{{"signature", 100}, {"key id", 4}, {"fare type", 25}} {
		t.Run(tc.name, func(t *testing.T) {
			url, g := serveWallet(t)
			b, _ := passShown(t, url, g, 10_000)
			kr := keyring(t, url)
			offline(t, b, true)
			wallettest.Eval[bool](t, b, fmt.Sprintf(`(async () => {
				const db = await new Promise((ok, fail) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
				return await new Promise((ok, fail) => {
					const tx = db.transaction("credentials", "readwrite"), st = tx.objectStore("credentials");
					st.openCursor(null, "prev").onsuccess = (e) => { const c = e.target.result; c.value.bytes[%d] ^= 1; c.update(c.value); };
					tx.oncomplete = () => { db.close(); ok(true); }; tx.onerror = () => fail(tx.error);
				});
			})()`, tc.at))
			text := wallettest.Eval[string](t, b, `(async () => (await (await import("./app.js")).newCodeNow())?.text ?? "")()`)
			if text != "" {
				d := paycode.Verify(text, time.Now(), kr, paycode.Policy{})
				t.Errorf("with byte %d of its pass damaged, the wallet shows a code (a validator says accepted=%v %s), pass %q", tc.at,
					d.Accepted, d.Reason, wallettest.Eval[string](t, b, passState))
			} else if s := wallettest.Eval[string](t, b, passState); !strings.Contains(s, "damaged") {
				t.Errorf("the pass with byte %d damaged says %q", tc.at, s)
			}

			// Online again: a new pass, whose codes a validator takes.
			offline(t, b, false)
			wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
			wallettest.WaitFor(t, b, 30*time.Second, "pass 2 and its code", passState+`.startsWith("Pass 2 ") && !document.getElementById("code-view").hidden`)
			if d := paycode.Verify(wallettest.Eval[string](t, b, walletCodeText), time.Now(), kr, paycode.Policy{}); !d.Accepted {
				t.Errorf("pass 2's code is refused: %s", d.Reason)
			}
		})
	}
}

// TestWalletCodeGoesAtPassEnd: offline, the pass ends within the minute
// of the code on screen. The wallet checked the pass only when it made a
// code, at each minute: it went on showing the code, as of a valid
// pass, for up to a minute past the end, while validators refuse it from
// 30 s past the end (credential_expired): the rider learnt it at the
// door. The code goes at the pass's end, and the wallet says it expired.
func TestWalletCodeGoesAtPassEnd(t *testing.T) {
	// A pass that ends 10 to 25 s past a minute (its lifetime counts
	// from its issue, a few seconds from now): the code made 3 s before
	// its end would otherwise stay 35 s or more.
	ttl := time.Hour + time.Duration(70-(time.Now().Unix()+3600)%60)*time.Second
	url, g := serveWalletWith(t, "EUR", api.Config{CredentialTTL: ttl})
	b, _ := passShown(t, url, g, 10_000)
	offline(t, b, true)
	notAfter := wallettest.Eval[int64](t, b, `(async () => (await import("./app.js")).debugState().code.notAfter)()`)
	if s := notAfter % 60; s < 10 || s > 40 {
		t.Fatalf("the set-up: the pass ends %d s past a minute", s)
	}
	wallettest.Eval[bool](t, b, fmt.Sprintf(`(async () => { (await import("./clock.js")).setOffset(%d000 - 3000 - Date.now()); return true; })()`, notAfter))
	if wallettest.Eval[string](t, b, `(async () => (await (await import("./app.js")).newCodeNow())?.text ?? "")()`) == "" {
		t.Fatalf("3 s before the pass's end, no code: %q", wallettest.Eval[string](t, b, passState))
	}
	time.Sleep(5 * time.Second)
	if text := wallettest.Eval[string](t, b, walletCodeText); text != "" {
		t.Errorf("2 s past its pass's end, the wallet still shows a code; pass %q", wallettest.Eval[string](t, b, passState))
	} else if s := wallettest.Eval[string](t, b, passState); !strings.Contains(s, "expired") {
		t.Errorf("past its end the pass says %q", s)
	}
}

// TestWalletCountdownAtPassEnd: offline, in the last seconds of a pass
// that ends before the minute does, the countdown said "New code in 45 s"
// (the next minute) and the pass "expires at 11:56 PM", while the code
// went at the pass's end a few seconds later: the rider holding the phone
// up at the door was promised a code that never came. In the pass's last
// minute the countdown says when the pass ends.
func TestWalletCountdownAtPassEnd(t *testing.T) {
	ttl := time.Hour + time.Duration(70-(time.Now().Unix()+3600)%60)*time.Second
	url, g := serveWalletWith(t, "EUR", api.Config{CredentialTTL: ttl})
	b, _ := passShown(t, url, g, 10_000)
	offline(t, b, true)
	notAfter := wallettest.Eval[int64](t, b, `(async () => (await import("./app.js")).debugState().code.notAfter)()`)
	if s := notAfter % 60; s < 10 || s > 40 {
		t.Fatalf("the set-up: the pass ends %d s past a minute", s)
	}
	wallettest.Eval[bool](t, b, fmt.Sprintf(`(async () => { (await import("./clock.js")).setOffset(%d000 - 5000 - Date.now()); return true; })()`, notAfter))
	if wallettest.Eval[string](t, b, `(async () => (await (await import("./app.js")).newCodeNow())?.text ?? "")()`) == "" {
		t.Fatalf("5 s before the pass's end, no code: %q", wallettest.Eval[string](t, b, passState))
	}
	s := wallettest.Eval[string](t, b, `document.getElementById("countdown").textContent`)
	if strings.HasPrefix(s, "New code in") || !strings.Contains(s, "ends in") {
		t.Errorf("5 s before the pass's end (the next minute %d s away), the countdown says %q", 60-(notAfter-5)%60, s)
	}
}

// TestWalletStrayPassOfHigherSerial: the phone's storage holds, besides
// the pass in use, a damaged record of a higher serial (edited, or left
// by a bug): the wallet takes the highest serial for its pass, says it is
// damaged and, online, fetches a new one; a new pass dropped only those
// of lower serials, so the stray record stayed the current one. The
// wallet showed no code, online too, and fetched a new pass at every
// refresh (each a credential of the account's, until the server refused
// more: a day without a code). The new pass takes the stray's place.
func TestWalletStrayPassOfHigherSerial(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 10_000)
	kr := keyring(t, url)
	wallettest.Eval[bool](t, b, `(async () => {
		const db = await new Promise((ok, fail) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
		return await new Promise((ok, fail) => {
			const tx = db.transaction("credentials", "readwrite"), st = tx.objectStore("credentials");
			st.openCursor(null, "prev").onsuccess = (e) => { const c = e.target.result; st.put({ ...c.value, serial: 99 }); };
			tx.oncomplete = () => { db.close(); ok(true); }; tx.onerror = () => fail(tx.error);
		});
	})()`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "a new pass's code", passState+`.startsWith("Pass 2 ") && !document.getElementById("code-view").hidden`)
	if d := paycode.Verify(wallettest.Eval[string](t, b, walletCodeText), time.Now(), kr, paycode.Policy{}); !d.Accepted {
		t.Errorf("the new pass's code is refused: %s", d.Reason)
	}
	// The stray record is gone: the storage holds the new pass alone.
	serials := wallettest.Eval[[]int](t, b, `(async () => {
		const db = await new Promise((ok, fail) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
		return await new Promise((ok, fail) => {
			const r = db.transaction("credentials").objectStore("credentials").getAllKeys();
			r.onsuccess = () => { db.close(); ok(r.result); }; r.onerror = () => fail(r.error);
		});
	})()`)
	if len(serials) != 1 || serials[0] != 2 {
		t.Errorf("the passes stored after the new one: serials %v, want [2]", serials)
	}
}

// TestWalletStrayPassesOfHigherSerial: two stray records of higher
// serials than the pass in use (TestWalletStrayPassOfHigherSerial has one):
// a new pass dropped the one it was fetched for, and the other stray
// became the current pass, damaged: another new pass was fetched for it,
// one credential of the account's bound spent per stray. The new pass
// drops them all.
func TestWalletStrayPassesOfHigherSerial(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 10_000)
	wallettest.Eval[bool](t, b, `(async () => {
		const db = await new Promise((ok, fail) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
		return await new Promise((ok, fail) => {
			const tx = db.transaction("credentials", "readwrite"), st = tx.objectStore("credentials");
			st.openCursor(null, "prev").onsuccess = (e) => { const c = e.target.result; st.put({ ...c.value, serial: 99 }); st.put({ ...c.value, serial: "98" }); };
			tx.oncomplete = () => { db.close(); ok(true); }; tx.onerror = () => fail(tx.error);
		});
	})()`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "a new pass's code", passState+`.startsWith("Pass ") && !`+passState+`.startsWith("Pass 1 ") && !document.getElementById("code-view").hidden`)
	keys := wallettest.Eval[string](t, b, `(async () => {
		const db = await new Promise((ok, fail) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
		return await new Promise((ok, fail) => {
			const r = db.transaction("credentials").objectStore("credentials").getAllKeys();
			r.onsuccess = () => { db.close(); ok(JSON.stringify(r.result)); }; r.onerror = () => fail(r.error);
		});
	})()`)
	if keys != "[2]" {
		t.Errorf("the passes stored after the new one: serials %s, want [2]", keys)
	}
}
