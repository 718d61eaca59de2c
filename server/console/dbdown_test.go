package console

import (
	"context"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// pgLink is a TCP relay on loopback between the ledger and PostgreSQL:
// cut closes it and every connection through it, as a database stopped
// or a network cut between them.
type pgLink struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newPGLink(t *testing.T, target string) *pgLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &pgLink{ln: ln}
	t.Cleanup(l.cut)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c, up)
			l.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return l
}

func (l *pgLink) cut() {
	l.ln.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

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
	link.cut()
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
	link.cut()
	for name, tok := range map[string]string{"a ledger token": aud, "the init token": f.opToken} {
		resp, body := f.browser().post("/console/signin", url.Values{"token": {tok}})
		if resp.StatusCode != 503 || !strings.Contains(body, "Database unreachable") || len(resp.Cookies()) != 0 {
			t.Errorf("sign-in with %s, the database out of reach: %d, cookies %v\n%s", name, resp.StatusCode, resp.Cookies(), body)
		}
	}
}

// newPGLinkFixture is a console on a PostgreSQL ledger reached through a
// pgLink, which the caller cuts.
func newPGLinkFixture(t *testing.T) (*fixture, *pgLink) {
	t.Helper()
	dsn := ledgertest.PostgresSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	link := newPGLink(t, u.Host)
	u.Host = link.ln.Addr().String()
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
