package console

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/wallet/wallettest"
)

// An operator looking for a leaked till's tokens filters the tokens page
// (merchant shop-1, in force) and revokes one: the confirmation's Cancel
// and the result's Back went to the whole, unfiltered first page, and the
// operator had to filter again for each token of the shop. They go back to
// the page the Revoke button was on, its filter kept; the same for an
// account's older postings after a refund.
func TestActionGoesBackToTheFilteredPage(t *testing.T) {
	f := newFixture(t)
	for i := range 3 {
		f.storeToken(ledger.APIToken{ID: fmt.Sprintf("till%04d", i), Role: ledger.RoleMerchant, MerchantID: "shop-1", Name: "till"})
	}
	b := f.browser()
	csrf := b.signIn(f.opToken)
	const filtered = "tokens?in_force=1&merchant=shop-1&role=merchant"
	resp, body := b.post("/console/act/revoke_token", url.Values{"csrf": {csrf}, "id": {"till0001"}},
		"Referer", f.srv.URL+"/console/"+filtered)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke_token's confirmation: %d", resp.StatusCode)
	}
	if m := regexp.MustCompile(`href="([^"]*)" id="confirm-cancel"`).FindStringSubmatch(body); m == nil || html.UnescapeString(m[1]) != "/console/"+filtered {
		t.Errorf("the confirmation's Cancel goes to %v, want /console/%s", m, filtered)
	}
	m := regexp.MustCompile(`name="back" value="([^"]*)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("the confirmation does not carry the page to go back to")
	}
	// Confirmed from the confirmation page (its Referer is the action).
	resp, body = b.post("/console/act/revoke_token", url.Values{"csrf": {csrf}, "id": {"till0001"}, "confirm": {"yes"},
		"back": {html.UnescapeString(m[1])}}, "Referer", f.srv.URL+"/console/act/revoke_token")
	if resp.StatusCode != http.StatusOK || !f.tokenRevoked("till0001") {
		t.Fatalf("revoke_token: %d", resp.StatusCode)
	}
	if m := regexp.MustCompile(`href="([^"]*)" id="result-back"`).FindStringSubmatch(body); m == nil || html.UnescapeString(m[1]) != "/console/"+filtered {
		t.Errorf("the result's Back goes to %v, want /console/%s", m, filtered)
	}
	// Only the action's own page: another page, or another site's, is not
	// where its Back goes.
	for _, back := range []string{"fleet?state=offline", "//evil.example/console/tokens?x=1", "tokens/x?y=1"} {
		resp, body := b.post("/console/act/revoke_token", url.Values{"csrf": {csrf}, "id": {"till0002"}, "back": {back}})
		if m := regexp.MustCompile(`href="([^"]*)" id="confirm-cancel"`).FindStringSubmatch(body); resp.StatusCode != http.StatusOK || m == nil || m[1] != "/console/tokens" {
			t.Errorf("back %q: Cancel goes to %v, want /console/tokens", back, m)
		}
	}
}

func (f *fixture) tokenRevoked(id string) bool {
	f.t.Helper()
	ts, _, err := f.store.TokensPage(context.Background(), ledger.TokenFilter{Limit: 100})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, tk := range ts {
		if tk.ID == id {
			return !tk.Revoked.IsZero()
		}
	}
	f.t.Fatalf("no token %s", id)
	return false
}

// A bus assigned route 7 that still taps as route 42 has its taps noted
// route_mismatch (charged by their own route). The money and flagged
// pages said "A reason this console has no advice for. Charged: nothing."
// for them: no help, and wrong (each was charged).
func TestRouteMismatchNoteExplained(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	acct := f.account(1000)
	at := time.Now()
	key := paycode.ID{Account: acct, Serial: 1, Time: uint32(at.Unix()), Counter: 1}.Key()
	seed := sha256.Sum256([]byte(fmt.Sprint("rider", acct))) // f.account's credential
	riderKey := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	if _, err := f.store.CommitTaps(context.Background(), []ledger.Tap{{ID: ledger.TapID("bus-1", "e1", 1), DeviceID: "bus-1", Seq: 1, Epoch: "e1",
		Time: at, Account: acct, Serial: 1, RiderKey: riderKey, CodeKey: key, CodeHash: "000000000001",
		BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Notes: []string{ledger.NoteRouteMismatch}, Record: []byte("record")}}); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	b.signIn(f.opToken)
	row := regexp.MustCompile(`(?s)<tr data-reason="route_mismatch">.*?</tr>`)
	for _, p := range []string{"/console/money", "/console/flagged"} {
		_, body := b.get(p)
		r := row.FindString(body)
		if r == "" {
			t.Errorf("%s does not list the route_mismatch note", p)
			continue
		}
		if strings.Contains(r, "no advice") || strings.Contains(r, "Charged: nothing") {
			t.Errorf("%s explains route_mismatch as %q", p, html.UnescapeString(regexp.MustCompile(`<[^>]+>`).ReplaceAllString(r, " ")))
		}
	}
	// The overview's tile: no flagged tap, and the note under its own
	// heading (it read "none", then the note, as if flagged).
	_, body := b.get("/console/")
	tile := regexp.MustCompile(`(?s)<a class="tile" href="/console/flagged" id="tile-flagged">.*?</a>`).FindString(body)
	if !strings.Contains(tile, "no flagged taps") || !strings.Contains(tile, "noted, charged:") || !strings.Contains(tile, "route_mismatch") {
		t.Errorf("the overview's flagged tile: %s", tile)
	}
}

// Amounts and counts in the console's tables are right-aligned, so that
// their decimals line up: td.num said so, but table.data's own "text-align:
// left" is more specific and won, and every amount column was ragged.
func TestNumbersRightAligned(t *testing.T) {
	f := newFixture(t)
	c := chromeSignIn(t, f, f.opToken)
	wallettest.Do(t, c.ctx, chromedp.Navigate(f.srv.URL+"/console/fares"), chromedp.WaitVisible("table.data td.num"))
	if a := wallettest.Eval[string](t, c.ctx, `getComputedStyle(document.querySelector("table.data td.num")).textAlign`); a != "right" {
		t.Errorf("a number cell of the fares table is aligned %q, want right", a)
	}
	if a := wallettest.Eval[string](t, c.ctx, `getComputedStyle(document.querySelector("table.data th.num") || document.querySelector("table.data td.num")).textAlign`); a != "right" {
		t.Errorf("a number column's heading is aligned %q, want right", a)
	}
}

// The revoke confirmation named the token by its id alone ("Revoke token
// wu3jvsbh?"): an operator revoking one leaked till among a shop's could
// not tell, on the page that asks, which till it was. It shows the
// token's role, shop and name; an id never made is refused there.
func TestRevokeTokenConfirmationNamesIt(t *testing.T) {
	f := newFixture(t)
	tok := ledger.APIToken{ID: "till0007", Role: ledger.RoleMerchant, MerchantID: "shop-7", Name: "front till, Main St"}
	h := sha256.Sum256([]byte(tok.ID))
	if _, err := f.store.CreateToken(context.Background(), tok, h[:]); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	csrf := b.signIn(f.opToken)
	resp, body := b.post("/console/act/revoke_token", url.Values{"csrf": {csrf}, "id": {"till0007"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "front till, Main St") || !strings.Contains(body, "<dd>shop-7</dd>") {
		t.Errorf("the revoke confirmation (%d) does not name the token's shop and name", resp.StatusCode)
	}
	if resp, body := b.post("/console/act/revoke_token", url.Values{"csrf": {csrf}, "id": {"nosuch00"}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "was ever made") {
		t.Errorf("revoking a token never made: %d, want refused before the confirmation", resp.StatusCode)
	}
	if f.tokenRevoked("till0007") {
		t.Error("a confirmation revoked the token")
	}
}

// Assigning a route the fare table does not serve puts the device out of
// service: its confirmation's button is a dangerous one (it said so in
// the text only, with the ordinary button).
func TestAssignUnservedRouteIsDangerous(t *testing.T) {
	f := newFixtureIn(t, "EUR", strings.Replace(testFares, `"fares":`, `"routes":["X1","42"],"fares":`, 1))
	f.device("bus-1")
	b := f.browser()
	csrf := b.signIn(f.opToken)
	for route, danger := range map[string]bool{"7": true, "X1": false} {
		_, body := b.post("/console/act/assign", url.Values{"device": {"bus-1"}, "route": {route}, "csrf": {csrf}})
		if got := strings.Contains(body, `<button class="danger" id="confirm-yes">`); got != danger {
			t.Errorf("route %s: a dangerous button %v, want %v", route, got, danger)
		}
	}
}
