package api

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/farego/farego/server/wallet/wallettest"
)

// accountNames lists the names of the ledger's accounts, sorted.
func accountNames(t *testing.T, f *fixture) []string {
	t.Helper()
	as, err := f.store.Accounts(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range as {
		names = append(names, a.Name)
	}
	slices.Sort(names)
	return names
}

// A page of another site that anyone opens in a real Chromium sends the
// API what a page may send without asking the server first: a POST in
// fetch's no-cors mode, whose body (a Blob of no type) goes with no
// Content-Type. POST /v1/accounts needs no login: before, such a page
// made an account from each visitor's address (past the limit per address,
// and taking the limit for everyone, 600 a minute, from the riders signing
// up). The same page on the API's own origin, as the wallet is, still
// makes its account: the browser did send the requests.
func TestCrossSitePageMakesNoAccounts(t *testing.T) {
	f := newFixture(t)
	const page = `<!doctype html><title>a page</title><script>
const api = new URLSearchParams(location.search).get("api");
const name = (kind) => location.hostname + "-" + kind;
window.sent = Promise.allSettled([
  fetch(api + "/v1/accounts", {method: "POST", mode: "no-cors", body: new Blob(['{"name":"' + name("blob") + '"}'])}),
  fetch(api + "/v1/accounts", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: '{"name":"' + name("text") + '"}'}),
]).then(() => true);
</script>`
	mux := http.NewServeMux()
	mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	})
	mux.Handle("/", f.srv.Config.Handler)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	b := wallettest.Browser(t, wallettest.Config{HostRules: "MAP evil.test 127.0.0.1"})
	for _, url := range []string{
		strings.Replace(srv.URL, "127.0.0.1", "evil.test", 1) + "/page?api=" + srv.URL, // another site's page
		srv.URL + "/page?api=", // the API's own origin
	} {
		wallettest.Do(t, b, chromedp.Navigate(url))
		wallettest.WaitFor(t, b, 30*time.Second, "the page's requests", `window.sent !== undefined && window.sent.then(() => true)`)
	}
	// text/plain is refused for its Content-Type (415) wherever it comes from.
	if got, want := accountNames(t, f), []string{"127.0.0.1-blob"}; !slices.Equal(got, want) {
		t.Errorf("accounts made: %q, want %q (none by the page of another site)", got, want)
	}
}

// A change a browser says comes from another site is refused before
// anything is done, whatever the endpoint; programs (no Sec-Fetch-Site, no
// Origin) and pages of the API's own origin are served as before.
func TestCrossSiteChangesRefused(t *testing.T) {
	f := newFixture(t)
	host := strings.TrimPrefix(f.srv.URL, "http://")
	for _, c := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"a program", nil, http.StatusCreated},
		{"the wallet", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": f.srv.URL}, http.StatusCreated},
		{"a browser without Sec-Fetch-Site, same origin", map[string]string{"Origin": f.srv.URL}, http.StatusCreated},
		{"another site", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"another origin of the site", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"}, http.StatusForbidden},
		{"an old browser on another site", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"an old browser, sandboxed page", map[string]string{"Origin": "null"}, http.StatusForbidden},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(accountNames(t, f))
			req, _ := http.NewRequest("POST", f.srv.URL+"/v1/accounts", strings.NewReader(`{"name":"`+c.name+`"}`))
			req.Host = host
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("status %d, want %d", resp.StatusCode, c.want)
			}
			made := len(accountNames(t, f)) - before
			if wantMade := map[bool]int{true: 1}[c.want == http.StatusCreated]; made != wantMade {
				t.Errorf("%d accounts made, want %d", made, wantMade)
			}
		})
	}
	// Reads stay anyone's to ask, from anywhere (a link to /healthz).
	req, _ := http.NewRequest("GET", f.srv.URL+"/healthz", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz from another site: %d", resp.StatusCode)
	}
	// A staff change from another site is refused too (a token could not
	// be sent from there, but nothing is left to that).
	version := f.keys.Keyring().Version()
	req, _ = http.NewRequest("POST", f.srv.URL+"/v1/keyring/rotate", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || f.keys.Keyring().Version() != version {
		t.Errorf("a rotation from another site: %d, keyring version %d → %d", resp.StatusCode, version, f.keys.Keyring().Version())
	}
}
