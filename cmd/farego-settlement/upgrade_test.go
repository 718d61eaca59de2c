package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// oldLedger writes the ledger of an older release (testdata/ledger: made
// by that release's own programs, see the README there) to a file of the
// test's, and returns its DSN and path.
func oldLedger(t *testing.T, name string) (dsn, path string) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "ledger", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.LimitReader(zr, 16<<20))
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "ledger.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return "sqlite:" + path, path
}

// v22Verify is what the release that made v22-bc3e1fe.db.gz printed for
// verify on it.
const v22Verify = "ledger ok: 13 accounts, 34 taps (0 flagged), 27 postings, 1 payments, balances total 12001200 (120012.00 EUR); " +
	"0 held, 0 quarantined; 1 refunds of payments, 450 given back (4.50 EUR)\n"

// TestToolsLeaveAnOlderLedgerToTheServer: the commands an operator runs
// beside the server (verify, token, account, device, mqtt-passwd), of a
// newer build, refuse a ledger of the release before and change nothing;
// the server's start migrates it, and then verify says what the older
// release said, figure for figure. They migrated it: trying the new
// build's verify before the upgrade changed the schema under the running
// older server, which then refused its own ledger at its next start (and
// its verify, and the backup taken after) — an operator's upgrade review,
// with a ledger of 3 validators' taps, a shop payment and its refund, a
// deny-list entry, a revoked device and a release rollout made by
// bc3e1fe's farego-sim, farego-settlement and farego-rider.
func TestToolsLeaveAnOlderLedgerToTheServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := filepath.Join(t.TempDir(), "data") // a key directory for mqtt-passwd
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	dsn, path := oldLedger(t, "v22-bc3e1fe.db.gz")
	sum := func() [32]byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	before := sum()
	at := func(cmd ...string) []string { return append(cmd, "--data", data, "--db", dsn) }
	for _, args := range [][]string{
		at("verify"),
		at("token", "list"),
		at("token", "create", "--role", "auditor"),
		append(at("account", "show"), "1012"),
		append(at("account", "topup", "--reference", "r", "--reason", "x"), "1012", "5.00"),
		append(at("device", "revoke"), "sim-0000"),
		at("mqtt-passwd"),
	} {
		c, out, e := settle(t, ctx, args...)
		if c != 1 || !strings.Contains(e, "older than this program: database at version 22 (status_written)") ||
			!strings.Contains(e, "farego-settlement run") {
			t.Errorf("%v on the older ledger: exit %d, stdout %q, stderr %q; want 1, saying it is older and that run migrates it", args, c, out, e)
		}
		if sum() != before {
			t.Fatalf("%v changed the older ledger's file", args)
		}
	}
	st, err := ledger.Open(ctx, dsn, &ledger.Options{MustExist: true}) // as run opens it
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.SchemaVersion(ctx)
	st.Close()
	if err != nil || v <= 22 {
		t.Fatalf("the server's open left version %d, %v", v, err)
	}
	c, out, e := settle(t, ctx, "verify", "--data", data, "--db", dsn)
	if c != 0 || out != v22Verify {
		t.Fatalf("verify once migrated: exit %d, %q %q\nwant what the release before said: %q", c, out, e, v22Verify)
	}
	c, out, e = settle(t, ctx, "account", "show", "--data", data, "--db", dsn, "1012")
	if c != 0 || !strings.Contains(out, "balance       42.00 EUR") || !bytes.Contains([]byte(out), []byte("12.50 EUR  4.50 EUR  8.00 EUR")) {
		t.Errorf("account show 1012 once migrated: exit %d, %q %q; want 42.00 EUR, the payment of 12.50 with 4.50 refunded", c, out, e)
	}
}

// TestInitLeavesAnOlderLedger: init of a newer build pointed at a ledger
// of the release before (a second instance's host set up with init
// instead of a copy of the key directory, a --db typo naming the
// production database) refuses it and changes nothing. It migrated it
// first, then refused it as another init's: the older server still
// serving it refused its own ledger at its next start, and that
// release's verify with it — what NoMigrate keeps the other commands
// from doing. On SQLite (a ledger made by bc3e1fe's binaries) and
// PostgreSQL (the newest migration taken back, as
// TestNoMigrateLeavesAnOlderLedger makes it).
func TestInitLeavesAnOlderLedger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	initOn := func(t *testing.T, dsn, want string) {
		t.Helper()
		data := filepath.Join(t.TempDir(), "data")
		c, out, e := settle(t, ctx, "init", "--data", data, "--db", dsn)
		if c != 1 || !strings.Contains(e, "already holds a ledger, of an older release") || !strings.Contains(e, want) {
			t.Errorf("init on the older ledger: exit %d, stdout %q, stderr %q; want 1, saying it is older (%q)", c, out, e, want)
		}
		if _, err := os.Stat(filepath.Join(data, "keys")); err == nil {
			t.Error("init on the older ledger made a key directory")
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		dsn, path := oldLedger(t, "v22-bc3e1fe.db.gz")
		sum := func() [32]byte {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return sha256.Sum256(b)
		}
		before := sum()
		initOn(t, dsn, "database at version 22 (status_written)")
		if sum() != before {
			t.Fatal("init changed the older ledger's file")
		}
		st, err := ledger.Open(ctx, dsn, &ledger.Options{MustExist: true, NoMigrate: true})
		if err == nil {
			st.Close()
		}
		if !errors.Is(err, ledger.ErrSchemaTooOld) {
			t.Fatalf("after init, a tool's open: %v; want the ledger still at version 22", err)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := ledgertest.PostgresSchema(t)
		// The first instance's ledger, bound to its key directory.
		if c, _, e := settle(t, ctx, "init", "--data", filepath.Join(t.TempDir(), "first"), "--db", dsn); c != 0 {
			t.Fatal(e)
		}
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		// The ledger as the release before the newest migration left it.
		for _, q := range []string{`ALTER TABLE accounts DROP COLUMN secret_replaced_ns`, `DELETE FROM schema_migrations WHERE version >= 34`} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		initOn(t, dsn, "database at version 33 (replay_kept)")
		var v int64
		if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil || v != 33 {
			t.Fatalf("after init: schema version %d, %v; want 33 left as it was", v, err)
		}
	})
}

// TestOtherKeysLeaveAnOlderLedger: run, restored and broker migrate an
// older ledger, but one bound to another key directory (a mistyped --data
// or --keys at the upgrade, another deployment's backup) they refuse
// before migrating it, not after: they migrated it, then refused it
// (restored saying "the ledger is unchanged"), and the server of the
// release before then refused its own ledger at its next start (an
// operator following the README's Upgrading with testdata/ledger).
func TestOtherKeysLeaveAnOlderLedger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	other := filepath.Join(t.TempDir(), "other") // another deployment's key directory
	if c, _, e := settle(t, ctx, "init", "--data", other); c != 0 {
		t.Fatal(e)
	}
	cmds := func(dsn string) [][]string {
		at := func(cmd ...string) []string { return append(cmd, "--data", other, "--db", dsn) }
		return [][]string{
			at("run", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"),
			at("restored"),
			at("broker", "--mqtt", "127.0.0.1:0"),
		}
	}
	refused := func(t *testing.T, args []string) {
		t.Helper()
		c, out, e := settle(t, ctx, args...)
		if c != 1 || !strings.Contains(e, "another key directory") || !strings.Contains(e, "not migrated") {
			t.Errorf("%v on an older ledger of another key directory: exit %d, stdout %q, stderr %q; want 1, refused before migrating", args, c, out, e)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		for i := range cmds("") {
			dsn, path := oldLedger(t, "v22-bc3e1fe.db.gz") // each its own copy
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			args := cmds(dsn)[i]
			refused(t, args)
			if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, before) {
				t.Errorf("%v changed the older ledger's file (%v)", args, err)
			}
			st, err := ledger.Open(ctx, dsn, &ledger.Options{MustExist: true, NoMigrate: true})
			if err == nil {
				st.Close()
			}
			if !errors.Is(err, ledger.ErrSchemaTooOld) {
				t.Errorf("after %v, a tool's open: %v; want the ledger still at version 22", args, err)
			}
		}
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := ledgertest.PostgresSchema(t)
		first := filepath.Join(t.TempDir(), "first")
		if c, _, e := settle(t, ctx, "init", "--data", first, "--db", dsn); c != 0 {
			t.Fatal(e)
		}
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		// The ledger as the release before the newest migrations left it.
		for _, q := range []string{`ALTER TABLE accounts DROP COLUMN secret_replaced_ns`, `DELETE FROM schema_migrations WHERE version >= 34`} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range cmds(dsn) {
			refused(t, args)
			var v int64
			if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil || v != 33 {
				t.Fatalf("after %v: schema version %d, %v; want 33 left as it was", args, v, err)
			}
		}
		// With its own key directory it is migrated.
		if c, out, e := settle(t, ctx, "restored", "--data", first, "--db", dsn); c != 0 {
			t.Fatalf("restored with the ledger's own key directory: exit %d, %q %q", c, out, e)
		}
		var v int64
		if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil || v <= 33 {
			t.Fatalf("after restored with its own keys: schema version %d, %v; want it migrated", v, err)
		}
	})
}
