package ledger

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/agent/paycode"
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
			for _, q := range []string{`DROP TABLE ledger_settings`, `DELETE FROM schema_migrations WHERE version >= 14`} {
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
		for _, q := range []string{`DROP TABLE ledger_settings`, `DELETE FROM schema_migrations WHERE version >= 14`} {
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
func TestReplaceSecret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult, SecretHash: []byte("one")})
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, s.ReplaceSecret(ctx, a.ID, []byte("not it"), []byte("two")), ErrSecretChanged)
		if err := s.ReplaceSecret(ctx, a.ID, []byte("one"), []byte("two")); err != nil {
			t.Fatal(err)
		}
		wantErr(t, s.ReplaceSecret(ctx, a.ID, []byte("one"), []byte("three")), ErrSecretChanged)
		if err := s.ReplaceSecret(ctx, a.ID, nil, []byte("reset")); err != nil {
			t.Fatal(err)
		}
		if h, err := s.AccountSecretHash(ctx, a.ID); err != nil || string(h) != "reset" {
			t.Fatalf("secret hash %q, %v", h, err)
		}
		wantErr(t, s.ReplaceSecret(ctx, 424242, nil, []byte("x")), ErrNotFound)
		wantErr(t, s.ReplaceSecret(ctx, a.ID, nil, nil), ErrInvalid)
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
}
