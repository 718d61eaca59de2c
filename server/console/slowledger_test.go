package console

import (
	"context"
	"database/sql"
	"net/http"
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

// A page over a ledger that does not answer (a table locked by a long
// migration, an overloaded database) waited as long as the lock: past the
// HTTP server's 30 s WriteTimeout its answer was lost and the browser showed
// an empty response after minutes. A page now gives up after PageTimeout
// and says the ledger is too slow. On PostgreSQL, where another session
// can hold a table's lock.
func TestPageOverLockedLedgerAnswers(t *testing.T) {
	dsn := ledgertest.PostgresSchema(t)
	ctx := context.Background()
	st, err := ledger.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
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
	f.h = New(Config{Ledger: st, Keys: kd, API: a, Now: f.clock.now, PageTimeout: 2 * time.Second})
	f.srv = newServer(f.h, a)
	defer f.srv.Close()
	b := f.browser()
	b.signIn(f.opToken)

	// Another session locks the devices table for 15 s.
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`LOCK TABLE devices IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	release := time.AfterFunc(15*time.Second, func() { tx.Rollback() })
	defer func() { release.Stop(); tx.Rollback() }()

	// Without the bound it answers 200 once the lock goes (15 s).
	code, body := b.get("/console/fleet")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "did not answer within 2s") {
		t.Errorf("the fleet page over a locked ledger: %d, want 503 saying the ledger is too slow:\n%.600s", code, body)
	}
	// Once the lock is gone, the page is back.
	tx.Rollback()
	if code, _ := b.get("/console/fleet"); code != http.StatusOK {
		t.Errorf("the fleet page after the lock: %d", code)
	}
}
