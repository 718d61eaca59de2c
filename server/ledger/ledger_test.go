package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger/ledgertest"
)

func TestParseDSN(t *testing.T) {
	for _, tc := range []struct {
		dsn     string
		backend backend
		path    string
		ok      bool
	}{
		{"sqlite:/var/lib/farego/ledger.db", backendSQLite, "/var/lib/farego/ledger.db", true},
		{"/var/lib/farego/ledger.db", backendSQLite, "/var/lib/farego/ledger.db", true},
		{"ledger.db", backendSQLite, "ledger.db", true},
		{"sqlite:ledger.db?_pragma=cache_size(-20000)", backendSQLite, "ledger.db", true},
		{"postgres://u@db:5432/farego?sslmode=disable", backendPostgres, "", true},
		{"postgresql://u@db/farego", backendPostgres, "", true},
		{"postgres://u@db/farego?idle_in_transaction_session_timeout=60000&sslmode=disable", backendPostgres, "", true},
		{"", 0, "", false},
		{"sqlite:", 0, "", false},
		{":memory:", 0, "", false},
		{"sqlite:file:x?mode=memory", 0, "", false},
		{"mysql://u@db/farego", 0, "", false},
	} {
		got, err := parseDSN(tc.dsn, time.Second)
		if (err == nil) != tc.ok {
			t.Errorf("parseDSN(%q) err = %v, want ok %t", tc.dsn, err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("parseDSN(%q) err = %v, want ErrInvalid", tc.dsn, err)
			}
			continue
		}
		if got.backend != tc.backend || got.path != tc.path {
			t.Errorf("parseDSN(%q) = %v %q, want %v %q", tc.dsn, got.backend, got.path, tc.backend, tc.path)
		}
		if tc.backend == backendSQLite && !strings.Contains(got.dsn, "_txlock=immediate") {
			t.Errorf("parseDSN(%q) = %q, lacks _txlock=immediate", tc.dsn, got.dsn)
		}
		if tc.backend == backendPostgres && !strings.Contains(got.dsn, "idle_in_transaction_session_timeout=60000") {
			t.Errorf("parseDSN(%q) = %q, lacks idle_in_transaction_session_timeout", tc.dsn, got.dsn)
		}
	}
}

func TestOpenMigrates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		// Several instances open a fresh database at once: one migrates,
		// the others see the schema.
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() {
				s, err := Open(ctx, db.dsn, nil)
				if err == nil {
					err = s.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("concurrent Open %d: %v", i, err)
			}
		}
		s := db.open(t, nil)
		migs, err := migrations(s.backend)
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.SchemaVersion(ctx)
		if err != nil || v != migs[len(migs)-1].version {
			t.Fatalf("SchemaVersion = %d, %v, want %d", v, err, migs[len(migs)-1].version)
		}
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(migs) {
			t.Fatalf("schema_migrations has %d rows (%v), want %d", n, err, len(migs))
		}
		// A database from a newer program is refused, untouched.
		if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_ns) VALUES (999, 'future', 0)`); err != nil {
			t.Fatal(err)
		}
		_, err = Open(ctx, db.dsn, nil)
		wantErr(t, err, ErrSchemaTooNew)
		// It names the migration and says what to do: a rollback meets
		// it at every start.
		for _, want := range []string{"version 999 (future, applied 1970-01-01T00:00:00Z)", "knows up to " +
			strconv.FormatInt(migs[len(migs)-1].version, 10), "run the farego-settlement that migrated it", "backup"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Open of a newer ledger: %v\nwant it to say %q", err, want)
			}
		}
		if _, err := s.db.ExecContext(ctx, `DELETE FROM schema_migrations WHERE version = 999`); err != nil {
			t.Fatal(err)
		}
	})
}

// TestNoMigrateLeavesAnOlderLedger: a tool of a newer build (verify, token
// list, …: Options.NoMigrate) run on a ledger of the release before
// refuses it, saying which versions and what to do, and changes nothing;
// the server's Open then migrates it. The tools migrated it: an operator
// trying the new build's verify before upgrading the server changed the
// schema under the older server, which then refused its own ledger at its
// next start, and its own verify with it (an operator's upgrade review).
func TestNoMigrateLeavesAnOlderLedger(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		migs, err := migrations(s.backend)
		if err != nil {
			t.Fatal(err)
		}
		latest := migs[len(migs)-1]
		// The ledger as the release before the newest migration left it
		// (as TestCertEndMigrated makes it).
		for _, q := range []string{`ALTER TABLE accounts DROP COLUMN secret_replaced_ns` /* 34 */, `DELETE FROM schema_migrations WHERE version >= 34`} {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		_, err = Open(ctx, db.dsn, &Options{MustExist: true, NoMigrate: true})
		wantErr(t, err, ErrSchemaTooOld)
		for _, want := range []string{"database at version 33 (replay_kept)", "this program's is " + strconv.FormatInt(latest.version, 10),
			"does not migrate it", "farego-settlement run", "backup"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Open NoMigrate of an older ledger: %v\nwant it to say %q", err, want)
			}
		}
		if v, err := s.SchemaVersion(ctx); err != nil || v != 33 {
			t.Fatalf("after the refusal: version %d, %v; want 33 left as it was", v, err)
		}
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts WHERE secret_replaced_ns = 0`).Scan(&n); err == nil {
			t.Fatal("after the refusal: the newest migration's column is there")
		}
		// The server's Open migrates it; NoMigrate then opens it.
		s2 := db.open(t, nil)
		if v, err := s2.SchemaVersion(ctx); err != nil || v != latest.version {
			t.Fatalf("the server's Open: version %d, %v; want %d", v, err, latest.version)
		}
		db.open(t, &Options{MustExist: true, NoMigrate: true})
	})
}

// TestMigrationGivesItsWALBack: what the migrations wrote to a SQLite
// ledger's -wal is checkpointed and the -wal truncated once they are
// done. SQLite reuses a -wal but never shrinks it: a ledger of 500,000
// taps from before migration 4, upgraded, kept 333 MB of -wal beside its
// 296 MB file for as long as the server ran.
func TestMigrationGivesItsWALBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := Open(ctx, "sqlite:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The ledger as the release before the newest migration left it.
	for _, q := range []string{`ALTER TABLE accounts DROP COLUMN secret_replaced_ns` /* 34 */, `DELETE FROM schema_migrations WHERE version >= 34`} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, "sqlite:"+path, nil) // migrates
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	info, err := os.Stat(path + "-wal")
	if err != nil || info.Size() != 0 {
		t.Fatalf("the -wal after the migration: %v, %v; want it there, empty", info, err)
	}
	if v, err := s.SchemaVersion(ctx); err != nil || v < 34 {
		t.Fatalf("version %d, %v", v, err)
	}
	if err := s.CheckInvariants(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSQLiteRefusesUnsafeSettings(t *testing.T) {
	dsn := "sqlite:" + t.TempDir() + "/l.db?_pragma=synchronous(OFF)"
	_, err := Open(context.Background(), dsn, nil)
	wantErr(t, err, ErrInvalid)
}

// TestPostgresRefusesAsynchronousCommit: with synchronous_commit off
// PostgreSQL acknowledges a commit before its WAL is on disk; the server
// acks the batch, the validator prunes it, and a power cut of the database
// server takes the taps back for good. Whichever way it is set for the
// ledger's sessions (a DSN parameter, options=-c), Open refuses, as it
// refuses SQLite's synchronous=OFF, and changes nothing; the same DSN with
// synchronous_commit=on opens (also as options=-c…, whose %20 the ledger
// once encoded again as "+", which PostgreSQL refused).
func TestPostgresRefusesAsynchronousCommit(t *testing.T) {
	base := ledgertest.PostgresSchema(t)
	for _, extra := range []string{"synchronous_commit=off", "options=-c%20synchronous_commit%3Doff"} {
		s, err := Open(context.Background(), base+"&"+extra, nil)
		if err == nil {
			s.Close()
			t.Fatalf("Open with %s: no error; want the ledger refused (acked batches are not on disk)", extra)
		}
		wantErr(t, err, ErrInvalid)
		if !strings.Contains(err.Error(), "synchronous_commit") {
			t.Errorf("Open with %s: %v; want it to name synchronous_commit", extra, err)
		}
	}
	// Refused before the migrations: the schema is still empty.
	raw, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var tables int
	if err := raw.QueryRow(`SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("the refused Opens made %d tables", tables)
	}
	for _, extra := range []string{"synchronous_commit=on", "options=-c%20synchronous_commit%3Don"} {
		s, err := Open(context.Background(), base+"&"+extra, nil)
		if err != nil {
			t.Fatalf("Open with %s: %v", extra, err)
		}
		s.Close()
	}
}

func TestAccounts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Child, Name: "Ada", SecretHash: []byte{1, 2, 3}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult})
		if err != nil {
			t.Fatal(err)
		}
		if a.ID != 1000 || b.ID != 1001 {
			t.Fatalf("ids %d, %d, want 1000, 1001", a.ID, b.ID)
		}
		if a.Profile != paycode.Child || a.Name != "Ada" || a.Currency != DefaultCurrency || a.Balance != 0 || a.Denied || a.CreatedAt.IsZero() {
			t.Errorf("account = %+v", a)
		}
		got, err := s.Account(ctx, a.ID)
		if err != nil || got != a {
			t.Errorf("Account = %+v, %v, want %+v", got, err, a)
		}
		h, err := s.AccountSecretHash(ctx, a.ID)
		if err != nil || !bytes.Equal(h, []byte{1, 2, 3}) {
			t.Errorf("AccountSecretHash = %x, %v", h, err)
		}
		if h, err := s.AccountSecretHash(ctx, b.ID); err != nil || len(h) != 0 {
			t.Errorf("empty AccountSecretHash = %x, %v", h, err)
		}
		_, err = s.Account(ctx, 999)
		wantErr(t, err, ErrNotFound)
		_, err = s.AccountSecretHash(ctx, 5000)
		wantErr(t, err, ErrNotFound)
		list, err := s.Accounts(ctx, 0, 0)
		if err != nil || len(list) != 2 || list[0].ID != 1000 {
			t.Errorf("Accounts = %+v, %v", list, err)
		}
		list, err = s.Accounts(ctx, 1000, 10)
		if err != nil || len(list) != 1 || list[0].ID != 1001 {
			t.Errorf("Accounts after 1000 = %+v, %v", list, err)
		}

		before := snapshot(t, s)
		for name, spec := range map[string]AccountSpec{
			"reserved profile": {Profile: 7},
			"long name":        {Name: strings.Repeat("x", 200)},
			"control char":     {Name: "a\nb"},
			"bad utf8":         {Name: "\xff"},
			"big secret":       {SecretHash: make([]byte, 300)},
			"bad currency":     {Currency: "eur"},
		} {
			if _, err := s.CreateAccount(ctx, spec); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", name, err)
			}
		}
		if after := snapshot(t, s); after != before {
			t.Errorf("refused accounts changed the ledger:\n%s\n%s", before, after)
		}
		// Ids are never reused, even after a rolled-back creation.
		s.fault = func(p string) error {
			if p == "commit" {
				return errors.New("crash")
			}
			return nil
		}
		if _, err := s.CreateAccount(ctx, AccountSpec{}); err == nil {
			t.Fatal("CreateAccount with a fault succeeded")
		}
		s.fault = nil
		c, err := s.CreateAccount(ctx, AccountSpec{})
		if err != nil || c.ID != 1002 {
			t.Errorf("after a rolled-back creation: %+v, %v, want id 1002", c, err)
		}
	})
}

func TestTopUp(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		id := newAccount(t, s, 0)
		a, err := s.TopUp(ctx, id, 1000, "psp-1")
		if err != nil || a.Balance != 1000 {
			t.Fatalf("TopUp = %+v, %v", a, err)
		}
		// Retried: no change.
		a, err = s.TopUp(ctx, id, 1000, "psp-1")
		if err != nil || a.Balance != 1000 {
			t.Fatalf("retried TopUp = %+v, %v", a, err)
		}
		_, err = s.TopUp(ctx, id, 999, "psp-1")
		wantErr(t, err, ErrTopUpConflict)
		other := newAccount(t, s, 0)
		_, err = s.TopUp(ctx, other, 1000, "psp-1")
		wantErr(t, err, ErrTopUpConflict)
		_, err = s.TopUp(ctx, 4242, 1000, "psp-2")
		wantErr(t, err, ErrNotFound)
		for _, tc := range []struct {
			amount int64
			ref    string
		}{{0, "r"}, {-5, "r"}, {MaxAmount + 1, "r"}, {5, ""}, {5, strings.Repeat("r", 129)}} {
			_, err := s.TopUp(ctx, id, tc.amount, tc.ref)
			wantErr(t, err, ErrInvalid)
		}
		if b := balance(t, s, id); b != 1000 {
			t.Errorf("balance %d, want 1000", b)
		}
		ps, err := s.Postings(ctx, id, 0)
		if err != nil || len(ps) != 1 || ps[0].Kind != KindTopUp || ps[0].Amount != 1000 || ps[0].Reference != "psp-1" || ps[0].Seq != 1 {
			t.Errorf("Postings = %+v, %v", ps, err)
		}
	})
}

func TestCommitIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 2000)
		batch := []Tap{mkTap("bus-1", 1, acct, at(0), ""), mkTap("bus-1", 2, acct, at(120), "X1")}
		first := commit(t, s, batch...)
		for i, r := range first {
			if r.Duplicate || r.Flag != "" || r.Conflict {
				t.Errorf("first commit %d: %+v", i, r)
			}
		}
		if first[0].Charge != 250 || first[1].Charge != 400 {
			t.Errorf("charges %d, %d, want 250, 400", first[0].Charge, first[1].Charge)
		}
		before := snapshot(t, s)
		for range 3 {
			again := commit(t, s, batch...)
			for i, r := range again {
				if !r.Duplicate || r.Conflict || r.Charge != first[i].Charge {
					t.Errorf("again %d: %+v, want duplicate with charge %d", i, r, first[i].Charge)
				}
			}
		}
		// The same tap twice in one batch is charged once.
		twice := mkTap("bus-1", 3, acct, at(400), "")
		res := commit(t, s, twice, twice)
		if res[0].Duplicate || !res[1].Duplicate || res[1].Charge != res[0].Charge {
			t.Errorf("same tap twice in a batch: %+v", res)
		}
		if after := snapshot(t, s); after == before {
			t.Error("new tap changed nothing")
		}
		if b := balance(t, s, acct); b != 2000-250-400-50 {
			t.Errorf("balance %d, want %d (cap 700)", b, 2000-700)
		}
		if n, err := s.TapCount(context.Background()); err != nil || n != 3 {
			t.Errorf("TapCount = %d, %v, want 3", n, err)
		}
		// A tap id reused with other contents comes back as a conflict.
		changed := mkTap("bus-1", 1, acct, at(0), "")
		res = commit(t, s, changed)
		if !res[0].Duplicate || !res[0].Conflict || res[0].Charge != 250 {
			t.Errorf("reused id: %+v, want duplicate conflict charged 250", res[0])
		}
		// The same code in other bytes is the same ride; another code under
		// the same id is another ride (OtherCode). Both are conflicts: kept
		// aside by the caller, nothing charged.
		sameCode := batch[0]
		sameCode.Record = []byte("the same ride, encoded again")
		otherCode := mkTap("bus-1", 1, acct, at(600), "")
		before = snapshot(t, s)
		res = commit(t, s, sameCode, otherCode)
		if !res[0].Conflict || res[0].OtherCode || !res[1].Conflict || !res[1].OtherCode {
			t.Errorf("same code %+v, other code %+v: want conflicts, the second with OtherCode", res[0], res[1])
		}
		if after := snapshot(t, s); after != before {
			t.Error("conflicting taps changed the ledger")
		}
		if _, err := s.CommitTaps(context.Background(), nil); err != nil {
			t.Errorf("empty batch: %v", err)
		}
	})
}

func TestDuplicateCodeTwoDevices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 2000)
		a := mkTap("bus-1", 1, acct, at(0), "")
		b := mkTap("bus-2", 7, acct, at(3), "")
		b.CodeKey = a.CodeKey // the same code shown on two buses, 3 minutes apart
		v0 := denyList(t, s).Version
		ra := commit(t, s, a)
		rb := commit(t, s, b)
		if ra[0].Flag != "" || ra[0].Charge != 250 {
			t.Errorf("first use: %+v", ra[0])
		}
		if rb[0].Flag != FlagDuplicateCode || rb[0].Charge != 0 || rb[0].Duplicate || len(rb[0].Notes) != 0 {
			t.Errorf("second use: %+v, want flagged duplicate_code, charged 0, no innocent note", rb[0])
		}
		if got := balance(t, s, acct); got != 2000-250 {
			t.Errorf("balance %d, want %d", got, 2000-250)
		}
		dl := denyList(t, s)
		if !hasDeny(dl, acct, 1, ReasonCodeReused) || dl.Version <= v0 {
			t.Errorf("deny list %+v (was version %d), want credential %d/1 denied for code_reused", dl, v0, acct)
		}
		for _, e := range dl.Entries {
			if e.Reason == ReasonCodeReused && !e.Expires.After(time.Now()) {
				t.Errorf("code_reused entry %+v does not expire after its credential", e)
			}
		}
		// Committing the flagged tap again changes nothing.
		if r := commit(t, s, b); !r[0].Duplicate || r[0].Flag != FlagDuplicateCode || r[0].Charge != 0 {
			t.Errorf("flagged tap again: %+v", r[0])
		}
		if dl2 := denyList(t, s); dl2.Version != dl.Version {
			t.Errorf("deny version moved to %d on a duplicate", dl2.Version)
		}
		// Both in one batch, the later one first: the earlier one by tap
		// time pays. One minute apart on two buses is what an honest rider
		// does on a quick transfer: noted, free, credential not denied.
		other := newAccount(t, s, 2000)
		c := mkTap("bus-3", 1, other, at(500), "")
		d := mkTap("bus-4", 1, other, at(501), "")
		d.CodeKey, d.Vehicle = c.CodeKey, "bus-8"
		r := commit(t, s, d, c)
		if r[1].Flag != "" || r[1].Charge != 250 || r[0].Flag != FlagDuplicateCode || !slices.Equal(r[0].Notes, []string{NoteCodeReuseWindow}) {
			t.Errorf("same code in one batch: %+v", r)
		}
		if hasDeny(denyList(t, s), other, 1, ReasonCodeReused) {
			t.Errorf("an innocent reuse denied the credential")
		}
		// A third use of that code is no accident.
		e := mkTap("bus-5", 1, other, at(502), "")
		e.CodeKey = c.CodeKey
		if r := commit(t, s, e); r[0].Flag != FlagDuplicateCode || r[0].Charge != 0 {
			t.Errorf("third use: %+v", r[0])
		}
		if !hasDeny(denyList(t, s), other, 1, ReasonCodeReused) {
			t.Errorf("a third use of one code did not deny the credential")
		}
		rides, err := s.Rides(context.Background(), other, 0)
		if err != nil || len(rides) != 3 {
			t.Fatalf("Rides = %d rides, %v", len(rides), err)
		}
		if rides[0].TapID != tid("bus-5", 1) || rides[2].TapID != tid("bus-3", 1) {
			t.Errorf("rides not newest first: %s … %s", rides[0].TapID, rides[2].TapID)
		}
	})
}

// The earliest tap of a code keeps it whatever the arrival order: the same
// taps, committed in every order, end with the same charges, and a tap that
// held the code is refunded when an earlier one arrives.
func TestEarliestTapKeepsCode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		orders := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
		var want map[string]int64
		for n, order := range orders {
			acct := newAccount(t, s, 5000)
			dev := fmt.Sprintf("o%d-", n)
			// x at 08:00 on bus A; the same code at 08:01 on bus B (an
			// innocent double tap); y at 08:20 on bus A: a transfer from x.
			x := mkTap(dev+"a", 1, acct, at(0), "")
			x2 := mkTap(dev+"b", 1, acct, at(1), "")
			x2.CodeKey = x.CodeKey
			y := mkTap(dev+"a", 2, acct, at(20), "X1")
			taps := []Tap{x, x2, y}
			for _, i := range order {
				commit(t, s, taps[i])
			}
			got := map[string]int64{}
			rides, err := s.Rides(context.Background(), acct, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, rd := range rides {
				got[strings.TrimPrefix(rd.TapID, dev)] = rd.Charge
				if rd.TapID == x2.ID && rd.Flag != FlagDuplicateCode {
					t.Errorf("order %v: the later use of the code is %+v, want duplicate_code", order, rd)
				}
				if rd.TapID == x.ID && rd.Flag != "" {
					t.Errorf("order %v: the earliest use of the code is %+v, want charged", order, rd)
				}
			}
			if want == nil {
				want = got
			} else if !maps.Equal(got, want) {
				t.Errorf("order %v: charges %v, first order gave %v", order, got, want)
			}
			if b := balance(t, s, acct); b != 5000-250 {
				t.Errorf("order %v: balance %d, want %d (x 250, y a transfer)", order, b, 5000-250)
			}
		}
	})
}

func TestNegativeBalanceDeny(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 100)
		v0 := denyList(t, s).Version
		commit(t, s, mkTap("bus-1", 1, acct, at(0), ""))
		a, _ := s.Account(ctx, acct)
		if a.Balance != -150 || !a.Denied || a.DenyReason != ReasonNegativeBalance {
			t.Fatalf("account %+v, want balance -150, denied for negative_balance", a)
		}
		dl := denyList(t, s)
		if !hasDeny(dl, acct, 0, ReasonNegativeBalance) || dl.Version <= v0 {
			t.Fatalf("deny list %+v, want %d denied at a version after %d", dl, acct, v0)
		}
		// Another ride keeps it denied without moving the version.
		commit(t, s, mkTap("bus-1", 2, acct, at(200), ""))
		if dl2 := denyList(t, s); dl2.Version != dl.Version {
			t.Errorf("version moved %d → %d with no change of entries", dl.Version, dl2.Version)
		}
		// Not enough: still denied.
		if a, err := s.TopUp(ctx, acct, 300, "t1"); err != nil || !a.Denied || a.Balance != -100 {
			t.Fatalf("partial top-up: %+v, %v", a, err)
		}
		// Enough: lifted, version moved.
		a, err := s.TopUp(ctx, acct, 100, "t2")
		if err != nil || a.Denied || a.Balance != 0 {
			t.Fatalf("top-up to zero: %+v, %v", a, err)
		}
		dl3 := denyList(t, s)
		if hasDeny(dl3, acct, 0, ReasonNegativeBalance) || dl3.Version <= dl.Version {
			t.Errorf("deny list %+v, want entry gone at a version after %d", dl3, dl.Version)
		}
		// Operators cannot touch the ledger's own entry.
		wantErr(t, s.Deny(ctx, acct, 0, ReasonNegativeBalance), ErrInvalid)
		wantErr(t, s.Undeny(ctx, acct, 0, ReasonNegativeBalance), ErrInvalid)
	})
}

func TestTransferAndCap(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 5000)
		taps := []Tap{
			mkTap("bus-1", 1, acct, at(0), ""),   // 250
			mkTap("bus-2", 1, acct, at(30), ""),  // transfer: 0
			mkTap("bus-1", 2, acct, at(120), ""), // 250
			mkTap("bus-3", 1, acct, at(240), ""), // 250 → capped to 200
			mkTap("bus-1", 3, acct, at(360), ""), // capped to 0
		}
		want := []int64{250, 0, 250, 200, 0}
		res := commit(t, s, taps...)
		for i, r := range res {
			if r.Charge != want[i] {
				t.Errorf("tap %d charged %d, want %d", i, r.Charge, want[i])
			}
		}
		rides, _ := s.Rides(context.Background(), acct, 0)
		byID := map[string]Ride{}
		for _, r := range rides {
			byID[r.TapID] = r
		}
		if r := byID[tid("bus-2", 1)]; !r.Transfer || r.Capped || r.RatedVersion != 1 || r.ServiceDay != "2026-03-10" {
			t.Errorf("transfer ride %+v", r)
		}
		if r := byID[tid("bus-3", 1)]; !r.Capped {
			t.Errorf("capped ride %+v", r)
		}
		if b := balance(t, s, acct); b != 5000-700 {
			t.Errorf("balance %d, want %d", b, 5000-700)
		}
		// The next service day starts at 04:00 Berlin: a ride at 03:30 the
		// next morning still belongs to this day (capped), one at 04:30 does not.
		next := commit(t, s, mkTap("bus-1", 4, acct, time.Date(2026, 3, 11, 3, 30, 0, 0, berlin), ""),
			mkTap("bus-1", 5, acct, time.Date(2026, 3, 11, 4, 30, 0, 0, berlin), ""))
		if next[0].Charge != 0 || next[1].Charge != 250 {
			t.Errorf("around the day start: %+v", next)
		}
	})
}

func TestLateTapRerating(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 5000)
		// 10:00 arrives first and pays full fare.
		r := commit(t, s, mkTap("bus-1", 1, acct, at(120), ""))
		if r[0].Charge != 250 {
			t.Fatalf("first tap %+v", r[0])
		}
		before, err := s.Postings(ctx, acct, 0)
		if err != nil {
			t.Fatal(err)
		}
		// 09:30 (offline bus) arrives later: it is the full-fare ride, and
		// 10:00 becomes its transfer.
		r = commit(t, s, mkTap("bus-2", 1, acct, at(90), ""))
		if r[0].Charge != 250 {
			t.Fatalf("late tap %+v", r[0])
		}
		if c := charges(t, s, acct); c[tid("bus-1", 1)] != 0 || c[tid("bus-2", 1)] != 250 {
			t.Errorf("charges after re-rating %v", c)
		}
		after, err := s.Postings(ctx, acct, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Old postings unchanged (newest first: the old ones are the tail).
		if len(after) != len(before)+2 {
			t.Fatalf("%d postings, want %d", len(after), len(before)+2)
		}
		for i := range before {
			if after[2+i] != before[i] {
				t.Errorf("posting changed: %+v → %+v", before[i], after[2+i])
			}
		}
		kinds := map[string]Posting{}
		for _, p := range after[:2] {
			kinds[p.TapID+" "+p.Kind] = p
		}
		if p := kinds[tid("bus-2", 1)+" fare"]; p.Amount != -250 {
			t.Errorf("late tap's fare posting %+v", p)
		}
		if p := kinds[tid("bus-1", 1)+" fare_correction"]; p.Amount != 250 || p.FareVersion != 1 {
			t.Errorf("correction %+v", p)
		}
		if b := balance(t, s, acct); b != 5000-250 {
			t.Errorf("balance %d", b)
		}
		// The database refuses to change or delete postings.
		for _, q := range []string{`UPDATE postings SET amount = 1`, `DELETE FROM postings`, `DELETE FROM code_uses`,
			`UPDATE topups SET amount = 1`, `DELETE FROM taps`} {
			if _, err := s.db.ExecContext(ctx, q); err == nil {
				t.Errorf("%s: allowed", q)
			}
		}
	})
}

// The server rates taps from its own tables: the claim of a validator is
// kept and noted, never charged; the table is the one the validator named
// while it was in force (within the grace), else the one in force at the
// tap's time, each ride of a day with its own.
func TestFareVersions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, &Options{FareGrace: time.Hour})
		acct := newAccount(t, s, 10000)
		_, err := s.CommitTaps(ctx, []Tap{mkTap("bus-1", 1, acct, at(0), "")})
		wantErr(t, err, ErrNoFareTable)
		_, err = s.LatestFareTable(ctx)
		wantErr(t, err, ErrNoFareTable)

		v1, v2 := mustTable(t, tableV1), mustTable(t, tableV2)
		putTableAt(t, s, tableV1, tablesSince)
		if err := s.PutFareTable(ctx, v1); err != nil {
			t.Errorf("same table again: %v", err)
		}
		// A correctly signed batch claiming 5,000,000 and one claiming 0
		// are both charged the table's fare, and noted.
		rich := mkTap("bus-1", 2, acct, at(0), "")
		rich.BaseFare = 5_000_000
		free := mkTap("bus-1", 3, acct, at(120), "")
		free.BaseFare = 0
		// Version 5 is not stored: rated with the table in force, noted.
		t5 := mkTap("bus-1", 4, acct, at(240), "")
		t5.FareVersion = 5
		r := commit(t, s, rich, free, t5)
		for i, want := range []struct {
			charge int64
			notes  []string
		}{{250, []string{NoteFareMismatch}}, {250, []string{NoteFareMismatch}}, {200, []string{NoteUnknownFareVersion}}} {
			if r[i].Charge != want.charge || r[i].Fare != 250 || r[i].RatedVersion != 1 || !slices.Equal(r[i].Notes, want.notes) {
				t.Errorf("tap %d: %+v, want charge %d, fare 250 by v1, notes %v", i, r[i], want.charge, want.notes)
			}
		}
		if b := balance(t, s, acct); b != 10000-700 {
			t.Errorf("balance %d, want %d (three rides, capped at 700)", b, 10000-700)
		}

		// v2 comes into force on the next day at 06:00.
		day := 24 * 60
		v2Since := at(day - 120)
		putTableAt(t, s, tableV2, v2Since)
		if err := s.PutFareTable(ctx, v1); err != nil {
			t.Errorf("older table again, unchanged: %v", err)
		}
		wantErr(t, s.PutFareTable(ctx, mustTable(t, strings.Replace(tableV1, `"X1"`, `"X2"`, 1))), ErrFareVersion)
		changed := mustTable(t, strings.Replace(tableV2, `"fare":50`, `"fare":60`, 1))
		wantErr(t, s.PutFareTable(ctx, changed), ErrFareVersion)
		wantErr(t, s.PutFareTable(ctx, nil), ErrInvalid)
		wantErr(t, s.PutFareTable(ctx, &fare.Table{Version: 9}), ErrInvalid)
		got, err := s.LatestFareTable(ctx)
		if err != nil || got.Version != 2 || got.Transfer.Fare != 50 || v2.Version != 2 {
			t.Fatalf("LatestFareTable = %+v, %v", got, err)
		}
		_, err = s.FareTable(ctx, 3)
		wantErr(t, err, ErrNotFound)

		// One service day across the change: 05:00 and 05:30 under v1 (a
		// v1 transfer is free), 08:00 under v2 although the validator still
		// named v1 (two hours after v2 came in, beyond the grace: noted),
		// 08:30 under v2 (a v2 transfer costs 50).
		c := mkTap("bus-1", 10, acct, at(day-180), "")
		d := mkTap("bus-1", 11, acct, at(day-150), "")
		a := mkTap("bus-1", 12, acct, at(day), "")
		b := mkTap("bus-1", 13, acct, at(day+30), "")
		b.FareVersion = 2
		// Arrival order does not matter.
		commit(t, s, b, d)
		commit(t, s, a, c)
		want := map[string]struct {
			charge  int64
			version uint64
		}{c.ID: {250, 1}, d.ID: {0, 1}, a.ID: {250, 2}, b.ID: {50, 2}}
		rides, err := s.Rides(ctx, acct, 4)
		if err != nil {
			t.Fatal(err)
		}
		for _, rd := range rides {
			w := want[rd.TapID]
			if rd.Charge != w.charge || rd.RatedVersion != w.version {
				t.Errorf("ride %s charged %d by v%d, want %d by v%d", rd.TapID, rd.Charge, rd.RatedVersion, w.charge, w.version)
			}
			if rd.TapID == a.ID && !slices.Contains(rd.Notes, NoteUnknownFareVersion) {
				t.Errorf("ride %s named a replaced table: notes %v", rd.TapID, rd.Notes)
			}
		}
	})
}

func TestPayments(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		req := PaymentRequest{MerchantID: "cafe", OrderID: "o-1", Account: acct, Serial: 1, RiderKey: riderKey(acct),
			CodeKey: codeKey(acct, 1, at(0)), CodeHash: "abc", Amount: 300, Currency: "EUR"}
		o, replayed, err := s.Pay(ctx, req)
		if err != nil || replayed {
			t.Fatal(err, replayed)
		}
		if o.ID == 0 || o.Status != StatusPaid || o.Amount != 300 || o.Account != acct || o.MerchantID != "cafe" {
			t.Errorf("order %+v", o)
		}
		if b := balance(t, s, acct); b != 700 {
			t.Errorf("balance %d, want 700", b)
		}
		// Retry: same order, no second deduction.
		o2, replayed, err := s.Pay(ctx, req)
		if err != nil || o2 != o || !replayed {
			t.Errorf("retry = %+v, %v, replayed %v; want %+v, replayed", o2, err, replayed, o)
		}
		if got, err := s.Payment(ctx, o.ID); err != nil || got != o {
			t.Errorf("Payment = %+v, %v", got, err)
		}
		if got, err := s.PaymentByOrder(ctx, "cafe", "o-1"); err != nil || got != o {
			t.Errorf("PaymentByOrder = %+v, %v", got, err)
		}
		_, err = s.PaymentByOrder(ctx, "cafe", "o-404")
		wantErr(t, err, ErrNotFound)
		// Same order id, other amount.
		bad := req
		bad.Amount = 301
		_, _, err = s.Pay(ctx, bad)
		wantErr(t, err, ErrOrderConflict)
		// Same code, new order: used.
		again := req
		again.OrderID = "o-2"
		_, _, err = s.Pay(ctx, again)
		wantErr(t, err, ErrCodeUsed)

		// Too much.
		big := req
		big.OrderID, big.CodeKey, big.Amount = "o-3", codeKey(acct, 1, at(1)), 701
		_, _, err = s.Pay(ctx, big)
		wantErr(t, err, ErrInsufficientFunds)
		// Unknown account.
		ghost := req
		ghost.OrderID, ghost.Account, ghost.CodeKey = "o-4", 4242, codeKey(4242, 1, at(1))
		_, _, err = s.Pay(ctx, ghost)
		wantErr(t, err, ErrNotFound)
		// Other currency.
		usd := big
		usd.Amount, usd.Currency = 1, "USD"
		_, _, err = s.Pay(ctx, usd)
		wantErr(t, err, ErrInvalid)
		// Invalid requests.
		for name, mod := range map[string]func(r *PaymentRequest){
			"no merchant":    func(r *PaymentRequest) { r.MerchantID = "" },
			"no order":       func(r *PaymentRequest) { r.OrderID = "" },
			"zero amount":    func(r *PaymentRequest) { r.Amount = 0 },
			"short key":      func(r *PaymentRequest) { r.CodeKey = r.CodeKey[:17] },
			"key of another": func(r *PaymentRequest) { r.CodeKey = codeKey(acct+1, 1, at(0)) },
			"key of serial":  func(r *PaymentRequest) { r.Serial = 2 },
			"currency":       func(r *PaymentRequest) { r.Currency = "euro" },
			"account 0":      func(r *PaymentRequest) { r.Account = 0 },
		} {
			r := big
			r.Amount = 10
			mod(&r)
			if _, _, err := s.Pay(ctx, r); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", name, err)
			}
		}
		// Denied credential.
		if err := s.Deny(ctx, acct, 1, "lost_phone"); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, s)
		denied := big
		denied.Amount = 10
		_, _, err = s.Pay(ctx, denied)
		wantErr(t, err, ErrDenied)
		if after := snapshot(t, s); after != before {
			t.Errorf("refused payments changed the ledger:\n%s\n%s", before, after)
		}
		if err := s.Undeny(ctx, acct, 1, "lost_phone"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Pay(ctx, denied); err != nil {
			t.Errorf("after undeny: %v", err)
		}
	})
}

func TestCodeUsedOnlineAndOffline(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 2000)
		// Paid online, then the same code tapped on a bus: flagged.
		tp := mkTap("bus-1", 1, acct, at(0), "")
		if _, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "kiosk", OrderID: "1", Account: acct, Serial: 1, RiderKey: riderKey(acct),
			CodeKey: tp.CodeKey, Amount: 100, Currency: "EUR"}); err != nil {
			t.Fatal(err)
		}
		r := commit(t, s, tp)
		if r[0].Flag != FlagDuplicateCode || r[0].Charge != 0 {
			t.Errorf("tap of a code paid online: %+v", r[0])
		}
		if !hasDeny(denyList(t, s), acct, 1, ReasonCodeReused) {
			t.Error("credential not denied")
		}
		// Tapped, then the same code online: refused. (Serial 2: serial 1 is denied now.)
		if _, err := s.IssueCredentialSerial(ctx, acct, time.Now().Add(time.Hour), riderKey(acct)); err != nil {
			t.Fatal(err)
		}
		tp2 := mkTap("bus-1", 2, acct, at(10), "")
		tp2.Serial, tp2.CodeKey = 2, codeKey(acct, 2, at(10))
		commit(t, s, tp2)
		_, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "kiosk", OrderID: "2", Account: acct, Serial: 2, RiderKey: riderKey(acct),
			CodeKey: tp2.CodeKey, Amount: 100, Currency: "EUR"})
		wantErr(t, err, ErrCodeUsed)
		if b := balance(t, s, acct); b != 2000-100-250 {
			t.Errorf("balance %d, want %d", b, 2000-100-250)
		}
	})
}

func TestFlags(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		// An account in another currency than the ledger's cannot be
		// made; one edited into the database is flagged, and verify
		// reports it.
		if _, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult, Currency: "USD"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("an account in USD on a EUR ledger: %v; want ErrInvalid", err)
		}
		dollars := newAccount(t, s, 0)
		if _, err := s.db.ExecContext(ctx, `UPDATE accounts SET currency = 'USD' WHERE id = $1`, int64(dollars)); err != nil {
			t.Fatal(err)
		}
		if err := s.CheckInvariants(ctx); err == nil || !strings.Contains(err.Error(), "another currency") {
			t.Errorf("CheckInvariants with a USD account: %v", err)
		}
		defer func() { // the cleanup's check
			if _, err := s.db.ExecContext(ctx, `UPDATE accounts SET currency = 'EUR' WHERE id = $1`, int64(dollars)); err != nil {
				t.Fatal(err)
			}
		}()
		issue(t, s, dollars)
		ghost := mkTap("bus-1", 1, 7777, at(0), "")
		usd := mkTap("bus-1", 2, dollars, at(5), "")
		r := commit(t, s, ghost, usd)
		if r[0].Flag != FlagUnknownAccount || r[0].Charge != 0 || r[1].Flag != FlagCurrencyMismatch || r[1].Charge != 0 {
			t.Errorf("flags %+v", r)
		}
		// The mismatched tap's code did pay (it was presented): it cannot pay again.
		_, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "m", OrderID: "1", Account: dollars, Serial: 1, RiderKey: riderKey(dollars),
			CodeKey: usd.CodeKey, Amount: 1, Currency: "USD"})
		wantErr(t, err, ErrCodeUsed)
		// A credential the ledger did not issue (another rider key, or a
		// serial never issued) is flagged and never charged to the account.
		forged := mkTap("bus-1", 3, acct, at(10), "")
		forged.RiderKey = riderKey(4242)
		unissued := mkTap("bus-1", 4, acct, at(11), "")
		unissued.Serial, unissued.CodeKey = 9, codeKey(acct, 9, at(11))
		r = commit(t, s, forged, unissued)
		for _, res := range r {
			if res.Flag != FlagUnknownCredential || res.Charge != 0 {
				t.Errorf("unissued credential: %+v", res)
			}
		}
		if b := balance(t, s, acct); b != 1000 {
			t.Errorf("balance %d", b)
		}
	})
}

func TestTapValidation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		before := snapshot(t, s)
		for name, mod := range map[string]func(tp *Tap){
			"id not device/seq":   func(tp *Tap) { tp.ID = tid("bus-1", 3) },
			"bad device id":       func(tp *Tap) { tp.DeviceID, tp.ID = "bus 1", "bus 1/1" },
			"seq out of range":    func(tp *Tap) { tp.Seq, tp.ID = 1<<63, tid("bus-1", 9223372036854775808) },
			"zero time":           func(tp *Tap) { tp.Time = time.Time{} },
			"account 0":           func(tp *Tap) { tp.Account = 0 },
			"short code key":      func(tp *Tap) { tp.CodeKey = tp.CodeKey[:10] },
			"key of another":      func(tp *Tap) { tp.CodeKey = codeKey(acct+1, 1, at(0)) },
			"key of serial":       func(tp *Tap) { tp.Serial = 3 },
			"reserved profile":    func(tp *Tap) { tp.Profile = 4 },
			"long route":          func(tp *Tap) { tp.Route = strings.Repeat("r", 65) },
			"control in currency": func(tp *Tap) { tp.Currency = "E\x00R" },
			"no rider key":        func(tp *Tap) { tp.RiderKey = nil },
			"no epoch":            func(tp *Tap) { tp.Epoch, tp.ID = "", tp.DeviceID+"//2" },
			"slash in epoch":      func(tp *Tap) { tp.Epoch, tp.ID = "a/b", tp.DeviceID+"/a/b/2" },
			"control in vehicle":  func(tp *Tap) { tp.Vehicle = "a\x00" },
			"huge record":         func(tp *Tap) { tp.Record = make([]byte, MaxRecordSize+1) },
		} {
			good := mkTap("bus-1", 1, acct, at(0), "")
			bad := mkTap("bus-1", 2, acct, at(1), "")
			mod(&bad)
			// A bad tap anywhere in the batch fails it all, before any write.
			if _, err := s.CommitTaps(context.Background(), []Tap{good, bad}); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", name, err)
			}
		}
		if _, err := s.CommitTaps(context.Background(), make([]Tap, MaxCommitTaps+1)); !errors.Is(err, ErrInvalid) {
			t.Errorf("huge batch: err = %v", err)
		}
		if after := snapshot(t, s); after != before {
			t.Errorf("refused taps changed the ledger:\n%s\n%s", before, after)
		}
	})
}

func TestDenyOperator(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		acct := newAccount(t, s, 0)
		dl := denyList(t, s)
		if dl.Version != 0 || len(dl.Entries) != 0 {
			t.Fatalf("fresh deny list %+v", dl)
		}
		// The version moves forward with every change of the entries (to
		// at least the time in milliseconds, so that it keeps increasing
		// across a restore), and not on a no-op.
		versions := []uint64{dl.Version}
		step := func(what string, moved bool) {
			t.Helper()
			v := denyList(t, s).Version
			last := versions[len(versions)-1]
			if moved && v <= last || !moved && v != last {
				t.Errorf("%s: deny-list version %d after %d (moved: want %t)", what, v, last, moved)
			}
			versions = append(versions, v)
		}
		if err := s.Deny(ctx, acct, 0, "fraud"); err != nil {
			t.Fatal(err)
		}
		step("deny", true)
		if v := versions[1]; v < uint64(time.Now().Add(-time.Minute).UnixMilli()) {
			t.Errorf("deny-list version %d is not time-based", v)
		}
		if err := s.Deny(ctx, acct, 0, "fraud"); err != nil {
			t.Fatal(err)
		}
		step("deny again", false)
		if err := s.Deny(ctx, acct, 1, "lost_phone"); err != nil {
			t.Fatal(err)
		}
		step("deny a credential", true)
		dl = denyList(t, s)
		if len(dl.Entries) != 2 || dl.Entries[0].Serial != 0 || dl.Entries[1].Serial != 1 || dl.Entries[0].Since.IsZero() {
			t.Fatalf("deny list %+v, want 2 entries", dl)
		}
		if a, _ := s.Account(ctx, acct); !a.Denied || a.DenyReason != "fraud" {
			t.Errorf("account %+v, want denied for fraud", a)
		}
		wantErr(t, s.Deny(ctx, 4242, 0, "fraud"), ErrNotFound)
		wantErr(t, s.Deny(ctx, acct, 0, "Bad Reason"), ErrInvalid)
		wantErr(t, s.Undeny(ctx, acct, 0, "other"), ErrNotFound)
		if err := s.Undeny(ctx, acct, 0, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.Undeny(ctx, acct, 1, "lost_phone"); err != nil {
			t.Fatal(err)
		}
		dl = denyList(t, s)
		if len(dl.Entries) != 0 {
			t.Errorf("deny list %+v, want empty", dl)
		}
		step("undeny", true)
	})
}

func TestCredentials(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		a, err := s.CreateAccount(ctx, AccountSpec{})
		if err != nil {
			t.Fatal(err)
		}
		acct := a.ID
		key := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
		until := time.Now().Add(24 * time.Hour)
		for want := uint32(1); want <= 3; want++ {
			got, err := s.IssueCredentialSerial(ctx, acct, until, key)
			if err != nil || got != want {
				t.Fatalf("IssueCredentialSerial = %d, %v, want %d", got, err, want)
			}
		}
		creds, err := s.Credentials(ctx, acct)
		if err != nil || len(creds) != 3 || creds[0].Serial != 3 || !bytes.Equal(creds[0].RiderPublicKey, key) ||
			creds[0].NotAfter.Unix() != until.Unix() {
			t.Errorf("Credentials = %+v, %v", creds, err)
		}
		// A page of them, and the next one back (the console pages the
		// credentials of an account: a wallet renews twice a day).
		if page, err := s.CredentialsBefore(ctx, acct, 0, 2); err != nil || len(page) != 2 || page[0].Serial != 3 || page[1].Serial != 2 {
			t.Errorf("CredentialsBefore(0, 2) = %+v, %v", page, err)
		}
		if page, err := s.CredentialsBefore(ctx, acct, 2, 2); err != nil || len(page) != 1 || page[0].Serial != 1 {
			t.Errorf("CredentialsBefore(2, 2) = %+v, %v", page, err)
		}
		if a, _ := s.Account(ctx, acct); a.LastSerial != 3 {
			t.Errorf("LastSerial %d", a.LastSerial)
		}
		_, err = s.IssueCredentialSerial(ctx, 4242, until, key)
		wantErr(t, err, ErrNotFound)
		_, err = s.IssueCredentialSerial(ctx, acct, until, key[:31])
		wantErr(t, err, ErrInvalid)
		_, err = s.IssueCredentialSerial(ctx, acct, time.Now().Add(-time.Hour), key)
		wantErr(t, err, ErrInvalid)
	})
}

func TestDevices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		k1 := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)).Public().(ed25519.PublicKey)
		k2 := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32)).Public().(ed25519.PublicKey)
		reg := func(id string, key []byte, replace bool) error {
			return s.RegisterDevice(ctx, DeviceRegistration{ID: id, PublicKey: key, Replace: replace, MQTTHash: "hash-" + id})
		}
		if err := reg("bus-7.front", k1, false); err != nil {
			t.Fatal(err)
		}
		if err := reg("bus-7.front", k1, false); err != nil {
			t.Errorf("same key again: %v", err)
		}
		wantErr(t, reg("bus-7.front", k2, false), ErrDeviceExists)
		if err := reg("bus-7.front", k2, true); err != nil {
			t.Fatal(err)
		}
		wantErr(t, reg("bus/7", k1, false), ErrInvalid)
		wantErr(t, reg("bus-8", k1[:5], false), ErrInvalid)
		wantErr(t, reg("bus-8", append([]byte{1}, make([]byte, 31)...), false), ErrInvalid)           // small order
		wantErr(t, s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-8", PublicKey: k1}), ErrInvalid) // no broker credential
		if err := reg("bus-8", k1, false); err != nil {
			t.Fatal(err)
		}
		// Revocation: the device's credential stays for audit, marked
		// revoked; registering it again needs unrevoke, which lifts it
		// (replace alone does not: TestRegisterRevokedDeviceNeedsUnrevoke).
		if err := s.RevokeDevice(ctx, "bus-7.front"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, s.RevokeDevice(ctx, "bus-9"), ErrNotFound)
		if a, err := s.DeviceAuth(ctx, "bus-7.front"); err != nil || a.Revoked.IsZero() || a.MQTTHash != "hash-bus-7.front" {
			t.Errorf("DeviceAuth after revoke = %+v, %v", a, err)
		}
		wantErr(t, reg("bus-7.front", k2, false), ErrDeviceRevoked)
		wantErr(t, reg("bus-7.front", k2, true), ErrDeviceRevoked)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-7.front", PublicKey: k2, MQTTHash: "hash-bus-7.front",
			Replace: true, Unrevoke: true}); err != nil {
			t.Fatal(err)
		}
		if a, err := s.DeviceAuth(ctx, "bus-7.front"); err != nil || !a.Revoked.IsZero() {
			t.Errorf("DeviceAuth after re-registration = %+v, %v", a, err)
		}
		_, err := s.DeviceAuth(ctx, "bus-9")
		wantErr(t, err, ErrNotFound)
		seen := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
		st := DeviceStatus{Online: true, QueueDepth: 12, OldestUnsent: 90 * time.Second, LastSeen: seen,
			Software: "1.2.3", Epoch: "abc", Versions: map[string]uint64{"keyring": 3, "denylist": 17}}
		if err := s.UpdateDeviceStatus(ctx, "bus-8", st); err != nil {
			t.Fatal(err)
		}
		wantErr(t, s.UpdateDeviceStatus(ctx, "bus-9", st), ErrNotFound)
		wantErr(t, s.UpdateDeviceStatus(ctx, "bus-8", DeviceStatus{QueueDepth: -1}), ErrInvalid)
		if err := s.NoteDeviceSync(ctx, "bus-8", 40); err != nil {
			t.Fatal(err)
		}
		if err := s.NoteDeviceSync(ctx, "bus-8", 30); err != nil { // late ack: no step back
			t.Fatal(err)
		}
		wantErr(t, s.NoteDeviceSync(ctx, "bus-9", 1), ErrNotFound)
		d, err := s.Device(ctx, "bus-8")
		if d.ClockOffset > -time.Hour*24*200 {
			t.Errorf("clock offset %v: the status said March, the server is later", d.ClockOffset)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d.PublicKey, k1) || d.LastSeq != 40 || d.LastSync.IsZero() || d.StatusAt.IsZero() ||
			!d.Status.Online || d.Status.QueueDepth != 12 || d.Status.OldestUnsent != 90*time.Second ||
			!d.Status.LastSeen.Equal(seen) || d.Status.Software != "1.2.3" || d.Status.Versions["denylist"] != 17 {
			t.Errorf("device %+v", d)
		}
		_, err = s.Device(ctx, "bus-9")
		wantErr(t, err, ErrNotFound)
		ds, err := s.Devices(ctx)
		if err != nil || len(ds) != 2 || ds[0].ID != "bus-7.front" || !bytes.Equal(ds[0].PublicKey, k2) {
			t.Errorf("Devices = %+v, %v", ds, err)
		}

		// The device's last will: offline, written when it connected (an
		// hour before the status recorded), with the queue and versions of
		// then. It marks the device offline and changes nothing else; the
		// figures stayed those of its will before (the Fleet page showed
		// the deny list it had applied since as not applied).
		will := DeviceStatus{Online: false, QueueDepth: 500, LastSeen: seen.Add(-time.Hour), Software: "1.2.2", Epoch: "abc",
			Versions: map[string]uint64{"keyring": 3}}
		if err := s.UpdateDeviceStatus(ctx, "bus-8", will); err != nil {
			t.Fatal(err)
		}
		d, err = s.Device(ctx, "bus-8")
		if err != nil || d.Status.Online || d.Status.QueueDepth != 12 || d.Status.Versions["denylist"] != 17 || d.Status.Software != "1.2.3" ||
			!d.Status.LastSeen.Equal(seen) {
			t.Errorf("after an older offline status: %+v, %v; want offline, the rest as recorded", d.Status, err)
		}
		if h, err := s.DeviceHistory(ctx, "bus-8"); err != nil || len(h) == 0 || h[0].Event != EventOffline || h[0].Versions["denylist"] != 17 {
			t.Errorf("history after the will: %+v, %v; want offline with the recorded versions first", h, err)
		}
		// A clean stop's offline status, written then, is taken whole.
		stop := DeviceStatus{Online: false, QueueDepth: 3, LastSeen: seen.Add(time.Minute), Software: "1.2.3", Epoch: "abc",
			Versions: map[string]uint64{"keyring": 3, "denylist": 18}}
		if err := s.UpdateDeviceStatus(ctx, "bus-8", stop); err != nil {
			t.Fatal(err)
		}
		if d, err = s.Device(ctx, "bus-8"); err != nil || d.Status.Online || d.Status.QueueDepth != 3 || d.Status.Versions["denylist"] != 18 {
			t.Errorf("after a newer offline status: %+v, %v", d.Status, err)
		}

		// Compared by when the device wrote them: a heartbeat the server
		// got to late (its LastSeen moved to then, past the clean stop
		// written after it) does not make the stop a will; a will
		// written before the heartbeat is one.
		hb := DeviceStatus{Online: true, QueueDepth: 7, LastSeen: seen.Add(10 * time.Minute), Written: seen.Add(2 * time.Minute),
			Software: "1.2.3", Epoch: "abc", Versions: map[string]uint64{"keyring": 3, "denylist": 19}}
		if err := s.UpdateDeviceStatus(ctx, "bus-8", hb); err != nil {
			t.Fatal(err)
		}
		stop = DeviceStatus{Online: false, QueueDepth: 0, LastSeen: seen.Add(3 * time.Minute), Written: seen.Add(3 * time.Minute),
			Software: "1.2.3", Epoch: "abc", Versions: map[string]uint64{"keyring": 3, "denylist": 20}}
		if err := s.UpdateDeviceStatus(ctx, "bus-8", stop); err != nil {
			t.Fatal(err)
		}
		if d, err = s.Device(ctx, "bus-8"); err != nil || d.Status.Online || d.Status.QueueDepth != 0 || d.Status.Versions["denylist"] != 20 {
			t.Errorf("a clean stop written after a heartbeat processed late: %+v, %v; want taken whole", d.Status, err)
		}
		will = DeviceStatus{Online: false, QueueDepth: 500, LastSeen: seen.Add(time.Hour), Written: seen.Add(time.Second),
			Software: "1.2.2", Epoch: "abc", Versions: map[string]uint64{"keyring": 3}}
		if err := s.UpdateDeviceStatus(ctx, "bus-8", will); err != nil {
			t.Fatal(err)
		}
		if d, err = s.Device(ctx, "bus-8"); err != nil || d.Status.QueueDepth != 0 || d.Status.Versions["denylist"] != 20 {
			t.Errorf("a will written before the recorded status: %+v, %v; want the recorded figures kept", d.Status, err)
		}
	})
}

func TestStats(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		a := newAccount(t, s, 100)
		newAccount(t, s, 1000)
		commit(t, s, mkTap("bus-1", 1, a, at(0), ""), mkTap("bus-1", 2, 9999, at(0), ""))
		st, err := s.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want := Stats{Accounts: 2, NegativeAccounts: 1, TotalBalance: 850, Taps: 2, FlaggedTaps: 1, Postings: 3,
			DenyVersion: st.DenyVersion, DenyEntries: 1}
		if st.DenyVersion == 0 {
			t.Errorf("deny-list version 0 with an entry")
		}
		if st != want {
			t.Errorf("Stats = %+v, want %+v", st, want)
		}
	})
}

// CheckInvariants finds what a broken ledger looks like.
func TestCheckInvariantsFindsDamage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s, err := Open(ctx, db.dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		putTableAt(t, s, tableV1, tablesSince)
		acct := newAccount(t, s, 1000)
		commit(t, s, mkTap("bus-1", 1, acct, at(0), ""), mkTap("bus-1", 2, acct, at(30), ""))
		if err := s.CheckInvariants(ctx); err != nil {
			t.Fatalf("healthy ledger: %v", err)
		}
		type damage struct{ damage, undo, want string }
		pgOnly := []damage{}
		if db.backend == "postgres" { // SQLite's foreign keys refuse this damage outright
			pgOnly = append(pgOnly, damage{`UPDATE code_uses SET tap_id = 'nope/e/1'`,
				`UPDATE code_uses SET tap_id = (SELECT t.tap_id FROM taps t WHERE t.code_key = code_uses.code_key)`, "not stored"})
		}
		for _, tc := range append(pgOnly, []damage{
			{`UPDATE accounts SET balance = balance + 1`, `UPDATE accounts SET balance = balance - 1`, "balance"},
			{`UPDATE taps SET charge = 0 WHERE tap_id = 'bus-1/e1/1'`, `UPDATE taps SET charge = 250 WHERE tap_id = 'bus-1/e1/1'`, "charge"},
			{`UPDATE taps SET transfer = FALSE WHERE tap_id = 'bus-1/e1/2'`, `UPDATE taps SET transfer = TRUE WHERE tap_id = 'bus-1/e1/2'`, "re-rating"},
			{`UPDATE taps SET service_day = '2026-03-11' WHERE tap_id = 'bus-1/e1/2'`, `UPDATE taps SET service_day = '2026-03-10' WHERE tap_id = 'bus-1/e1/2'`, "service day"},
			{`UPDATE accounts SET neg_denied = TRUE`, `UPDATE accounts SET neg_denied = FALSE`, "neg_denied"},
			{`UPDATE code_uses SET reuses = 3`, `UPDATE code_uses SET reuses = 0`, "reuse count"},
			{`INSERT INTO ledger_stats (name, shard, value) VALUES ('taps', 99, 1)`, `DELETE FROM ledger_stats WHERE shard = 99`, "kept figure"},
			{`UPDATE counters SET value = 5 WHERE name = 'account_id'`, `UPDATE counters SET value = 1000 WHERE name = 'account_id'`, "counter"},
		}...) {
			if _, err := s.db.ExecContext(ctx, tc.damage); err != nil {
				t.Fatalf("%s: %v", tc.damage, err)
			}
			err := s.CheckInvariants(ctx)
			if tc.want == "" {
				if err != nil {
					t.Errorf("after %s: %v", tc.damage, err)
				}
				continue
			}
			if !errors.Is(err, ErrInvariant) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("after %s: err = %v, want an invariant about %q", tc.damage, err, tc.want)
			}
			if _, err := s.db.ExecContext(ctx, tc.undo); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CheckInvariants(ctx); err != nil {
			t.Errorf("repaired ledger: %v", err)
		}
		// A negative balance without its deny entry is found.
		poor := newAccount(t, s, 0)
		commit(t, s, mkTap("bus-1", 3, poor, at(0), ""))
		if _, err := s.db.ExecContext(ctx, `DELETE FROM deny_entries`); err != nil {
			t.Fatal(err)
		}
		if err := s.CheckInvariants(ctx); !errors.Is(err, ErrInvariant) || !strings.Contains(err.Error(), "deny") {
			t.Errorf("missing deny entry: err = %v", err)
		}
	})
}

// Whatever a validator claims about the fare (a negative fare, version 0,
// an unknown currency, another profile) is kept and noted, and the tap is
// charged the server's fare: a claim is never a way out of being charged.
func TestClaimsNeverRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		odd := mkTap("bus-1", 1, acct, at(0), "")
		odd.BaseFare, odd.FareVersion, odd.Currency, odd.ClaimedProfile = -5, 0, "???", paycode.Senior
		r := commit(t, s, odd)
		want := []string{NoteFareMismatch, NoteUnknownFareVersion, NoteProfileMismatch}
		if r[0].Flag != "" || r[0].Charge != 250 || !slices.Equal(r[0].Notes, want) {
			t.Errorf("odd claims: %+v, want charged 250 with notes %v", r[0], want)
		}
		rides, err := s.Rides(context.Background(), acct, 1)
		if err != nil || len(rides) != 1 || rides[0].ClaimedFare != -5 || rides[0].BaseFare != 250 {
			t.Errorf("rides %+v, %v: want the claim kept beside the server's fare", rides, err)
		}
	})
}

// The SQLite ledger and its -wal and -shm files are private (0600) whatever
// the umask, also when an older version made them readable.
func TestSQLiteFilesPrivate(t *testing.T) {
	db := newSQLiteDB(t)
	path := strings.TrimPrefix(db.dsn, "sqlite:")
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	s, err := Open(context.Background(), db.dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	putTableAt(t, s, tableV1, tablesSince)
	commit(t, s, mkTap("bus-1", 1, newAccount(t, s, 1000), at(0), ""))
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s: mode %o, want 600", filepath.Base(p), m)
		}
	}
	s.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(context.Background(), db.dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.CheckInvariants(context.Background()); err != nil {
		t.Error(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("reopened: mode %o, want 600", fi.Mode().Perm())
	}
}

func TestTokensAndAudit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		h := sha256.Sum256([]byte("secret"))
		tok, err := s.CreateToken(ctx, APIToken{ID: "abcd1234", Role: RoleMerchant, MerchantID: "shop-1", Name: "till 3"}, h[:])
		if err != nil || tok.Created.IsZero() {
			t.Fatalf("CreateToken = %+v, %v", tok, err)
		}
		for name, bad := range map[string]APIToken{
			"role":              {ID: "abcd1235", Role: "root"},
			"merchant no shop":  {ID: "abcd1236", Role: RoleMerchant},
			"shop for operator": {ID: "abcd1237", Role: RoleOperator, MerchantID: "x"},
			"id":                {ID: "A!", Role: RoleAuditor},
		} {
			if _, err := s.CreateToken(ctx, bad, h[:]); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", name, err)
			}
		}
		got, err := s.TokenByHash(ctx, h[:])
		if err != nil || got.ID != "abcd1234" || got.MerchantID != "shop-1" || !got.Revoked.IsZero() {
			t.Errorf("TokenByHash = %+v, %v", got, err)
		}
		other := sha256.Sum256([]byte("other"))
		_, err = s.TokenByHash(ctx, other[:])
		wantErr(t, err, ErrNotFound)
		if err := s.RevokeToken(ctx, "abcd1234"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, s.RevokeToken(ctx, "nope1234"), ErrNotFound)
		if got, _ := s.TokenByHash(ctx, h[:]); got.Revoked.IsZero() {
			t.Errorf("revoked token %+v", got)
		}
		if list, err := s.Tokens(ctx); err != nil || len(list) != 1 {
			t.Errorf("Tokens = %+v, %v", list, err)
		}
		for i := range 3 {
			if err := s.Audit(ctx, AuditEntry{Actor: "token:abcd1234 (operator)", Action: "deny", Target: strconv.Itoa(i), Detail: "fraud"}); err != nil {
				t.Fatal(err)
			}
		}
		log, err := s.AuditLog(ctx, 0, 2)
		if err != nil || len(log) != 2 || log[0].Target != "2" || log[0].At.IsZero() {
			t.Fatalf("AuditLog = %+v, %v", log, err)
		}
		if more, _ := s.AuditLog(ctx, log[1].ID, 10); len(more) != 1 || more[0].Target != "0" {
			t.Errorf("next page %+v", more)
		}
		for _, q := range []string{`UPDATE audit_log SET actor = 'x'`, `DELETE FROM audit_log`} {
			if _, err := s.db.ExecContext(ctx, q); err == nil {
				t.Errorf("%s: allowed", q)
			}
		}
	})
}

// After a restore the ids go forward, never back to ones the lost history
// handed out, and the deny-list version keeps increasing.
func TestRestored(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		a := newAccount(t, s, 100)
		v0 := denyList(t, s).Version
		acct, pay, err := s.Restored(ctx, 0, "cli")
		if err != nil || acct != int64(a)+DefaultRestoreMargin || pay != DefaultRestoreMargin {
			t.Fatalf("Restored = %d, %d, %v", acct, pay, err)
		}
		b, err := s.CreateAccount(ctx, AccountSpec{})
		if err != nil || b.ID != uint64(acct)+1 {
			t.Errorf("next account %d, %v, want %d", b.ID, err, acct+1)
		}
		if v := denyList(t, s).Version; v <= v0 || v < uint64(time.Now().Add(-time.Minute).UnixMilli()) {
			t.Errorf("deny version %d after a restore (was %d)", v, v0)
		}
		if log, _ := s.AuditLog(ctx, 0, 1); len(log) != 1 || log[0].Action != "restored" {
			t.Errorf("audit %+v", log)
		}
		_, _, err = s.Restored(ctx, -1, "cli")
		wantErr(t, err, ErrInvalid)
	})
}

// A rider who fetched several credentials before reusing a code does not go
// on with the next: when a credential is denied for code_reused while the
// account holds others still valid, the whole account is denied
// (code_reused_account: one entry however many credentials, until an hour
// after the last expires), online payments with the others are refused,
// and no other account is touched. Before, only the reused credential was
// denied; the others, fetched in advance (nothing bounds how many), kept
// working for up to a day.
func TestCodeReuseDeniesOtherCredentials(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 2000)
		other := newAccount(t, s, 2000)
		for range 2 { // serials 2 and 3, fetched before the reuse
			if _, err := s.IssueCredentialSerial(ctx, acct, time.Now().Add(24*time.Hour), riderKey(acct)); err != nil {
				t.Fatal(err)
			}
		}
		a := mkTap("bus-1", 1, acct, at(0), "")
		b := mkTap("bus-2", 1, acct, at(3), "")
		b.CodeKey = a.CodeKey
		commit(t, s, a)
		if r := commit(t, s, b); r[0].Flag != FlagDuplicateCode {
			t.Fatalf("second use: %+v", r[0])
		}
		dl := denyList(t, s)
		if !hasDeny(dl, acct, 1, ReasonCodeReused) || !hasDeny(dl, acct, 0, ReasonCodeReusedAccount) || len(dl.Entries) != 2 {
			t.Errorf("deny list %+v: want %d/1 code_reused and %d/0 code_reused_account", dl.Entries, acct, acct)
		}
		for _, e := range dl.Entries {
			if e.Reason == ReasonCodeReusedAccount && !e.Expires.After(time.Now().Add(24*time.Hour)) {
				t.Errorf("entry %+v expires before the credentials", e)
			}
		}
		key := codeKey(acct, 2, time.Now())
		_, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop-1", OrderID: "o-1", Account: acct, Serial: 2, RiderKey: riderKey(acct),
			CodeKey: key, CodeHash: hex.EncodeToString(key[:6]), Amount: 100, Currency: "EUR"})
		if !errors.Is(err, ErrDenied) {
			t.Errorf("payment with credential 2: %v, want ErrDenied", err)
		}
		// An account with no other valid credential: only the credential.
		c := mkTap("bus-3", 1, other, at(10), "")
		d := mkTap("bus-4", 1, other, at(12), "") // another door of the same bus
		d.CodeKey = c.CodeKey
		commit(t, s, c, d)
		if dl := denyList(t, s); !hasDeny(dl, other, 1, ReasonCodeReused) || hasDeny(dl, other, 0, ReasonCodeReusedAccount) {
			t.Errorf("deny list %+v: want %d/1 code_reused only", dl.Entries, other)
		}
		if got := balance(t, s, acct); got != 2000-250 {
			t.Errorf("balance %d, want %d", got, 2000-250)
		}
		if err := s.CheckInvariants(ctx); err != nil {
			t.Errorf("invariants: %v", err)
		}
	})
}

// A reduced profile is pending until confirmed (SetProfile with confirmed,
// as the operator or the payment provider sets it): asking again for the
// confirmed profile keeps it confirmed, asking for another makes it
// pending, adult never is. Migration 13 makes the reduced profiles of a
// ledger from before pending (they were never checked), not the adult
// ones.
func TestProfilePending(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		asked, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Child})
		if err != nil {
			t.Fatal(err)
		}
		checked, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Senior, ProfileConfirmed: true})
		if err != nil {
			t.Fatal(err)
		}
		adult, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult})
		if err != nil {
			t.Fatal(err)
		}
		pending := func(id uint64) (paycode.Profile, bool) {
			t.Helper()
			a, err := s.Account(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if a.ProfilePending && a.CredentialProfile() != paycode.Adult || !a.ProfilePending && a.CredentialProfile() != a.Profile {
				t.Errorf("account %d: CredentialProfile %v with %+v", id, a.CredentialProfile(), a)
			}
			return a.Profile, a.ProfilePending
		}
		for _, tc := range []struct {
			id   uint64
			want bool
		}{{asked.ID, true}, {checked.ID, false}, {adult.ID, false}} {
			if _, got := pending(tc.id); got != tc.want {
				t.Errorf("account %d pending %v, want %v", tc.id, got, tc.want)
			}
		}
		steps := []struct {
			p         paycode.Profile
			confirmed bool
			want      bool
		}{
			{paycode.Child, true, false},   // confirmed
			{paycode.Child, false, false},  // asked again: stays confirmed
			{paycode.Student, false, true}, // another: pending
			{paycode.Student, false, true}, // asked again: still pending
			{paycode.Adult, false, false},  // adult needs no check
			{paycode.Senior, true, false},  // set by staff
			{paycode.Child, false, true},   // the rider's word
		}
		for i, st := range steps {
			a, err := s.SetProfile(ctx, asked.ID, st.p, st.confirmed)
			if err != nil {
				t.Fatal(err)
			}
			if a.Profile != st.p || a.ProfilePending != st.want {
				t.Errorf("step %d %+v: %+v", i, st, a)
			}
		}
		_, err = s.SetProfile(ctx, 99999, paycode.Child, true)
		wantErr(t, err, ErrNotFound)
		_, err = s.SetProfile(ctx, asked.ID, paycode.Profile(9), true)
		wantErr(t, err, ErrInvalid)

		// A ledger from before migration 13: every account confirmed as
		// it is, the column gone (and the later migrations' tables);
		// opening it migrates.
		for _, q := range []string{`ALTER TABLE accounts DROP COLUMN profile_pending`, `DROP TABLE ledger_settings`,
			`ALTER TABLE devices DROP COLUMN written_ns`,                                                         /* migration 22 */
			`ALTER TABLE devices DROP COLUMN reported_route`, `ALTER TABLE devices DROP COLUMN reported_vehicle`, /* 30 */
			`ALTER TABLE devices DROP COLUMN reported_server_version`,                                                                                                                                                                                                                             /* 30 */
			`ALTER TABLE devices DROP COLUMN cert_not_after_ns`,                                                                                                                                                                                                                                   /* 31 */
			`ALTER TABLE devices DROP COLUMN replay_id`, `ALTER TABLE devices DROP COLUMN replay_until_ns`, `ALTER TABLE devices DROP COLUMN replay_sent_ns`, `ALTER TABLE devices DROP COLUMN replay_sends` /* 33 */, `DROP INDEX accounts_unused`, `ALTER TABLE accounts DROP COLUMN anonymous`, /* 32 */
			`ALTER TABLE accounts DROP COLUMN secret_replaced_ns`,                                                                /* 34 */
			`ALTER TABLE code_uses DROP COLUMN reusers`,                                                                          /* 23 */
			`DROP TABLE code_refusals`,                                                                                           /* 24 */
			`DROP INDEX refunds_token`,                                                                                           /* 29: on token_id */
			`DROP INDEX payments_token`, `ALTER TABLE payments DROP COLUMN token_id`, `ALTER TABLE refunds DROP COLUMN token_id`, /* 26 */
			`DELETE FROM schema_migrations WHERE version >= 13`} {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		s = db.open(t, nil) // a second Store: it migrates
		for _, tc := range []struct {
			id   uint64
			want bool
		}{{asked.ID, true}, {checked.ID, true}, {adult.ID, false}} {
			if _, got := pending(tc.id); got != tc.want {
				t.Errorf("after migration 13: account %d pending %v, want %v", tc.id, got, tc.want)
			}
		}
	})
}

// An account holds at most MaxLiveCredentials credentials not yet expired;
// one expiring makes room for one more.
func TestLiveCredentialsBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		clock := time.Now()
		s := db.open(t, &Options{Now: func() time.Time { return clock }})
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult})
		if err != nil {
			t.Fatal(err)
		}
		acct := a.ID
		for i := range MaxLiveCredentials {
			if _, err := s.IssueCredentialSerial(ctx, acct, clock.Add(time.Hour+time.Duration(i)*time.Minute), riderKey(acct)); err != nil {
				t.Fatalf("credential %d: %v", i+1, err)
			}
		}
		_, err = s.IssueCredentialSerial(ctx, acct, clock.Add(2*time.Hour), riderKey(acct))
		wantErr(t, err, ErrTooManyCredentials)
		if a, _ := s.Account(ctx, acct); a.LastSerial != MaxLiveCredentials {
			t.Errorf("last serial %d after the refusal, want %d", a.LastSerial, MaxLiveCredentials)
		}
		clock = clock.Add(time.Hour + 30*time.Second) // the first has expired
		serial, err := s.IssueCredentialSerial(ctx, acct, clock.Add(time.Hour), riderKey(acct))
		if err != nil || serial != MaxLiveCredentials+1 {
			t.Fatalf("after one expired: serial %d, %v", serial, err)
		}
		_, err = s.IssueCredentialSerial(ctx, acct, clock.Add(time.Hour), riderKey(acct))
		wantErr(t, err, ErrTooManyCredentials)
	})
}

// A credential the account has no room for is refused without a write
// transaction: the rider's secret asked again and again (1,500 a second
// from one account, an attack review), and each refusal took the ledger's
// one writer, which the fleet's taps and every other write waited for.
func TestRefusedCredentialWritesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		clock := time.Now()
		s := db.open(t, &Options{Now: func() time.Time { return clock }})
		hash := []byte("secret hash")
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult, SecretHash: hash})
		if err != nil {
			t.Fatal(err)
		}
		for range MaxLiveCredentials {
			if _, err := s.IssueRiderCredentialSerial(ctx, a.ID, hash, clock.Add(time.Hour), riderKey(a.ID)); err != nil {
				t.Fatal(err)
			}
		}
		trips := s.roundTrips.Load()
		for range 50 {
			_, err := s.IssueRiderCredentialSerial(ctx, a.ID, hash, clock.Add(time.Hour), riderKey(a.ID))
			wantErr(t, err, ErrTooManyCredentials)
		}
		if n := s.roundTrips.Load() - trips; n != 0 {
			t.Errorf("50 refused credentials sent %d statements in write transactions; want none", n)
		}
	})
}

// Credentials on the deny list do not count against MaxLiveCredentials:
// a thief who fetched 16 with a stolen secret before the rider replaced it
// does not keep the rider from a new one. All not yet expired stay bounded
// by MaxUnexpiredCredentials. A credential asked for with a secret that has
// been replaced meanwhile is refused (ErrSecretChanged) and writes nothing.
func TestDeniedCredentialsMakeRoom(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		clock := time.Now()
		s := db.open(t, &Options{Now: func() time.Time { return clock }})
		oldHash, newHash := []byte("old secret hash"), []byte("new secret hash")
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult, SecretHash: oldHash})
		if err != nil {
			t.Fatal(err)
		}
		acct := a.ID
		issue := func(hash []byte) (uint32, error) {
			return s.IssueRiderCredentialSerial(ctx, acct, hash, clock.Add(time.Hour), riderKey(acct))
		}
		for range MaxLiveCredentials {
			if _, err := issue(oldHash); err != nil {
				t.Fatal(err)
			}
		}
		_, err = issue(oldHash)
		wantErr(t, err, ErrTooManyCredentials)
		if n, err := s.ReplaceSecret(ctx, acct, oldHash, newHash); err != nil || n != MaxLiveCredentials {
			t.Fatalf("ReplaceSecret = %d, %v", n, err)
		}
		before := snapshot(t, s)
		_, err = issue(oldHash) // the thief's request, still under way
		wantErr(t, err, ErrSecretChanged)
		if after := snapshot(t, s); after != before {
			t.Errorf("a credential asked for with the replaced secret changed the ledger:\n%s\n%s", before, after)
		}
		if serial, err := issue(newHash); err != nil || serial != MaxLiveCredentials+1 {
			t.Fatalf("the rider's credential after the replacement: %d, %v", serial, err)
		}
		// Replaced again and again (by the operator: a rider's own
		// replacement is refused from MaxUnexpiredCredentials -
		// MaxLiveCredentials on, api.TestStolenSecretCannotLockOutRider): at most
		// MaxUnexpiredCredentials in all.
		issued := MaxLiveCredentials + 1
		for round := 0; issued < MaxUnexpiredCredentials; round++ {
			h := []byte(fmt.Sprint("secret ", round))
			if _, err := s.ReplaceSecret(ctx, acct, nil, h); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < MaxLiveCredentials && issued < MaxUnexpiredCredentials; i++ {
				if _, err := issue(h); err != nil {
					t.Fatalf("credential %d: %v", issued+1, err)
				}
				issued++
			}
			newHash = h
		}
		if _, err := s.ReplaceSecret(ctx, acct, newHash, oldHash); !errors.Is(err, ErrTooManyCredentials) {
			t.Fatalf("the rider's own replacement with %d credentials not yet expired: %v, want ErrTooManyCredentials", issued, err)
		}
		if _, err := s.ReplaceSecret(ctx, acct, nil, oldHash); err != nil {
			t.Fatal(err)
		}
		_, err = issue(oldHash)
		wantErr(t, err, ErrTooManyCredentials)
		if a, _ := s.Account(ctx, acct); a.LastSerial != MaxUnexpiredCredentials {
			t.Errorf("last serial %d, want %d", a.LastSerial, MaxUnexpiredCredentials)
		}
	})
}

// A tap's route and vehicle are what the validator's assignment held, and
// the release before took bidirectional marks and zero-width spaces there
// (a Hebrew or Arabic route name carries U+200F): a tap such a validator
// records is charged, not refused, since a refused tap is quarantined and
// never charged. Control characters are still refused (TestTapValidation).
func TestTapWithHiddenCharactersIsCharged(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		tp := mkTap("bus-1", 1, acct, at(0), "\u05e7\u05d5 5\u200f")
		tp.Vehicle = "\ufeffbus-7\u200b"
		commit(t, s, tp)
		if b := balance(t, s, acct); b != 750 {
			t.Errorf("balance %d after a tap on a route with a bidirectional mark, want 750", b)
		}
	})
}

// A fare table the release before stored may list a route whose name holds
// bidirectional marks or embeddings (a Hebrew route name carries them): the
// ledger still loads it and rates taps by it, since a table it cannot load
// stops the settlement of every tap in its time; and taps on such a route
// are charged.
// TestFareTableLocalZone: a new fare table in Go's "Local" zone (each
// machine's own) is refused; one stored before that still loads and rates
// taps (refusing it stopped the settlement of every tap in its time).
func TestFareTableLocalZone(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		local := strings.Replace(strings.Replace(tableV1, `"version":1`, `"version":2`, 1), `"Europe/Berlin"`, `"Local"`, 1)
		if err := s.PutFareTable(ctx, mustTable(t, local)); !errors.Is(err, ErrInvalid) {
			t.Errorf("a new table in the Local zone: %v; want ErrInvalid", err)
		}
		acct := newAccount(t, s, 1000)
		liftFareTableTrigger(t, s, db)
		body := strings.Replace(tableV1, `"Europe/Berlin"`, `"Local"`, 1)
		if _, err := s.db.ExecContext(ctx, `UPDATE fare_tables SET body = $1 WHERE version = 1`, body); err != nil {
			t.Fatal(err)
		}
		s = db.open(t, nil) // no table cached
		if r := commit(t, s, mkTap("bus-1", 1, acct, at(0), "")); r[0].Charge != 250 {
			t.Errorf("a tap rated by a stored Local table: %+v; want charged", r[0])
		}
	})
}

func TestStoredFareTableWithHiddenRoute(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		rtl := "\u202b\u05e7\u05d5 5\u200f\u202c"
		body := strings.Replace(tableV1, `"transfer"`, `"routes":["X1","`+rtl+`"],"transfer"`, 1)
		// That release stored it; this one refuses such a table, and
		// stored tables are append-only: the test lifts the trigger.
		liftFareTableTrigger(t, s, db)
		if _, err := s.db.ExecContext(context.Background(), `UPDATE fare_tables SET body = $1 WHERE version = 1`, body); err != nil {
			t.Fatal(err)
		}
		s = db.open(t, nil) // no table cached
		commit(t, s, mkTap("bus-1", 1, acct, at(0), "X1"))
		commit(t, s, mkTap("bus-1", 2, acct, at(120), rtl))
		if b := balance(t, s, acct); b >= 1000 {
			t.Errorf("balance %d: the taps were not charged", b)
		}
	})
}

// TestCodeRefusalsBounded: a shop's scanner shown one code may be refused
// MaxCodeRefusals times (over the limit, short of funds); then the code
// pays no more online, even an amount that fits, and nothing moved: no
// search of the rider's limit or balance with one code (an attack review:
// 37 refusals read the limit exactly, 222 tries took 99 % of the balance). The
// code's tap on a bus still pays, and another code of the rider still
// pays online. An account keeps MaxRefusedCodes counted.
func TestCodeRefusalsBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 10_000)
		if _, err := s.SetPaymentLimit(ctx, acct, 7_000); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, s)
		req := PaymentRequest{MerchantID: "rogue-shop", Account: acct, Serial: 1, RiderKey: riderKey(acct),
			CodeKey: codeKey(acct, 1, at(0)), CodeHash: "abc", Currency: "EUR"}
		for i, try := range []struct {
			amount int64
			want   error
		}{{9_000, ErrOverLimit}, {20_000, ErrOverLimit}, {6_000, nil}} {
			req.OrderID, req.Amount = fmt.Sprintf("probe-%d", i), try.amount
			if try.want == nil {
				// the balance is lowered under the shop's feet: short of funds
				if _, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: "o", Account: acct, Serial: 1,
					RiderKey: riderKey(acct), CodeKey: codeKey(acct, 1, at(1)), CodeHash: "def", Amount: 5_000,
					Currency: "EUR"}); err != nil {
					t.Fatal(err)
				}
				before = snapshot(t, s)
				try.want = ErrInsufficientFunds
			}
			_, _, err := s.Pay(ctx, req)
			wantErr(t, err, try.want)
		}
		req.OrderID, req.Amount = "fits", 100
		_, _, err := s.Pay(ctx, req)
		wantErr(t, err, ErrCodeUsed)
		// The rider's wallet learns which code it was, to show a new one.
		if ids, err := s.RefusedCodes(ctx, acct, time.Time{}); err != nil || len(ids) != 1 || !bytes.Equal(ids[0].Key(), req.CodeKey) {
			t.Errorf("RefusedCodes: %+v, %v; want the code refused %d times", ids, err, MaxCodeRefusals)
		}
		if after := snapshot(t, s); after != before {
			t.Errorf("refused payments changed the ledger:\n%s\n%s", before, after)
		}
		var n int64
		if err := s.db.QueryRowContext(ctx, `SELECT refusals FROM code_refusals WHERE code_key = $1`, req.CodeKey).Scan(&n); err != nil || n != MaxCodeRefusals {
			t.Errorf("refusals counted %d (%v), want %d", n, err, MaxCodeRefusals)
		}
		// The same code on a bus (the rider's app showed it offline): a tap pays.
		tap := mkTap("bus-1", 1, acct, at(60), "")
		tap.CodeKey = req.CodeKey
		if r := commit(t, s, tap); r[0].Charge != 250 || r[0].Flag != "" {
			t.Errorf("the refused code's tap: %+v", r[0])
		}
		// Another code of the rider's pays online.
		req.OrderID, req.CodeKey = "next-code", codeKey(acct, 1, at(120))
		if _, _, err := s.Pay(ctx, req); err != nil {
			t.Errorf("a new code after a refused one: %v", err)
		}
		if b := balance(t, s, acct); b != 10_000-5_000-250-100 {
			t.Errorf("balance %d, want %d", b, 10_000-5_000-250-100)
		}
		// A rider who mints codes of their own for a shop's token of their
		// own cannot grow the table: an account keeps its latest
		// MaxRefusedCodes refused codes.
		for i := range MaxRefusedCodes + 6 {
			req.OrderID, req.CodeKey, req.Amount = fmt.Sprintf("mint-%d", i), codeKey(acct, 1, at(200)), MaxAmount
			_, _, err := s.Pay(ctx, req)
			wantErr(t, err, ErrOverLimit)
		}
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM code_refusals WHERE account_id = $1`, int64(acct)).Scan(&n); err != nil || n != MaxRefusedCodes {
			t.Errorf("the account keeps %d refused codes (%v), want %d", n, err, MaxRefusedCodes)
		}
		if err := s.db.QueryRowContext(ctx, `SELECT refusals FROM code_refusals WHERE code_key = $1`, req.CodeKey).Scan(&n); err != nil || n != 1 {
			t.Errorf("the latest refused code counted %d (%v), want 1", n, err)
		}
		if err := s.CheckInvariants(ctx); err != nil {
			t.Error(err)
		}
	})
}

// TestPaymentLimit: a rider's limit for one payment by code refuses a
// larger online payment with ErrOverLimit and writes nothing (the balance,
// the postings and the code unused: the same code then pays an amount
// within the limit); 0 removes it; out-of-range limits and unknown
// accounts are refused; the account shows it; taps are not bounded by it.
func TestPaymentLimit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 10_000)
		a, err := s.SetPaymentLimit(ctx, acct, 500)
		if err != nil || a.PaymentLimit != 500 {
			t.Fatalf("SetPaymentLimit = %+v, %v", a, err)
		}
		req := PaymentRequest{MerchantID: "rogue-shop", OrderID: "o-1", Account: acct, Serial: 1, RiderKey: riderKey(acct),
			CodeKey: codeKey(acct, 1, at(0)), CodeHash: "abc", Amount: 9_000, Currency: "EUR"}
		before := snapshot(t, s)
		_, _, err = s.Pay(ctx, req)
		wantErr(t, err, ErrOverLimit)
		if after := snapshot(t, s); after != before {
			t.Errorf("a refused payment changed the ledger:\n%s\n%s", before, after)
		}
		req.OrderID, req.Amount = "o-2", 500 // the same code, within the limit
		if _, _, err := s.Pay(ctx, req); err != nil {
			t.Fatalf("a payment at the limit: %v", err)
		}
		// A tap is rated by the ledger, not bounded by the limit.
		if _, err := s.SetPaymentLimit(ctx, acct, 1); err != nil {
			t.Fatal(err)
		}
		if r := commit(t, s, mkTap("bus-1", 1, acct, at(60), "")); r[0].Charge != 250 || r[0].Flag != "" {
			t.Errorf("a tap under a limit of 1: %+v", r[0])
		}
		if a, err := s.SetPaymentLimit(ctx, acct, 0); err != nil || a.PaymentLimit != 0 {
			t.Fatalf("removing the limit: %+v, %v", a, err)
		}
		req.OrderID, req.CodeKey, req.Amount = "o-3", codeKey(acct, 1, at(2)), 9_000
		if _, _, err := s.Pay(ctx, req); err != nil {
			t.Errorf("a payment with no limit: %v", err)
		}
		for _, bad := range []int64{-1, MaxAmount + 1} {
			_, err := s.SetPaymentLimit(ctx, acct, bad)
			wantErr(t, err, ErrInvalid)
		}
		_, err = s.SetPaymentLimit(ctx, 424242, 100)
		wantErr(t, err, ErrNotFound)
		if b := balance(t, s, acct); b != 10_000-500-250-9_000 {
			t.Errorf("balance %d, want %d", b, 10_000-500-250-9_000)
		}
	})
}

// TestFareChangeOneServiceDay: a fare table that moves the service day
// (from UTC's days to Berlin's, the change the README asks of a table that
// named no zone) comes into force; a bus still offline charges the old
// table, as FareGrace lets it. A rider taps it at 04:30 Berlin and, 20
// minutes later, a bus that has the new table: a free transfer under
// either table. The two rides happened on one service day whatever table
// rates them, so they must be rated together — they were put on the old
// table's day (03:30 UTC, before its 04:00 start: the day before) and the
// new table's, and the transfer was charged a second full fare.
func TestFareChangeOneServiceDay(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := db.open(t, nil)
		utc := strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1)
		berlinDays := strings.Replace(tableV1, `"version":1`, `"version":2`, 1)
		putTableAt(t, s, utc, tablesSince)
		change := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
		putTableAt(t, s, berlinDays, change)
		acct := newAccount(t, s, 10000)

		old := mkTap("bus-old", 1, acct, time.Date(2026, 3, 10, 4, 30, 0, 0, berlin), "") // claims v1
		cur := mkTap("bus-new", 1, acct, time.Date(2026, 3, 10, 4, 50, 0, 0, berlin), "")
		cur.FareVersion = 2
		r := commit(t, s, old, cur)
		if r[0].RatedVersion != 1 || r[1].RatedVersion != 2 {
			t.Fatalf("rated by v%d and v%d, want v1 (the old bus's, within the grace) and v2", r[0].RatedVersion, r[1].RatedVersion)
		}
		if r[0].Charge != 250 || r[1].Charge != 0 {
			t.Errorf("charged %d and %d, want 250 and 0 (a transfer 20 minutes later)", r[0].Charge, r[1].Charge)
		}
		if b := balance(t, s, acct); b != 10000-250 {
			t.Errorf("balance %d, want %d", b, 10000-250)
		}
		rides, err := s.Rides(context.Background(), acct, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, rd := range rides {
			if rd.ServiceDay != "2026-03-10" {
				t.Errorf("ride %s (%s) on service day %s, want 2026-03-10", rd.TapID, rd.Time.In(berlin).Format(time.TimeOnly), rd.ServiceDay)
			}
		}
	})
}

// TestFareChangeServiceDayOtherRidersTap: a fare table's start, which
// decides the service day of the taps at its time, must not depend on
// other riders' taps. It did for a while (a review of the late change): a
// table came into force just after the latest charged tap stored with a
// later time, so one rider's rides (a tap dated 15 s after the
// publication, a change onto an up-to-date bus 20 minutes later) cost
// 250 + 250 when another rider's tap of that time had come in before the
// publication, and 250 + 0 when it came in a minute after.
func TestFareChangeServiceDayOtherRidersTap(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		utc := strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1)
		berlinDays := strings.Replace(tableV1, `"version":1`, `"version":2`, 1)
		publish := time.Date(2026, 3, 10, 3, 29, 45, 0, time.UTC)
		tapAt := publish.Add(15 * time.Second) // 04:30 Berlin: v1's 2026-03-09, v2's 2026-03-10
		run := func(otherFirst bool) int64 {
			s := newDB(t, db.backend).open(t, nil)
			putTableAt(t, s, utc, tablesSince)
			other, rider := newAccount(t, s, 10000), newAccount(t, s, 10000)
			otherTap := mkTap("bus-other", 1, other, tapAt, "")
			if otherFirst { // its validator's clock 15 s ahead, online
				s.now = func() time.Time { return publish.Add(-15 * time.Second) }
				commit(t, s, otherTap)
			}
			putTableAt(t, s, berlinDays, publish)
			s.now = func() time.Time { return publish.Add(time.Minute) }
			if !otherFirst { // the same tap, a minute late
				commit(t, s, otherTap)
			}
			commit(t, s, mkTap("bus-old", 1, rider, tapAt, ""))
			s.now = func() time.Time { return tapAt.Add(21 * time.Minute) }
			tp := mkTap("bus-new", 1, rider, tapAt.Add(20*time.Minute), "")
			tp.FareVersion = 2
			commit(t, s, tp)
			if err := s.CheckInvariants(context.Background()); err != nil {
				t.Errorf("CheckInvariants: %v", err)
			}
			return 10000 - balance(t, s, rider)
		}
		if first, late := run(true), run(false); first != late {
			t.Errorf("the same two rides cost %d when another rider's tap came in before the publication, %d when it came in after; want the same", first, late)
		}
	})
}

// A credential serial the account was never issued is refused, changing
// nothing: serials are handed out in order, so an operator's mistyped
// serial (2 for 1) put the rider's next credential on the deny list the
// day it was issued, for good, while the lost one kept paying.
func TestDenyUnknownCredential(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		acct := newAccount(t, s, 1000) // credential 1
		wantErr(t, s.Deny(ctx, acct, 2, "lost_phone"), ErrNotFound)
		if dl := denyList(t, s); dl.Version != 0 || len(dl.Entries) != 0 {
			t.Fatalf("deny list %+v after a refused deny, want it unchanged", dl)
		}
		serial, err := s.IssueCredentialSerial(ctx, acct, time.Now().Add(time.Hour), riderKey(acct))
		if err != nil || serial != 2 {
			t.Fatalf("next credential: serial %d, err %v; want 2", serial, err)
		}
		if entries, _ := s.DenyEntries(ctx, acct); len(entries) != 0 {
			t.Errorf("credential 2 issued denied: %+v", entries)
		}
		if err := s.Deny(ctx, acct, 2, "lost_phone"); err != nil {
			t.Fatalf("deny an issued credential: %v", err)
		}
	})
}

// TestTokensPage: pages of API tokens walked to the end, with and without
// filters, give every token the filter keeps once, oldest first, ties of
// creation time broken by id; an After that names no token is
// ErrNotFound.
func TestTokensPage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		for i := range 23 {
			tok := APIToken{ID: fmt.Sprintf("tok%05d", i), Role: RoleAuditor, Name: "n"}
			switch i % 3 {
			case 1:
				tok.Role, tok.MerchantID = RoleMerchant, fmt.Sprintf("shop-%d", i%2)
			case 2:
				tok.Role = RolePayments
			}
			h := sha256.Sum256([]byte(tok.ID))
			if _, err := s.CreateToken(ctx, tok, h[:]); err != nil {
				t.Fatal(err)
			}
			if i%4 == 0 {
				if err := s.RevokeToken(ctx, tok.ID); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Ties: tokens made in the same nanosecond are ordered by id.
		if _, err := s.db.ExecContext(ctx, `UPDATE api_tokens SET created_ns = 1000 WHERE id IN ('tok00007', 'tok00003', 'tok00011')`); err != nil {
			t.Fatal(err)
		}
		all, err := s.Tokens(ctx)
		if err != nil || len(all) != 23 {
			t.Fatalf("Tokens = %d, %v", len(all), err)
		}
		// Pages of 1 and 2 end within the tied tokens (pages of 4 never
		// did: a keyset without the id's tie-break passed).
		for _, f := range []TokenFilter{{}, {Limit: 1}, {Limit: 2}, {Role: RoleMerchant}, {Merchant: "shop-1"}, {InForce: true}, {Role: RolePayments, InForce: true}, {Role: "nobody"}} {
			var want []string
			for _, tok := range all {
				if (f.Role == "" || tok.Role == f.Role) && (f.Merchant == "" || tok.MerchantID == f.Merchant) && (!f.InForce || tok.Revoked.IsZero()) {
					want = append(want, tok.ID)
				}
			}
			var got []string
			if f.Limit == 0 {
				f.Limit = 4
			}
			for page := 0; ; page++ {
				if page > 30 {
					t.Fatalf("%+v: more than 30 pages", f)
				}
				ts, more, err := s.TokensPage(ctx, f)
				if err != nil {
					t.Fatalf("%+v: %v", f, err)
				}
				for _, tok := range ts {
					got = append(got, tok.ID)
				}
				if !more {
					break
				}
				if len(ts) != f.Limit {
					t.Fatalf("%+v: a page of %d with more after it", f, len(ts))
				}
				f.After = ts[len(ts)-1].ID
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("filter %+v: pages gave\n%v\nwant\n%v", f, got, want)
			}
		}
		if all[0].ID != "tok00003" || all[1].ID != "tok00007" || all[2].ID != "tok00011" {
			t.Errorf("tied tokens not first by id: %v %v %v", all[0].ID, all[1].ID, all[2].ID)
		}
		_, _, err = s.TokensPage(ctx, TokenFilter{After: "nosuch00"})
		wantErr(t, err, ErrNotFound)
	})
}
