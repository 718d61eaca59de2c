package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// testDB is one empty database of one backend.
type testDB struct {
	backend string
	dsn     string
}

// forEachBackend runs f against a fresh SQLite file, and against a fresh
// PostgreSQL schema when FAREGO_TEST_POSTGRES is set (without it the
// PostgreSQL run skips, or fails under FAREGO_CI: ledgertest).
func forEachBackend(t *testing.T, f func(t *testing.T, db *testDB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { f(t, newSQLiteDB(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, newPostgresDB(t)) })
}

// newDB returns a fresh database of the named backend.
func newDB(tb testing.TB, backend string) *testDB {
	if backend == "postgres" {
		return newPostgresDB(tb)
	}
	return newSQLiteDB(tb)
}

func newSQLiteDB(tb testing.TB) *testDB {
	tb.Helper()
	return &testDB{backend: "sqlite", dsn: "sqlite:" + filepath.Join(tb.TempDir(), "ledger.db")}
}

// newPostgresDB returns a DSN on a fresh schema of FAREGO_TEST_POSTGRES,
// dropped at cleanup.
func newPostgresDB(tb testing.TB) *testDB {
	tb.Helper()
	return &testDB{backend: "postgres", dsn: ledgertest.PostgresSchema(tb)}
}

// open opens a Store on the database; at cleanup it checks the invariants
// and closes the Store.
func (d *testDB) open(tb testing.TB, opts *Options) *Store {
	tb.Helper()
	s, err := Open(context.Background(), d.dsn, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.CheckInvariants(context.Background()); err != nil {
			tb.Errorf("CheckInvariants: %v", err)
		}
		s.Close()
	})
	return s
}

// Fare tables of the tests. v1 is testdata/fare/table.json; v2 differs in
// transfer fare, window and caps.
const (
	tableV1 = `{"version":1,"currency":"EUR","timezone":"Europe/Berlin","service_day_start":"04:00",
		"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180},"X1":{"adult":400}},
		"transfer":{"window":"60m","fare":0},"daily_cap":{"adult":700,"child":350,"senior":350,"student":500}}`
	tableV2 = `{"version":2,"currency":"EUR","timezone":"Europe/Berlin","service_day_start":"04:00",
		"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180},"X1":{"adult":400}},
		"transfer":{"window":"90m","fare":50},"daily_cap":{"adult":600,"child":300,"senior":300,"student":450}}`
)

func mustTable(tb testing.TB, doc string) *fare.Table {
	tb.Helper()
	t, err := fare.Parse([]byte(doc))
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

var berlin = func() *time.Location {
	l, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		panic(err)
	}
	return l
}()

// day0 is 08:00 on a service day in Berlin.
var day0 = time.Date(2026, 3, 10, 8, 0, 0, 0, berlin)

// at returns day0 plus minutes.
func at(minutes int) time.Time { return day0.Add(time.Duration(minutes) * time.Minute) }

// tablesSince is when the tests' fare table v1 comes into force: before
// every tap of the tests.
var tablesSince = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ledgerWithTable opens a Store on a fresh database of the backend with
// fare table v1 stored, in force since tablesSince.
func ledgerWithTable(tb testing.TB, db *testDB) *Store {
	tb.Helper()
	s := db.open(tb, nil)
	putTableAt(tb, s, tableV1, tablesSince)
	return s
}

// putTableAt stores a fare table and backdates when it came into force
// (PutFareTable records the store's clock).
func putTableAt(tb testing.TB, s *Store, doc string, since time.Time) {
	tb.Helper()
	tbl := mustTable(tb, doc)
	now := s.now // stored on a clock set to since (fare tables are append-only)
	s.now = func() time.Time { return since }
	err := s.PutFareTable(context.Background(), tbl)
	s.now = now
	if err != nil {
		tb.Fatal(err)
	}
	s.catalog.Store(nil)
}

// riderKey is the rider public key of the tests' credentials of an account.
func riderKey(account uint64) []byte {
	if k, ok := riderKeys.Load(account); ok {
		return slices.Clone(k.([]byte)) // a caller may change its copy
	}
	seed := sha256.Sum256([]byte("rider " + strconv.FormatUint(account, 10)))
	k := []byte(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
	riderKeys.Store(account, k)
	return k
}

// riderKeys memoizes riderKey: deriving an Ed25519 key costs about 35 µs,
// which the benchmarks' tap generator paid for every tap inside the timed
// loop (a fifth of BenchmarkCommitTaps/sqlite's time).
var riderKeys sync.Map

// issue records credential serial 1 of an account with riderKey(account).
func issue(tb testing.TB, s *Store, account uint64) {
	tb.Helper()
	if _, err := s.IssueCredentialSerial(context.Background(), account, time.Now().Add(24*time.Hour), riderKey(account)); err != nil {
		tb.Fatal(err)
	}
}

// newAccount creates an adult account topped up with balance (if > 0).
func newAccount(tb testing.TB, s *Store, balance int64) uint64 {
	tb.Helper()
	return newAccountWith(tb, s, paycode.Adult, balance)
}

func newAccountWith(tb testing.TB, s *Store, p paycode.Profile, balance int64) uint64 {
	tb.Helper()
	ctx := context.Background()
	a, err := s.CreateAccount(ctx, AccountSpec{Profile: p, Name: "rider", SecretHash: []byte("hash")})
	if err != nil {
		tb.Fatal(err)
	}
	if balance > 0 {
		if _, err := s.TopUp(ctx, a.ID, balance, "initial-"+strconv.FormatUint(a.ID, 10)); err != nil {
			tb.Fatal(err)
		}
	}
	issue(tb, s, a.ID)
	return a.ID
}

// codeCounter makes every test code distinct.
var codeCounter atomic.Uint32

// codeKey returns a fresh code key of account and serial at time at.
func codeKey(account uint64, serial uint32, when time.Time) []byte {
	return paycode.ID{Account: account, Serial: serial, Time: uint32(when.Unix()), Counter: uint16(codeCounter.Add(1))}.Key()
}

// mkTap makes an adult tap of account on route "42" (or the given route)
// with its base fare from table v1 and a fresh code.
func mkTap(device string, seq uint64, account uint64, when time.Time, route string) Tap {
	if route == "" {
		route = "42"
	}
	base := int64(250)
	if route == "X1" {
		base = 400
	}
	id := tid(device, seq)
	key := codeKey(account, 1, when)
	return Tap{
		ID: id, DeviceID: device, Seq: seq, Epoch: "e1", Time: when, Account: account, Serial: 1, RiderKey: riderKey(account),
		CodeKey: key, CodeHash: hex.EncodeToString(key[:6]), Profile: paycode.Adult, ClaimedProfile: paycode.Adult,
		BaseFare: base, Currency: "EUR", FareVersion: 1, Route: route, Vehicle: "bus-7", Record: []byte("record " + id),
	}
}

// tid is the id of a test tap: epoch "e1".
func tid(device string, seq uint64) string { return TapID(device, "e1", seq) }

func commit(tb testing.TB, s *Store, taps ...Tap) []TapResult {
	tb.Helper()
	res, err := s.CommitTaps(context.Background(), taps)
	if err != nil {
		tb.Fatalf("CommitTaps: %v", err)
	}
	if len(res) != len(taps) {
		tb.Fatalf("CommitTaps returned %d results for %d taps", len(res), len(taps))
	}
	return res
}

func balance(tb testing.TB, s *Store, account uint64) int64 {
	tb.Helper()
	a, err := s.Account(context.Background(), account)
	if err != nil {
		tb.Fatal(err)
	}
	return a.Balance
}

// charges returns the current charge of every tap of an account by id.
func charges(tb testing.TB, s *Store, account uint64) map[string]int64 {
	tb.Helper()
	rides, err := s.Rides(context.Background(), account, 0)
	if err != nil {
		tb.Fatal(err)
	}
	m := map[string]int64{}
	for _, r := range rides {
		m[r.TapID] = r.Charge
	}
	return m
}

func denyList(tb testing.TB, s *Store) DenyList {
	tb.Helper()
	dl, err := s.DenyList(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return dl
}

func hasDeny(dl DenyList, account uint64, serial uint32, reason string) bool {
	for _, e := range dl.Entries {
		if e.Account == account && e.Serial == serial && e.Reason == reason {
			return true
		}
	}
	return false
}

// snapshot is a comparable summary of everything in a ledger, to show
// that a failed operation changed nothing.
func snapshot(tb testing.TB, s *Store) string {
	tb.Helper()
	ctx := context.Background()
	st, err := s.Stats(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var codes, topups, creds, refunds int64
	if err := s.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM code_uses), (SELECT COUNT(*) FROM topups),
		(SELECT COUNT(*) FROM credentials), (SELECT COUNT(*) FROM refunds)`).Scan(&codes, &topups, &creds, &refunds); err != nil {
		tb.Fatal(err)
	}
	accts, err := s.Accounts(ctx, 0, MaxListLimit)
	if err != nil {
		tb.Fatal(err)
	}
	out := fmt.Sprintf("%+v codes=%d topups=%d creds=%d refunds=%d", st, codes, topups, creds, refunds)
	for _, a := range accts {
		out += fmt.Sprintf(" %d:%d:%t:%d", a.ID, a.Balance, a.Denied, a.LastSerial)
	}
	return out
}

func wantErr(tb testing.TB, err, target error) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("err = %v, want %v", err, target)
	}
}

// liftFareTableTrigger lets the test edit stored fare tables (append-only)
// as a ledger of an earlier release may hold them.
func liftFareTableTrigger(tb testing.TB, s *Store, db *testDB) {
	tb.Helper()
	lift := `DROP TRIGGER fare_tables_no_update`
	if db.backend == "postgres" {
		lift = `ALTER TABLE fare_tables DISABLE TRIGGER fare_tables_append_only`
	}
	if _, err := s.db.ExecContext(context.Background(), lift); err != nil {
		tb.Fatal(err)
	}
}
