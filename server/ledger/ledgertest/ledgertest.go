// Package ledgertest gives tests and benchmarks a PostgreSQL database of
// their own for the ledger: a fresh schema of FAREGO_TEST_POSTGRES, named at
// random and dropped when the test ends, selected through the DSN's
// search_path. It imports nothing of the ledger, so the ledger's own tests
// use it too.
package ledgertest

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// PostgresEnv names the PostgreSQL the tests may use, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const PostgresEnv = "FAREGO_TEST_POSTGRES"

var (
	adminOnce sync.Once
	admin     *sql.DB
	adminErr  error
)

// PostgresURL returns FAREGO_TEST_POSTGRES, the PostgreSQL a test may use.
// Without it it skips tb, or fails it when FAREGO_CI is set, naming what is
// missing. Every test of PostgreSQL asks here (or PostgresSchema) rather
// than reading the variable itself: one that skipped on its own skipped in
// CI too (TestServicesAskTheirHelpers at the module root checks).
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		if os.Getenv("FAREGO_CI") != "" {
			tb.Fatal("PostgreSQL required: " + PostgresEnv + " is not set and FAREGO_CI is (e.g. " +
				PostgresEnv + "='postgres://postgres@127.0.0.1:5432/test?sslmode=disable')")
		}
		tb.Skip(PostgresEnv + " not set: no PostgreSQL to test against")
	}
	return base
}

// PostgresSchema creates a schema with a random name in the database of
// FAREGO_TEST_POSTGRES, drops it (with everything in it) when tb ends, and
// returns a DSN whose search_path selects it. Without FAREGO_TEST_POSTGRES
// it skips tb, or fails it when FAREGO_CI is set (PostgresURL); an
// unreachable database fails tb.
func PostgresSchema(tb testing.TB) string {
	tb.Helper()
	base := PostgresURL(tb)
	adminOnce.Do(func() {
		admin, adminErr = sql.Open("pgx", base)
		if adminErr == nil {
			adminErr = admin.Ping()
		}
	})
	if adminErr != nil {
		tb.Fatalf("PostgreSQL of %s: %v", PostgresEnv, adminErr)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "ledgertest_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if _, err := admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
