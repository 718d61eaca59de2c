package wallet_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chromedp/cdproto/page"
	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/api/apitest"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet"
	"github.com/farego/farego/server/wallet/wallettest"
)

// gate stands for the reverse proxy in front of the settlement server: up,
// answering a gateway's HTML error page (the server behind it is down), or
// the API's own rate limit.
type gate struct {
	mode    atomic.Value // "up", "down", "limited"
	rewrite atomic.Value // func(path string, body map[string]any): changes the API's JSON answers (nil: none)
	next    http.Handler
	store   *ledger.Store // the ledger behind it (a test tops an account up)
	// hold, if set, holds the answer to a credential request (made by the
	// server at once) until the channel is closed; arrived hears of it.
	hold    atomic.Pointer[chan struct{}]
	arrived chan string
	// before, if set, sees each request first (a test holds one).
	before atomic.Pointer[func(*http.Request)]
	// serve, if set, may answer a request itself (true: answered).
	serve atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch g.mode.Load() {
	case "down":
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>")
	case "limited":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"error":{"code":"rate_limited","message":"slow down"}}`)
	default:
		if fn := g.before.Load(); fn != nil {
			(*fn)(r)
		}
		if fn := g.serve.Load(); fn != nil && (*fn)(w, r) {
			return
		}
		if h := g.hold.Load(); h != nil && strings.HasSuffix(r.URL.Path, "/credentials") {
			rec := httptest.NewRecorder()
			g.next.ServeHTTP(rec, r)
			g.arrived <- r.URL.Path
			<-*h
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		fn, _ := g.rewrite.Load().(func(string, map[string]any))
		if fn == nil {
			g.next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		g.next.ServeHTTP(rec, r)
		var body map[string]any
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &body) != nil {
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		fn(r.URL.Path, body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(body)
	}
}

// signedIn serves the wallet and the API (behind a gate) and returns a
// browser signed in to a new account, on the account screen.
func signedIn(t *testing.T, lang string) (context.Context, *gate) {
	t.Helper()
	url, g := serveWallet(t)
	b := wallettest.Browser(t, wallettest.Config{Lang: lang})
	signIn(t, b, url, newAccount(t, url))
	return b, g
}

// signIn opens the wallet at url in the browser and signs in to acct, up
// to the account screen.
func signIn(t *testing.T, b context.Context, url string, acct account) {
	t.Helper()
	wallettest.Open(t, b, url+"/wallet/")
	wallettest.Do(t, b,
		chromedp.SetValue(chromedp.ID("signin-account"), fmt.Sprint(acct.ID)),
		chromedp.SetValue(chromedp.ID("signin-secret"), acct.Secret),
		chromedp.Click(chromedp.ID("signin")),
	)
	wallettest.WaitFor(t, b, 30*time.Second, "the account screen", `!document.getElementById("main").hidden`)
	// The pass (or, for an empty account, the warning that there is none)
	// shows after the screen does and moves what is below it: a click by
	// position before then can land on something else.
	wallettest.WaitFor(t, b, 30*time.Second, "the pass or its warning",
		`!document.getElementById("code-view").hidden || !document.getElementById("pass-warning").hidden`)
}

// serveWallet serves the wallet and the API behind a gate, with a fare
// table, and returns its URL.
func serveWallet(t *testing.T) (string, *gate) {
	t.Helper()
	return serveWalletIn(t, "EUR")
}

// serveWalletIn is serveWallet with a ledger in currency.
func serveWalletIn(t *testing.T, currency string) (string, *gate) {
	t.Helper()
	return serveWalletWith(t, currency, api.Config{})
}

// serveWalletWith is serveWalletIn with the API configured as cfg (its
// ledger and keys are the test's).
func serveWalletWith(t *testing.T, currency string, cfg api.Config) (string, *gate) {
	t.Helper()
	return serveWalletFrom(t, currency, cfg, wallet.New(wallet.Config{}))
}

// serveWalletFrom is serveWalletWith with the wallet's files served by
// files (a test deploys another build through it).
func serveWalletFrom(t *testing.T, currency string, cfg api.Config, files http.Handler) (string, *gate) {
	t.Helper()
	wallettest.Chromium(t)
	as := apitest.StartWith(t, apitest.Options{Currency: currency})
	tbl, err := fare.Parse([]byte(`{"version":1,"currency":"` + currency + `","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := as.Store.PutFareTable(context.Background(), tbl); err != nil {
		t.Fatal(err)
	}
	cfg.Ledger, cfg.Keys = as.Store, as.Keys
	g := &gate{next: api.New(cfg), store: as.Store, arrived: make(chan string, 8)}
	g.mode.Store("up")
	mux := http.NewServeMux()
	mux.Handle(wallet.DefaultPrefix, files)
	mux.Handle("/", g)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, g
}

// TestWalletBehindAGateway: a gateway's 502 page is the server being out of
// reach (the indicator says so, the rider's codes still work, no error
// sentence), not an unknown error; an error a refresh showed goes away
// with the next refresh that works.
func TestWalletBehindAGateway(t *testing.T) {
	b, g := signedIn(t, "")
	errorShown := `!document.getElementById("error").hidden`

	// An error from a refresh, then a refresh that works: it goes away.
	g.mode.Store("limited")
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the rate-limit sentence", errorShown)
	g.mode.Store("up")
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the sentence to go once a refresh worked", "!("+errorShown+")")

	// The gateway's 502 page: out of reach, not an error.
	g.mode.Store("down")
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the unreachable indicator", `document.getElementById("net").dataset.state === "unreachable"`)
	if shown := wallettest.Eval[bool](t, b, errorShown); shown {
		t.Errorf("a 502 page shows an error: %q", wallettest.Eval[string](t, b, `document.getElementById("error").textContent`))
	}
	// The new account has no pass: no code works, and the indicator does
	// not say they still do (TestWalletOfflineTap has one that does).
	if txt := wallettest.Eval[string](t, b, `document.getElementById("net").textContent`); txt != "Server unreachable" {
		t.Errorf("indicator %q", txt)
	}
	g.mode.Store("up")
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the online indicator", `document.getElementById("net").dataset.state === "online"`)
}

// TestWalletWarnsOfAWrongClock: a phone clock further from the server's
// than the validators' 30 s tolerance makes codes they refuse while the
// wallet looks fine; the wallet reads the server's clock from its answers
// and says which way and how far, in the rider's language, until it is
// right again.
func TestWalletWarnsOfAWrongClock(t *testing.T) {
	for _, c := range []struct {
		lang, ahead, behind, day, days string
	}{
		{"en-US", "5 min ahead", "3 min behind", "25 h ahead", "3 days behind"},
		{"zh-CN", "快 5 分钟", "慢 3 分钟", "快 25 小时", "慢 3 天"},
	} {
		t.Run(c.lang, func(t *testing.T) {
			b, _ := signedIn(t, c.lang)
			warning := `document.getElementById("clock-warning")`
			if shown := wallettest.Eval[bool](t, b, "!"+warning+".hidden"); shown {
				t.Fatalf("a right clock warned: %q", wallettest.Eval[string](t, b, warning+".textContent"))
			}
			for _, s := range []struct {
				offset time.Duration
				want   string
			}{{5 * time.Minute, c.ahead}, {-3 * time.Minute, c.behind}, {25 * time.Hour, c.day}, {-72 * time.Hour, c.days}} {
				wallettest.Eval[bool](t, b, fmt.Sprintf(`(async () => { (await import("./clock.js")).setOffset(%d); return true; })()`, s.offset.Milliseconds()))
				wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
				wallettest.WaitFor(t, b, 30*time.Second, "the clock warning", "!"+warning+".hidden && "+warning+".textContent.includes("+wallettest.JS(s.want)+")")
			}
			wallettest.Eval[bool](t, b, `(async () => { (await import("./clock.js")).setOffset(10000); return true; })()`)
			wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
			wallettest.WaitFor(t, b, 30*time.Second, "the warning to go (10 s off is within the tolerance)", warning+".hidden")
		})
	}
}

// TestWalletSaysWhy: an account without the balance a pass needs is told
// how much that is; a block the ledger set for a code used twice (on the
// whole account: code_reused_account) is said in a sentence, an operator's
// reason as its word.
func TestWalletSaysWhy(t *testing.T) {
	b, g := signedIn(t, "")
	warning := `document.getElementById("pass-warning")`
	wallettest.WaitFor(t, b, 30*time.Second, "the pass warning", "!"+warning+".hidden")
	if msg := wallettest.Eval[string](t, b, warning+".textContent"); !strings.Contains(msg, "a pass needs a balance of at least €") {
		t.Errorf("an empty account's pass warning: %q", msg)
	}
	standing := `document.getElementById("standing").textContent`
	for reason, want := range map[string]string{"code_reused_account": "used twice", "lost_phone": "(reason: lost_phone)"} {
		g.rewrite.Store(func(path string, body map[string]any) {
			if strings.HasPrefix(path, "/v1/accounts/") && strings.Count(path, "/") == 3 {
				body["denied"], body["deny_reason"] = true, reason
			}
		})
		wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
		wallettest.WaitFor(t, b, 30*time.Second, "the standing for "+reason, standing+".includes("+wallettest.JS(want)+")")
	}
}

// TestWalletNameRefused: a name the server refuses (an invisible character,
// too long for its 128 bytes) is named as the problem, with what to do, in
// the rider's language; nothing is created, and the same form with the name
// fixed registers.
func TestWalletNameRefused(t *testing.T) {
	url, _ := serveWallet(t)
	b := wallettest.Browser(t, wallettest.Config{Lang: "zh-CN"})
	wallettest.Open(t, b, url+"/wallet/")
	for _, name := range []string{"Ada\u200bLovelace", strings.Repeat("张", 60)} {
		wallettest.Eval[bool](t, b, `(document.getElementById("name").value = "`+name+`", true)`)
		wallettest.Do(t, b, chromedp.Click(chromedp.ID("register")))
		wallettest.WaitFor(t, b, 30*time.Second, "the name sentence", `!document.getElementById("error").hidden`)
		if msg := wallettest.Eval[string](t, b, `document.getElementById("error").textContent`); !strings.Contains(msg, "无法使用该姓名") {
			t.Errorf("name %q refused with %q", name, msg)
		}
		if !wallettest.Eval[bool](t, b, `!document.getElementById("welcome").hidden`) {
			t.Fatal("a refused name left the welcome screen")
		}
	}
	wallettest.Do(t, b,
		chromedp.SetValue(chromedp.ID("name"), "张三"),
		chromedp.Click(chromedp.ID("register")),
	)
	wallettest.WaitFor(t, b, 30*time.Second, "the secret screen", `!document.getElementById("secret").hidden`)
	// The name given is the account's on its screen (it was never shown:
	// "账户 17" alone), as after a sign-in elsewhere.
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("secret-done")))
	wallettest.WaitFor(t, b, 30*time.Second, "the account screen", `!document.getElementById("main").hidden`)
	who := `document.getElementById("who").textContent`
	if got := wallettest.Eval[string](t, b, who); !regexp.MustCompile(`^账户 \d+ · 张三$`).MatchString(got) {
		t.Errorf("the account screen says %q, want its number and 张三", got)
	}
	// And on another phone, signed in with the number and secret.
	resp, err := http.Post(url+"/v1/accounts", "application/json", strings.NewReader(`{"profile":"adult","name":"Ada Lovelace"}`))
	if err != nil {
		t.Fatal(err)
	}
	var made struct {
		Account struct {
			ID uint64 `json:"id"`
		} `json:"account"`
		Secret string `json:"secret"`
	}
	err = json.NewDecoder(resp.Body).Decode(&made)
	resp.Body.Close()
	if err != nil || made.Secret == "" {
		t.Fatalf("account: %v", err)
	}
	other := wallettest.Browser(t, wallettest.Config{})
	signIn(t, other, url, account{ID: made.Account.ID, Secret: made.Secret})
	if got, want := wallettest.Eval[string](t, other, who), fmt.Sprintf("Account %d · Ada Lovelace", made.Account.ID); got != want {
		t.Errorf("signed in elsewhere, the account screen says %q, want %q", got, want)
	}
}

// TestWalletLongRoutesWrap: the longest route names and flags the server
// sends (64 characters without a space) wrap inside a 360 px phone screen
// instead of widening the page.
func TestWalletLongRoutesWrap(t *testing.T) {
	b, g := signedIn(t, "")
	long := strings.Repeat("Hauptbahnhof-Flughafen-Express-", 3)[:64]
	g.rewrite.Store(func(path string, body map[string]any) {
		if !strings.HasPrefix(path, "/v1/accounts/") || strings.Count(path, "/") != 3 {
			return
		}
		body["recent_rides"] = []map[string]any{
			{"tap_id": "bus-7/e/1", "time": time.Now().UTC().Format(time.RFC3339), "route": long, "charge": 0, "base_fare": 250,
				"flag": "duplicate_code"},
			{"tap_id": "bus-7/e/2", "time": time.Now().UTC().Format(time.RFC3339), "route": long, "charge": 120, "base_fare": 250,
				"transfer": true, "capped": true},
			// A validator's route with a right-to-left override reads as
			// "42" unless its override is shown; a C1 control shows as
			// nothing.
			{"tap_id": "bus-7/e/3", "time": time.Now().UTC().Format(time.RFC3339), "route": "\u202e24\u009b", "charge": 250, "base_fare": 250},
		}
	})
	wallettest.Do(t, b, chromedp.EmulateViewport(360, 740), chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the rides", `document.querySelectorAll("#rides-body tr").length === 3`)
	if route := wallettest.Eval[string](t, b, `document.querySelector("#rides-body tr:nth-child(3)").cells[1].textContent`); route != "<U+202E>24<U+009B>" {
		t.Errorf("a route with an override and a C1 control shows as %q, want <U+202E>24<U+009B>", route)
	}
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "rides-phone", "#rides")
	if rows := wallettest.Eval[[]string](t, b, `[...document.querySelectorAll("#rides-body tr")].map(
		(tr) => tr.dataset.tap + "|" + tr.cells[2].className + "|" + tr.cells[3].textContent)`); len(rows) != 3 ||
		rows[1] != "bus-7/e/2|amount|Transfer, Daily cap reached" {
		t.Errorf("the rides' rows: %q", rows)
	}
	if over := wallettest.Eval[int](t, b, `document.documentElement.scrollWidth - document.documentElement.clientWidth`); over > 2 {
		t.Errorf("the account screen with long routes is %d px wider than a 360 px phone", over)
	}
}

// TestWalletChangesItsSecret: "Change account secret", confirmed, shows a
// new secret to write down (as at sign-up); the old one no longer opens the
// account, the new one does, and the wallet goes on with it: the pass it
// held is denied (a lost phone's passes stop with the secret) and it
// fetches a new one.
func TestWalletChangesItsSecret(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 10_000, "psp-secret-test"); err != nil {
		t.Fatal(err)
	}
	get := func(secret string) int {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/accounts/%d", url, acct.ID), nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "pass 1", passState+`.startsWith("Pass 1 ")`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("change-secret"), chromedp.NodeVisible))
	if !wallettest.Eval[bool](t, b, `!document.getElementById("main").hidden && !document.getElementById("change-secret-confirm").hidden`) {
		t.Fatal("no confirmation asked")
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("change-secret-yes"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the new secret", `!document.getElementById("secret").hidden`)
	fresh := wallettest.Eval[string](t, b, `document.getElementById("secret-value").textContent`)
	if len(fresh) != 64 || fresh == acct.Secret {
		t.Fatalf("shown secret %q", fresh)
	}
	if c := get(acct.Secret); c != http.StatusForbidden {
		t.Errorf("the old secret: %d, want 403", c)
	}
	if c := get(fresh); c != http.StatusOK {
		t.Errorf("the new secret: %d, want 200", c)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("secret-done"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the account screen again", `!document.getElementById("main").hidden`)
	// Pass 1 was denied with the old secret; the wallet fetched pass 2
	// with the new one and shows its codes.
	wallettest.WaitFor(t, b, 30*time.Second, "pass 2", passState+`.startsWith("Pass 2 ") && !document.getElementById("code-view").hidden`)
	entries, err := g.store.DenyEntries(context.Background(), acct.ID)
	if err != nil || len(entries) != 1 || entries[0].Serial != 1 || entries[0].Reason != ledger.ReasonSecretReplaced {
		t.Errorf("deny entries after the change: %+v, %v; want pass 1 (%s)", entries, err, ledger.ReasonSecretReplaced)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	if wallettest.Eval[bool](t, b, `!document.getElementById("error").hidden`) {
		t.Errorf("after the change: %q", wallettest.Eval[string](t, b, `document.getElementById("error").textContent`))
	}
	// The confirmation says what happens to the passes elsewhere (it said
	// they kept working for 24 h: they are denied), and one left open is
	// closed by signing out, not shown to the next account.
	// Clicked by the element, not by its place: the page below may move
	// (a pass, a refresh) between finding a button and clicking there.
	wallettest.Eval[bool](t, b, `(document.getElementById("change-secret").click(), true)`)
	if text := wallettest.Eval[string](t, b, `document.getElementById("change-secret-confirm").textContent`); !strings.Contains(text, "blocked too") ||
		strings.Contains(text, "24 h") {
		t.Errorf("the confirmation says %q", text)
	}
	wallettest.Eval[bool](t, b, `(document.getElementById("sign-out").click(), document.getElementById("sign-out-yes").click(), true)`)
	wallettest.WaitFor(t, b, 30*time.Second, "the welcome screen", `!document.getElementById("welcome").hidden`)
	signIn(t, b, url, account{ID: acct.ID, Secret: fresh})
	if wallettest.Eval[bool](t, b, `!document.getElementById("change-secret-confirm").hidden`) {
		t.Error("the change-secret confirmation is open after signing out and in")
	}
}

// TestWalletChangesItsSecretDuringAFetch: the rider changes the secret
// while the wallet's first pass is on its way, issued with the old secret
// just before the change (so deny-listed by it). The wallet does not keep
// that pass: it fetches one with the new secret and shows it.
func TestWalletChangesItsSecretDuringAFetch(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 10_000, "psp-race"); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	g.hold.Store(&release)
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Open(t, b, url+"/wallet/")
	wallettest.Do(t, b,
		chromedp.SetValue(chromedp.ID("signin-account"), fmt.Sprint(acct.ID)),
		chromedp.SetValue(chromedp.ID("signin-secret"), acct.Secret),
		chromedp.Click(chromedp.ID("signin")),
	)
	select {
	case <-g.arrived: // pass 1 is issued; its answer is held
	case <-time.After(30 * time.Second):
		t.Fatal("the wallet asked for no pass")
	}
	g.hold.Store(nil)
	wallettest.WaitFor(t, b, 30*time.Second, "the account screen", `!document.getElementById("main").hidden`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("change-secret"), chromedp.NodeVisible))
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("change-secret-yes"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the new secret", `!document.getElementById("secret").hidden`)
	close(release) // pass 1 arrives now, denied with the old secret
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("secret-done"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "pass 2", `document.getElementById("pass-state").textContent.startsWith("Pass 2 ") && `+
		`!document.getElementById("code-view").hidden && document.getElementById("pass-warning").hidden`)
	entries, err := g.store.DenyEntries(context.Background(), acct.ID)
	if err != nil || len(entries) != 1 || entries[0].Serial != 1 {
		t.Errorf("deny entries %+v, %v; want pass 1's", entries, err)
	}
}

// TestWalletBlockedPass: the operator blocks the wallet's pass (a
// credential deny): at its next refresh the wallet says so, shows no code
// (every validator would refuse it) and fetches a new pass, whose code it
// shows. When the whole account is blocked the pass says that, with no
// code. It used to keep saying "Pass 1 is valid" and show codes the buses
// refused ("see your app"), for up to 12 hours.
func TestWalletBlockedPass(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	ctx := context.Background()
	if _, err := g.store.TopUp(ctx, acct.ID, 10_000, "psp-blocked"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	state := `document.getElementById("pass-state").textContent`
	wallettest.WaitFor(t, b, 30*time.Second, "pass 1", state+`.startsWith("Pass 1 ")`)
	if err := g.store.Deny(ctx, acct.ID, 1, "lost_phone"); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "a new pass, 2, with its code",
		state+`.startsWith("Pass 2 ") && !document.getElementById("code-view").hidden`)

	if err := g.store.Deny(ctx, acct.ID, 0, "fraud"); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the account blocked, no code",
		state+`.includes("account is blocked") && document.getElementById("code-view").hidden`)
}

// TestWalletSecretChangedElsewhere: the account's secret is changed on
// another phone (or reset by the operator) while this wallet is signed in.
// At its next refresh the wallet finds its secret refused, says why, and
// forgets the account and its keys (its pass was deny-listed with the
// secret) instead of showing "wrong secret" and codes that no longer pay.
func TestWalletSecretChangedElsewhere(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 10_000, "psp-elsewhere"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "pass 1", `document.getElementById("pass-state").textContent.startsWith("Pass 1 ")`)
	req, _ := http.NewRequest("POST", fmt.Sprintf("%s/v1/accounts/%d/secret", url, acct.ID), nil)
	req.Header.Set("Authorization", "Bearer "+acct.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("secret changed elsewhere: %d", resp.StatusCode)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the sign-in screen", `!document.getElementById("welcome").hidden && document.getElementById("main").hidden`)
	if msg := wallettest.Eval[string](t, b, `document.getElementById("error").textContent`); !strings.Contains(msg, "secret was changed") {
		t.Errorf("the message shown: %q", msg)
	}
	left := wallettest.Eval[int](t, b, `new Promise((ok, fail) => {
		const r = indexedDB.open("farego-wallet");
		r.onerror = () => fail(r.error);
		r.onsuccess = () => {
			const c = r.result.transaction("credentials").objectStore("credentials").count();
			c.onsuccess = () => ok(c.result);
			c.onerror = () => fail(c.error);
		};
	})`)
	if left != 0 {
		t.Errorf("%d credentials still stored after the secret was changed elsewhere", left)
	}
}

// TestWalletPaymentLimit: the rider sets the most a shop may take for one
// code; the wallet sends it in minor units (20.50 → 2050), shows it, refuses
// what is not an amount without asking the server, and an empty field
// removes the limit.
// TestWalletSaysTooManyChanges: a change the server refuses for the limit
// on riders' changes from one address (429) is said as such; the wallet
// said every 429 was "Too many new accounts were made from this network".
func TestWalletSaysTooManyChanges(t *testing.T) {
	// The API's clock stands still: no change comes back to the
	// address's bucket while the browser's is under way.
	frozen := time.Now()
	url, _ := serveWalletWith(t, "EUR", api.Config{Now: func() time.Time { return frozen }})
	acct := newAccount(t, url)
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	change := func() int {
		req, err := http.NewRequest("PUT", fmt.Sprintf("%s/v1/accounts/%d/payment_limit", url, acct.ID), strings.NewReader(`{"amount":100}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+acct.Secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := change(); c != http.StatusOK {
		t.Fatalf("a change: %d", c)
	}
	state := `document.getElementById("limit-state").textContent`
	wallettest.WaitFor(t, b, 30*time.Second, "the limit shown", state+`.includes("1.00")`)
	// This address's changes used up (the browser's is the same).
	for i := 0; change() != http.StatusTooManyRequests; i++ {
		if i == 100 {
			t.Fatal("100 changes in a row taken")
		}
	}
	wallettest.Eval[bool](t, b, `(document.getElementById("limit-amount").value = "20.50", true)`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("limit-save"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the refusal said", `!document.getElementById("error").hidden`)
	if msg := wallettest.Eval[string](t, b, `document.getElementById("error").textContent`); !strings.Contains(msg, "Too many changes to accounts") {
		t.Errorf("a change refused for the rate of changes says %q", msg)
	}
}

func TestWalletPaymentLimit(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	// An empty account has no pass, for its balance: online, the wallet
	// does not tell the rider to connect to the internet.
	wallettest.WaitFor(t, b, 30*time.Second, "no pass, and why", `!document.getElementById("pass-warning").hidden`)
	if text := wallettest.Eval[string](t, b, `document.getElementById("pass-state").textContent`); text != "No pass on this phone yet." {
		t.Errorf("online without a pass: %q", text)
	}
	limitOf := func() int64 {
		a, err := g.store.Account(context.Background(), acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		return a.PaymentLimit
	}
	state := `document.getElementById("limit-state").textContent`
	wallettest.WaitFor(t, b, 30*time.Second, "no limit shown", state+`.includes("any amount")`)
	set := func(text string) {
		t.Helper()
		wallettest.Eval[bool](t, b, fmt.Sprintf(`(document.getElementById("limit-amount").value = %q, true)`, text))
		wallettest.Do(t, b, chromedp.Click(chromedp.ID("limit-save"), chromedp.NodeVisible))
	}
	set("20.50")
	wallettest.WaitFor(t, b, 30*time.Second, "the limit shown", state+`.includes("20.50")`)
	if l := limitOf(); l != 2050 {
		t.Errorf("limit %d in the ledger, want 2050", l)
	}
	// On a phone the form is a screen below the message's place at the
	// top: the message is brought into view (it stayed above it, unseen).
	wallettest.Do(t, b, chromedp.EmulateViewport(360, 640))
	inView := `(() => { const r = document.getElementById("error").getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; })()`
	for bad, says := range map[string]string{"-5": "such as 20", "2.505": "at most 2 decimals", "0.001": "at most 2 decimals",
		"lots": "such as 20", "0": "such as 20", // 0 would clear the limit
		"0.00": "such as 20", "999999999999": "at most €1,000,000,000.00", "99999999999999": "at most €1,000,000,000.00"} {
		wallettest.Eval[bool](t, b, `(window.scrollTo(0, 0), document.getElementById("limit-amount").scrollIntoView(), true)`)
		if wallettest.Eval[bool](t, b, inView) && !wallettest.Eval[bool](t, b, `document.getElementById("error").hidden`) {
			t.Fatal("the set-up: the message's place is in view with the form")
		}
		set(bad)
		wallettest.WaitFor(t, b, 30*time.Second, "the sentence for "+bad, `!document.getElementById("error").hidden && `+
			`document.getElementById("error").textContent.includes(`+strconv.Quote(says)+`)`)
		if !wallettest.Eval[bool](t, b, inView) {
			t.Errorf("after %q: the message is out of view", bad)
		}
		if l := limitOf(); l != 2050 {
			t.Errorf("after %q: limit %d in the ledger, want 2050", bad, l)
		}
	}
	set("")
	wallettest.WaitFor(t, b, 30*time.Second, "no limit shown again", state+`.includes("any amount")`)
	if l := limitOf(); l != 0 {
		t.Errorf("limit %d in the ledger after clearing it, want none", l)
	}
}

// TestWalletCurrencyDigits: a ledger in forints counts in fillér (1/100,
// ISO 4217), although browsers format HUF without decimals (CLDR): the
// wallet shows 450.00 HUF for 45,000 minor units, not 45,000 HUF, and a
// limit typed as 20.50 is 2,050 in the ledger. The wallet took the
// browser's decimals: it showed 100 times the balance, refused "20.50"
// and stored a limit typed as 5000 as 50.00.
func TestWalletCurrencyDigits(t *testing.T) {
	url, g := serveWalletIn(t, "HUF")
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 45000, "psp-1"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	balance := `document.getElementById("balance").textContent`
	wallettest.WaitFor(t, b, 30*time.Second, "the balance with two decimals", balance+`.includes("450.00")`)
	if got := wallettest.Eval[string](t, b, balance); strings.Contains(got, "45,000") {
		t.Errorf("balance shown as %q", got)
	}
	wallettest.Eval[bool](t, b, `(document.getElementById("limit-amount").value = "20.50", true)`)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("limit-save"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the limit shown", `document.getElementById("limit-state").textContent.includes("20.50")`)
	if a, err := g.store.Account(context.Background(), acct.ID); err != nil || a.PaymentLimit != 2050 {
		t.Errorf("limit %d, %v in the ledger; want 2050", a.PaymentLimit, err)
	}
}

// TestWalletWholeCurrencyLimit: in a currency without decimals (yen) the
// wallet's limit messages give an example a rider can type: "20.50", their
// example before, is itself refused there.
func TestWalletWholeCurrencyLimit(t *testing.T) {
	url, g := serveWalletIn(t, "JPY")
	acct := newAccount(t, url)
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "no limit shown", `document.getElementById("limit-state").textContent.includes("any amount")`)
	for bad, says := range map[string]string{"20.50": "Use a whole amount, such as 20.", "lots": "such as 20, or leave"} {
		wallettest.Eval[bool](t, b, fmt.Sprintf(`(document.getElementById("limit-amount").value = %q, true)`, bad))
		wallettest.Do(t, b, chromedp.Click(chromedp.ID("limit-save"), chromedp.NodeVisible))
		wallettest.WaitFor(t, b, 30*time.Second, "the sentence for "+bad, `!document.getElementById("error").hidden && `+
			`document.getElementById("error").textContent.includes(`+strconv.Quote(says)+`)`)
		if text := wallettest.Eval[string](t, b, `document.getElementById("error").textContent`); strings.Contains(text, ".50") {
			t.Errorf("after %q: %q gives an example with decimals", bad, text)
		}
	}
	if a, err := g.store.Account(context.Background(), acct.ID); err != nil || a.PaymentLimit != 0 {
		t.Errorf("limit %d, %v in the ledger; want none", a.PaymentLimit, err)
	}
}

// TestWalletDigitsTable: the wallet's table of currencies whose minor unit
// is not 1/100 (used until the server names the account's) is the
// server's.
func TestWalletDigitsTable(t *testing.T) {
	src, err := os.ReadFile("static/i18n.js")
	if err != nil {
		t.Fatal(err)
	}
	body := regexp.MustCompile(`(?s)const ISO_DIGITS = \{(.*?)\};`).FindSubmatch(src)
	if body == nil {
		t.Fatal("no ISO_DIGITS in i18n.js")
	}
	js := map[string]int{}
	for _, m := range regexp.MustCompile(`([A-Z]{3}): (\d)`).FindAllSubmatch(body[1], -1) {
		js[string(m[1])] = int(m[2][0] - '0')
	}
	for cur, d := range js {
		if got := feedback.CurrencyDigits(cur); got != d {
			t.Errorf("%s: the wallet says %d decimals, the server %d", cur, d, got)
		}
	}
	for _, cur := range feedback.NonDecimalCurrencies() {
		if _, ok := js[cur]; !ok {
			t.Errorf("%s (%d decimals) is missing from the wallet's table", cur, feedback.CurrencyDigits(cur))
		}
	}
}

// account is a new rider account: its id and secret.
type account struct {
	ID     uint64
	Secret string
}

// newAccount creates an adult account through the API at url.
func newAccount(t *testing.T, url string) account {
	t.Helper()
	resp, err := http.Post(url+"/v1/accounts", "application/json", bytes.NewReader([]byte(`{"profile":"adult"}`)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Account struct {
			ID uint64 `json:"id"`
		} `json:"account"`
		Secret string `json:"secret"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Secret == "" {
		t.Fatalf("account: %v", err)
	}
	return account{ID: out.Account.ID, Secret: out.Secret}
}

// TestWalletWarnsOfALowBalance: the pass was issued on a balance that
// covered a fare; a shop then took most of it (or rides did). The pass
// still makes codes for the rest of its day, and the wallet said "good
// standing" below one fare (€2.50): the next ride left the account below
// zero and blocked it, and the rider learnt it at the following door.
// Below what a new pass needs, it says to top up, and how much that is.
func TestWalletWarnsOfALowBalance(t *testing.T) {
	url, g := serveWallet(t)
	b, acct := passShown(t, url, g, 10_000)
	if s := wallettest.Eval[string](t, b, `document.getElementById("standing").textContent`); s != "Your account is in good standing." {
		t.Errorf("with €100.00 the standing says %q", s)
	}
	shopActivity(t, g, acct, "EUR", 100, 9_950, 50) // €2.00 left
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the balance", `document.getElementById("balance").textContent === "€2.00"`)
	if s := wallettest.Eval[string](t, b, `document.getElementById("standing").textContent`); !strings.Contains(s, "Top up") || !strings.Contains(s, "€2.50") {
		t.Errorf("with €2.00 left, below one fare of €2.50, the standing says %q", s)
	}
	if text := wallettest.Eval[string](t, b, walletCodeText); text == "" {
		t.Errorf("with €2.00 left, the pass shows no code: %q", wallettest.Eval[string](t, b, passState))
	}
}

// TestWalletWarnsOfALowBalanceOnCredit: with a credit line of €10.00 a
// pass needs a balance of -€7.50; at -€9.00 the wallet said "good
// standing" (pass_minimum was clamped at 0 and left out) while no new pass
// was issued and the next ride blocked the account.
func TestWalletWarnsOfALowBalanceOnCredit(t *testing.T) {
	url, g := serveWallet(t)
	b, acct := passShown(t, url, g, 10_000)
	if _, err := g.store.SetCreditLine(context.Background(), acct.ID, 1_000, ""); err != nil {
		t.Fatal(err)
	}
	shopActivity(t, g, acct, "EUR", 100, 11_100, 100) // -€9.00
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh"), chromedp.NodeVisible))
	wallettest.WaitFor(t, b, 30*time.Second, "the balance", `document.getElementById("balance").textContent === "-€9.00"`)
	if s := wallettest.Eval[string](t, b, `document.getElementById("standing").textContent`); !strings.Contains(s, "Top up") || !strings.Contains(s, "7.50") {
		t.Errorf("at -€9.00 on a credit line of €10.00, the standing says %q", s)
	}
}

// TestWalletShowsActivity: the rider sees a shop's payment and its refund
// in the account's activity, with the shop's name and the balance after
// each, newest first (a rogue shop's payment does not go unseen).
func TestWalletShowsActivity(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	shopActivity(t, g, acct, "EUR", 10_000, 450, 150)
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "the activity", `document.querySelectorAll("#activity-body tr").length === 3`)
	rows := wallettest.Eval[[]string](t, b, `[...document.querySelectorAll("#activity-body tr")].map(
		(tr) => tr.dataset.kind + "|" + [...tr.cells].slice(1).map((td) => td.textContent).join("|"))`)
	want := []string{"refund|Refund from Corner Café|+€1.50|€97.00", "payment|Paid at Corner Café|-€4.50|€95.50",
		"topup|Top-up|+€100.00|€100.00"}
	if !slices.Equal(rows, want) {
		t.Errorf("activity rows\n got %q\nwant %q", rows, want)
	}
}

// TestWalletEarlierActivity: the wallet shows the newest 10 entries of
// the statement; "Earlier activity" loads the older ones under them, in
// order and with their balances, and goes away at the first posting; a
// new posting brings the view back to the newest 10.
func TestWalletEarlierActivity(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	ctx := context.Background()
	for i := range 25 {
		if _, err := g.store.TopUp(ctx, acct.ID, int64(100*(i+1)), fmt.Sprintf("psp-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b := wallettest.Browser(t, wallettest.Config{})
	signIn(t, b, url, acct)
	const rows = `[...document.querySelectorAll("#activity-body tr")]`
	const more = `!document.getElementById("activity-more").hidden`
	wallettest.WaitFor(t, b, 30*time.Second, "the newest 10 and the button", rows+`.length === 10 && `+more)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("activity-more")))
	wallettest.WaitFor(t, b, 30*time.Second, "all 25 entries", rows+`.length === 25`)
	seqs := wallettest.Eval[[]string](t, b, rows+`.map((tr) => tr.dataset.seq)`)
	for i, s := range seqs {
		if s != fmt.Sprint(25-i) {
			t.Fatalf("entries by seq %v, want 25 down to 1", seqs)
		}
	}
	if first := wallettest.Eval[string](t, b, rows+`.at(-1).cells[3].textContent`); first != "€1.00" {
		t.Errorf("the first entry's balance after: %q, want €1.00", first)
	}
	if wallettest.Eval[bool](t, b, more) {
		t.Errorf("the button stays after the first posting")
	}
	if _, err := g.store.TopUp(ctx, acct.ID, 1, "psp-new"); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("refresh")))
	wallettest.WaitFor(t, b, 30*time.Second, "the newest 10 again", rows+`.length === 10 && `+rows+`[0].dataset.seq === "26" && `+more)
}

// TestWalletActivityFitsAPhone: on a 360 px phone the activity of an
// account in a currency with wide amounts (HUF 1,234.56) and a shop's
// name does not widen the page, and no amount is cut off (the page was
// 398 px wide, the balance column clipped at the card's edge and the
// shop's name wrapped letter by letter).
func TestWalletActivityFitsAPhone(t *testing.T) {
	url, g := serveWalletIn(t, "HUF")
	acct := newAccount(t, url)
	shopActivity(t, g, acct, "HUF", 1_234_567_89, 12_345_67, 1_000_00)
	b := wallettest.Browser(t, wallettest.Config{})
	wallettest.Do(t, b, chromedp.EmulateViewport(360, 740))
	signIn(t, b, url, acct)
	wallettest.WaitFor(t, b, 30*time.Second, "the activity", `document.querySelectorAll("#activity-body tr").length === 3`)
	wallettest.Screenshot(t, b, wallettest.ArtifactDir(t), "activity-phone", "#activity")
	if over := wallettest.Eval[int](t, b, `document.documentElement.scrollWidth - document.documentElement.clientWidth`); over > 2 {
		t.Errorf("the account screen is %d px wider than a 360 px phone", over)
	}
	// Every amount whole inside its cell, and the shop's name not broken
	// inside a word.
	if cut := wallettest.Eval[[]string](t, b, `[...document.querySelectorAll("#activity-body td.amount")].filter(
		(td) => td.scrollWidth > td.clientWidth + 1).map((td) => td.textContent)`); len(cut) > 0 {
		t.Errorf("amounts cut off: %q", cut)
	}
	if lines := wallettest.Eval[int](t, b, `(() => { const td = document.querySelector("#activity-body tr[data-kind=refund] td:nth-child(2)");
		const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length; })()`); lines > 4 {
		t.Errorf("'Refund from Corner Café' (4 words) takes %d lines: broken inside a word", lines)
	}
}

// TestWalletFollowsTheRidersTextSize: a rider who set a larger default
// text size in the browser gets larger text in the wallet; the root size
// was 18 px whatever the setting (the rider's review: only page zoom
// scaled it).
func TestWalletFollowsTheRidersTextSize(t *testing.T) {
	url, _ := serveWallet(t)
	b := wallettest.Browser(t, wallettest.Config{})
	root := func() string {
		return wallettest.Eval[string](t, b, `getComputedStyle(document.documentElement).fontSize`)
	}
	wallettest.Open(t, b, url+"/wallet/")
	if got := root(); got != "18px" {
		t.Errorf("at the browser's default text size (16 px) the wallet's is %s, want 18px", got)
	}
	ctx, cancel := context.WithTimeout(b, time.Minute)
	defer cancel()
	if _, err := chromedp.Call(ctx, page.SetFontSizes, page.SetFontSizesParams{FontSizes: &page.FontSizes{Standard: 24}}); err != nil {
		t.Fatal(err)
	}
	wallettest.Do(t, b, chromedp.Reload())
	if got := root(); got != "27px" {
		t.Errorf("with the rider's default text size at 24 px the wallet's is %s, want 27px", got)
	}
}

// TestWalletOnAnInsecurePage: a wallet opened over plain http at an
// address other than localhost (the server on a LAN address) cannot make
// codes: browsers give WebCrypto to secure pages only. It says to open
// the https address (it said "Something went wrong (error TypeError)").
func TestWalletOnAnInsecurePage(t *testing.T) {
	url, g := serveWallet(t)
	acct := newAccount(t, url)
	if _, err := g.store.TopUp(context.Background(), acct.ID, 10_000, "psp-insecure"); err != nil {
		t.Fatal(err)
	}
	b := wallettest.Browser(t, wallettest.Config{HostRules: "MAP wallet.test 127.0.0.1"})
	signIn(t, b, strings.Replace(url, "127.0.0.1", "wallet.test", 1), acct)
	if wallettest.Eval[bool](t, b, `window.isSecureContext`) {
		t.Fatal("the set-up: the page is a secure context")
	}
	wallettest.WaitFor(t, b, 30*time.Second, "the sentence", `!document.getElementById("pass-warning").hidden &&
		document.getElementById("pass-warning").textContent.includes("https://")`)
}

// shopActivity gives the account a top-up, then a payment at the Corner
// Café with a pass from the rider's other phone, and a refund of part of
// it, all in the ledger's currency.
func shopActivity(t *testing.T, g *gate, acct account, currency string, topUp, paid, refunded int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := g.store.TopUp(ctx, acct.ID, topUp, "psp-activity"); err != nil {
		t.Fatal(err)
	}
	seed := sha256.Sum256([]byte("the rider's other phone"))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	serial, err := g.store.IssueCredentialSerial(ctx, acct.ID, time.Now().Add(time.Hour), pub)
	if err != nil {
		t.Fatal(err)
	}
	id := paycode.ID{Account: acct.ID, Serial: serial, Time: uint32(time.Now().Unix())}
	if _, _, err := g.store.Pay(ctx, ledger.PaymentRequest{MerchantID: "Corner Café", OrderID: "o-1", Account: acct.ID,
		Serial: serial, RiderKey: pub, CodeKey: id.Key(), CodeHash: "abc", Amount: paid, Currency: currency}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.store.RefundPayment(ctx, ledger.RefundRequest{MerchantID: "Corner Café", OrderID: "o-1",
		RefundID: "r-1", Amount: refunded}); err != nil {
		t.Fatal(err)
	}
}
