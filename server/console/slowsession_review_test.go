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

// A page whose session cannot be read within PageTimeout is a ledger too
// slow (503), as README says, not a 500 "session could not be read".
func TestPageOverLockedSessionsAnswers(t *testing.T) {
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

	// Another session locks the sessions table for 15 s: the session read itself waits.
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`LOCK TABLE console_sessions IN ACCESS EXCLUSIVE MODE`); err != nil {
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

// The fare preview (a POST, not bounded by PageTimeout) reads the fleet
// to warn about devices a route list leaves out: over a locked devices
// table it waited for the lock, and so did publishing (its confirmation
// prepares the plan again), though neither needs the fleet. The warning
// is advice: it gives up after PageTimeout.
func TestFarePreviewOverLockedFleetAnswers(t *testing.T) {
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
	csrf := b.signIn(f.opToken)

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
	release := time.AfterFunc(10*time.Second, func() { tx.Rollback() })
	defer func() { release.Stop(); tx.Rollback() }()

	only := strings.Replace(strings.Replace(testFares, `"version":1`, `"version":2`, 1), `"fares":`, `"routes":["X1"],"fares":`, 1)
	start := time.Now()
	resp, body := b.post("/console/act/publish_fares", url.Values{"csrf": {csrf}, "table": {only}})
	if took := time.Since(start); resp.StatusCode != http.StatusOK || took > 6*time.Second {
		t.Errorf("the fare preview over a locked devices table: %d after %s, want 200 within ~2 s:\n%.300s", resp.StatusCode, took, body)
	} else if !strings.Contains(body, "could not be read") {
		t.Errorf("the fare preview does not say it could not check the fleet:\n%s", body)
	}
}
