package console

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"html"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/farego/farego/sync/keyfile"

	"github.com/farego/farego/server/wallet/wallettest"
)

// chromeSignIn signs a Chromium tab in to the fixture's console.
func chromeSignIn(t *testing.T, f *fixture, token string) *chromeTab {
	t.Helper()
	c := &chromeTab{t: t, ctx: wallettest.Browser(t, wallettest.Config{HostRules: "MAP elsewhere.test 127.0.0.1"})}
	wallettest.Do(t, c.ctx, chromedp.Navigate(f.srv.URL+"/console/"), chromedp.WaitVisible("#token"),
		chromedp.SetValue("#token", token), chromedp.Click("#signin"), chromedp.WaitVisible("#who"))
	return c
}

type chromeTab struct {
	t   *testing.T
	ctx context.Context
}

// settle waits (bounded) until the tab shows a loaded page matching the
// JavaScript condition, or the sign-in form, and reports which.
func (c *chromeTab) settle(what, cond string) (signIn bool) {
	c.t.Helper()
	wallettest.WaitFor(c.t, c.ctx, 30*time.Second, what, `document.readyState === "complete" && (`+cond+` || !!document.getElementById("signin-form"))`)
	return wallettest.Eval[bool](c.t, c.ctx, `!!document.getElementById("signin-form")`)
}

// An operator working on the fleet page with its auto-refresh on clicks
// its sort links (which keep ?refresh) for more than the idle timeout: each
// click is someone at the console. It was taken for the page reloading
// itself, and the operator, clicking all along, was signed out after an
// hour.
func TestClicksOnRefreshingPageKeepSessionAlive(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	f.device("bus-2")
	c := chromeSignIn(t, f, f.opToken)
	// 600 s: the page does not reload itself while the test runs.
	wallettest.Do(t, c.ctx, chromedp.Navigate(f.srv.URL+"/console/fleet?refresh=600"), chromedp.WaitVisible("#fleet"))
	for i, sort := range []string{"id", "heard", "queue"} {
		f.clock.advance(DefaultIdleTimeout * 2 / 3)
		wallettest.Do(t, c.ctx, chromedp.Click(`#fleet thead a[href*="sort=`+sort+`"]`))
		if c.settle("the fleet sorted by "+sort, `location.search.includes("sort=`+sort+`") && !!document.getElementById("fleet")`) {
			t.Fatalf("click %d (sort by %s), %v after the last: signed out though the operator clicked all along",
				i+1, sort, DefaultIdleTimeout*2/3)
		}
	}
	// The page reloading itself still is no use: left alone, the session
	// ends.
	f.clock.advance(DefaultIdleTimeout * 2 / 3)
	wallettest.Eval[bool](t, c.ctx, `(() => { window.before = true; const m = document.createElement("meta");
		m.httpEquiv = "refresh"; m.content = "0"; document.head.append(m); return true; })()`)
	wallettest.WaitFor(t, c.ctx, 30*time.Second, "the meta refresh", `!window.before && document.readyState === "complete" && !!document.getElementById("fleet")`)
	f.clock.advance(DefaultIdleTimeout * 2 / 3)
	wallettest.Do(t, c.ctx, chromedp.Navigate(f.srv.URL+"/console/fleet"))
	if !c.settle("the fleet", `!!document.getElementById("fleet")`) {
		t.Error("a session kept alive only by its page's meta refresh is still live after the idle timeout")
	}
}

// An operator signed in follows a link to a device's page from another
// site (a Grafana panel, a chat, an e-mail): the page opens signed in. It
// opened the sign-in page (the browser keeps a SameSite=Strict cookie back
// from a navigation another site started), and the operator had to paste
// the token again. Signed out, the link still leads to the sign-in page,
// and back to the device's page.
func TestLinkFromAnotherSiteOpensSignedIn(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><p>Alert: bus-1 out of service. <a id="link" href="%s/console/devices/bus-1">Open it in the console</a></p>`, f.srv.URL)
	}))
	defer other.Close()
	elsewhere := "http://elsewhere.test:" + other.URL[strings.LastIndex(other.URL, ":")+1:] + "/"
	c := chromeSignIn(t, f, f.opToken)
	follow := func() bool {
		wallettest.Do(t, c.ctx, chromedp.Navigate(elsewhere), chromedp.WaitVisible("#link"), chromedp.Click("#link"))
		return c.settle("the device's page", `!!document.getElementById("device")`)
	}
	if follow() {
		t.Fatalf("a link from another site opened the sign-in page (%s) though the browser is signed in",
			wallettest.Eval[string](t, c.ctx, `location.href`))
	}
	wallettest.Do(t, c.ctx, chromedp.Click("#signout"), chromedp.WaitVisible("#token"))
	if !follow() {
		t.Fatal("signed out, a link from another site opened a console page")
	}
	wallettest.Do(t, c.ctx, chromedp.SetValue("#token", f.opToken), chromedp.Click("#signin"), chromedp.WaitVisible("#device"))
}

// The Device column sorts both ways: its second click (dir=desc) showed
// A to Z again, under a ▼.
func TestFleetSortsByDeviceBothWays(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"bus-2", "bus-3", "bus-1"} {
		f.device(id)
	}
	b := f.browser()
	b.signIn(f.opToken)
	order := func(q string) string {
		_, page := b.get("/console/fleet?" + q)
		var ids []string
		for _, m := range regexp.MustCompile(`data-device="([^"]+)"`).FindAllStringSubmatch(page, -1) {
			ids = append(ids, m[1])
		}
		return strings.Join(ids, " ")
	}
	if got := order("sort=id"); got != "bus-1 bus-2 bus-3" {
		t.Errorf("sort=id: %s", got)
	}
	if got := order("sort=id&dir=desc"); got != "bus-3 bus-2 bus-1" {
		t.Errorf("sort=id&dir=desc: %s, want bus-3 bus-2 bus-1", got)
	}
}

// A fare table the preview finds invalid can be corrected on the page
// that says so and previewed again. Its only way on was "Back", to the
// fares page, which shows the current table: the table the operator had
// pasted and edited was gone.
func TestInvalidFarePreviewKeepsTheTable(t *testing.T) {
	f := newFixture(t)
	c := chromeSignIn(t, f, f.opToken)
	wallettest.Do(t, c.ctx, chromedp.Navigate(f.srv.URL+"/console/fares"), chromedp.WaitVisible("#table"))
	// The operator's edit, with the version left as it was.
	edited := strings.Replace(testFares, `"X1":{"adult":400}`, `"X1":{"adult":450},"N7":{"child":100}`, 1)
	wallettest.Do(t, c.ctx, chromedp.SetValue("#table", edited), chromedp.Click("#fares-preview"), chromedp.WaitVisible("#invalid"))
	if !wallettest.Eval[bool](t, c.ctx, `(() => { const t = document.getElementById("table"); return !!t && !t.hidden && t.value.includes('"N7":{"child":100}'); })()`) {
		t.Fatal("the page saying the table is invalid does not keep the table sent: the operator's edit is lost")
	}
	fixed := strings.Replace(edited, `"version":1`, `"version":2`, 1)
	wallettest.Do(t, c.ctx, chromedp.SetValue("#table", fixed), chromedp.Click("#fares-preview"), chromedp.WaitVisible("#confirm-yes"))
	if !wallettest.Eval[bool](t, c.ctx, `document.getElementById("changes").textContent.includes("fare N7 child")`) {
		t.Error("the corrected table's preview does not show its change")
	}
}

// A replacement key or certificate the API refuses is refused before the
// confirmation asks "Replace device bus-1?": it was refused only after,
// and the key and certificate pasted were gone.
func TestReplaceDeviceCheckedBeforeConfirmation(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	b := f.browser()
	csrf := b.signIn(f.opToken)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certFor := func(cn string) string {
		tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	small := "01" + strings.Repeat("00", 31) // the identity: a small-order point
	for name, tc := range map[string]struct{ key, cert, want string }{
		"small-order key":       {small, "", "small order"},
		"another device's cert": {hex.EncodeToString(pub), certFor("bus-2"), `for device "bus-2", not "bus-1"`},
		"not a certificate":     {hex.EncodeToString(pub), "-----BEGIN NONSENSE-----", "PEM CERTIFICATE"},
		"key of 63 hex digits":  {hex.EncodeToString(pub)[1:], "", "64 hex digits"},
	} {
		resp, body := b.post("/console/act/replace_device", url.Values{"csrf": {csrf}, "device": {"bus-1"},
			"public_key": {tc.key}, "certificate": {tc.cert}})
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(body, "confirm-yes") || !strings.Contains(html.UnescapeString(body), tc.want) {
			t.Errorf("%s: %d, confirmation asked %t; want it refused now, saying %q", name, resp.StatusCode,
				strings.Contains(body, "confirm-yes"), tc.want)
		}
	}
	resp, body := b.post("/console/act/replace_device", url.Values{"csrf": {csrf}, "device": {"bus-1"},
		"public_key": {hex.EncodeToString(pub)}, "certificate": {certFor("bus-1")}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "confirm-yes") {
		t.Errorf("a good key and certificate: %d, no confirmation", resp.StatusCode)
	}
}

// Replacing a revoked device in the console lifts its revocation, as its
// confirmation says, and the result says so: the API now refuses a revoked
// device without "unrevoke" (replace alone lifted it silently).
func TestReplaceRevokedDevice(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	if err := f.store.RevokeDevice(t.Context(), "bus-1"); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	csrf := b.signIn(f.opToken)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := b.post("/console/act/replace_device", url.Values{"csrf": {csrf}, "device": {"bus-1"},
		"public_key": {hex.EncodeToString(pub)}, "confirm": {"yes"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Its revocation is lifted") || f.revoked("bus-1") {
		t.Errorf("replace a revoked device, confirmed: %d, revoked %t\n%s", resp.StatusCode, f.revoked("bus-1"), body)
	}
}

// The Replace form takes the bundle's device.pub as it is (PEM, which
// farego-provision writes), pasted into its field, line breaks kept or
// dropped: it asked for "64 hex digits, device.pub" and refused the file's
// text, which holds no hex.
func TestReplaceDeviceTakesDevicePub(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	b := f.browser()
	csrf := b.signIn(f.opToken)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "device.pub")
	if err := keyfile.WritePublic(path, pub); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"as the file": string(file), "line breaks dropped": strings.ReplaceAll(string(file), "\n", "")} {
		resp, body := b.post("/console/act/replace_device", url.Values{"csrf": {csrf}, "device": {"bus-1"}, "public_key": {text}})
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "confirm-yes") || !strings.Contains(body, hex.EncodeToString(pub)) {
			t.Errorf("device.pub %s: %d, confirmation asked %t; want it asked, naming the key in hex", name, resp.StatusCode, strings.Contains(body, "confirm-yes"))
		}
	}
	cut, _, _ := strings.Cut(string(file), "-----END")
	if resp, body := b.post("/console/act/replace_device", url.Values{"csrf": {csrf}, "device": {"bus-1"}, "public_key": {cut}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "cut short") {
		t.Errorf("a device.pub cut short: %d; want it refused, saying so", resp.StatusCode)
	}
	// The form does not hold the paste to hex in the browser.
	code, body := b.get("/console/devices/bus-1")
	if code != http.StatusOK || strings.Contains(body, `pattern="[0-9a-fA-F]{64}"`) || !strings.Contains(body, "device.pub, pasted whole") {
		t.Errorf("device page: %d; want its Replace form to take device.pub as it is", code)
	}
}

// The sign-in page opened signed in (in another tab meanwhile) goes on to
// the page asked for, not to the overview.
func TestSignInPageKeepsNext(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	b.signIn(f.opToken)
	resp, err := b.c.Get(f.srv.URL + "/console/signin?next=" + url.QueryEscape("/console/fleet?state=offline"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/console/fleet?state=offline" {
		t.Errorf("sign-in page, signed in: %d to %q, want /console/fleet?state=offline", resp.StatusCode, loc)
	}
	resp, err = b.c.Get(f.srv.URL + "/console/signin?next=" + url.QueryEscape("//evil.example/console/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "/console/" {
		t.Errorf("next=//evil.example, signed in: to %q", loc)
	}
}
