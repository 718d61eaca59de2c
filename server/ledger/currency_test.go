package ledger

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger/ledgertest"
)

const tableJPY = `{"version":1,"currency":"JPY","timezone":"Asia/Tokyo","service_day_start":"04:00",
	"fares":{"*":{"adult":210,"child":110,"senior":110,"student":160}}}`

// TestLedgerKeepsItsCurrency: a ledger keeps the currency it was made in,
// whatever later programs are told; a fare table in another currency is
// refused and changes nothing (it would charge every rider 0:
// currency_mismatch); a ledger from before the currency was kept takes
// its latest fare table's, else its accounts'.
func TestLedgerKeepsItsCurrency(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, &Options{Currency: "JPY"})
		if s.Currency() != "JPY" {
			t.Fatalf("Currency() = %s", s.Currency())
		}
		err := s.PutFareTable(ctx, mustTable(t, tableV1))
		wantErr(t, err, ErrInvalid)
		if !strings.Contains(err.Error(), "EUR") || !strings.Contains(err.Error(), "JPY") {
			t.Errorf("error does not name both currencies: %v", err)
		}
		if _, err := s.LatestFareTable(ctx); !errors.Is(err, ErrNoFareTable) {
			t.Fatalf("a refused table was stored: %v", err)
		}
		if err := s.PutFareTable(ctx, mustTable(t, tableJPY)); err != nil {
			t.Fatal(err)
		}

		// Another program opening it without a currency (the server's
		// default is EUR) gets the ledger's, and its accounts are in it.
		s2 := db.open(t, nil)
		if s2.Currency() != "JPY" {
			t.Fatalf("reopened: Currency() = %s, want JPY", s2.Currency())
		}
		a, err := s2.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult})
		if err != nil {
			t.Fatal(err)
		}
		if a.Currency != "JPY" {
			t.Fatalf("new account in %s, want JPY", a.Currency)
		}
		// One told another currency is refused.
		_, err = Open(ctx, db.dsn, &Options{Currency: "EUR"})
		wantErr(t, err, ErrInvalid)
		if !strings.Contains(err.Error(), "JPY") {
			t.Errorf("error does not name the ledger's currency: %v", err)
		}

		// A ledger from before the currency was kept: its fare table's.
		forget := func() {
			t.Helper()
			for _, q := range []string{`DROP TABLE ledger_settings`, `ALTER TABLE devices DROP COLUMN written_ns` /* migration 22 */, `ALTER TABLE devices DROP COLUMN reported_route`, `ALTER TABLE devices DROP COLUMN reported_vehicle` /* 30 */, `ALTER TABLE devices DROP COLUMN reported_server_version` /* 30 */, `ALTER TABLE devices DROP COLUMN cert_not_after_ns` /* 31 */, `ALTER TABLE devices DROP COLUMN replay_id`, `ALTER TABLE devices DROP COLUMN replay_until_ns`, `ALTER TABLE devices DROP COLUMN replay_sent_ns`, `ALTER TABLE devices DROP COLUMN replay_sends` /* 33 */, `DROP INDEX accounts_unused`, `ALTER TABLE accounts DROP COLUMN anonymous`, `ALTER TABLE accounts DROP COLUMN secret_replaced_ns` /* 34 */ /* 32 */, `ALTER TABLE code_uses DROP COLUMN reusers` /* 23 */, `DROP TABLE code_refusals` /* 24 */, `DROP INDEX payments_token`, `DROP INDEX refunds_token` /* 29 */, `ALTER TABLE payments DROP COLUMN token_id`, `ALTER TABLE refunds DROP COLUMN token_id` /* 26 */, `DELETE FROM schema_migrations WHERE version >= 14`} {
				if _, err := s.db.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
		}
		forget()
		_, err = Open(ctx, db.dsn, &Options{Currency: "EUR"})
		wantErr(t, err, ErrInvalid)
		forget() // the refused Open migrated it in its transaction
		if s3 := db.open(t, nil); s3.Currency() != "JPY" {
			t.Fatalf("old ledger with a JPY fare table: Currency() = %s", s3.Currency())
		}
	})
}

// TestOldLedgerTakesItsAccountsCurrency: a ledger from before, with
// accounts but no fare table yet, keeps its accounts' currency.
func TestOldLedgerTakesItsAccountsCurrency(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, &Options{Currency: "USD"})
		if _, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult}); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`DROP TABLE ledger_settings`, `ALTER TABLE devices DROP COLUMN written_ns` /* migration 22 */, `ALTER TABLE devices DROP COLUMN reported_route`, `ALTER TABLE devices DROP COLUMN reported_vehicle` /* 30 */, `ALTER TABLE devices DROP COLUMN reported_server_version` /* 30 */, `ALTER TABLE devices DROP COLUMN cert_not_after_ns` /* 31 */, `ALTER TABLE devices DROP COLUMN replay_id`, `ALTER TABLE devices DROP COLUMN replay_until_ns`, `ALTER TABLE devices DROP COLUMN replay_sent_ns`, `ALTER TABLE devices DROP COLUMN replay_sends` /* 33 */, `DROP INDEX accounts_unused`, `ALTER TABLE accounts DROP COLUMN anonymous`, `ALTER TABLE accounts DROP COLUMN secret_replaced_ns` /* 34 */ /* 32 */, `ALTER TABLE code_uses DROP COLUMN reusers` /* 23 */, `DROP TABLE code_refusals` /* 24 */, `DROP INDEX payments_token`, `DROP INDEX refunds_token` /* 29 */, `ALTER TABLE payments DROP COLUMN token_id`, `ALTER TABLE refunds DROP COLUMN token_id` /* 26 */, `DELETE FROM schema_migrations WHERE version >= 14`} {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		if s2 := db.open(t, nil); s2.Currency() != "USD" {
			t.Fatalf("Currency() = %s, want USD", s2.Currency())
		}
	})
}

// TestReplaceSecret: a secret is replaced only while it is the one named
// (ErrSecretChanged otherwise: another replacement came first), or
// unconditionally by a reset (old nil); an unknown account is not found.
// Each replacement denies the credentials not yet expired
// (secret_replaced, until an hour after each expires) in the same
// transaction, so the deny-list version moves; one issued after is not
// denied until the next replacement.
func TestReplaceSecret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult, SecretHash: []byte("one")})
		if err != nil {
			t.Fatal(err)
		}
		replace := func(old, new string, want int) {
			t.Helper()
			var o []byte
			if old != "" {
				o = []byte(old)
			}
			n, err := s.ReplaceSecret(ctx, a.ID, o, []byte(new))
			if err != nil || n != want {
				t.Fatalf("ReplaceSecret(%q → %q) = %d, %v; want %d credentials denied", old, new, n, err, want)
			}
		}
		issue := func(notAfter time.Time) uint32 {
			t.Helper()
			serial, err := s.IssueCredentialSerial(ctx, a.ID, notAfter, riderKey(a.ID))
			if err != nil {
				t.Fatal(err)
			}
			return serial
		}
		n, err := s.ReplaceSecret(ctx, a.ID, []byte("not it"), []byte("two"))
		wantErr(t, err, ErrSecretChanged)
		if n != 0 {
			t.Errorf("a refused replacement denied %d credentials", n)
		}
		replace("one", "two", 0) // no credential yet
		until1, until2 := time.Now().Add(24*time.Hour).Truncate(time.Second), time.Now().Add(12*time.Hour).Truncate(time.Second)
		s1, s2 := issue(until1), issue(until2)
		v0, err := s.DenyVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		replace("two", "three", 2)
		if v, err := s.DenyVersion(ctx); err != nil || v <= v0 {
			t.Errorf("deny version %d after the replacement, %d before (%v)", v, v0, err)
		}
		entries, err := s.DenyEntries(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := map[uint32]time.Time{s1: until1.Add(time.Hour), s2: until2.Add(time.Hour)}
		if len(entries) != 2 {
			t.Fatalf("deny entries %+v, want one per credential", entries)
		}
		for _, e := range entries {
			if e.Reason != ReasonSecretReplaced || !e.Expires.Equal(want[e.Serial]) {
				t.Errorf("deny entry %+v, want %s until %v", e, ReasonSecretReplaced, want[e.Serial])
			}
		}
		if acct, err := s.Account(ctx, a.ID); err != nil || acct.Denied {
			t.Errorf("the account itself is denied (%v): only its old credentials should be", err)
		}
		s3 := issue(until1)
		_, err = s.ReplaceSecret(ctx, a.ID, []byte("two"), []byte("four"))
		wantErr(t, err, ErrSecretChanged)
		replace("", "reset", 1) // s3; s1 and s2 are denied already
		if entries, err := s.DenyEntries(ctx, a.ID); err != nil || len(entries) != 3 || entries[2].Serial != s3 {
			t.Errorf("deny entries after the reset %+v (%v), want s1, s2 and s3", entries, err)
		}
		if h, err := s.AccountSecretHash(ctx, a.ID); err != nil || string(h) != "reset" {
			t.Fatalf("secret hash %q, %v", h, err)
		}
		_, err = s.ReplaceSecret(ctx, 424242, nil, []byte("x"))
		wantErr(t, err, ErrNotFound)
		_, err = s.ReplaceSecret(ctx, a.ID, nil, nil)
		wantErr(t, err, ErrInvalid)
	})
}

// TestMustExist: with MustExist a missing SQLite ledger is refused
// (ErrNoLedger) and no file is made; an existing one opens.
func TestMustExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	_, err := Open(context.Background(), path, &Options{MustExist: true})
	wantErr(t, err, ErrNoLedger)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a refused Open made %s: %v", path, err)
	}
	s, err := Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(context.Background(), path, &Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	// An empty file (a copy that failed) and a database without a ledger
	// (another program's, or a PostgreSQL schema nobody restored into)
	// are refused as well, and left as they were.
	empty := filepath.Join(t.TempDir(), "ledger.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), empty, &Options{MustExist: true})
	wantErr(t, err, ErrNoLedger)
	if info, err := os.Stat(empty); err != nil || info.Size() != 0 {
		t.Errorf("a refused Open changed the empty file: %v, %v", info, err)
	}
	t.Run("postgres", func(t *testing.T) {
		dsn := ledgertest.PostgresSchema(t)
		_, err := Open(context.Background(), dsn, &Options{MustExist: true})
		wantErr(t, err, ErrNoLedger)
		// Nothing made: an Open that may create then migrates from the
		// start, and the one that must find a ledger finds it.
		s, err := Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		s, err = Open(context.Background(), dsn, &Options{MustExist: true})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	})
	other := filepath.Join(t.TempDir(), "other.db")
	db, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE notes (x TEXT)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(context.Background(), other, &Options{MustExist: true})
	wantErr(t, err, ErrNoLedger)
}
