package console

import (
	"context"
	"database/sql"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// pgFixture is a console over a ledger on PostgreSQL (where another
// session can hold a table's lock) whose pages wait at most 2 s for it;
// dsn is the ledger's.
func pgFixture(t *testing.T) (f *fixture, dsn string) {
	t.Helper()
	dsn = ledgertest.PostgresSchema(t)
	ctx := context.Background()
	st, err := ledger.Open(ctx, dsn, nil)
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
	f = &fixture{t: t, store: st, keys: kd, opToken: strings.TrimSpace(string(tok)), clock: &testClock{}}
	f.h = New(Config{Ledger: st, Keys: kd, API: a, Now: f.clock.now, PageTimeout: 2 * time.Second})
	f.srv = newServer(f.h, a)
	t.Cleanup(f.srv.Close)
	return f, dsn
}

// lockTable has another session hold table of the ledger at dsn locked
// for hold at most; release ends the lock at once.
func lockTable(t *testing.T, dsn, table string, hold time.Duration) (release func()) {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`LOCK TABLE ` + table + ` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(hold, func() { tx.Rollback() })
	release = func() { timer.Stop(); tx.Rollback() }
	t.Cleanup(func() { release(); db.Close() })
	return release
}

// A page over a ledger that does not answer (a table locked by a long
// migration, an overloaded database) waited as long as the lock: past the
// HTTP server's 30 s WriteTimeout its answer was lost and the browser showed
// an empty response after minutes. A page now gives up after PageTimeout
// and says the ledger is too slow — also when the session read itself
// waits (review: it answered 500 "session could not be read").
func TestPageOverLockedLedgerAnswers(t *testing.T) {
	for _, table := range []string{"devices", "console_sessions"} {
		t.Run(table, func(t *testing.T) {
			f, dsn := pgFixture(t)
			b := f.browser()
			b.signIn(f.opToken)
			release := lockTable(t, dsn, table, 15*time.Second)
			// Without the bound it answers 200 once the lock goes (15 s).
			code, body := b.get("/console/fleet")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "did not answer within 2s") {
				t.Errorf("the fleet page over a locked %s table: %d, want 503 saying the ledger is too slow:\n%.600s", table, code, body)
			}
			// Once the lock is gone, the page is back.
			release()
			if code, _ := b.get("/console/fleet"); code != http.StatusOK {
				t.Errorf("the fleet page after the lock: %d", code)
			}
		})
	}
}

// The fare preview (a POST, not bounded by PageTimeout) reads the fleet
// to warn about devices a route list leaves out: over a locked devices
// table it waited for the lock, and so did publishing (its confirmation
// prepares the plan again), though neither needs the fleet. The warning
// is advice: it gives up after PageTimeout (had it waited for the lock's
// end, it would have read the fleet and said nothing of it).
func TestFarePreviewOverLockedFleetAnswers(t *testing.T) {
	f, dsn := pgFixture(t)
	b := f.browser()
	csrf := b.signIn(f.opToken)
	lockTable(t, dsn, "devices", 10*time.Second)
	only := strings.Replace(strings.Replace(testFares, `"version":1`, `"version":2`, 1), `"fares":`, `"routes":["X1"],"fares":`, 1)
	resp, body := b.post("/console/act/publish_fares", url.Values{"csrf": {csrf}, "table": {only}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "could not be read") {
		t.Errorf("the fare preview over a locked devices table: %d, want it to say it could not check the fleet:\n%.600s", resp.StatusCode, body)
	}
}
