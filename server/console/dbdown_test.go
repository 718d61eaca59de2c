package console

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// With its PostgreSQL out of reach, every console page said "Server
// error: The session could not be read; see the server log": nothing
// said the database was down (the pages name a broker cut off, never the
// database). It says the database is unreachable (503), and the page
// works again once it answers.
func TestConsoleSaysDatabaseUnreachable(t *testing.T) {
	f, link := newPGLinkFixture(t)
	b := f.browser()
	b.signIn(f.opToken)
	if code, body := b.get("/console/fleet"); code != 200 {
		t.Fatalf("the set-up: the fleet page answers %d: %s", code, body)
	}
	link.Cut()
	for _, p := range []string{"/console/", "/console/fleet", "/console/accounts/1"} {
		code, body := b.get(p)
		if code != 503 || !strings.Contains(body, "Database unreachable") || !strings.Contains(body, "cannot reach its ledger database") {
			t.Errorf("%s with the database out of reach: %d\n%s", p, code, body)
		}
	}
}

// Signing in with the database out of reach said "Server error: the token
// could not be checked" (a ledger token) or "the session could not be
// started" (the init token): the first page an operator meets named no
// database, as every other page did before. It says the database is
// unreachable (503).
func TestSignInSaysDatabaseUnreachable(t *testing.T) {
	f, link := newPGLinkFixture(t)
	aud := f.token(ledger.RoleAuditor)
	link.Cut()
	for name, tok := range map[string]string{"a ledger token": aud, "the init token": f.opToken} {
		resp, body := f.browser().post("/console/signin", url.Values{"token": {tok}})
		if resp.StatusCode != 503 || !strings.Contains(body, "Database unreachable") || len(resp.Cookies()) != 0 {
			t.Errorf("sign-in with %s, the database out of reach: %d, cookies %v\n%s", name, resp.StatusCode, resp.Cookies(), body)
		}
	}
}

// newPGLinkFixture is a console on a PostgreSQL ledger reached through a
// ledgertest.Relay, which the caller cuts.
func newPGLinkFixture(t *testing.T) (*fixture, *ledgertest.Relay) {
	t.Helper()
	dsn := ledgertest.PostgresSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	link := ledgertest.NewRelay(t, u.Host)
	u.Host = link.Addr()
	ctx := context.Background()
	st, err := ledger.Open(ctx, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tbl, _ := fare.Parse([]byte(testFares))
	if err := st.PutFareTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	kd, err := keys.Init(filepath.Join(t.TempDir(), "keys"), keys.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(kd.Path(), keys.TokenFile))
	a := api.New(api.Config{Ledger: st, Keys: kd})
	f := &fixture{t: t, store: st, keys: kd, opToken: strings.TrimSpace(string(tok)), clock: &testClock{}}
	f.h = New(Config{Ledger: st, Keys: kd, API: a, Now: f.clock.now})
	f.srv = newServer(f.h, a)
	t.Cleanup(f.srv.Close)
	return f, link
}
