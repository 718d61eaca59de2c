package wallet_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/wallet"
	"github.com/farego/farego/server/wallet/wallettest"
)

// previousRelease holds the wallet's files of the release before the
// update control (git show 2b94179:server/wallet/static/FILE), but for the
// vendored QR encoder, which is pinned and the same.
const previousRelease = "testdata/release-2b94179"

// build is the wallet's files with a mark of their own: the page says
// which build its html is and which its app.js is (pageBuild), and any
// two builds differ.
func build(t *testing.T, base fs.FS, name string) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	add := func(from fs.FS) {
		err := fs.WalkDir(from, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := fs.ReadFile(from, p)
			if err != nil {
				return err
			}
			out[p] = &fstest.MapFile{Data: b}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if base != nil {
		add(base)
	}
	vendor, err := fs.Sub(os.DirFS("static"), "vendor")
	if err != nil {
		t.Fatal(err)
	}
	if base == nil {
		add(os.DirFS("static"))
	} else if _, err := fs.Stat(base, "vendor"); err != nil {
		sub := fstest.MapFS{}
		_ = fs.WalkDir(vendor, ".", func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := fs.ReadFile(vendor, p)
				sub["vendor/"+p] = &fstest.MapFile{Data: b}
			}
			return err
		})
		add(sub)
	}
	html := string(out["index.html"].Data)
	if !strings.Contains(html, "<head>") {
		t.Fatal("index.html has no <head>")
	}
	out["index.html"].Data = []byte(strings.Replace(html, "<head>", `<head><meta name="farego-test-build" content="`+name+`">`, 1))
	out["app.js"].Data = append(append([]byte{}, out["app.js"].Data...), "\nexport const TEST_BUILD = \""+name+"\";\n"...)
	return out
}

// deploy is the wallet's file server of one build at a time: a new
// build deployed is a server restarted with new files. cut, if set, sees
// each request first and may answer it itself (a restart mid-install).
type deploy struct {
	h   atomic.Pointer[wallet.Handler]
	cut atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

func (d *deploy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if fn := d.cut.Load(); fn != nil && (*fn)(w, r) {
		return
	}
	d.h.Load().ServeHTTP(w, r)
}

// to deploys files, and returns the build's handler.
func (d *deploy) to(files fs.FS) *wallet.Handler {
	h := wallet.New(wallet.Config{Files: files})
	d.h.Store(h)
	return h
}

// watchInstalls records, in the page, the states each new worker went
// through (window.faregoInstalls, one list a worker, in order).
const watchInstalls = `(async () => {
  const r = await navigator.serviceWorker.getRegistration("./");
  window.faregoInstalls = [];
  r.addEventListener("updatefound", () => {
    const w = r.installing, states = [w.state];
    window.faregoInstalls.push(states);
    w.addEventListener("statechange", () => states.push(w.state));
  });
  return true;
})()`

// installEnded is true once the n-th new worker watched installed
// ("installed": whole) or failed ("redundant" before installed).
func installEnded(n int, how string) string {
	return fmt.Sprintf(`(() => { const s = window.faregoInstalls[%d]; if (!s) return false;
  return %q === "installed" ? s.includes("installed") : s.includes("redundant") && !s.includes("installed"); })()`, n-1, how)
}

// waitServer waits (a minute at most) until the server saw what cond
// tells: a request of the browser's.
func waitServer(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cacheName is the service worker's cache of build h.
func cacheName(h *wallet.Handler) string { return "farego-wallet-" + h.Version() }

// pageBuild is the build of the page's html and of its app.js: "C/C".
const pageBuild = `(async () => (document.querySelector('meta[name="farego-test-build"]')?.content ?? "?") + "/" + ((await import("./app.js")).TEST_BUILD ?? "?"))()`

// checkUpdate asks the browser to look for a new build, as the page does
// at start, in sight again and back online (throttled there).
const checkUpdate = `(async () => { await (await navigator.serviceWorker.getRegistration("./")).update().catch(() => {}); return true; })()`

// cached reads the page's caches: their names, and each file of one
// cache with the SHA-256 of its body, by path.
type cached struct {
	Keys  []string          `json:"keys"`
	Files map[string]string `json:"files"`
}

func readCache(t *testing.T, b context.Context, name string) cached {
	t.Helper()
	return wallettest.Eval[cached](t, b, `(async () => {
  const hex = (buf) => Array.from(new Uint8Array(buf), (x) => x.toString(16).padStart(2, "0")).join("");
  const out = { keys: await caches.keys(), files: {} };
  if (!out.keys.includes(`+fmt.Sprintf("%q", name)+`)) return out;
  const c = await caches.open(`+fmt.Sprintf("%q", name)+`);
  for (const req of await c.keys()) {
    const body = await (await c.match(req)).arrayBuffer();
    out.files[new URL(req.url).pathname] = hex(await crypto.subtle.digest("SHA-256", body));
  }
  return out;
})()`)
}

// wantCache checks that the page's cache of build h holds every file of
// h, each byte for byte as h serves it: none missing, none of another
// build.
func wantCache(t *testing.T, b context.Context, h *wallet.Handler, files fs.FS) {
	t.Helper()
	got := readCache(t, b, cacheName(h))
	want := map[string]string{}
	paths := []string{"/wallet/"}
	_ = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			paths = append(paths, "/wallet/"+p)
		}
		return err
	})
	paths = append(paths, "/wallet/icon-192.png", "/wallet/icon-512.png")
	for _, p := range paths {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		if rec.Code != 200 {
			t.Fatalf("GET %s: %d", p, rec.Code)
		}
		s := sha256.Sum256(rec.Body.Bytes())
		want[p] = hex.EncodeToString(s[:])
	}
	for p, sum := range want {
		if got.Files[p] != sum {
			t.Errorf("cache %s: %s is %q, want build %s's %q (caches %v)", cacheName(h), p, got.Files[p], h.Version(), sum, got.Keys)
		}
	}
	for p := range got.Files {
		if _, ok := want[p]; !ok {
			t.Errorf("cache %s holds %s, not a file of its build", cacheName(h), p)
		}
	}
}

// serveBuilds serves the API and the wallet of build first, and returns
// the URL, the gate before the API and the deploy.
func serveBuilds(t *testing.T, first fs.FS) (string, *gate, *deploy, *wallet.Handler) {
	t.Helper()
	d := &deploy{}
	h := d.to(first)
	url, g := serveWalletFrom(t, "EUR", api.Config{}, d)
	return url, g, d, h
}

// onBuild waits until the page is build name, html and script, signed in
// to acct with a code on screen.
func onBuild(t *testing.T, b context.Context, name string, acct account) {
	t.Helper()
	wallettest.WaitFor(t, b, time.Minute, "the page on build "+name,
		pageBuild+` .then((v) => v === "`+name+`/`+name+`")`)
	wallettest.WaitFor(t, b, time.Minute, "the account and its code on build "+name,
		`(async () => { const s = (await import("./app.js")).debugState(); return s.account === "`+fmt.Sprint(acct.ID)+`" && s.code !== null && !document.getElementById("code-view").hidden; })()`)
}

// controlledBy waits until the page's worker is build h's, activated,
// with no other build installing or waiting.
func controlledBy(t *testing.T, b context.Context, h *wallet.Handler) {
	t.Helper()
	wallettest.WaitFor(t, b, time.Minute, "the page controlled by build "+h.Version(),
		`(async () => { if (!navigator.serviceWorker.controller) return false;
  const r = await navigator.serviceWorker.getRegistration("./");
  if (r.installing !== null || r.waiting !== null || r.active?.state !== "activated") return false;
  // sw.js as the page's worker answers it (from its cache): its build.
  return (await (await fetch("sw.js")).text()).includes("`+h.Version()+`"); })()`)
}

// offlineStillWorks switches the network off, reloads, and waits for the
// page of build name with a code; then switches it on again.
func offlineStillWorks(t *testing.T, b context.Context, name string, acct account) {
	t.Helper()
	offline(t, b, true)
	wallettest.Do(t, b, chromedp.Reload())
	onBuild(t, b, name, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "the offline indicator", `document.getElementById("net").dataset.state === "offline"`)
	offline(t, b, false)
}

// waitingShown deploys a build and waits for the page to offer it; the
// page, with a code on screen, does not reload by itself.
func waitingShown(t *testing.T, b context.Context, was string) {
	t.Helper()
	wallettest.Eval[bool](t, b, `window.faregoNoReload = true`)
	wallettest.Eval[bool](t, b, checkUpdate)
	wallettest.WaitFor(t, b, time.Minute, "the Update control beside the code",
		`(async () => { const r = await navigator.serviceWorker.getRegistration("./"); return r.waiting !== null && !document.getElementById("update").hidden; })()`)
	// The control is there and a build waits: the page was left alone.
	if ok := wallettest.Eval[bool](t, b, `window.faregoNoReload === true`); !ok {
		t.Fatal("the page reloaded by itself with a code on screen")
	}
	if got := wallettest.Eval[string](t, b, pageBuild); got != was+"/"+was {
		t.Fatalf("the page is %s with a code on screen, want %s", got, was)
	}
	if got := wallettest.Eval[string](t, b, walletCodeText); got == "" {
		t.Fatal("the code went from the screen")
	}
}

// TestWalletUpdateByTap: a page open on build B, with its code on screen
// (held up to a reader, maybe), learns of build C: it offers "New version
// ready — Update" and reloads nothing by itself; the rider's tap brings C
// (html and script), signed in with its code, the cache all C's, B's
// gone; offline, the code still shows.
func TestWalletUpdateByTap(t *testing.T) {
	url, g, d, _ := serveBuilds(t, build(t, nil, "B"))
	b, acct := passShown(t, url, g, 10_000)
	onBuild(t, b, "B", acct)
	wallettest.WaitFor(t, b, time.Minute, "the service worker to control the page", `navigator.serviceWorker.controller !== null`)

	filesC := build(t, nil, "C")
	hc := d.to(filesC)
	waitingShown(t, b, "B")
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("update-now"), chromedp.NodeVisible))
	onBuild(t, b, "C", acct)
	controlledBy(t, b, hc)
	wantCache(t, b, hc, filesC)
	if keys := readCache(t, b, cacheName(hc)).Keys; len(keys) != 2 {
		t.Errorf("caches after the update: %v, want C's and the record of builds", keys)
	}
	if u := wallettest.Eval[bool](t, b, `document.getElementById("update").hidden`); !u {
		t.Error("the Update control is still shown on the new build")
	}
	offlineStillWorks(t, b, "C", acct)
}

// TestWalletUpdateCutByARestart: the server goes down in the middle of
// build C's install (a file's connection cut), then is restarted with
// build D while D's install fetches its files. Neither install is kept:
// the page stays B with B's cache whole, no cache holds a file of
// another build or misses one, and the next check installs the build
// the server has; the rider's tap brings it.
func TestWalletUpdateCutByARestart(t *testing.T) {
	url, g, d, hb := serveBuilds(t, build(t, nil, "B"))
	filesB := build(t, nil, "B")
	b, acct := passShown(t, url, g, 10_000)
	controlledBy(t, b, hb)

	// C's install: the connection of its style.css is cut.
	filesC := build(t, nil, "C")
	hc := d.to(filesC)
	// Every time while down (the browser tries a cut GET again on a new
	// connection once).
	var cuts atomic.Int32
	var down atomic.Bool
	down.Store(true)
	cut := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/wallet/style.css" || r.URL.Query().Get("build") != hc.Version() || !down.Load() {
			return false
		}
		cuts.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return true
	}
	d.cut.Store(&cut)
	wallettest.Eval[bool](t, b, `window.faregoNoReload = true`)
	wallettest.Eval[bool](t, b, watchInstalls)
	wallettest.Eval[bool](t, b, checkUpdate)
	waitServer(t, "C's install to ask for style.css", func() bool { return cuts.Load() >= 1 })
	wallettest.WaitFor(t, b, time.Minute, "C's install to fail", installEnded(1, "redundant"))
	if got := wallettest.Eval[string](t, b, pageBuild); got != "B/B" || !wallettest.Eval[bool](t, b, `window.faregoNoReload === true`) {
		t.Fatalf("after a failed install the page is %s (reloaded: %v), want B untouched", got, !wallettest.Eval[bool](t, b, `window.faregoNoReload === true`))
	}
	if keys := readCache(t, b, cacheName(hc)).Keys; strings.Contains(strings.Join(keys, " "), cacheName(hc)) {
		t.Errorf("a failed install left a cache of C: %v", keys)
	}
	wantCache(t, b, hb, filesB)

	// The server back with C: the next check installs it, whole.
	down.Store(false)
	wallettest.Eval[bool](t, b, checkUpdate)
	wallettest.WaitFor(t, b, time.Minute, "C installed", installEnded(2, "installed"))
	wallettest.WaitFor(t, b, time.Minute, "C offered", `(async () => (await navigator.serviceWorker.getRegistration("./")).waiting !== null && !document.getElementById("update").hidden)()`)
	wantCache(t, b, hc, filesC)

	// D is deployed, and restarted as E while D's install fetches its files.
	filesD, filesE := build(t, nil, "D"), build(t, nil, "E")
	hd := d.to(filesD)
	filesEh := wallet.New(wallet.Config{Files: filesE})
	var restarted atomic.Bool
	cut2 := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("build") == hd.Version() && restarted.CompareAndSwap(false, true) {
			d.h.Store(filesEh)
		}
		return false
	}
	d.cut.Store(&cut2)
	wallettest.Eval[bool](t, b, checkUpdate)
	waitServer(t, "D's install to fetch a file", restarted.Load)
	// D fails (C still waits); the next check finds E and installs it whole.
	wallettest.WaitFor(t, b, time.Minute, "D's install to fail", installEnded(3, "redundant"))
	wallettest.Eval[bool](t, b, checkUpdate)
	wallettest.WaitFor(t, b, time.Minute, "E installed", installEnded(4, "installed"))
	wantCache(t, b, filesEh, filesE)
	if got := wallettest.Eval[string](t, b, pageBuild); got != "B/B" || !wallettest.Eval[bool](t, b, `window.faregoNoReload === true`) {
		t.Fatalf("the page is %s during the updates, want B untouched", got)
	}
	if keys := readCache(t, b, cacheName(hd)).Keys; strings.Contains(strings.Join(keys, " "), cacheName(hd)) {
		t.Errorf("D's failed install left a cache: %v", keys)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("update-now"), chromedp.NodeVisible))
	onBuild(t, b, "E", acct)
	controlledBy(t, b, filesEh)
	wantCache(t, b, filesEh, filesE)
	offlineStillWorks(t, b, "E", acct)
}

// TestWalletUpdateFromThePreviousRelease: a rider on the previous
// release's wallet (whose page knows nothing of updates, and whose worker
// has no record of its build) with a code on screen; the server is
// deployed with this build. The new worker takes over as every update
// did then (the old page cannot ask): the page is left as it is, its
// code on screen, and a reload brings this build, signed in, whole,
// working offline.
func TestWalletUpdateFromThePreviousRelease(t *testing.T) {
	old := build(t, os.DirFS(previousRelease), "R")
	url, g, d, ho := serveBuilds(t, old)
	b, acct := passShown(t, url, g, 10_000)
	onBuild(t, b, "R", acct)
	controlledBy(t, b, ho)
	wantCache(t, b, ho, old)

	filesC := build(t, nil, "C")
	hc := d.to(filesC)
	wallettest.Eval[bool](t, b, `window.faregoNoReload = true`)
	wallettest.Eval[bool](t, b, checkUpdate)
	controlledBy(t, b, hc)
	if !wallettest.Eval[bool](t, b, `window.faregoNoReload === true`) {
		t.Fatal("the old page was reloaded by the update")
	}
	if got := wallettest.Eval[string](t, b, walletCodeText); got == "" {
		t.Fatal("the old page lost its code in the update")
	}
	wantCache(t, b, hc, filesC)
	wallettest.Do(t, b, chromedp.Reload())
	onBuild(t, b, "C", acct)
	if keys := readCache(t, b, cacheName(hc)).Keys; len(keys) != 2 {
		t.Errorf("caches after the update: %v, want C's and the record of builds", keys)
	}
	offlineStillWorks(t, b, "C", acct)
}

// swState logs, if the test fails, the page's service workers (the
// registration's installing, waiting and active states, the controller)
// and what the page knows (debugState): where a stuck update stopped.
func swState(t *testing.T, b context.Context) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(b, 30*time.Second)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(async () => {
  const r = await navigator.serviceWorker.getRegistration("./");
  return JSON.stringify({ controller: !!navigator.serviceWorker.controller, installing: r?.installing?.state ?? null,
    waiting: r?.waiting?.state ?? null, active: r?.active?.state ?? null,
    page: { ...(await import("./app.js")).debugState(), code: undefined } });
})()`, chromedp.EvalAwaitPromise))
		t.Logf("service workers at the failure: %s (err %v)", v, err)
	})
}

// TestWalletUpdateOnReload: the rider reloads a page of build B while C
// waits. The page starts on B and shows its code at once (a rider at the
// bus door never waits for an update) with the Update control beside it;
// the tap brings C, signed in, whole, working offline.
func TestWalletUpdateOnReload(t *testing.T) {
	url, g, d, _ := serveBuilds(t, build(t, nil, "B"))
	b, acct := passShown(t, url, g, 10_000)
	swState(t, b)
	wallettest.WaitFor(t, b, time.Minute, "the service worker to control the page", `navigator.serviceWorker.controller !== null`)
	filesC := build(t, nil, "C")
	hc := d.to(filesC)
	waitingShown(t, b, "B")
	wallettest.Do(t, b, chromedp.Reload())
	onBuild(t, b, "B", acct)
	wallettest.WaitFor(t, b, time.Minute, "the Update control beside the code on B", `!document.getElementById("update").hidden`)
	if got := wallettest.Eval[string](t, b, `(async () => (await import("./app.js")).debugState().updateAsked)()`); got != "" {
		t.Fatalf("the page asked the waiting build to go on (%q) as it started with a code", got)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("update-now"), chromedp.NodeVisible))
	onBuild(t, b, "C", acct)
	controlledBy(t, b, hc)
	wantCache(t, b, hc, filesC)
	offlineStillWorks(t, b, "C", acct)
}

// hide minimizes the tab's window: the page is hidden
// (document.visibilityState), as a phone's wallet put in the background.
func hide(t *testing.T, b context.Context, hidden bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b, time.Minute)
	defer cancel()
	w, err := chromedp.Call(ctx, browser.GetWindowForTarget, browser.GetWindowForTargetParams{})
	if err != nil {
		t.Fatal(err)
	}
	state := browser.WindowStateNormal
	if hidden {
		state = browser.WindowStateMinimized
	}
	if _, err := chromedp.Call(ctx, browser.SetWindowBounds, browser.SetWindowBoundsParams{WindowID: w.WindowID, Bounds: &browser.Bounds{WindowState: state}}); err != nil {
		t.Fatal(err)
	}
	want := "visible"
	if hidden {
		want = "hidden"
	}
	wallettest.WaitFor(t, b, time.Minute, "the page "+want, `document.visibilityState === "`+want+`"`)
}

// TestWalletUpdateWhenHidden: a page with a code on screen put in the
// background while C waits is left alone (no reload, C not asked to go
// on); a page with no code (signed out) put in the background updates by
// itself to C.
func TestWalletUpdateWhenHidden(t *testing.T) {
	url, g, d, hb := serveBuilds(t, build(t, nil, "B"))
	b, _ := passShown(t, url, g, 10_000)
	swState(t, b)
	controlledBy(t, b, hb)
	filesC := build(t, nil, "C")
	hc := d.to(filesC)
	waitingShown(t, b, "B")
	wallettest.Eval[bool](t, b, `(() => { window.faregoHidden = 0; document.addEventListener("visibilitychange", () => { if (document.hidden) window.faregoHidden++; }); return true; })()`)
	hide(t, b, true)
	// The page's own visibilitychange listener came first (it was added
	// at start) and decides at once: it must not have asked.
	wallettest.WaitFor(t, b, time.Minute, "the page to see itself hidden", `window.faregoHidden > 0`)
	if got := wallettest.Eval[string](t, b, `(async () => (await import("./app.js")).debugState().updateAsked)()`); got != "" {
		t.Fatalf("hidden with a code on screen, the page asked the waiting build to go on (%q)", got)
	}
	if !wallettest.Eval[bool](t, b, `window.faregoNoReload === true`) {
		t.Fatal("the page reloaded with a code on screen")
	}
	if !wallettest.Eval[bool](t, b, `(async () => (await navigator.serviceWorker.getRegistration("./")).waiting !== null)()`) {
		t.Fatal("the waiting build went on while a code was on screen")
	}
	hide(t, b, false)

	// Signed out (nothing on screen but the welcome), then hidden: the
	// page updates by itself.
	b2 := wallettest.Browser(t, wallettest.Config{})
	swState(t, b2)
	wallettest.Open(t, b2, url+"/wallet/")
	wallettest.WaitFor(t, b2, time.Minute, "the welcome screen", `!document.getElementById("welcome").hidden`)
	controlledBy(t, b2, hc)
	filesD := build(t, nil, "D")
	hd := d.to(filesD)
	waitingShown2 := `(async () => { const r = await navigator.serviceWorker.getRegistration("./"); await r.update().catch(() => {}); return r.waiting !== null && !document.getElementById("update").hidden; })()`
	wallettest.Eval[bool](t, b2, `window.faregoNoReload = true`)
	wallettest.WaitFor(t, b2, time.Minute, "D offered on the welcome screen", waitingShown2)
	if got := wallettest.Eval[string](t, b2, pageBuild); got != "C/C" {
		t.Fatalf("the page is %s before it was hidden, want C/C", got)
	}
	hide(t, b2, true)
	wallettest.WaitFor(t, b2, time.Minute, "the hidden page on build D", pageBuild+`.then((v) => v === "D/D")`)
	controlledBy(t, b2, hd)
	wantCache(t, b2, hd, filesD)
}

// TestWalletUpdateClockSetBack: C waits (a record of its install's time
// is made a day ahead: the phone's clock was set back since) while D
// installs; the rider taps Update in the middle of D's writing its cache.
// C's activate keeps D's cache, whatever the clock said (it went by the
// clock and deleted it, and D then served from an empty cache): D, tapped
// in next, is whole and opens offline.
func TestWalletUpdateClockSetBack(t *testing.T) {
	url, g, d, hb := serveBuilds(t, build(t, nil, "B"))
	b, acct := passShown(t, url, g, 10_000)
	controlledBy(t, b, hb)
	hc := d.to(build(t, nil, "C"))
	waitingShown(t, b, "B")
	// The record of C's install, as if the clock had been a day ahead then.
	wallettest.Eval[bool](t, b, `(async () => {
  const m = await caches.open("farego-wallet-meta"), k = "/`+cacheName(hc)+`";
  const v = await (await m.match(k)).json();
  if ("started" in v) v.started += 864e5; // a record of the clock's time
  await m.put(k, new Response(JSON.stringify(v)));
  return true; })()`)

	// D's install: its style.css sends half its body and holds the rest.
	filesD := build(t, nil, "D")
	hd := d.to(filesD)
	release := make(chan struct{})
	var held atomic.Bool
	hold := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/wallet/style.css" || r.URL.Query().Get("build") != hd.Version() || held.Swap(true) {
			return false
		}
		rec := httptest.NewRecorder()
		hd.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Write(body[len(body)/2:])
		return true
	}
	d.cut.Store(&hold)
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	wallettest.Eval[bool](t, b, checkUpdate)
	wallettest.WaitFor(t, b, time.Minute, "D's install to write its cache",
		`caches.has("`+cacheName(hd)+`")`)

	wallettest.Do(t, b, chromedp.Click(chromedp.ID("update-now"), chromedp.NodeVisible))
	onBuild(t, b, "C", acct)
	free()
	waitingShown(t, b, "C")
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("update-now"), chromedp.NodeVisible))
	onBuild(t, b, "D", acct)
	wantCache(t, b, hd, filesD)
	offlineStillWorks(t, b, "D", acct)
}
