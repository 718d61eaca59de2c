package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/server/ledger"
)

// One token's sign-ins are bounded: each is a write of the ledger's (a
// session, an audit entry kept for good), and a script looping on one
// auditor token made 220 a second, until the sessions kept a day made
// every sign-in hold the ledger's writer for a second (an attack review,
// live). Past the burst one is refused before anything is written; the
// sessions open still work, another token still signs in, and the
// token signs in again once its bucket refills.
func TestSignInsBoundedPerToken(t *testing.T) {
	f := newFixture(t)
	aud := f.token(ledger.RoleAuditor)
	entries := func() int {
		t.Helper()
		es, err := f.store.AuditLog(context.Background(), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range es {
			if e.Action == "console_signin" && strings.Contains(e.Actor, "(auditor)") {
				n++
			}
		}
		return n
	}
	var last *browser
	for i := range DefaultSignInBurst {
		last = f.browser()
		if resp, body := last.post("/console/signin", url.Values{"token": {aud}}); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in %d of the burst: %d %.300s", i+1, resp.StatusCode, body)
		}
	}
	b := f.browser()
	resp, body := b.post("/console/signin", url.Values{"token": {aud}})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || len(resp.Cookies()) != 0 ||
		!strings.Contains(body, `id="signin-error"`) {
		t.Errorf("sign-in past the burst: %d, Retry-After %q, cookies %v; want 429 with Retry-After and no session",
			resp.StatusCode, resp.Header.Get("Retry-After"), resp.Cookies())
	}
	if got, want := entries(), DefaultSignInBurst; got != want {
		t.Errorf("console_signin audit entries: got %d, want %d (the refused one wrote one)", got, want)
	}
	if code, _ := last.get("/console/"); code != http.StatusOK {
		t.Errorf("a session opened before the refusal: %d, want 200", code)
	}
	f.browser().signIn(f.opToken) // another token: its own bound
	f.clock.advance(time.Minute)
	if resp, body := f.browser().post("/console/signin", url.Values{"token": {aud}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a minute later: %d %.300s, want a session", resp.StatusCode, body)
	}
}
