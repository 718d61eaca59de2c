package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/wallet/wallettest"
)

// The rider's wallet, end to end, in a real headless Chromium against the
// real server and validator processes. The browser reaches the server's
// HTTP API and the wallet at http://127.0.0.1:PORT/wallet/ (a secure
// context, so WebCrypto and service workers work).

// walletCode is what the page's debugState says of the code on screen.
type walletCode struct {
	Text    string `json:"text"`
	Time    uint32 `json:"time"`
	Counter uint16 `json:"counter"`
	Serial  uint32 `json:"serial"`
	Modules int    `json:"modules"`
}

type walletState struct {
	Screen          string      `json:"screen"`
	Account         string      `json:"account"`
	Code            *walletCode `json:"code"`
	Online          bool        `json:"online"`
	ServerReachable bool        `json:"serverReachable"`
}

const appModule = `(await import("./app.js"))`

// storeModule is the wallet's storage (IndexedDB), as appModule.
const storeModule = `(await import("./store.js"))`

func state(t *testing.T, b context.Context) walletState {
	t.Helper()
	return wallettest.Eval[walletState](t, b, `(async () => `+appModule+`.debugState())()`)
}

// newCode presses "New code" and returns the new code once it is drawn.
func newCode(t *testing.T, b context.Context) walletCode {
	t.Helper()
	return newCodeFrom(t, b, 0)
}

// newCodeFrom is newCode for a code made at notBefore (unix seconds) or
// later: the wallet may still be drawing a code of its own (the pass's
// first, the account view's) made before the test moved the page's
// clock, and taken for the clicked one it failed the test under load.
func newCodeFrom(t *testing.T, b context.Context, notBefore uint32) walletCode {
	t.Helper()
	before := state(t, b).Code
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("new-code"), chromedp.NodeVisible))
	var c walletCode
	wallettest.WaitFor(t, b, 30*time.Second, "a new code", `(async () => { const c = `+appModule+`.debugState().code;
		return c !== null && c.counter !== `+fmt.Sprint(counterOf(before))+` && c.time >= `+fmt.Sprint(notBefore)+`; })()`)
	if c = *state(t, b).Code; c.Modules != 57 {
		t.Fatalf("the QR has %d modules, want 57 (version 10, alphanumeric mode)", c.Modules)
	}
	return c
}

func counterOf(c *walletCode) int {
	if c == nil {
		return -1
	}
	return int(c.Counter)
}

// registerInWallet creates an account through the page, tops it up with the
// operator token while the secret is on screen (before the wallet asks for
// a credential: the server may issue one only to an account whose balance
// covers a minimum, such as a day's cap) and waits for the first code.
func registerInWallet(t *testing.T, ctx, b context.Context, r *Rig, art string, topUp int64) (uint64, string) {
	t.Helper()
	wallettest.Open(t, b, "http://"+r.HTTP+"/wallet/")
	wallettest.Do(t, b,
		chromedp.WaitVisible(chromedp.ID("register-form")),
		chromedp.SetValue(chromedp.ID("profile"), "adult"),
		chromedp.SendKeys(chromedp.ID("name"), "Wen"+kb.Enter), // the keyboard submits the form
		chromedp.WaitVisible(chromedp.ID("secret-value")),
	)
	idText := wallettest.Eval[string](t, b, `document.getElementById("secret-account").textContent`)
	secret := wallettest.Eval[string](t, b, `document.getElementById("secret-value").textContent`)
	var id uint64
	if _, err := fmt.Sscan(idText, &id); err != nil || len(secret) != 64 {
		t.Fatalf("the secret screen shows account %q and a %d-character secret", idText, len(secret))
	}
	if art != "" {
		wallettest.Screenshot(t, b, art, "1-secret", "")
	}
	if topUp > 0 {
		if err := r.API(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/topups", id), map[string]any{"amount": topUp, "reference": fmt.Sprintf("wallet-%d", id)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("secret-done")))
	wallettest.WaitFor(t, b, 30*time.Second, "the first code", `(async () => `+appModule+`.debugState().code !== null)()`)
	return id, secret
}

// setOffline switches the tab's network off or on through the DevTools
// protocol: every request fails, and navigator.onLine says so.
func setOffline(t *testing.T, b context.Context, off bool) {
	t.Helper()
	b, cancel := context.WithTimeout(b, time.Minute)
	defer cancel()
	if _, err := chromedp.Call(b, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	yes := true
	if _, err := chromedp.Call(b, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		EmulateOfflineServiceWorker: &yes,
		MatchedNetworkConditions:    []*network.Conditions{{Offline: off, DownloadThroughput: -1, UploadThroughput: -1}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(b, network.OverrideNetworkState, network.OverrideNetworkStateParams{
		Offline: off, DownloadThroughput: -1, UploadThroughput: -1,
	}); err != nil {
		t.Fatal(err)
	}
}

func netState(t *testing.T, b context.Context) string {
	t.Helper()
	return wallettest.Eval[string](t, b, `document.getElementById("net").dataset.state || ""`)
}

// scanScreenshot takes a screenshot of the QR on screen, decodes it with
// zbarimg and checks it is the code the page made. The page draws a new
// code at each minute's start: when that happens between newCode and the
// screenshot (CI saw it at 22:48:59.9), the page's code has moved on, and
// the screenshot is checked against the code the page shows now (a newer
// counter, the same pass); a screenshot that is neither fails.
func scanScreenshot(t *testing.T, b context.Context, art, name string, want walletCode) string {
	t.Helper()
	var text string
	for attempt := 0; ; attempt++ {
		text = wallettest.DecodeQR(t, wallettest.Screenshot(t, b, art, name, "#qr"))
		if text == want.Text {
			break
		}
		now := state(t, b).Code
		if attempt < 2 && now != nil && now.Text != want.Text && now.Serial == want.Serial && now.Counter > want.Counter {
			t.Logf("the page drew a new code (counter %d to %d) as the screenshot was taken; again", want.Counter, now.Counter)
			want = *now
			continue
		}
		t.Fatalf("zbarimg read %q from the screenshot, want the page's code", text)
	}
	c, err := paycode.ParseText(text)
	if err != nil {
		t.Fatalf("the decoded code does not parse: %v", err)
	}
	if c.Time != want.Time || c.Counter != want.Counter || c.Serial != want.Serial {
		t.Fatalf("decoded code (time %d, counter %d, serial %d), page says %+v", c.Time, c.Counter, c.Serial, want)
	}
	return text
}

// walletRig starts a server, a validator (no passback: the tests tap one
// rider several times) and a browser; it skips without chromium or zbarimg.
func walletRig(t *testing.T, device string) (*Rig, context.Context, *Device, context.Context, string) {
	t.Helper()
	wallettest.Chromium(t)
	wallettest.ZBar(t)
	art := wallettest.ArtifactDir(t)
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, device, "passback_window", `"-1s"`)
	return r, ctx, d, wallettest.Browser(t, wallettest.Config{}), art
}

// register → top up → credential → network off (DevTools) → the page makes
// a code → screenshot → zbarimg → pseudo-terminal → real validator:
// ACCEPTED → network on → the tap settles and the wallet shows the ride and
// the new balance. Then the server stops, and the service worker still
// serves the wallet, which still makes codes a validator accepts.
func TestWalletOfflineTap(t *testing.T) {
	r, ctx, d, b, art := walletRig(t, "bus-w-front")

	id, _ := registerInWallet(t, ctx, b, r, art, 2500)
	wallettest.WaitFor(t, b, 30*time.Second, "the balance", `document.getElementById("balance").textContent.includes("25.00")`)
	wallettest.WaitFor(t, b, 30*time.Second, "the service worker to control the page", `navigator.serviceWorker.controller !== null`)
	wallettest.Screenshot(t, b, art, "2-online", "")

	// The phone and the bus lose the network.
	setOffline(t, b, true)
	d.Link.Cut()
	wallettest.WaitFor(t, b, 10*time.Second, "the offline indicator", `document.getElementById("net").dataset.state === "offline"`)
	if txt := wallettest.Eval[string](t, b, `document.getElementById("net").textContent`); txt != "Offline: codes still work" {
		t.Errorf("the offline indicator with a pass: %q", txt)
	}
	if reached := wallettest.Eval[bool](t, b, `fetch("/v1/keyring", {cache: "no-store"}).then(() => true, () => false)`); reached {
		t.Fatal("the page still reaches the server with the network switched off")
	}
	code := newCode(t, b)
	if c := state(t, b); c.Online {
		t.Fatalf("navigator.onLine is true while offline: %+v", c)
	}
	text := scanScreenshot(t, b, art, "3-offline-qr", code)
	wallettest.Screenshot(t, b, art, "3-offline", "")
	scanExpect(t, ctx, d, text, "ACCEPTED  2.50 EUR")
	if a, _ := r.Account(ctx, id); a.Balance != 2500 {
		t.Fatalf("balance %d while everything is offline, want 2500", a.Balance)
	}

	// Back online: the validator syncs, the ledger charges, the wallet shows it.
	d.Link.Restore()
	setOffline(t, b, false)
	a := waitBalance(t, ctx, r, id, 2250)
	if len(a.Rides) != 1 || a.Rides[0].Charge != 250 {
		t.Fatalf("rides = %+v", a.Rides)
	}
	wallettest.WaitFor(t, b, 60*time.Second, "the wallet to show the ride and the new balance",
		`document.getElementById("balance").textContent.includes("22.50") && document.querySelectorAll("#rides-body tr").length === 1 &&
		 document.querySelector("#rides-body tr").dataset.tap === `+wallettest.JS(a.Rides[0].TapID)+` &&
		 document.querySelector("#rides-body tr").textContent.includes("42")`)
	if s := netState(t, b); s != "online" {
		t.Errorf("indicator %q after the network came back", s)
	}
	wallettest.Screenshot(t, b, art, "4-settled", "")

	// The server stops: the service worker serves the wallet, which makes
	// a code from its stored credential, and the validator accepts it.
	if err := r.StopServer(false); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 30*time.Second, "the wallet to start with the server stopped", `document.body && document.body.dataset.ready === "true"`)
	if !wallettest.Eval[bool](t, b, `navigator.serviceWorker.controller !== null`) {
		t.Fatal("the page was not served by the service worker")
	}
	wallettest.WaitFor(t, b, 30*time.Second, "the unreachable indicator", `document.getElementById("net").dataset.state === "unreachable"`)
	code2 := newCode(t, b)
	if code2.Counter <= code.Counter {
		t.Errorf("counter went from %d to %d across a reload", code.Counter, code2.Counter)
	}
	text = scanScreenshot(t, b, art, "5-server-stopped-qr", code2)
	wallettest.Screenshot(t, b, art, "5-server-stopped", "")
	scanExpect(t, ctx, d, text, "ACCEPTED")
	if b := wallettest.Eval[string](t, b, `document.getElementById("balance").textContent`); !strings.Contains(b, "22.50") {
		t.Errorf("balance shown with the server stopped: %q, want the last known 22.50", b)
	}
}

// scanExpect writes a code to the validator's scanner pty and checks its
// feedback line.
func scanExpect(t *testing.T, ctx context.Context, d *Device, text, want string) {
	t.Helper()
	line, err := d.Scan(ctx, text)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, want) {
		t.Fatalf("validator said %q, want %q", line, want)
	}
}

// checkCode runs farego-validator check on a code at a given time.
func checkCode(t *testing.T, ctx context.Context, keyring string, now uint32, text string) (bool, string) {
	t.Helper()
	out, _ := exec.CommandContext(ctx, filepath.Join(binDir, "farego-validator"), "check", "--keyring", keyring,
		"--now", fmt.Sprint(now), text).Output()
	var res struct {
		Accepted bool   `json:"accepted"`
		Reason   string `json:"reason"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("farego-validator check printed %q", out)
	}
	return res.Accepted, res.Reason
}

// The code changes at the minute (the page's clock is moved to 2 s before a
// minute boundary: no test sleeps a minute), the counter survives a reload,
// two tabs never make the same (time, counter), and a credential tampered
// with in IndexedDB is refused by a real validator.
func TestWalletCodes(t *testing.T) {
	r, ctx, d, b, art := walletRig(t, "bus-c-front")
	id, _ := registerInWallet(t, ctx, b, r, "", 2500)
	var kr json.RawMessage
	if err := r.API(ctx, "GET", "/v1/keyring", nil, &kr); err != nil {
		t.Fatal(err)
	}
	keyring := filepath.Join(t.TempDir(), "keyring.json")
	if err := os.WriteFile(keyring, kr, 0o644); err != nil {
		t.Fatal(err)
	}

	// The minute tick, with the page's clock 2 s before the next minute.
	// A machine that takes longer than those 2 s to make the clicked code
	// (CI, busy with other packages) makes it after the minute: the clock
	// is set 2 s before the next minute again.
	var boundary uint32
	var before walletCode
	for attempt := 0; ; attempt++ {
		boundary = uint32(time.Now().Unix()/60+1) * 60
		wallettest.Eval[bool](t, b, fmt.Sprintf(`(async () => { (await import("./clock.js")).setOffset(%d000 - 2000 - Date.now()); return true; })()`, boundary)) // 2 s before the minute
		before = newCodeFrom(t, b, boundary-3)
		if before.Time < boundary || attempt == 2 {
			break
		}
		t.Logf("the code was made at %d, past the minute %d the page's clock was set 2 s before; again", before.Time, boundary)
	}
	if before.Time < boundary-3 || before.Time >= boundary {
		t.Fatalf("code time %d, want just before %d", before.Time, boundary)
	}
	wallettest.WaitFor(t, b, 20*time.Second, "the code to change at the minute",
		fmt.Sprintf(`(async () => `+appModule+`.debugState().code.time >= %d)()`, boundary))
	after := state(t, b).Code
	if after.Time > boundary+5 || after.Counter <= before.Counter || after.Text == before.Text {
		t.Fatalf("after the minute: %+v (before: time %d counter %d)", after, before.Time, before.Counter)
	}
	for _, c := range []*walletCode{&before, after} {
		if ok, reason := checkCode(t, ctx, keyring, boundary+1, c.Text); !ok {
			t.Errorf("farego-validator check refused the code of time %d: %s", c.Time, reason)
		}
	}

	// A reload: the counter goes on from where it was.
	seen := after.Counter
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 30*time.Second, "the wallet after a reload", `(async () => document.body.dataset.ready === "true" && `+appModule+`.debugState().code !== null)()`)
	if c := state(t, b).Code; c.Counter <= seen {
		t.Fatalf("after a reload the counter is %d, it was %d", c.Counter, seen)
	}

	// Two tabs, each making 30 codes as fast as it can, at the same time.
	b2, cancel2 := chromedp.NewContext(b)
	defer cancel2()
	wallettest.Open(t, b2, "http://"+r.HTTP+"/wallet/")
	wallettest.WaitFor(t, b2, 30*time.Second, "the second tab's code", `(async () => `+appModule+`.debugState().code !== null)()`)
	burst := `(async () => { const app = ` + appModule + `; const out = [];
		for (let i = 0; i < 30; i++) out.push((await app.newCodeNow()).text); return out; })()`
	var wg sync.WaitGroup
	texts := make([][]string, 2)
	for i, tab := range []context.Context{b, b2} {
		wg.Go(func() {
			tab, cancel := context.WithTimeout(tab, time.Minute)
			defer cancel()
			v, err := chromedp.Run(tab, chromedp.Evaluate[[]string](burst, chromedp.EvalAwaitPromise))
			if err != nil {
				t.Error(err)
			}
			texts[i] = v
		})
	}
	wg.Wait()
	ids := map[[2]uint32]bool{}
	counters := map[uint16]bool{}
	for _, tab := range texts {
		if len(tab) != 30 {
			t.Fatalf("a tab made %d codes, want 30", len(tab))
		}
		for _, text := range tab {
			c, err := paycode.ParseText(text)
			if err != nil {
				t.Fatal(err)
			}
			k := [2]uint32{c.Time, uint32(c.Counter)}
			if ids[k] || counters[c.Counter] {
				t.Fatalf("two codes with time %d and counter %d", c.Time, c.Counter)
			}
			ids[k], counters[c.Counter] = true, true
		}
	}
	last := texts[1][29]
	if ok, reason := checkCode(t, ctx, keyring, uint32(time.Now().Unix()), last); !ok {
		t.Errorf("a code from the second tab was refused: %s", reason)
	}
	cancel2()

	// A pass damaged in storage (one byte of its account number): offline
	// the wallet says so and shows no code (every validator would refuse
	// it); online it gets a new pass at once.
	setOffline(t, b, true)
	damaged := wallettest.Eval[float64](t, b, `(async () => {
		const db = await new Promise((ok, fail) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
		return await new Promise((ok, fail) => {
			const tx = db.transaction("credentials", "readwrite"), st = tx.objectStore("credentials");
			let serial;
			st.openCursor(null, "prev").onsuccess = (e) => { const c = e.target.result; serial = c.value.serial; c.value.bytes[10] ^= 1; c.update(c.value); };
			tx.oncomplete = () => { db.close(); ok(serial); }; tx.onerror = () => fail(tx.error);
		});
	})()`)
	if c := wallettest.Eval[bool](t, b, `(async () => (await `+appModule+`.newCodeNow()) === null)()`); !c {
		t.Error("the wallet made a code of a damaged pass")
	}
	if p := passState(t, b); p["class"] != "warning" || !strings.Contains(p["text"], "damaged") {
		t.Errorf("pass state of a damaged pass: %v", p)
	}
	setOffline(t, b, false)
	wallettest.Do(t, b, chromedp.Reload())
	wallettest.WaitFor(t, b, 60*time.Second, "a new pass in place of the damaged one",
		fmt.Sprintf(`(async () => document.body.dataset.ready === "true" && `+appModule+`.debugState().code !== null && `+
			appModule+`.debugState().code.serial > %v)()`, damaged))
	if ok, reason := checkCode(t, ctx, keyring, uint32(time.Now().Unix()), state(t, b).Code.Text); !ok {
		t.Errorf("a code of the pass that replaced the damaged one was refused: %s", reason)
	}

	// A credential altered in IndexedDB (child fares for an adult account),
	// with the copy the wallet keeps of it too (a deliberate edit: one of
	// the bytes alone shows the pass damaged, with no code): the code is
	// refused by the validator, charged nothing.
	profile := wallettest.Eval[int](t, b, `(async () => {
		const db = await new Promise((ok, fail) => { const r = indexedDB.open("farego-wallet"); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
		return await new Promise((ok, fail) => {
			const tx = db.transaction("credentials", "readwrite"), st = tx.objectStore("credentials");
			let was;
			st.openCursor(null, "prev").onsuccess = (e) => { const c = e.target.result; was = c.value.bytes[25]; c.value.bytes[25] = 1;
				c.value.issued = Array.from(c.value.bytes, (b) => b.toString(16).padStart(2, "0")).join(""); c.update(c.value); };
			tx.oncomplete = () => { db.close(); ok(was); }; tx.onerror = () => fail(tx.error);
		});
	})()`)
	if profile != 0 {
		t.Fatalf("the stored credential's profile byte was %d, want 0 (adult)", profile)
	}
	forged := newCode(t, b)
	text := scanScreenshot(t, b, art, "tampered-qr", forged)
	c, _ := paycode.ParseText(text)
	if c.Profile != paycode.Child {
		t.Fatalf("the code's profile is %v, want the tampered child", c.Profile)
	}
	scanExpect(t, ctx, d, text, "(bad_credential_signature)")
	if a, _ := r.Account(ctx, id); a.Balance != 2500 {
		t.Errorf("balance %d after the refused code, want 2500", a.Balance)
	}

	// Offline with the page's clock 20 h ahead (4 h of the 24 h pass left):
	// the wallet warns that the pass is about to expire.
	setOffline(t, b, true)
	setClock(t, b, 20*time.Hour)
	expiring := newCode(t, b)
	if p := passState(t, b); p["class"] != "warning" || !strings.Contains(p["text"], "expires at") {
		t.Errorf("pass state 4 h before expiry: %v", p)
	}
	// Online again, 13 h after it was fetched (past half its lifetime): the
	// wallet renews the pass by itself, which also replaces the tampered one.
	setClock(t, b, 13*time.Hour)
	setOffline(t, b, false)
	wallettest.WaitFor(t, b, 60*time.Second, "the wallet to renew its pass",
		fmt.Sprintf(`(async () => `+appModule+`.debugState().code.serial > %d)()`, expiring.Serial))
	renewed := state(t, b).Code
	if p := passState(t, b); p["class"] != "" || !strings.Contains(p["text"], "is valid until") {
		t.Errorf("pass state after renewal: %v", p)
	}
	if ok, reason := checkCode(t, ctx, keyring, renewed.Time, renewed.Text); !ok {
		t.Errorf("a code of the renewed pass was refused: %s", reason)
	}
	if c, _ := paycode.ParseText(renewed.Text); c.Profile != paycode.Adult {
		t.Errorf("renewed pass has profile %v, want adult", c.Profile)
	}

	// The phone's clock a day ahead when a pass is fetched, then set right
	// (here: to 2 minutes past the pass's end, as a day later): the pass
	// is expired by the corrected clock and its fetch time is ahead of it.
	// The online wallet asks for another at once (it waited until the
	// clock passed the fetch time by 12 hours).
	setClock(t, b, 26*time.Hour) // 13 h after the last fetch: past half the pass's life
	wallettest.WaitFor(t, b, 60*time.Second, "the wallet to renew its pass with the clock a day ahead",
		fmt.Sprintf(`(async () => (await `+storeModule+`.currentCredential()).serial > %d)()`, renewed.Serial))
	ahead := wallettest.Eval[float64](t, b, `(async () => (await `+storeModule+`.currentCredential()).serial)()`)
	end := wallettest.Eval[float64](t, b, `(async () => (await `+storeModule+`.currentCredential()).notAfter)()`)
	setClock(t, b, time.Until(time.Unix(int64(end), 0).Add(2*time.Minute)))
	wallettest.WaitFor(t, b, 60*time.Second, "the wallet to ask for a pass after its clock went back",
		fmt.Sprintf(`(async () => (await `+storeModule+`.currentCredential()).serial > %v)()`, ahead))
}

// setClock moves the page's clock ahead of the system clock.
func setClock(t *testing.T, b context.Context, ahead time.Duration) {
	t.Helper()
	wallettest.Eval[bool](t, b, fmt.Sprintf(`(async () => { (await import("./clock.js")).setOffset(%d); return true; })()`, ahead.Milliseconds()))
}

func passState(t *testing.T, b context.Context) map[string]string {
	t.Helper()
	return wallettest.Eval[map[string]string](t, b, `({text: document.getElementById("pass-state").textContent,
		class: document.getElementById("pass-state").className})`)
}

// What the API says is shown in plain words: a wrong secret, a denied
// account asking for a credential; signing in with the right secret shows
// the account, and a Chinese browser gets Chinese sentences.
func TestWalletAccountMessages(t *testing.T) {
	wallettest.Chromium(t)
	r, ctx := newRig(t)
	var other struct {
		Account struct {
			ID uint64 `json:"id"`
		} `json:"account"`
	}
	if err := r.API(ctx, "POST", "/v1/accounts", map[string]string{"profile": "adult"}, &other); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{Lang: "zh-CN"})
	wallettest.Open(t, b, "http://"+r.HTTP+"/wallet/")
	signIn := func(id, secret string) {
		t.Helper()
		wallettest.Do(t, b,
			chromedp.SetValue(chromedp.ID("signin-account"), id),
			chromedp.SetValue(chromedp.ID("signin-secret"), secret),
			chromedp.Click(chromedp.ID("signin")),
		)
	}
	// Account numbers the page refuses before asking: not a number, and
	// longer than any (20 digits, past the ledger's 64-bit numbers).
	for id, want := range map[string]string{"12a": "账户号码必须是大于零的整数。", "0": "账户号码必须是大于零的整数。",
		"99999999999999999999": "账户号码过长，请核对。", "9223372036854775808": "账户号码过长，请核对。"} {
		signIn(id, strings.Repeat("ab", 32))
		wallettest.WaitFor(t, b, 30*time.Second, "the sentence for account "+id,
			`document.getElementById("error").textContent === `+wallettest.JS(want))
		wallettest.Eval[bool](t, b, `(document.getElementById("error").textContent = "", true)`)
	}
	signIn(fmt.Sprint(other.Account.ID), strings.Repeat("ab", 32))
	wallettest.WaitFor(t, b, 30*time.Second, "the wrong-secret sentence", `document.getElementById("error").textContent === "账户号码或密钥错误。"`)
	if msg := wallettest.Eval[string](t, b, `document.getElementById("error").textContent`); msg != "账户号码或密钥错误。" {
		t.Errorf("wrong secret: %q", msg)
	}

	// A real secret: register one through the API, deny the account, sign in.
	var acct struct {
		Account struct {
			ID uint64 `json:"id"`
		} `json:"account"`
		Secret string `json:"secret"`
	}
	if err := r.API(ctx, "POST", "/v1/accounts", map[string]string{"profile": "student"}, &acct); err != nil {
		t.Fatal(err)
	}
	if err := r.API(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/topups", acct.Account.ID), map[string]any{"amount": 3000, "reference": "msg-1"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.API(ctx, "POST", "/v1/denylist", map[string]any{"account": acct.Account.ID, "reason": "lost_phone"}, nil); err != nil {
		t.Fatal(err)
	}
	signIn(fmt.Sprint(acct.Account.ID), acct.Secret)
	wallettest.WaitFor(t, b, 30*time.Second, "the account screen", `!document.getElementById("main").hidden && document.getElementById("balance").textContent.includes("30")`)
	wallettest.WaitFor(t, b, 30*time.Second, "the refused credential's sentence", `!document.getElementById("pass-warning").hidden`)
	got := wallettest.Eval[map[string]string](t, b, `({warning: document.getElementById("pass-warning").textContent,
		standing: document.getElementById("standing").textContent, pass: document.getElementById("pass-state").textContent,
		body: document.body.innerText})`)
	if got["warning"] != "账户状态异常，无法获取乘车凭证。请充值或联系运营方。" {
		t.Errorf("credential refused (not_in_good_standing): %q", got["warning"])
	}
	if got["standing"] != "账户已被运营方停用（原因：lost_phone）。请联系运营方。" {
		t.Errorf("deny state: %q", got["standing"])
	}
	// Online: the reason is the warning above, not "connect to get one".
	if got["pass"] != "此手机上还没有乘车凭证。" {
		t.Errorf("pass state: %q", got["pass"])
	}
	if ft := wallettest.Eval[string](t, b, `document.getElementById("fare-type").textContent`); ft != "票种：学生。" {
		t.Errorf("fare type (confirmed by the operator): %q", ft)
	}
	if strings.Contains(got["body"], `"error"`) || strings.Contains(got["body"], "not_in_good_standing") {
		t.Errorf("raw API error on the page: %q", got["body"])
	}
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "denied-zh", "")

	// Lifted: the button gets a pass, and a code.
	if err := r.API(ctx, "DELETE", "/v1/denylist", map[string]any{"account": acct.Account.ID, "reason": "lost_phone"}, nil); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("get-pass"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "a code after the deny entry is lifted", `(async () => `+appModule+`.debugState().code !== null)()`)
	if w := wallettest.Eval[bool](t, b, `document.getElementById("pass-warning").hidden`); !w {
		t.Error("the warning stays after a pass was issued")
	}

	// The rider asks for the child fare: the wallet says it waits for the
	// operator, and that the passes carry the adult fare until then.
	if err := cli.CallJSON(ctx, "PUT", fmt.Sprintf("http://%s/v1/accounts/%d/profile", r.HTTP, acct.Account.ID), acct.Secret,
		map[string]string{"profile": "child"}, nil); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the pending fare type", `document.getElementById("fare-type").textContent.includes("等待运营方确认")`)
	if ft := wallettest.Eval[string](t, b, `document.getElementById("fare-type").textContent`); ft != "票种：儿童，等待运营方确认。确认前，您的乘车码按成人票价收费。" {
		t.Errorf("fare type (asked for by the rider): %q", ft)
	}
}

// TestWalletRenewsCodeAShopTook: a kiosk's scanner takes the code on
// screen online; the wallet, online, sees the payment in the statement
// within its refresh and shows a new code, saying what the shop took. The
// rider boards at once with the code on screen: the bus takes the new one
// and charges it. The wallet kept the shop's code on screen until the next
// minute, and a bus that read it flagged the tap as a code used twice and
// blocked the pass (an online payment always keeps its code; an attack
// review found the honest kiosk-then-bus rider blocked).
func TestWalletRenewsCodeAShopTook(t *testing.T) {
	k := kioskTakesTheCode(t, "bus-w-kiosk", "kiosk-7", 40)
	// As the wallet's own refresh would within 10 s.
	wallettest.Do(t, k.b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	k.boardsWithANewCode(t, 2500-350-250)
}

// kiosk is a rider with 25.00 in the wallet whose code on screen a
// kiosk's scanner has taken for 3.50.
type kiosk struct {
	r         *Rig
	ctx, b    context.Context
	d         *Device
	id        uint64
	shop, tok string
	shown     walletCode
}

// kioskTakesTheCode sets up a kiosk for the device and shop, the code shown
// at a second of the minute at most latest: not near a minute's end, or the
// next minute's code would replace the shop's on screen by itself, before
// the wallet saw the payment.
func kioskTakesTheCode(t *testing.T, device, shop string, latest int) *kiosk {
	t.Helper()
	r, ctx, d, b, _ := walletRig(t, device)
	id, _ := registerInWallet(t, ctx, b, r, t.TempDir(), 2500)
	wallettest.WaitFor(t, b, 30*time.Second, "the balance", `document.getElementById("balance").textContent.includes("25.00")`)
	tok, err := r.MerchantToken(ctx, shop)
	if err != nil {
		t.Fatal(err)
	}
	if s := time.Now().Second(); s > latest {
		time.Sleep(time.Duration(61-s) * time.Second)
	}
	shown := newCode(t, b)
	if err := cli.CallJSON(ctx, "POST", "http://"+r.HTTP+"/v1/payments", tok,
		map[string]any{"merchant_id": shop, "order_id": "coffee-1", "code": shown.Text, "amount": 350}, nil); err != nil {
		t.Fatalf("the kiosk's payment: %v", err)
	}
	return &kiosk{r: r, ctx: ctx, b: b, d: d, id: id, shop: shop, tok: tok, shown: shown}
}

// boardsWithANewCode waits for the wallet to show a new code and say what
// the shop took, then boards the bus with it: charged 2.50, unflagged, the
// account not blocked, the balance then balance, the ledger verified.
func (k *kiosk) boardsWithANewCode(t *testing.T, balance int64) {
	t.Helper()
	wallettest.WaitFor(t, k.b, 40*time.Second, "a new code and what the shop took",
		`(async () => { const c = `+appModule+`.debugState().code; const n = document.getElementById("code-note");
		 return c !== null && c.counter !== `+fmt.Sprint(k.shown.Counter)+` && !n.hidden &&
		   n.textContent.includes("`+k.shop+`") && n.textContent.includes("3.50"); })()`)
	now := *state(t, k.b).Code
	if now.Text == k.shown.Text {
		t.Fatal("the shop's code is still on screen")
	}
	scanExpect(t, k.ctx, k.d, now.Text, "ACCEPTED  2.50 EUR")
	a := waitBalance(t, k.ctx, k.r, k.id, balance)
	if len(a.Rides) != 1 || a.Rides[0].Flag != "" || a.Rides[0].Charge != 250 {
		t.Errorf("the ride after the kiosk: %+v, want charged 2.50, unflagged", a.Rides)
	}
	if a.Denied {
		t.Error("the account is blocked after a kiosk payment and a bus ride")
	}
	if out, err := k.r.Verify(k.ctx); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}

// TestWalletRenewsCodeAShopHid: a rogue kiosk takes the code on screen and
// at once sends ten refunds of a cent on its payment, so that the payment
// is not among the newest ten entries of the account's statement, where the
// wallet looked for it: the wallet kept the shop's code on screen, and the
// bus that read it next flagged a code used twice and blocked the pass
// (TestWalletRenewsCodeAShopTook's defence, undone for ten cents). The
// wallet reads the codes shops took from the account's paid_codes.
func TestWalletRenewsCodeAShopHid(t *testing.T) {
	k := kioskTakesTheCode(t, "bus-w-hide", "kiosk-9", 30)
	for i := range 10 {
		if err := cli.CallJSON(k.ctx, "POST", "http://"+k.r.HTTP+"/v1/payments/kiosk-9/coffee-1/refunds", k.tok,
			map[string]any{"refund_id": fmt.Sprint("r-", i), "amount": 1}, nil); err != nil {
			t.Fatalf("refund %d: %v", i, err)
		}
	}
	wallettest.Do(t, k.b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, k.b, 30*time.Second, "the balance after the refunds", `document.getElementById("balance").textContent.includes("21.60")`)
	k.boardsWithANewCode(t, 2500-350+10-250)
	// The operator lists what the kiosk's token gave back (its refunds
	// were found only order by order before).
	id := strings.Split(k.tok, "_")[1]
	out, err := k.r.command(k.ctx, "farego-settlement", append([]string{"token", "refunds", "--data", k.r.serverDir(), id}, k.r.dbArgs()...)...)
	if err != nil {
		t.Fatalf("token refunds: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 11 || !strings.HasPrefix(lines[0], "PAYMENT") || !strings.Contains(lines[1], "kiosk-9") ||
		!strings.Contains(lines[1], "coffee-1") || !strings.Contains(lines[1], "r-9") || !strings.Contains(lines[10], "r-0") ||
		!strings.Contains(lines[1], fmt.Sprint(k.id)) || !strings.Contains(lines[1], "0.01") {
		t.Errorf("token refunds of the kiosk's token: want its 10 refunds of a cent, newest first:\n%s", out)
	}
}
