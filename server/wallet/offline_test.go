package wallet_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// walletCodeText is the text of the code on the wallet's screen ("" for none).
const walletCodeText = `(async () => (await import("./app.js")).debugState().code?.text ?? "")()`

// passState is the wallet's sentence about the pass on the phone.
const passState = `document.getElementById("pass-state").textContent`

// passShown makes a rider whose payment provider topped up balance, signs
// them in in a new browser and waits for pass 1 and its code.
func passShown(t *testing.T, url string, g *gate, balance int64) (context.Context, account) {
	t.Helper()
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, balance, "psp-first"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "pass 1 and its code", passState+`.startsWith("Pass 1 ") && !document.getElementById("code-view").hidden`)
	return b, acct
}

// offline switches the tab's network off or on (DevTools), as the rig's
// wallet tests do: every request fails and navigator.onLine says so.
func offline(t *testing.T, b context.Context, off bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b, time.Minute)
	defer cancel()
	yes := true
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		EmulateOfflineServiceWorker: &yes,
		MatchedNetworkConditions:    []*network.Conditions{{Offline: off, DownloadThroughput: -1, UploadThroughput: -1}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.OverrideNetworkState, network.OverrideNetworkStateParams{
		Offline: off, DownloadThroughput: -1, UploadThroughput: -1,
	}); err != nil {
		t.Fatal(err)
	}
}

// TestWalletToppedUpWhileOffline: the rider's account went below zero (a
// ride settled for more than the balance): the ledger deny-lists it
// (negative_balance) and the wallet, online, shows the account blocked,
// with no code. The rider tops up (through the payment provider: the
// wallet has no top-up of its own), which lifts the block at once, and
// boards with no network. The pass on the phone is valid and no longer
// denied: a validator takes its codes. The wallet, which can learn of the
// top-up only online, kept the stale "blocked" it last saw and showed no
// code: the rider stood at the door with money on the account and a
// working pass, and nothing to show.
func TestWalletToppedUpWhileOffline(t *testing.T) {
	url, g := serveWallet(t)
	b, acct := passShown(t, url, g, 300)
	ctx := context.Background()
	wallettest.WaitFor(t, b, 30*time.Second, "the service worker to control the page", `navigator.serviceWorker.controller !== null`)

	// Two rides of 2.50 on a balance of 3.00, settled from a bus's records
	// made of the wallet's own codes.
	seed := sha256.Sum256([]byte("bus-neg"))
	if err := g.store.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "bus-neg", PublicKey: ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey), MQTTHash: "h"}); err != nil {
		t.Fatal(err)
	}
	var taps []ledger.Tap
	for i := range 2 {
		text := wallettest.Eval[string](t, b, `(async () => (await (await import("./app.js")).newCodeNow()).text)()`)
		c, err := paycode.ParseText(text)
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(i + 1)
		taps = append(taps, ledger.Tap{ID: ledger.TapID("bus-neg", "e1", seq), DeviceID: "bus-neg", Seq: seq, Epoch: "e1",
			Time: time.Now().Add(time.Duration(i-60) * time.Minute), Account: acct.ID, Serial: c.Serial, RiderKey: c.RiderKey[:],
			CodeKey: c.ID().Key(), CodeHash: paycode.ShortHash(text), Profile: c.Profile, ClaimedProfile: c.Profile,
			BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Vehicle: "bus-neg", Record: []byte(text)})
	}
	if _, err := g.store.CommitTaps(ctx, taps); err != nil {
		t.Fatal(err)
	}
	a, err := g.store.Account(ctx, acct.ID)
	if err != nil || a.Balance >= 0 {
		t.Fatalf("after two rides the account is %+v (%v), want below zero", a, err)
	}
	// Online, the wallet sees the block: no code (the validators refuse it now).
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the account blocked, no code",
		passState+`.includes("account is blocked") && document.getElementById("code-view").hidden`)

	// Offline; meanwhile the rider tops up, and the ledger lifts the block.
	offline(t, b, true)
	wallettest.WaitFor(t, b, 10*time.Second, "the offline indicator", `document.getElementById("net").dataset.state === "offline"`)
	if _, err := g.store.TopUp(ctx, acct.ID, 2000, "psp-topup-offline"); err != nil {
		t.Fatal(err)
	}
	if d, err := g.store.DenyList(ctx); err != nil {
		t.Fatal(err)
	} else {
		for _, e := range d.Entries {
			if e.Account == acct.ID {
				t.Fatalf("after the top-up the deny list still holds %+v", e)
			}
		}
	}
	// The wallet is opened again on the bus, with no network.
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 30*time.Second, "the wallet to start offline", `document.body && document.body.dataset.ready === "true"`)
	text := wallettest.Eval[string](t, b, walletCodeText)
	if text == "" {
		t.Fatalf("offline after a top-up, the wallet shows no code: %q", wallettest.Eval[string](t, b, passState))
	}
	// The code it shows is one a validator takes: the pass is valid and
	// not denied.
	if c, err := paycode.ParseText(text); err != nil || c.Account != acct.ID {
		t.Fatalf("the code shown offline: %+v, %v", c, err)
	}
	if d := paycode.Verify(text, time.Now(), keyring(t, url), paycode.Policy{}); !d.Accepted {
		t.Errorf("the code shown offline does not verify: %s", d.Reason)
	}
	// And it says the block it last saw may be out of date.
	if s := wallettest.Eval[string](t, b, passState); !strings.Contains(s, "If you have topped up since") {
		t.Errorf("the pass offline says %q, want that the block it last saw may be lifted", s)
	}
}

// keyring is the server's issuer keyring, as validators hold it.
func keyring(t *testing.T, url string) *paycode.Keyring {
	t.Helper()
	resp, err := http.Get(url + "/v1/keyring")
	if err != nil {
		t.Fatal(err)
	}
	var raw json.RawMessage
	err = json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := paycode.ParseKeyring(raw)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// TestWalletKeySwappedInStorage: the private key kept with the pass in the
// phone's storage is replaced (edited, or restored from another copy of
// the storage) by one that is not the pass's rider key. Every validator
// refuses the codes it signs (bad_code_signature); the wallet showed them
// as good codes of a valid pass, and offline the rider found out only at
// the door. It checks each code it signs against the pass's rider key:
// such a pass shows no code and says it is damaged, and online is
// replaced at once (as a pass whose bytes were damaged,
// TestWalletCodes in the rig).
func TestWalletKeySwappedInStorage(t *testing.T) {
	url, g := serveWallet(t)
	b, _ := passShown(t, url, g, 10_000)
	kr := keyring(t, url)
	if d := paycode.Verify(wallettest.Eval[string](t, b, walletCodeText), time.Now(), kr, paycode.Policy{}); !d.Accepted {
		t.Fatalf("the set-up: pass 1's code is refused: %s", d.Reason)
	}

	offline(t, b, true)
	wallettest.Eval[bool](t, b, `(async () => {
		const other = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
		const db = await new Promise((ok, fail) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
		return await new Promise((ok, fail) => {
			const tx = db.transaction("credentials", "readwrite"), st = tx.objectStore("credentials");
			st.openCursor(null, "prev").onsuccess = (e) => { const c = e.target.result; c.value.privateKey = other.privateKey; c.update(c.value); };
			tx.oncomplete = () => { db.close(); ok(true); }; tx.onerror = () => fail(tx.error);
		});
	})()`)
	text := wallettest.Eval[string](t, b, `(async () => (await (await import("./app.js")).newCodeNow())?.text ?? "")()`)
	if text != "" {
		d := paycode.Verify(text, time.Now(), kr, paycode.Policy{})
		t.Errorf("with the pass's key swapped, the wallet shows a code (a validator says accepted=%v %s), pass %q", d.Accepted, d.Reason,
			wallettest.Eval[string](t, b, passState))
	} else if s := wallettest.Eval[string](t, b, passState); !strings.Contains(s, "damaged") {
		t.Errorf("the pass with its key swapped says %q", s)
	}

	// Online again: a new pass, whose codes a validator takes.
	offline(t, b, false)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "pass 2 and its code", passState+`.startsWith("Pass 2 ") && !document.getElementById("code-view").hidden`)
	if d := paycode.Verify(wallettest.Eval[string](t, b, walletCodeText), time.Now(), kr, paycode.Policy{}); !d.Accepted {
		t.Errorf("pass 2's code is refused: %s", d.Reason)
	}
}

// TestWalletClockWarningKeptOffline: a wrong phone clock found online is
// said again when the wallet is opened offline (at the bus door, where
// its codes are refused), with when it was found, until the server
// answers again; a right clock found online leaves nothing to say.
func TestWalletClockWarningKeptOffline(t *testing.T) {
	url, _ := serveWallet(t)
	acct := newAccount(t, url)
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "the service worker to control the page", `navigator.serviceWorker.controller !== null`)
	warning := `document.getElementById("clock-warning")`
	wallettest.Eval[bool](t, b, `(async () => { (await import("./clock.js")).setOffset(300000); return true; })()`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the clock warning", "!"+warning+".hidden && "+warning+`.textContent.includes("5 min ahead")`)

	reopen := func(what string) {
		t.Helper()
		offline(t, b, true)
		wallettest.Do(t, b, chromedp.Reload())
		wallettest.WaitFor(t, b, 30*time.Second, "the wallet to start offline "+what, `document.body && document.body.dataset.ready === "true" && !document.getElementById("main").hidden`)
	}
	reopen("after a wrong clock was found")
	if txt := wallettest.Eval[string](t, b, warning+".hidden ? '' : "+warning+".textContent"); !strings.HasPrefix(txt, "At ") ||
		!strings.Contains(txt, "was 5 min ahead") {
		t.Errorf("offline after a wrong clock was found, the warning is %q; want what was found, and when", txt)
	}

	// Online again: the server's clock is read, the clock is right (the
	// page's offset went with the reload), the warning goes, and is not
	// shown again offline.
	offline(t, b, false)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the warning to go once the server answered", warning+".hidden")
	reopen("after a right clock was found")
	if txt := wallettest.Eval[string](t, b, warning+".hidden ? '' : "+warning+".textContent"); txt != "" {
		t.Errorf("offline after a right clock was found, the warning says %q", txt)
	}
}

// TestWalletDamagedNotesStillShowCodes: what the wallet keeps beside the
// pass only to show it is damaged in the phone's storage: the note of a
// wrong clock (localStorage) names a time no date can show (1e20 ms), or
// the account record's name is no text. Showing either threw before the
// wallet showed its code, fetched the account or set its timers, at every
// start, online as well as offline: a blank pass, no balance, and nothing
// that would ever write them again. The code and the account show.
func TestWalletDamagedNotesStillShowCodes(t *testing.T) {
	for _, tc := range []struct{ name, damage string }{
		{"clock note", `(localStorage.setItem("farego-wallet-clock", '{"skew":600000,"at":1e20}'), true)`},
		{"account name", `new Promise((ok, fail) => {
			const r = indexedDB.open("farego-wallet");
			r.onerror = () => fail(r.error);
			r.onsuccess = () => {
				const tx = r.result.transaction("kv", "readwrite"), st = tx.objectStore("kv");
				st.get("account").onsuccess = (e) => st.put({ ...e.target.result, name: 42 }, "account");
				tx.oncomplete = () => { r.result.close(); ok(true); };
				tx.onerror = () => fail(tx.error);
			};
		})`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, g := serveWallet(t)
			b, _ := passShown(t, url, g, 10_000)
			kr := keyring(t, url)
			wallettest.WaitFor(t, b, 30*time.Second, "the service worker to control the page", `navigator.serviceWorker.controller !== null`)
			for _, off := range []bool{true, false} {
				wallettest.Eval[bool](t, b, tc.damage)
				offline(t, b, off)
				wallettest.Do(t, b, chromedp.Reload())
				wallettest.WaitFor(t, b, 30*time.Second, "the wallet to start", `document.body && document.body.dataset.ready === "true"`)
				text := wallettest.Eval[string](t, b, walletCodeText)
				if text == "" {
					t.Fatalf("offline=%v: with its %s damaged, the wallet shows no code; pass %q", off, tc.name, wallettest.Eval[string](t, b, passState))
				}
				if d := paycode.Verify(text, time.Now(), kr, paycode.Policy{}); !d.Accepted {
					t.Errorf("offline=%v: the code shown is refused: %s", off, d.Reason)
				}
			}
			wallettest.WaitFor(t, b, 30*time.Second, "the balance", `document.getElementById("balance").textContent === "€100.00"`)
		})
	}
}

// TestWalletPassAfterTopUp: a new rider signs in before the account holds
// enough for a pass; the wallet says to top up first. The payment provider
// tops the account up and the rider presses Refresh: the wallet showed the
// new balance (€100.00, "good standing") under the same "Top up your
// account first" and no code, and fetched no pass for up to a minute
// (its retry wait after the refusal), though the balance now covered it.
// Seen by a rider's walk-through at a phone's size.
func TestWalletPassAfterTopUp(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	warning := `document.getElementById("pass-warning")`
	if s := wallettest.Eval[string](t, b, warning+`.textContent`); !strings.Contains(s, "Top up") {
		t.Fatalf("an empty account's pass says %q, want to top up first", s)
	}
	if _, err := g.store.TopUp(context.Background(), acct.ID, 10_000, "psp-after-signin"); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the new balance", `document.getElementById("balance").textContent === "€100.00"`)
	if s := wallettest.Eval[string](t, b, `(`+warning+`.hidden ? "" : `+warning+`.textContent) + `+
		`(document.getElementById("code-view").hidden ? " | no code" : "")`); strings.Contains(s, "Top up") {
		t.Errorf("with €100.00 shown, the pass says %q", s)
	}
	wallettest.WaitFor(t, b, 30*time.Second, "pass 1 and its code", passState+`.startsWith("Pass 1 ") && !document.getElementById("code-view").hidden`)
}

// TestWalletGetPassOffline: a rider with no pass on the phone (new here,
// or the pass ran out on the way) opens the wallet with no network and
// presses "Get a pass": nothing happened at all, no word, as if the
// button were broken. It says the server cannot be reached.
func TestWalletGetPassOffline(t *testing.T) {
	url, _ := serveWallet(t)
	acct := newAccount(t, url)
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct) // no balance: no pass
	wallettest.WaitFor(t, b, 30*time.Second, "the service worker to control the page", `navigator.serviceWorker.controller !== null`)
	offline(t, b, true)
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 30*time.Second, "the wallet to start offline", `document.body && document.body.dataset.ready === "true"`)
	wallettest.WaitFor(t, b, 30*time.Second, "the Get a pass button", `!document.getElementById("get-pass").hidden && document.getElementById("pass-warning").hidden`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("get-pass"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "a word on why there is no pass",
		`!document.getElementById("pass-warning").hidden && document.getElementById("pass-warning").textContent.includes("cannot be reached")`)
}
