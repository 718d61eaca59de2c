package console

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/api/apitest"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

// fixture is a console on a real SQLite ledger and key directory, with the
// JSON API beside it, served on a loopback port.
type fixture struct {
	t       testing.TB
	store   *ledger.Store
	keys    *keys.Dir
	h       *Handler
	srv     *httptest.Server
	opToken string // the operator token file's
	clock   *testClock
}

type testClock struct {
	mu sync.Mutex
	d  time.Duration // ahead of the real clock
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.d)
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.d += d
	c.mu.Unlock()
}

const testFares = `{"version":1,"currency":"EUR","timezone":"Europe/Berlin","service_day_start":"04:00",
	"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180},"X1":{"adult":400}},
	"transfer":{"window":"60m","fare":0},"daily_cap":{"adult":700}}`

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureIn(t, "EUR", testFares)
}

// newFixtureIn is newFixture with a ledger in currency and a fare table.
func newFixtureIn(t *testing.T, currency, fares string) *fixture {
	t.Helper()
	return newFixtureWith(t, apitest.Options{Currency: currency}, fares)
}

// newFixtureWith is newFixtureIn with the ledger's options (its clock).
func newFixtureWith(t *testing.T, o apitest.Options, fares string) *fixture {
	t.Helper()
	as := apitest.StartWith(t, o) // the ledger and the key directory
	tok, err := os.ReadFile(as.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fare.Parse([]byte(fares))
	if err != nil {
		t.Fatal(err)
	}
	if err := as.Store.PutFareTable(context.Background(), tbl); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, store: as.Store, keys: as.Keys, opToken: strings.TrimSpace(string(tok)), clock: &testClock{}}
	a := api.New(api.Config{Ledger: as.Store, Keys: as.Keys})
	f.h = New(Config{Ledger: as.Store, Keys: as.Keys, API: a, Now: f.clock.now})
	f.srv = newServer(f.h, a)
	t.Cleanup(func() {
		f.srv.Close()
		if err := as.Store.CheckInvariants(context.Background()); err != nil {
			t.Errorf("ledger invariants: %v", err)
		}
	})
	return f
}

// newServer serves the console and the API beside it, as farego-settlement
// does.
func newServer(h *Handler, a *api.Handler) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle(DefaultPrefix, h)
	mux.Handle("/", a)
	return httptest.NewServer(mux)
}

// token makes an API token of a role and returns it.
func (f *fixture) token(role string) string {
	f.t.Helper()
	tok, err := api.CreateToken(context.Background(), f.store, role, "", role+" test")
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Token
}

// browser is an HTTP client with its own cookie jar that sends what a
// browser on the console's pages sends.
type browser struct {
	f      *fixture
	c      *http.Client
	origin string // the Origin header of its POSTs ("" none)
}

func (f *fixture) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{f: f, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}, origin: f.srv.URL}
}

func (b *browser) get(path string) (int, string) {
	b.f.t.Helper()
	resp, err := b.c.Get(b.f.srv.URL + path)
	if err != nil {
		b.f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) post(path string, form url.Values, header ...string) (*http.Response, string) {
	b.f.t.Helper()
	req, _ := http.NewRequest("POST", b.f.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// signIn signs the browser in with a token and returns the session's CSRF
// token (read from a page, as a form would carry it).
func (b *browser) signIn(token string) string {
	b.f.t.Helper()
	resp, body := b.post("/console/signin", url.Values{"token": {token}})
	if resp.StatusCode != http.StatusSeeOther {
		b.f.t.Fatalf("sign-in: %d %s", resp.StatusCode, body)
	}
	return b.csrf()
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`)

func (b *browser) csrf() string {
	b.f.t.Helper()
	code, body := b.get("/console/")
	m := csrfRE.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		b.f.t.Fatalf("overview: %d, no CSRF token in the page", code)
	}
	return m[1]
}

func (f *fixture) device(id string) {
	f.t.Helper()
	seed := sha256.Sum256([]byte(id))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	if err := f.store.RegisterDevice(context.Background(), ledger.DeviceRegistration{ID: id, PublicKey: pub, MQTTHash: "h"}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) revoked(id string) bool {
	f.t.Helper()
	d, err := f.store.Device(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return !d.Revoked.IsZero()
}

// Signing in: the operator token file and operator and auditor tokens
// open a session (an HttpOnly, SameSite=Strict cookie on /console/);
// unknown, revoked, payments and merchant tokens do not.
func TestSignIn(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	if code, _ := b.get("/console/fleet"); code != http.StatusSeeOther {
		t.Fatalf("a page without a session: %d, want a redirect to sign in", code)
	}
	revoked := f.token(ledger.RoleOperator)
	sum := sha256.Sum256([]byte(revoked))
	tk, _ := f.store.TokenByHash(context.Background(), sum[:])
	if err := f.store.RevokeToken(context.Background(), tk.ID); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"", "nonsense", api.TokenPrefix + "abcdefgh_xyz", revoked, f.token(ledger.RolePayments)} {
		resp, body := b.post("/console/signin", url.Values{"token": {tok}})
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 || !strings.Contains(body, `id="signin-error"`) {
			t.Errorf("sign-in with %.12q: %d, cookies %v", tok, resp.StatusCode, resp.Cookies())
		}
	}
	// A token pasted with the API's "Bearer " before it opens the session
	// too (it was refused as unknown).
	for _, tc := range []struct{ tok, role string }{{f.opToken, "operator · init"}, {f.token(ledger.RoleAuditor), "auditor · "},
		{"Bearer " + f.opToken, "operator · init"}} {
		b := f.browser()
		resp, _ := b.post("/console/signin", url.Values{"token": {tc.tok}, "next": {"/console/fleet"}})
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/fleet" {
			t.Fatalf("sign-in: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		c := resp.Cookies()[0]
		if c.Name != CookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/console/" || c.Secure || len(c.Value) != 43 {
			t.Errorf("cookie %+v", c)
		}
		if _, body := b.get("/console/"); !strings.Contains(body, tc.role) {
			t.Errorf("the page does not show who is signed in (%s)", tc.role)
		}
	}
	// Reached over https (a TLS-terminating proxy): the cookie is Secure.
	b = f.browser()
	b.origin = "https://" + strings.TrimPrefix(f.srv.URL, "http://")
	resp, _ := b.post("/console/signin", url.Values{"token": {f.opToken}})
	if c := resp.Cookies(); len(c) != 1 || !c[0].Secure {
		t.Errorf("over https: cookies %+v, want a Secure one", c)
	}
	// An open redirect through next is not followed.
	resp, _ = f.browser().post("/console/signin", url.Values{"token": {f.opToken}, "next": {"//evil.example/console/"}})
	if loc := resp.Header.Get("Location"); loc != "/console/" {
		t.Errorf("next=//evil.example: redirected to %q", loc)
	}
	es, _ := f.store.AuditLog(context.Background(), 0, 10)
	if len(es) == 0 || es[0].Action != "console_signin" || !strings.HasSuffix(es[0].Actor, "via console") {
		t.Errorf("audit trail: %+v", es)
	}
}

// Every POST must come from the console's own pages with the session's
// CSRF token: without it, from another origin, from another site, or with
// no Origin or Referer at all, nothing is done. With everything, the first
// POST asks for confirmation, the second makes the change, audited.
func TestForgedPostsRefused(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	b := f.browser()
	csrf := b.signIn(f.opToken)
	revoke := func(csrf string, confirm bool, header ...string) (int, string) {
		form := url.Values{"device": {"bus-1"}, "csrf": {csrf}}
		if confirm {
			form.Set("confirm", "yes")
		}
		resp, body := b.post("/console/act/revoke_device", form, header...)
		return resp.StatusCode, body
	}
	for name, tc := range map[string]struct {
		csrf   string
		header []string
	}{
		"no csrf":             {"", nil},
		"wrong csrf":          {strings.Repeat("0", 64), nil},
		"other origin":        {csrf, []string{"Origin", "http://127.0.0.1:1"}},
		"cross-site fetch":    {csrf, []string{"Sec-Fetch-Site", "cross-site"}},
		"same-site fetch":     {csrf, []string{"Sec-Fetch-Site", "same-site"}},
		"null origin":         {csrf, []string{"Origin", "null"}},
		"no origin, referer":  {csrf, []string{"Origin", ""}},
		"other referer":       {csrf, []string{"Origin", "", "Referer", "http://evil.example/console/"}},
		"javascript: referer": {csrf, []string{"Origin", "", "Referer", "javascript:alert(1)"}},
	} {
		if code, _ := revoke(tc.csrf, true, tc.header...); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, code)
		}
	}
	if f.revoked("bus-1") {
		t.Fatal("a refused POST revoked the device")
	}
	// A POST with the cookie of a signed-out browser: refused too.
	if resp, _ := f.browser().post("/console/act/revoke_device", url.Values{"device": {"bus-1"}, "csrf": {csrf}, "confirm": {"yes"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a session: %d", resp.StatusCode)
	}
	code, body := revoke(csrf, false)
	if code != http.StatusOK || !strings.Contains(body, `id="confirm-yes"`) || f.revoked("bus-1") {
		t.Fatalf("the first POST: %d, confirmation page %t, revoked %t", code, strings.Contains(body, "confirm-yes"), f.revoked("bus-1"))
	}
	// With a Referer of the console and no Origin (an older browser): done.
	code, body = revoke(csrf, true, "Origin", "", "Referer", f.srv.URL+"/console/devices/bus-1")
	if code != http.StatusOK || !strings.Contains(body, "Device bus-1 is revoked.") || !f.revoked("bus-1") {
		t.Fatalf("the confirmed POST: %d %s", code, body)
	}
	es, _ := f.store.AuditLog(context.Background(), 0, 1)
	if len(es) != 1 || es[0].Action != "revoke_device" || es[0].Target != "bus-1" || es[0].Actor != "token:init (operator) via console" {
		t.Errorf("audit trail: %+v", es)
	}
	// The device's page shows its revocation in its history.
	if _, body := b.get("/console/devices/bus-1"); !strings.Contains(body, "<b>revoked</b>") {
		t.Error("the device page does not show the revocation")
	}
}

// TestRefusalsDoNotFloodTheLog: requests refused before any session
// (cross-site, a sign-in with a bad token) are anyone's to send at any rate,
// and a client that hangs up on a page is no fault of the server's. An
// attack review had one client log 5,300 refused sign-ins a second, 50 MiB
// a second of cross-site refusals each with its 30 KiB path, and an ERROR
// line for every hang-up with a made-up session cookie. Each kind is now
// logged once a minute per client address, saying how many were held
// back, with the path cut; a hang-up is not logged.
func TestRefusalsDoNotFloodTheLog(t *testing.T) {
	f := newFixture(t)
	var logged strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil))
	h := New(Config{Ledger: f.store, Keys: f.keys, API: api.New(api.Config{Ledger: f.store, Keys: f.keys}), Now: f.clock.now, Logger: logger})
	long := "/console/act/" + strings.Repeat("A", 30_000)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	cookie := CookieName + "=" + strings.Repeat("A", 43) // well formed, no such session
	send := func(remote, method, path, origin, body string, ctx context.Context) int {
		req := httptest.NewRequest(method, path, strings.NewReader(body)).WithContext(ctx)
		req.RemoteAddr = remote
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.Header.Set("Cookie", cookie)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	flood := func(remote string) {
		for range 50 {
			if code := send(remote, "POST", long, "", "", context.Background()); code != http.StatusForbidden {
				t.Fatalf("cross-site POST: %d", code)
			}
			if code := send(remote, "POST", "/console/signin", "http://evil.example", "token=x", context.Background()); code != http.StatusForbidden {
				t.Fatalf("cross-site sign-in: %d", code)
			}
			if code := send(remote, "POST", "/console/signin", "http://example.com", "token=fgt_made_up", context.Background()); code != http.StatusForbidden {
				t.Fatalf("sign-in with a made-up token: %d", code)
			}
			send(remote, "GET", "/console/", "", "", gone)
		}
	}
	lines := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Split(strings.TrimSpace(logged.String()), "\n")
	}
	flood("192.0.2.1:1234")
	got := lines()
	if len(got) != 3 {
		t.Errorf("150 refusals and 50 hang-ups from one client logged %d lines, want 3 (one a kind):\n%.2000s", len(got), strings.Join(got, "\n"))
	}
	for _, l := range got {
		if len(l) > 1000 {
			t.Errorf("a log line of %d bytes: %.300s", len(l), l)
			break
		}
	}
	// Another client is heard; the first again a minute later, with how
	// many were held back.
	flood("192.0.2.2:1234")
	f.clock.advance(time.Minute)
	send("192.0.2.1:1234", "POST", "/console/signin", "http://example.com", "token=fgt_made_up", context.Background())
	got = lines()
	if len(got) != 7 || !strings.Contains(got[6], "remote=192.0.2.1") || !strings.Contains(got[6], "suppressed=49") {
		t.Errorf("log after a second client and a minute:\n%.3000s", strings.Join(got, "\n"))
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// An auditor sees every page, without a single button that changes
// anything, and every change it posts (with a valid CSRF token) is refused
// and changes nothing.
func TestAuditorChangesNothing(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	acct := f.account(1000)
	b := f.browser()
	csrf := b.signIn(f.token(ledger.RoleAuditor))
	for _, p := range []string{"", "fleet", "devices/bus-1", "money", "shops", "flagged", "aside", "accounts", fmt.Sprintf("accounts/%d", acct),
		"denylist", "fares", "keys", "tokens", "tokens/init/payments", "audit"} {
		code, body := b.get("/console/" + p)
		if code != http.StatusOK {
			t.Errorf("/console/%s: %d", p, code)
		}
		if strings.Contains(body, "data-action=") || strings.Contains(body, "/act/") {
			t.Errorf("/console/%s shows an auditor a button that changes something", p)
		}
		if !strings.Contains(body, `id="readonly"`) {
			t.Errorf("/console/%s does not say the session is read-only", p)
		}
	}
	before := snapshot(t, f.store)
	for action, form := range map[string]url.Values{
		"deny":           {"account": {fmt.Sprint(acct)}, "reason": {"fraud"}},
		"undeny":         {"account": {fmt.Sprint(acct)}, "reason": {"fraud"}},
		"revoke_device":  {"device": {"bus-1"}},
		"replace_device": {"device": {"bus-1"}, "public_key": {strings.Repeat("ab", 32)}},
		"replay":         {"device": {"bus-1"}},
		"replay_all":     {},
		"assign":         {"device": {"bus-1"}, "route": {"42"}},
		"publish_fares":  {"table": {strings.Replace(testFares, `"version":1`, `"version":2`, 1)}},
		"rotate_keyring": {},
		"create_token":   {"role": {"operator"}},
		"revoke_token":   {"id": {"abcdefgh"}},
		"set_profile":    {"account": {fmt.Sprint(acct)}, "profile": {"child"}},
	} {
		for _, confirm := range []string{"", "yes"} {
			form.Set("csrf", csrf)
			form.Set("confirm", confirm)
			if resp, _ := b.post("/console/act/"+action, form); resp.StatusCode != http.StatusForbidden {
				t.Errorf("auditor %s (confirm %q): %d, want 403", action, confirm, resp.StatusCode)
			}
		}
	}
	if after := snapshot(t, f.store); after != before {
		t.Errorf("an auditor's refused POSTs changed the ledger:\n%s\n%s", before, after)
	}
}

// snapshot is what a refused change must leave as it was.
func snapshot(t *testing.T, s *ledger.Store) string {
	t.Helper()
	ctx := context.Background()
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	devs, _ := s.Devices(ctx)
	toks, _ := s.Tokens(ctx)
	tbl, _ := s.LatestFareTable(ctx)
	dl, _ := s.DenyList(ctx)
	accts, _ := s.Accounts(ctx, 0, 1000)
	return fmt.Sprintf("%+v %+v %d %+v %+v %+v", st, devs, tbl.Version, toks, dl, accts)
}

func (f *fixture) account(balance int64) uint64 {
	f.t.Helper()
	ctx := context.Background()
	a, err := f.store.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult, Name: "rider", SecretHash: []byte("h")})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.store.TopUp(ctx, a.ID, balance, fmt.Sprintf("t-%d", a.ID)); err != nil {
		f.t.Fatal(err)
	}
	seed := sha256.Sum256([]byte(fmt.Sprint("rider", a.ID)))
	if _, err := f.store.IssueCredentialSerial(ctx, a.ID, time.Now().Add(24*time.Hour),
		ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)); err != nil {
		f.t.Fatal(err)
	}
	return a.ID
}

// Sessions end: by signing out (the old cookie no longer works), by
// revoking the token, after the idle timeout and after their lifetime.
func TestSessionsEnd(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	csrf := b.signIn(f.opToken)
	cookies := b.c.Jar.Cookies(mustURL(f.srv.URL + "/console/"))
	if resp, _ := b.post("/console/signout", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", resp.StatusCode)
	}
	thief := f.browser()
	thief.c.Jar.SetCookies(mustURL(f.srv.URL+"/console/"), cookies)
	if code, _ := thief.get("/console/"); code != http.StatusSeeOther {
		t.Errorf("the cookie of a signed-out session still opens the console: %d", code)
	}

	tok := f.token(ledger.RoleOperator)
	b = f.browser()
	b.signIn(tok)
	sum := sha256.Sum256([]byte(tok))
	tk, _ := f.store.TokenByHash(context.Background(), sum[:])
	if err := f.store.RevokeToken(context.Background(), tk.ID); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.get("/console/"); code != http.StatusSeeOther {
		t.Errorf("a session of a revoked token still works: %d", code)
	}

	b = f.browser()
	b.signIn(f.opToken)
	f.clock.advance(DefaultIdleTimeout - time.Minute)
	if code, _ := b.get("/console/"); code != http.StatusOK {
		t.Fatalf("a session used within its idle timeout: %d", code)
	}
	f.clock.advance(DefaultIdleTimeout - time.Minute) // used above: still live
	if code, _ := b.get("/console/"); code != http.StatusOK {
		t.Fatalf("a session kept in use: %d", code)
	}
	f.clock.advance(DefaultIdleTimeout + time.Minute)
	if code, _ := b.get("/console/"); code != http.StatusSeeOther {
		t.Errorf("an idle session still works: %d", code)
	}
	// A page left reloading itself does not keep an operator's session
	// alive; an auditor's (a wall display) it does, up to its lifetime.
	for _, role := range []string{ledger.RoleOperator, ledger.RoleAuditor} {
		b = f.browser()
		b.signIn(f.token(role))
		live := 0
		for range 4 {
			f.clock.advance(DefaultIdleTimeout/2 + time.Minute)
			if code, _ := b.get("/console/fleet?refresh=15"); code == http.StatusOK {
				live++
			}
		}
		if want := map[string]int{ledger.RoleOperator: 1, ledger.RoleAuditor: 4}[role]; live != want {
			t.Errorf("%s session reloaded every 31 minutes: live for %d of 4 reloads, want %d", role, live, want)
		}
	}
	b = f.browser()
	b.signIn(f.opToken)
	for range 2 * int(DefaultSessionTTL/(DefaultIdleTimeout/2)) {
		f.clock.advance(DefaultIdleTimeout / 2)
		if code, _ := b.get("/console/"); code != http.StatusOK {
			break
		}
	}
	if code, _ := b.get("/console/"); code != http.StatusSeeOther {
		t.Errorf("a session past its lifetime still works: %d", code)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// A fare table is previewed against the current one (what changes), a
// version that does not increase or an invalid table is refused with no
// button, and the confirmed one is published through the API.
func TestPublishFares(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	csrf := b.signIn(f.opToken)
	post := func(table string, confirm bool) (int, string) {
		form := url.Values{"csrf": {csrf}, "table": {table}}
		if confirm {
			form.Set("confirm", "yes")
		}
		resp, body := b.post("/console/act/publish_fares", form)
		return resp.StatusCode, body
	}
	v2 := strings.NewReplacer(`"version":1`, `"version":2`, `"X1":{"adult":400}`, `"X1":{"adult":450},"N7":{"child":100}`,
		`"daily_cap":{"adult":700}`, `"daily_cap":{"adult":700,"child":300}`).Replace(testFares)
	code, body := post(v2, false)
	if code != http.StatusOK {
		t.Fatalf("preview: %d %s", code, body)
	}
	for _, want := range []string{`<tr class="changed"><td>version</td><td>1</td><td>2</td>`,
		`<tr class="changed"><td>fare X1 adult</td><td>4.00</td><td>4.50</td>`,
		`<tr class="added"><td>fare N7 child</td>`, `<tr class="added"><td>daily cap child</td>`, "Publish version 2"} {
		if !strings.Contains(body, want) {
			t.Errorf("preview lacks %q", want)
		}
	}
	if strings.Contains(body, `class="warn"`) {
		t.Errorf("a preview of ordinary changes warns:\n%s", body)
	}
	// A slip of digits (2.50 → 25000.00) is pointed out, as is a fare
	// cut to a fraction.
	slip := strings.NewReplacer(`"version":1`, `"version":2`, `"adult":250`, `"adult":2500000`, `"X1":{"adult":400}`, `"X1":{"adult":40}`).Replace(testFares)
	if _, body := post(slip, false); !strings.Contains(body, `<td>25000.00 <strong class="warn">(above the daily cap of 7.00)</strong></td>`) ||
		!strings.Contains(body, `<td>0.40 <strong class="warn">(10 % of the fare before)</strong></td>`) {
		t.Errorf("a preview of a slip of digits does not warn:\n%s", body)
	}
	if tbl, _ := f.store.LatestFareTable(context.Background()); tbl.Version != 1 {
		t.Fatal("the preview published the table")
	}
	// Beyond Parse, what publishing asks is asked before the button: a
	// timezone named, route names as every other route name.
	noZone := strings.Replace(strings.Replace(v2, `"version":2`, `"version":3`, 1), `"timezone":"Europe/Berlin",`, ``, 1)
	rlo := strings.Replace(strings.Replace(v2, `"version":2`, `"version":3`, 1), `"N7":`, `"\u202eN7":`, 1)
	if noZone == v2 || rlo == v2 {
		t.Fatal("the set-up: the tables were not changed")
	}
	for _, bad := range []string{testFares, `{"version":3}`, `{"version":3,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":-1}}}`, "not json",
		noZone, rlo} {
		code, body := post(bad, false)
		if code != http.StatusBadRequest || !strings.Contains(body, `id="invalid"`) || strings.Contains(body, "confirm-yes") {
			t.Errorf("preview of %.30q: %d, invalid shown %t", bad, code, strings.Contains(body, `id="invalid"`))
		}
		if code, _ := post(bad, true); code != http.StatusBadRequest {
			t.Errorf("confirming %.30q: %d", bad, code)
		}
	}
	if code, body := post(v2, true); code != http.StatusOK || !strings.Contains(body, "version 2 is published") {
		t.Fatalf("publish: %d %s", code, body)
	}
	if tbl, _ := f.store.LatestFareTable(context.Background()); tbl.Version != 2 || tbl.Fares["X1"]["adult"] != 450 {
		t.Errorf("latest table after publishing: %+v", tbl)
	}
}

// Tokens: the one made is shown once; revoking it through the console
// stops it at the API.
func TestTokens(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	csrf := b.signIn(f.opToken)
	resp, body := b.post("/console/act/create_token", url.Values{"csrf": {csrf}, "role": {"auditor"}, "name": {"board"}, "confirm": {"yes"}})
	m := regexp.MustCompile(`id="secret">(fgt_[a-z0-9]+_[a-z0-9]+)<`).FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	tok := m[1]
	sum := sha256.Sum256([]byte(tok))
	tk, err := f.store.TokenByHash(context.Background(), sum[:])
	if err != nil || tk.Role != ledger.RoleAuditor || tk.Name != "board" {
		t.Fatalf("the token made: %+v, %v", tk, err)
	}
	if _, body := b.get("/console/tokens"); strings.Contains(body, tok) || !strings.Contains(body, tk.ID) {
		t.Error("the tokens page shows the token itself, or not its id")
	}
	if resp, body := b.post("/console/act/revoke_token", url.Values{"csrf": {csrf}, "id": {tk.ID}, "confirm": {"yes"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest("GET", f.srv.URL+"/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Errorf("a revoked token at the API: %d", r.StatusCode)
	}
	// Bad input never reaches the API.
	if resp, _ := b.post("/console/act/create_token", url.Values{"csrf": {csrf}, "role": {"root"}, "confirm": {"yes"}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("role root: %d", resp.StatusCode)
	}
	if resp, _ := b.post("/console/act/nope", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown action: %d", resp.StatusCode)
	}
	// A name the ledger refuses is refused before the confirmation page
	// shows it (an RLO showed the name reversed there).
	for want, form := range map[string]url.Values{"give its merchant id": {"role": {"merchant"}},
		"only a merchant token has a merchant id": {"role": {"auditor"}, "merchant_id": {"shop-1"}}} {
		form.Set("csrf", csrf)
		if resp, body := b.post("/console/act/create_token", form); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("create_token %v: %d; want refused before the confirmation, saying %q", form, resp.StatusCode, want)
		}
	}
	for _, name := range []string{strings.Repeat("n", 300), "till \u202eevil\u202c 9"} {
		if resp, body := b.post("/console/act/create_token", url.Values{"csrf": {csrf}, "role": {"auditor"}, "name": {name}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "token name") {
			t.Errorf("the confirmation for a token named %.20q: %d", name, resp.StatusCode)
		}
	}
}

// TestConsoleSmallMends: the confirmation of a credential's deny says the
// account can still get new credentials (it said it could not, and an
// operator who denied a thief's pass believed the account cut off); the
// fleet filter is cut at a character, not inside one.
func TestConsoleSmallMends(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	csrf := b.signIn(f.opToken)
	acct := f.account(100)
	for serial, want := range map[string]string{"1": "can still get new credentials", "0": "cannot get new credentials"} {
		resp, body := b.post("/console/act/deny", url.Values{"csrf": {csrf}, "account": {fmt.Sprint(acct)}, "serial": {serial}, "reason": {"fraud"}})
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("the confirmation of a deny of serial %s: %d, want %q", serial, resp.StatusCode, want)
		}
	}
	// A reason the ledger refuses is refused before the confirmation (it
	// was refused after it), and the page links back to the account the
	// form was on, not only to the overview.
	from := fmt.Sprintf("%s/console/accounts/%d", f.srv.URL, acct)
	resp, body := b.post("/console/act/deny", url.Values{"csrf": {csrf}, "account": {fmt.Sprint(acct)}, "reason": {"Lost phone!"}}, "Referer", from)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "one word of a-z") ||
		!strings.Contains(body, fmt.Sprintf(`href="/console/accounts/%d" id="back"`, acct)) {
		t.Errorf("a deny reason the ledger refuses: %d\n%s", resp.StatusCode, body)
	}
	// So is an account that does not exist (asked to confirm, it failed
	// only after the confirmation).
	if resp, body := b.post("/console/act/deny", url.Values{"csrf": {csrf}, "account": {"999999"}, "reason": {"fraud"}}); resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(body, "there is no account 999999") {
		t.Errorf("denying an account that does not exist: %d\n%s", resp.StatusCode, body)
	}
	// A Referer from elsewhere is no way back.
	if _, body := b.post("/console/act/deny", url.Values{"csrf": {csrf}, "account": {fmt.Sprint(acct)}, "reason": {"Lost phone!"}},
		"Referer", "https://evil.example/console/accounts/1"); strings.Contains(body, `id="back"`) {
		t.Errorf("a foreign Referer became the way back:\n%s", body)
	}
	// Each credential's and deny entry's button says which it is to a
	// screen reader ("Deny…, Deny…" before).
	if err := f.store.Deny(context.Background(), acct, 1, "fraud"); err != nil {
		t.Fatal(err)
	}
	if _, page := b.get(fmt.Sprintf("/console/accounts/%d", acct)); !strings.Contains(page, `aria-label="Deny credential 1"`) ||
		!strings.Contains(page, `aria-label="Clear the deny entry fraud of credential 1"`) {
		t.Error("the account page's Deny… and Clear… buttons do not name their credential")
	}
	_, page := b.get("/console/fleet?q=" + url.QueryEscape(strings.Repeat("北京", 12)))
	if !utf8.ValidString(page) || strings.Contains(page, "\uFFFD") || strings.Contains(page, "%E4&") {
		t.Error("the fleet filter was cut inside a character")
	}
}

// Responses carry a CSP with no script at all, and no framing.
func TestHeaders(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/console/signin", "/console/static/console.css", "/console/nope"} {
		resp, err := http.Get(f.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Content-Security-Policy") != CSP || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", p, resp.Header)
		}
	}
	if !strings.Contains(CSP, "default-src 'none'") || strings.Contains(CSP, "script-src") {
		t.Errorf("CSP allows scripts: %s", CSP)
	}
	for name, tpl := range f.h.pages {
		_ = tpl
		b, _ := templateFS.ReadFile("templates/" + name + ".html")
		if strings.Contains(strings.ToLower(string(b)), "<script") || strings.Contains(string(b), " on") && regexp.MustCompile(`\son[a-z]+=`).Match(b) {
			t.Errorf("template %s has script", name)
		}
	}
	resp, err := http.Get(f.srv.URL + "/console/monitoring/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("alerts.yml: %d", resp.StatusCode)
	}
	_ = hex.EncodeToString
}

// The device page's assignment form asks for confirmation; without an MQTT
// link (this fixture) nothing is recorded and the console says why (the
// whole path, with a link, is TestAssignmentEndToEnd in cmd/internal/rig).
func TestAssignForm(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	b := f.browser()
	csrf := b.signIn(f.opToken)
	if _, body := b.get("/console/devices/bus-1"); !strings.Contains(body, `data-action="assign"`) {
		t.Fatal("no assignment form on the device page")
	}
	form := url.Values{"device": {"bus-1"}, "route": {"X1"}, "vehicle": {"BUS-1"}, "csrf": {csrf}}
	resp, body := b.post("/console/act/assign", form)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="confirm-yes"`) || !strings.Contains(body, "route X1") {
		t.Fatalf("first POST: %d, want a confirmation naming the route", resp.StatusCode)
	}
	if !strings.Contains(body, "Fare table version 1 has fares of its own for route X1.") {
		t.Errorf("the confirmation does not say which fares route X1 gets: %s", body)
	}
	if as, _ := f.store.DeviceAssignments(context.Background(), "bus-1"); len(as) != 0 {
		t.Fatalf("assigned before confirmation: %+v", as)
	}
	// A typo: the default fares would apply, quietly (a new user's review).
	typo := url.Values{"device": {"bus-1"}, "route": {"x1"}, "csrf": {csrf}}
	if _, body := b.post("/console/act/assign", typo); !strings.Contains(body, "no fares of its own for route x1") ||
		!strings.Contains(body, "Did you mean route X1?") {
		t.Errorf("a route differing in case only: the confirmation does not warn: %s", body)
	}
	form.Set("confirm", "yes")
	_, body = b.post("/console/act/assign", form)
	if !strings.Contains(body, "Nothing was done: assignments need the MQTT link") {
		t.Errorf("confirmed without a link: want the link named, got %s", body)
	}
	if as, err := f.store.DeviceAssignments(context.Background(), "bus-1"); err != nil || len(as) != 0 {
		t.Errorf("assignments = %+v, %v; want none without a link", as, err)
	}
	form.Set("route", "")
	if resp, _ := b.post("/console/act/assign", form); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no route: %d, want 400", resp.StatusCode)
	}
}

// A device whose last update failed (and that still runs the older
// version) shows the failure as a problem on the fleet and device pages.
func TestUpdateFailedShown(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	f.device("bus-2")
	ctx := context.Background()
	failed := ledger.DeviceUpdate{Failed: "1.4.0", FailedReason: "version 1.4.0 did not report healthy within 2m0s", FailedAt: time.Now()}
	if err := f.store.UpdateDeviceStatus(ctx, "bus-1", ledger.DeviceStatus{Online: true, LastSeen: time.Now(), Software: "1.3.0", Update: failed}); err != nil {
		t.Fatal(err)
	}
	// bus-2 failed 1.4.0 long ago and runs 1.5.0 now: history, no problem.
	if err := f.store.UpdateDeviceStatus(ctx, "bus-2", ledger.DeviceStatus{Online: true, LastSeen: time.Now(), Software: "1.5.0", Update: failed}); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	b.signIn(f.opToken)
	want := "update to 1.4.0 failed: version 1.4.0 did not report healthy"
	_, fleet := b.get("/console/fleet")
	row := func(id string) string {
		i := strings.Index(fleet, `data-device="`+id+`"`)
		if i < 0 {
			t.Fatalf("no row of %s on the fleet page", id)
		}
		r, _, _ := strings.Cut(fleet[i:], "</tr>")
		return r
	}
	if r := row("bus-1"); !strings.Contains(r, want) || !strings.Contains(r, `class="problem"`) {
		t.Errorf("bus-1's fleet row does not show the failed update as a problem: %s", r)
	}
	if r := row("bus-2"); strings.Contains(r, "update to") {
		t.Errorf("bus-2 runs a newer version than the failed one, yet: %s", r)
	}
	_, page := b.get("/console/devices/bus-1")
	if !strings.Contains(page, want) || !strings.Contains(page, `id="update"`) {
		t.Errorf("the device page does not show the failed update")
	}
}

// A reduced fare the rider asked for shows as pending on the account's
// page, with a button that confirms it (after the question): the account
// is then confirmed, and the audit log says who did it.
func TestConfirmProfile(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, err := f.store.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Student, Name: "Dee"})
	if err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	csrf := b.signIn(f.opToken)
	page := fmt.Sprintf("/console/accounts/%d", a.ID)
	if _, body := b.get(page); !strings.Contains(body, `id="profile-pending"`) || !strings.Contains(body, `data-action="set_profile"`) ||
		!strings.Contains(body, `<dd id="payment-limit">none</dd>`) {
		t.Fatalf("the account page does not show the pending profile and its button, or no payment limit:\n%s", body)
	}
	if _, err := f.store.SetPaymentLimit(ctx, a.ID, 2050); err != nil {
		t.Fatal(err)
	}
	if _, body := b.get(page); !strings.Contains(body, `<dd id="payment-limit">20.50</dd>`) {
		t.Errorf("the account page does not show the rider's payment limit of 20.50")
	}
	form := url.Values{"csrf": {csrf}, "account": {fmt.Sprint(a.ID)}, "profile": {"student"}}
	if resp, body := b.post("/console/act/set_profile", form); resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="confirm-yes"`) {
		t.Fatalf("the question: %d %s", resp.StatusCode, body)
	}
	if got, _ := f.store.Account(ctx, a.ID); !got.ProfilePending {
		t.Fatal("asking the question confirmed the profile")
	}
	form.Set("confirm", "yes")
	if resp, body := b.post("/console/act/set_profile", form); resp.StatusCode != http.StatusOK || !strings.Contains(body, "is confirmed") {
		t.Fatalf("the confirmed POST: %d %s", resp.StatusCode, body)
	}
	if got, _ := f.store.Account(ctx, a.ID); got.ProfilePending || got.Profile != paycode.Student {
		t.Errorf("after confirming: %+v", got)
	}
	if _, body := b.get(page); strings.Contains(body, `id="profile-pending"`) {
		t.Error("the account page still shows the profile pending")
	}
	es, _ := f.store.AuditLog(ctx, 0, 1)
	if len(es) != 1 || es[0].Action != "profile" || es[0].Target != fmt.Sprint(a.ID) || !strings.HasSuffix(es[0].Actor, "via console") {
		t.Errorf("audit trail: %+v", es)
	}
	form.Set("profile", "pensioner")
	if resp, _ := b.post("/console/act/set_profile", form); resp.StatusCode == http.StatusOK {
		t.Error("an unknown profile was taken")
	}
}

// TestAmountsInTheLedgersMinorUnits: amounts show the decimals of the
// ledger's currency (ISO 4217 minor units): 1000 yen is "1000", not
// "10.00"; 1250 fils "1.250"; 1000 cents "10.00".
func TestAmountsInTheLedgersMinorUnits(t *testing.T) {
	for _, c := range []struct {
		currency, balance, fare string
	}{{"JPY", "1000", "210"}, {"KWD", "1.000", "0.210"}, {"EUR", "10.00", "2.10"}} {
		t.Run(c.currency, func(t *testing.T) {
			f := newFixtureIn(t, c.currency, `{"version":1,"currency":"`+c.currency+`","timezone":"Asia/Tokyo","service_day_start":"04:00",
				"fares":{"*":{"adult":210,"child":110,"senior":110,"student":160}},"daily_cap":{"adult":600}}`)
			id := f.account(1000)
			b := f.browser()
			b.signIn(f.opToken)
			_, page := b.get(fmt.Sprintf("/console/accounts/%d", id))
			if want := `id="balance">` + c.balance + " " + c.currency + "<"; !strings.Contains(page, want) {
				t.Errorf("account page: no %q in\n%s", want, page)
			}
			_, page = b.get("/console/fares")
			if !strings.Contains(page, ">"+c.fare+"<") {
				t.Errorf("fares page: no fare %q in\n%s", c.fare, page)
			}
			if !strings.Contains(page, "amounts in "+c.currency) {
				t.Errorf("fares page does not name %s", c.currency)
			}
		})
	}
}

// The fares page shows the transfer window as a duration (it showed its
// nanoseconds: "within 3600000000000"), as an operator writes it (it
// showed Go's "1h0m0s").
func TestFaresPageTransferWindow(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	b.signIn(f.opToken)
	_, page := b.get("/console/fares")
	if !strings.Contains(page, "within 60 min:") || strings.Contains(page, "3600000000000") {
		t.Errorf("fares page: no transfer window of 60 min in\n%s", page)
	}
	if _, page := b.get("/console/"); !strings.Contains(page, "0 <small>devices</small>") {
		t.Errorf("overview: no device count")
	}
	f.device("bus-1")
	if _, page := b.get("/console/"); !strings.Contains(page, "1 <small>device</small>") {
		t.Errorf("overview: not \"1 device\"")
	}
}

var hrefRE = regexp.MustCompile(`href="([^"]*)"`)

// links returns the page's links (HTML-unescaped) that contain s.
func links(page, s string) []string {
	var out []string
	for _, m := range hrefRE.FindAllStringSubmatch(page, -1) {
		if u := html.UnescapeString(m[1]); strings.Contains(u, s) {
			out = append(out, u)
		}
	}
	return out
}

// TestFleetSortAndRefreshLinks: a first click on "Last heard" (or queue,
// oldest unsent, clock) sorts the largest, latest first, a second turns it
// round; the page's links (sorting, paging, the filter form) keep its
// auto-refresh and filters, and "Stop refreshing" keeps the filters.
func TestFleetSortAndRefreshLinks(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, id := range []string{"bus-1", "bus-2", "bus-3"} {
		f.device(id)
	}
	for _, id := range []string{"bus-2", "bus-3", "bus-1"} { // bus-1 heard last
		if err := f.store.NoteDeviceSync(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
	}
	b := f.browser()
	b.signIn(f.opToken)
	_, page := b.get("/console/fleet?state=&q=bus&refresh=15")
	heard := links(page, "sort=heard")
	if len(heard) != 1 || !strings.Contains(heard[0], "dir=desc") || !strings.Contains(heard[0], "refresh=15") || !strings.Contains(heard[0], "q=bus") {
		t.Fatalf("the Last heard link %q: want newest first, keeping q and refresh", heard)
	}
	if id := links(page, "sort=id"); len(id) != 1 || strings.Contains(id[0], "dir=desc") {
		t.Errorf("the Device link %q: want A to Z first", id)
	}
	if !strings.Contains(page, `name="refresh" value="15"`) {
		t.Error("the filter form drops the auto-refresh")
	}
	stop := links(page, "fleet?")
	if !slices.ContainsFunc(stop, func(u string) bool { return strings.Contains(u, "q=bus") && !strings.Contains(u, "refresh") }) {
		t.Errorf("no Stop refreshing link that keeps the filter: %q", stop)
	}
	_, page = b.get(strings.TrimPrefix(heard[0], f.srv.URL))
	order := regexp.MustCompile(`data-device="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(order) != 3 || order[0][1] != "bus-1" || order[2][1] != "bus-2" {
		t.Errorf("sorted by last heard: %v, want bus-1 (latest) first, bus-2 last", order)
	}
	if again := links(page, "refresh=15&sort=heard"); len(again) != 1 || strings.Contains(again[0], "dir=desc") {
		t.Errorf("a second click on Last heard %q: want it turned round", again)
	}
}

// The account page shows a refund of an online payment as a refund (a
// posting of kind payment that gives money back), beside the payment.
func TestAccountShowsRefund(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acct := f.account(1000)
	f.pay(acct, "<b>Café/1 ?", "o-1", 300)
	if _, _, err := f.store.RefundPayment(ctx, ledger.RefundRequest{MerchantID: "<b>Café/1 ?", OrderID: "o-1", RefundID: "r-1",
		Amount: 120}); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	csrf := b.signIn(f.opToken)
	_, body := b.get(fmt.Sprintf("/console/accounts/%d", acct))
	if !strings.Contains(body, `<td data-label="Kind">refund</td><td class="num" data-label="Amount">1.20</td><td class="wide detail">payment 1: &lt;b&gt;Café/1 ? order o-1, refund r-1</td><td class="num" data-label="Balance after">8.20</td>`) ||
		!strings.Contains(body, `<td data-label="Kind">payment</td><td class="num" data-label="Amount">-3.00</td><td class="wide detail">payment 1: &lt;b&gt;Café/1 ? order o-1</td><td class="num" data-label="Balance after">7.00</td>`) ||
		!strings.Contains(body, `<td data-label="Kind">topup</td><td class="num" data-label="Amount">10.00</td><td class="wide detail">top-up t-`) {
		t.Errorf("the account page does not show the payment and its refund:\n%s", body)
	}
	if !strings.Contains(body, `data-action="refund"`) {
		t.Fatalf("no refund button on the payment's row:\n%s", body)
	}
	// The operator refunds the rest from the console: asked first, then
	// done once even if the confirmation is sent twice; beyond the
	// payment, or a bad amount, nothing is done.
	form := url.Values{"csrf": {csrf}, "account": {fmt.Sprint(acct)}, "merchant": {"<b>Café/1 ?"}, "order": {"o-1"}, "amount": {"1,80"},
		"reason": {"complaint 12"}}
	resp, body := b.post("/console/act/refund", form)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Refund 1.80 EUR of &lt;b&gt;Café/1 ?&#39;s order o-1?") {
		t.Fatalf("the question: %d %s", resp.StatusCode, body)
	}
	m := regexp.MustCompile(`name="refund_id" value="(console-[0-9a-f]{16})"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the question carries no refund id:\n%s", body)
	}
	if got := balanceOf(t, f, acct); got != 820 {
		t.Fatalf("asking the question refunded: balance %d", got)
	}
	form.Set("refund_id", m[1])
	form.Set("amount", "1.80")
	form.Set("confirm", "yes")
	for range 2 {
		if resp, body := b.post("/console/act/refund", form); resp.StatusCode != http.StatusOK ||
			!strings.Contains(body, "its refunds come to 3.00 EUR, 0.00 EUR left") {
			t.Fatalf("the confirmed refund: %d %s", resp.StatusCode, body)
		}
	}
	if got := balanceOf(t, f, acct); got != 1000 {
		t.Errorf("balance %d after refunding all of the payment, want 1000", got)
	}
	form.Set("refund_id", "console-more")
	form.Set("amount", "0.01")
	// Told before the question, not after the confirmation.
	for _, confirm := range []string{"", "yes"} {
		form.Set("confirm", confirm)
		if resp, body := b.post("/console/act/refund", form); resp.StatusCode != http.StatusBadRequest ||
			!strings.Contains(body, "only 0.00 EUR of the payment&#39;s 3.00 EUR is left to refund") {
			t.Errorf("a refund beyond the payment (confirm %q): %d %s", confirm, resp.StatusCode, body)
		}
	}
	form.Set("refund_id", m[1]) // a retry of the refund done: answered as it was
	form.Set("amount", "1.80")
	if resp, body := b.post("/console/act/refund", form); resp.StatusCode != http.StatusOK ||
		!strings.Contains(body, "its refunds come to 3.00 EUR, 0.00 EUR left") {
		t.Errorf("the refund's retry: %d %s", resp.StatusCode, body)
	}
	form.Set("refund_id", "console-more")
	form.Del("confirm")
	form.Set("order", "o-404")
	if resp, body := b.post("/console/act/refund", form); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "there is no payment") {
		t.Errorf("a refund of no payment: %d %s", resp.StatusCode, body)
	}
	form.Set("order", "o-1")
	form.Set("account", fmt.Sprint(acct+1))
	if resp, body := b.post("/console/act/refund", form); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "was paid by account") {
		t.Errorf("a refund to another account: %d %s", resp.StatusCode, body)
	}
	form.Set("account", fmt.Sprint(acct))
	if got := balanceOf(t, f, acct); got != 1000 {
		t.Errorf("balance %d after the refused refunds, want 1000", got)
	}
	for _, bad := range []string{"-1", "0", "1.234", "lots", "180", "1.80 USD"} {
		form.Set("amount", bad)
		resp, body := b.post("/console/act/refund", form)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Nothing done") {
			t.Errorf("amount %q: %d %s", bad, resp.StatusCode, body)
		}
		if bad == "1.234" && !strings.Contains(body, "at most 2 decimals") {
			t.Errorf("amount %q: the answer does not say the decimals are the problem:\n%s", bad, body)
		}
		// A whole number, as the API's minor units are written: asked
		// which is meant, as the settlement CLI asks (it refunded 180.00).
		if bad == "180" && !strings.Contains(body, "without decimals") {
			t.Errorf("amount %q: the answer does not ask for decimals:\n%s", bad, body)
		}
	}
	entries, err := f.store.AuditLog(ctx, 0, 10)
	if err != nil || len(entries) == 0 || entries[0].Action != "refund" || !strings.Contains(entries[0].Actor, "console") {
		t.Errorf("the console's refund is not audited as the operator's through the console: %+v, %v", entries, err)
	}
}

// pay makes a shop's payment of amount by a code of acct (made by account).
func (f *fixture) pay(acct uint64, merchant, order string, amount int64) {
	f.t.Helper()
	f.payBy(acct, merchant, order, amount, "")
}

// payBy is pay made with the API token of id token.
func (f *fixture) payBy(acct uint64, merchant, order string, amount int64, token string) {
	f.t.Helper()
	seed := sha256.Sum256([]byte(fmt.Sprint("rider", acct)))
	id := paycode.ID{Account: acct, Serial: 1, Time: uint32(time.Now().Unix())}
	if _, _, err := f.store.Pay(context.Background(), ledger.PaymentRequest{MerchantID: merchant, OrderID: order, Account: acct,
		Serial: 1, RiderKey: ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey), CodeKey: id.Key(), CodeHash: "abc",
		Amount: amount, Currency: "EUR", TokenID: token}); err != nil {
		f.t.Fatal(err)
	}
}

func balanceOf(t *testing.T, f *fixture, acct uint64) int64 {
	t.Helper()
	a, err := f.store.Account(context.Background(), acct)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

// A shop's order id may be "." or "..": the console's refund of it reaches
// the API (escaped), not a redirect to a cleaned path.
func TestRefundOfDotOrder(t *testing.T) {
	f := newFixture(t)
	acct := f.account(1000)
	f.pay(acct, ".", "..", 300)
	b := f.browser()
	csrf := b.signIn(f.opToken)
	form := url.Values{"csrf": {csrf}, "account": {fmt.Sprint(acct)}, "merchant": {"."}, "order": {".."}, "amount": {"1.00 EUR"},
		"refund_id": {"console-dots"}, "confirm": {"yes"}}
	if resp, body := b.post("/console/act/refund", form); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Refunded 1.00 EUR") {
		t.Fatalf("refund of order ..: %d %s", resp.StatusCode, body)
	}
	if got := balanceOf(t, f, acct); got != 1000-300+100 {
		t.Errorf("balance %d, want %d", got, 1000-300+100)
	}
}

// TestAccountPostingsPaged: an account with more postings than a page
// shows the newest 50; "Older postings" pages back through all of them,
// each once, with the balances of the whole statement, and the last page
// has no link.
func TestAccountPostingsPaged(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acct := f.account(1000)
	for i := range 120 {
		if _, err := f.store.TopUp(ctx, acct, int64(i+1), fmt.Sprintf("more-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b := f.browser()
	b.signIn(f.opToken)
	row := regexp.MustCompile(`<tr><td class="num head" data-label="#">(\d+)</td><td class="end">[^<]*</td><td data-label="Kind">topup</td><td class="num" data-label="Amount">([0-9.]+)</td><td class="wide detail">top-up [^<]*</td><td class="num" data-label="Balance after">([0-9.]+)</td>`)
	link := regexp.MustCompile(`<a href="([^"]+)" id="older-postings">`)
	page := fmt.Sprintf("/console/accounts/%d", acct)
	var seqs []int
	var sizes []int
	balance := 1000 + 120*121/2 // in cents
	for range 5 {
		_, body := b.get(page)
		rows := row.FindAllStringSubmatch(body, -1)
		sizes = append(sizes, len(rows))
		for _, r := range rows {
			seq, _ := strconv.Atoi(r[1])
			seqs = append(seqs, seq)
			if want := fmt.Sprintf("%d.%02d", balance/100, balance%100); r[3] != want {
				t.Errorf("posting %s: balance after %s, want %s", r[1], r[3], want)
			}
			amount, _ := strconv.ParseFloat(r[2], 64)
			balance -= int(amount*100 + 0.5)
		}
		m := link.FindStringSubmatch(body)
		if m == nil {
			break
		}
		if len(sizes) > 1 && !strings.Contains(body, "Older postings.") {
			t.Errorf("a page back does not say it is one")
		}
		page = html.UnescapeString(m[1])
	}
	if fmt.Sprint(sizes) != "[50 50 21]" || balance != 0 {
		t.Errorf("pages of %v postings, %d cents left unexplained; want [50 50 21] and 0", sizes, balance)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]-1 {
			t.Fatalf("postings %v: not each once, newest first", seqs)
		}
	}
}

// TestConsoleShowsHiddenCharacters: a route a validator names with a
// right-to-left override ("\u202e24", which a browser shows as "42": a
// stolen validator's records keep the old rule, no C0 control characters
// only) and a C1 control (invisible on a page) is shown with them as their
// code points on the account's rides and the fleet's pages, never as
// another route's name.
func TestConsoleShowsHiddenCharacters(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	acct := f.account(1000)
	key := paycode.ID{Account: acct, Serial: 1, Time: uint32(time.Now().Unix()), Counter: 1}.Key()
	tap := ledger.Tap{ID: ledger.TapID("bus-1", "e1", 1), DeviceID: "bus-1", Seq: 1, Epoch: "e1", Time: time.Now(),
		Account: acct, Serial: 1, RiderKey: make([]byte, 32), CodeKey: key, CodeHash: "0123456789ab",
		BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "\u202e24\u009b", Vehicle: "v\u20667", Record: []byte("record")}
	if _, err := f.store.CommitTaps(context.Background(), []ledger.Tap{tap}); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	b.signIn(f.opToken)
	for _, p := range []string{fmt.Sprintf("accounts/%d", acct), "devices/bus-1", "fleet"} {
		_, body := b.get("/console/" + p)
		shown := html.UnescapeString(body)
		if !strings.Contains(shown, "<U+202E>24<U+009B>") || (p != fmt.Sprintf("accounts/%d", acct) && !strings.Contains(shown, "v<U+2066>7")) ||
			strings.ContainsAny(shown, "\u202e\u2066\u009b") {
			t.Errorf("/console/%s does not show the route's override as its code point", p)
		}
		// The assignment form is not filled with the shown text: sent
		// back, it would become the route.
		if strings.Contains(shown, `value="<U+202E>24`) {
			t.Errorf("/console/%s fills an edit box with the shown route", p)
		}
	}
}

// TestClearDenyAsksWhy: clearing a deny entry asks why on its
// confirmation, refuses to go on without an answer (or with one the
// ledger would not keep), and the audit trail keeps it beside the entry's
// reason. It kept only the entry's reason: why a fraud entry was lifted,
// nobody could tell.
func TestClearDenyAsksWhy(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	csrf := b.signIn(f.opToken)
	acct := f.account(100)
	ctx := context.Background()
	if err := f.store.Deny(ctx, acct, 0, "fraud"); err != nil {
		t.Fatal(err)
	}
	form := func(note, confirm string) url.Values {
		return url.Values{"csrf": {csrf}, "account": {fmt.Sprint(acct)}, "reason": {"fraud"}, "note": {note}, "confirm": {confirm}}
	}
	resp, body := b.post("/console/act/undeny", form("", ""))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<input name="note" id="ask-note" value="" required`) {
		t.Fatalf("the confirmation does not ask why: %d\n%s", resp.StatusCode, body)
	}
	denied := func() bool {
		dl, err := f.store.DenyList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(dl.Entries) == 1
	}
	for note, says := range map[string]string{"": "say why the entry is cleared", "  ": "say why the entry is cleared",
		"found \u202eit": "invisible formatting", strings.Repeat("n", 200): "note"} {
		if resp, body := b.post("/console/act/undeny", form(note, "yes")); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, says) {
			t.Errorf("confirmed with note %.20q: %d, want refused saying %q", note, resp.StatusCode, says)
		}
		if !denied() {
			t.Fatalf("note %.20q: the entry was cleared", note)
		}
	}
	if resp, body := b.post("/console/act/undeny", form("rider proved the card was stolen, ticket 4411", "yes")); resp.StatusCode != http.StatusOK {
		t.Fatalf("confirmed with a note: %d\n%s", resp.StatusCode, body)
	}
	if denied() {
		t.Fatal("the entry is still there")
	}
	entries, err := f.store.AuditLog(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(entries); !strings.Contains(got, `reason "fraud" note "rider proved the card was stolen, ticket 4411"`) {
		t.Errorf("the audit trail lacks why: %s", got)
	}
}

// TestTokenPaymentsPage: a till token's payments are listed on a page of
// their own, linked from the tokens page, newest first, each with its
// rider's account: a shop's leaked till token's orders, told from its
// other tills'. An unknown token's page says there are none.
func TestTokenPaymentsPage(t *testing.T) {
	f := newFixture(t)
	a1, a2 := f.account(1000), f.account(1000)
	f.payBy(a1, "shop-1", "till3-order", 120, "init")
	f.payBy(a2, "shop-1", "till1-order", 230, "tok1")
	b := f.browser()
	b.signIn(f.token(ledger.RoleOperator))
	code, body := b.get("/console/tokens/init/payments")
	if code != http.StatusOK || !strings.Contains(body, "till3-order") || strings.Contains(body, "till1-order") ||
		!strings.Contains(body, fmt.Sprintf(`href="/console/accounts/%d"`, a1)) || !strings.Contains(body, "1.20") {
		t.Errorf("token init's payments page: %d\n%s", code, body)
	}
	// Its refunds (of another till's order, as a merchant token may).
	if _, _, err := f.store.RefundPayment(context.Background(), ledger.RefundRequest{MerchantID: "shop-1", OrderID: "till1-order",
		RefundID: "back-1", Amount: 45, TokenID: "init"}); err != nil {
		t.Fatal(err)
	}
	code, body = b.get("/console/tokens/init/payments")
	if code != http.StatusOK || !strings.Contains(body, `<tr data-refund="back-1">`) || !strings.Contains(body, "0.45") ||
		!strings.Contains(body, fmt.Sprintf(`href="/console/accounts/%d"`, a2)) {
		t.Errorf("token init's page does not list its refund back-1:\n%s", body)
	}
	if code, _ := b.get("/console/tokens/init/payments?refunds_before=x"); code != http.StatusBadRequest {
		t.Errorf("a bad ?refunds_before=: %d", code)
	}
	if code, body := b.get("/console/tokens/nobody/payments"); code != http.StatusNotFound || !strings.Contains(body, "No API token nobody was ever made") {
		t.Errorf("an unknown token's payments page: %d\n%s", code, body)
	}
	if code, body := b.get("/console/tokens/init/payments?before=x"); code != http.StatusBadRequest || !strings.Contains(body, "payment id") {
		t.Errorf("a bad ?before=: %d\n%s", code, body)
	}
	// Linked from the tokens page for a merchant token.
	made, err := api.CreateToken(context.Background(), f.store, ledger.RoleMerchant, "shop-1", "till 3")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(made.Token))
	tk, err := f.store.TokenByHash(context.Background(), sum[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, body := b.get("/console/tokens"); !strings.Contains(body, `href="/console/tokens/`+tk.ID+`/payments"`) {
		t.Errorf("the tokens page does not link token %s's payments:\n%s", tk.ID, body)
	}
}

// TestShopsPage: the shops page sums each shop's online payments and
// refunds of the last 30 service days, with their total, for the operator
// and the auditor (read only), and sends one signed out to sign in.
func TestShopsPage(t *testing.T) {
	f := newFixture(t)
	a1, a2, a3 := f.account(5000), f.account(5000), f.account(5000)
	f.pay(a1, "shop-1", "o-1", 1200)
	f.pay(a2, "shop-1", "o-2", 300)
	f.pay(a3, "<b>shop-2", "o-3", 450)
	for _, r := range []ledger.RefundRequest{{MerchantID: "shop-1", OrderID: "o-1", RefundID: "r-1", Amount: 200},
		{MerchantID: "<b>shop-2", OrderID: "o-3", RefundID: "r-2", Amount: 450}} {
		if _, _, err := f.store.RefundPayment(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if code, _ := f.browser().get("/console/shops"); code != http.StatusSeeOther {
		t.Errorf("signed out: %d, want 303 to the sign-in page", code)
	}
	tbl, err := f.store.LatestFareTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	today := tbl.ServiceDay(time.Now())
	for _, role := range []string{ledger.RoleOperator, ledger.RoleAuditor} {
		b := f.browser()
		b.signIn(f.token(role))
		code, body := b.get("/console/shops")
		for _, want := range []string{
			`<tr data-merchant="shop-1"><td><a href="/console/shops?merchant=shop-1">shop-1</a></td><td class="num">2</td><td class="num">15.00</td><td class="num">1</td><td class="num">2.00</td><td class="num">13.00</td></tr>`,
			`<tr data-merchant="&lt;b&gt;shop-2"><td><a href="/console/shops?merchant=%3cb%3eshop-2">&lt;b&gt;shop-2</a></td><td class="num">1</td><td class="num">4.50</td><td class="num">1</td><td class="num">4.50</td><td class="num">0.00</td></tr>`,
			`<tr id="shops-total"><th>Total</th><td class="num">3</td><td class="num">19.50</td><td class="num">2</td><td class="num">6.50</td><td class="num">13.00</td></tr>`,
			`<tr data-day="` + today + `" data-merchant="shop-1">`,
			`days from 04:00 Europe/Berlin`,
			`aria-current="page">Shops</a>`,
			`<p>3 online payments</p>`, `<p>2 refunds</p>`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the shops page (%d) does not show %s:\n%s", role, code, want, body)
			}
		}
	}
}

// TestShopsPaged: the shops page shows 100 shops at a time, with their
// days, the totals over every shop, and links to the pages around it; a
// shop's link (or the merchant id typed in) shows that shop alone. It
// showed every shop and every shop's every day on one page (a city's
// shops: 30 rows a shop).
func TestShopsPaged(t *testing.T) {
	f := newFixture(t)
	const shops = 130
	for i := range shops {
		f.pay(f.account(5000), fmt.Sprintf("shop-%03d", i), "o-1", 100)
	}
	b := f.browser()
	b.signIn(f.token(ledger.RoleAuditor))
	rows := regexp.MustCompile(`<tr data-merchant="(shop-[0-9]+)">`)
	dayRows := regexp.MustCompile(`<tr data-day="[0-9-]+" data-merchant="(shop-[0-9]+)">`)
	next := regexp.MustCompile(`<a href="([^"]+)" id="shops-next">`)
	var seen []string
	path := "/console/shops"
	for page := 1; path != ""; page++ {
		if page > 3 {
			t.Fatal("more than 3 pages of 130 shops")
		}
		code, body := b.get(path)
		got := rows.FindAllStringSubmatch(body, -1)
		days := dayRows.FindAllStringSubmatch(body, -1)
		if code != http.StatusOK || len(got) > 100 || len(days) != len(got) {
			t.Fatalf("%s: %d, %d shops and %d shop-days on the page", path, code, len(got), len(days))
		}
		for i, m := range got {
			seen = append(seen, m[1])
			if days[i][1] != m[1] {
				t.Errorf("%s: the days shown are %s's, not the page's shop %s", path, days[i][1], m[1])
			}
		}
		if !strings.Contains(body, `<p>to pay out to 130 shops</p>`) || !strings.Contains(body, `<td class="num">130</td><td class="num">130.00</td>`) {
			t.Errorf("%s: the totals are not every shop's", path)
		}
		path = ""
		if m := next.FindStringSubmatch(body); m != nil {
			path = html.UnescapeString(m[1])
		}
	}
	if len(seen) != shops || seen[0] != "shop-000" || seen[shops-1] != "shop-129" {
		t.Errorf("the pages showed %d shops (%v … %v), want all %d once, by merchant id", len(seen), seen[0], seen[len(seen)-1], shops)
	}
	code, body := b.get("/console/shops?merchant=shop-042")
	if got := rows.FindAllStringSubmatch(body, -1); code != http.StatusOK || len(got) != 1 || got[0][1] != "shop-042" ||
		!strings.Contains(body, `<p>to pay out to 1 shop</p>`) {
		t.Errorf("one shop: %d, rows %v", code, got)
	}
	if !strings.Contains(body, `<a href="/console/tokens?role=merchant&amp;merchant=shop-042" id="shop-tokens">`) {
		t.Errorf("one shop's page does not link its tills' tokens")
	}
	if code, body := b.get("/console/shops?merchant=nobody"); code != http.StatusOK || !strings.Contains(body, "No online payments or refunds in these days by shop nobody.") {
		t.Errorf("a shop with nothing: %d", code)
	}
	if code, _ := b.get("/console/shops?page=0"); code != http.StatusBadRequest {
		t.Errorf("page 0: %d, want 400", code)
	}
}

// TestPlural: counts of any integer type take the singular for one (the
// shops page's counts are int64: "1 refunds" before).
func TestPlural(t *testing.T) {
	plural := funcs["plural"].(func(any, string) string)
	for _, c := range []struct {
		n    any
		want string
	}{{1, "refund"}, {int64(1), "refund"}, {0, "refunds"}, {int64(2), "refunds"}} {
		if got := plural(c.n, "refund"); got != c.want {
			t.Errorf("plural(%T %v) = %q, want %q", c.n, c.n, got, c.want)
		}
	}
}

// TestMoneyChartsSayTheirZone: the money page's hourly charts are
// labelled in the fleet's hours (the fare table's zone), as every time on
// the console is, and say which zone. They were labelled in UTC (an
// operator review read them as local hours; then every time on the
// console was in UTC).
func TestMoneyChartsSayTheirZone(t *testing.T) {
	f := newFixture(t)
	// A tap settled: a ledger without one draws no chart, and says so.
	f.device("bus-1")
	acct := f.account(1000)
	seed := sha256.Sum256([]byte(fmt.Sprint("rider", acct)))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	now := time.Now()
	key := paycode.ID{Account: acct, Serial: 1, Time: uint32(now.Unix()), Counter: 1}.Key()
	if _, err := f.store.CommitTaps(context.Background(), []ledger.Tap{{ID: ledger.TapID("bus-1", "e1", 1), DeviceID: "bus-1", Seq: 1, Epoch: "e1", Time: now,
		Account: acct, Serial: 1, RiderKey: pub, CodeKey: key, CodeHash: "0123456789ab",
		BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Vehicle: "v7", Record: []byte("record")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.RefreshSummaries(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	b.signIn(f.token(ledger.RoleAuditor))
	code, body := b.get("/console/money")
	if code != http.StatusOK || !strings.Contains(body, "Taps settled per hour (Europe/Berlin)") || !strings.Contains(body, "hours in Europe/Berlin") {
		t.Errorf("the money page (%d) does not say its hourly charts are in the fleet's zone, Europe/Berlin", code)
	}
	// The hour of the tap, as Berlin's clocks read it.
	hour := now.Truncate(time.Hour).In(mustZone(t, "Europe/Berlin")).Format("15:04") + " p50:"
	if !strings.Contains(body, hour) {
		t.Errorf("the lag chart has no point labelled %q (the tap's hour in Berlin)", hour)
	}
}

// TestConsoleVoidsATap: a charged ride on the account page has a Void
// button; the operator is asked why, refused without an answer, and then
// the tap is void (its fare back on the balance, the ride marked voided,
// the reason in the audit trail) once however often the confirmation is
// sent. A flagged ride has no button.
func TestConsoleVoidsATap(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	acct := f.account(1000)
	seed := sha256.Sum256([]byte(fmt.Sprint("rider", acct)))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	now := time.Now()
	key := paycode.ID{Account: acct, Serial: 1, Time: uint32(now.Unix()), Counter: 1}.Key()
	tap := ledger.Tap{ID: ledger.TapID("bus-1", "e1", 1), DeviceID: "bus-1", Seq: 1, Epoch: "e1", Time: now,
		Account: acct, Serial: 1, RiderKey: pub, CodeKey: key, CodeHash: "0123456789ab",
		BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Vehicle: "v7", Record: []byte("record")}
	res, err := f.store.CommitTaps(context.Background(), []ledger.Tap{tap})
	if err != nil || res[0].Flag != "" || res[0].Charge == 0 {
		t.Fatalf("the tap: %+v, %v; want it charged", res, err)
	}
	charged := res[0].Charge
	b := f.browser()
	csrf := b.signIn(f.opToken)
	page := fmt.Sprintf("/console/accounts/%d", acct)
	if _, body := b.get(page); !strings.Contains(body, `data-action="void"`) ||
		!strings.Contains(body, `name="tap" value="`+html.EscapeString(tap.ID)+`"`) {
		t.Fatalf("no Void button on the charged ride:\n%s", body)
	}
	form := url.Values{"csrf": {csrf}, "account": {fmt.Sprint(acct)}, "tap": {tap.ID}}
	resp, body := b.post("/console/act/void", form)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Void tap "+html.EscapeString(tap.ID)+"?") ||
		!strings.Contains(body, `<input name="reason" id="ask-reason"`) {
		t.Fatalf("the question: %d %s", resp.StatusCode, body)
	}
	form.Set("confirm", "yes")
	if resp, body := b.post("/console/act/void", form); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "say why the tap is voided") {
		t.Errorf("confirmed without a reason: %d, want refused saying why\n%s", resp.StatusCode, body)
	}
	if got := balanceOf(t, f, acct); got != 1000-charged {
		t.Fatalf("refused, yet the balance is %d", got)
	}
	form.Set("reason", "rider was not on bus-1, ticket 7")
	for i := range 2 {
		resp, body := b.post("/console/act/void", form)
		want := "is void: " + feedback.FormatAmount(charged, "EUR") + " came back"
		if i == 1 {
			want = "was void already: nothing changed"
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(html.UnescapeString(body), want) {
			t.Fatalf("confirmation %d: %d, want %q\n%s", i+1, resp.StatusCode, want, body)
		}
	}
	if got := balanceOf(t, f, acct); got != 1000 {
		t.Errorf("balance %d after the void, want 1000", got)
	}
	if _, body := b.get(page); !strings.Contains(body, `<span class="flag">voided</span>`) || strings.Contains(body, `data-action="void"`) {
		t.Errorf("the voided ride is not marked voided, or still has a Void button:\n%s", body)
	}
	entries, err := f.store.AuditLog(context.Background(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(entries); !strings.Contains(got, "void_tap") || !strings.Contains(got, "rider was not on bus-1, ticket 7") {
		t.Errorf("the audit trail lacks the void and its reason: %s", got)
	}
	if err := f.store.CheckInvariants(context.Background()); err != nil {
		t.Errorf("verify: %v", err)
	}
}

// storeToken puts tok in the ledger, its token the hash of its id (a
// token no test signs in with).
func (f *fixture) storeToken(tok ledger.APIToken) {
	f.t.Helper()
	h := sha256.Sum256([]byte(tok.ID))
	if _, err := f.store.CreateToken(context.Background(), tok, h[:]); err != nil {
		f.t.Fatal(err)
	}
}

// TestTokensPaged: the tokens page shows 100 tokens at a time with a link
// to the next page, keeps its filter (role, merchant, in force) across
// pages, and refuses a bad role or cursor with a page that says what it
// takes. It listed every token ever made (a city's tills) on one page.
func TestTokensPaged(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	b.signIn(f.opToken)
	for i := range 130 {
		tok := ledger.APIToken{ID: fmt.Sprintf("till%04d", i), Role: ledger.RoleMerchant, MerchantID: fmt.Sprintf("shop-%d", i%2), Name: "till"}
		if i%10 == 0 {
			tok.Role, tok.MerchantID = ledger.RoleAuditor, ""
		}
		f.storeToken(tok)
	}
	rows := regexp.MustCompile(`<tr data-token="([a-z0-9]+)">`)
	next := regexp.MustCompile(`<a href="([^"]+)" id="tokens-next">`)
	walk := func(path string) (ids []string, pages int) {
		for pages = 1; pages <= 5; pages++ {
			code, body := b.get(path)
			if code != http.StatusOK {
				t.Fatalf("%s: %d", path, code)
			}
			got := rows.FindAllStringSubmatch(body, -1)
			if len(got) > 100 {
				t.Fatalf("%s: %d tokens on one page", path, len(got))
			}
			for _, m := range got {
				ids = append(ids, m[1])
			}
			m := next.FindStringSubmatch(body)
			if m == nil {
				return ids, pages
			}
			path = html.UnescapeString(m[1])
		}
		t.Fatalf("more than 5 pages from %s", path)
		return nil, 0
	}
	ids, pages := walk("/console/tokens")
	if len(ids) != 130 || pages != 2 || ids[0] != "till0000" || ids[129] != "till0129" {
		t.Errorf("all tokens: %d on %d pages (%v … %v), want 130 on 2, oldest first", len(ids), pages, ids[0], ids[len(ids)-1])
	}
	if _, body := b.get("/console/tokens"); !strings.Contains(body, `<td><a href="/console/shops?merchant=shop-1">shop-1</a></td>`) {
		t.Errorf("the tokens page does not link a merchant token's shop")
	}
	ids, _ = walk("/console/tokens?role=merchant&merchant=shop-1")
	if len(ids) != 65 {
		t.Errorf("shop-1's merchant tokens: %d, want 65", len(ids))
	}
	for _, id := range ids {
		if n, _ := strconv.Atoi(strings.TrimPrefix(id, "till")); n%2 != 1 || n%10 == 0 {
			t.Errorf("token %s is not a merchant token of shop-1", id)
		}
	}
	if code, body := b.get("/console/tokens?role=root"); code != http.StatusBadRequest || !strings.Contains(body, "?role= is one of") {
		t.Errorf("a bad role: %d", code)
	}
	if code, body := b.get("/console/tokens?after=nosuch00"); code != http.StatusBadRequest || !strings.Contains(body, "?after= is the id of a token") {
		t.Errorf("a bad cursor: %d", code)
	}
}
