package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// TestLookupsByIndex checks that the batch lookups (matching) find rows
// of a table the planner would rather scan by one index lookup each, with
// a custom plan and with the generic plan PostgreSQL caches for a prepared
// statement: a batch's reads must not grow with the ledger.
func TestLookupsByIndex(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		if db.backend != "postgres" {
			t.Skip("SQLite has no planner choice here: an IN list over a primary key is one lookup per value")
		}
		ctx := context.Background()
		// Not db.open: the code uses made up below have no taps, which
		// CheckInvariants would report.
		s, err := Open(ctx, db.dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		conn, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		plan := func(q string) string {
			t.Helper()
			rows, err := conn.QueryContext(ctx, "EXPLAIN "+q)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var lines []string
			for rows.Next() {
				var l string
				if err := rows.Scan(&l); err != nil {
					t.Fatal(err)
				}
				lines = append(lines, l)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return strings.Join(lines, "\n")
		}
		keys := newBulk(tBytes)
		for i := range 100 {
			k := sha256.Sum256([]byte(strconv.Itoa(rand.N(100000) + i)))
			keys.add(k[:])
		}
		// The ledger's statements are prepared (pgx caches them on each
		// connection) and PostgreSQL may keep a generic plan of one: made
		// while the table was small, it is used on until the table's
		// statistics change. Both reads are prepared here on the empty
		// table, then 50,000 code uses arrive (as a young ledger has after
		// an hour of a small city) and the cached plans are shown.
		src, _ := keys.source(1, true)
		from, where, _ := (&txn{s: s}).matching(keys, "code_uses", "u", "code_key")
		// EXECUTE takes no parameters: the keys go as a literal.
		lits := make([]string, keys.rows)
		for i, v := range keys.vals {
			lits[i] = "decode('" + hex.EncodeToString(v.([]byte)) + "', 'hex')"
		}
		arg := "(ARRAY[" + strings.Join(lits, ", ") + "])"
		for _, q := range []string{
			`PREPARE in_list AS SELECT code_key FROM code_uses WHERE code_key IN (` + src + `)`,
			`PREPARE lookups AS SELECT u.code_key, u.tap_id FROM ` + from + ` WHERE ` + where,
			`SET plan_cache_mode = force_generic_plan`,
			`EXECUTE in_list` + arg,
			`EXECUTE lookups` + arg,
			`INSERT INTO code_uses (code_key, account_id, serial, tap_id, created_ns)
				SELECT sha256(CAST(CAST(i AS TEXT) AS BYTEA)), 1000 + i % 500, 1, 'bus-1/e/' || i, 0
				FROM generate_series(1, 50000) AS i`,
		} {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		t.Logf("an IN list (as the ledger read before), planned on the empty table:\n%s", plan(`EXECUTE in_list`+arg))
		p := plan(`EXECUTE lookups` + arg)
		if strings.Contains(p, "Seq Scan on code_uses") || !strings.Contains(p, "Index") {
			t.Errorf("the lookups, planned on the empty table, scan it:\n%s", p)
		}
		if _, err := conn.ExecContext(ctx, `ANALYZE code_uses`); err != nil {
			t.Fatal(err)
		}
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			if _, err := conn.ExecContext(ctx, `SET plan_cache_mode = `+mode); err != nil {
				t.Fatal(err)
			}
			if p := plan(`EXECUTE lookups` + arg); strings.Contains(p, "Seq Scan on code_uses") || !strings.Contains(p, "Index") {
				t.Errorf("analyzed, %s: the lookups scan the table:\n%s", mode, p)
			}
		}
	})
}

// TestBulkStatementTexts commits batches of every size from 1 to 40 and
// checks that the SQLite Store prepared a few statement texts for them,
// not one per size: a bulk's row source is padded to a power of two.
func TestBulkStatementTexts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		if db.backend != "sqlite" {
			t.Skip("PostgreSQL's row source has one text whatever its rows (arrays)")
		}
		ctx := context.Background()
		s := db.open(t, nil)
		putTableAt(t, s, tableV1, tablesSince)
		bulkAccounts(t, s, 300, 1_000_000)
		g := &benchTaps{r: rand.New(rand.NewPCG(3, 4)), accounts: 300}
		n := 0
		for size := 1; size <= 40; size++ {
			taps := g.next(size)
			res, err := s.CommitTaps(ctx, taps)
			if err != nil {
				t.Fatalf("batch of %d: %v", size, err)
			}
			for i, r := range res {
				if r.Duplicate || r.Conflict || r.Flag != "" {
					t.Fatalf("batch of %d, tap %d: %+v", size, i, r)
				}
			}
			n += size
		}
		if got, _ := s.TapCount(ctx); got != int64(n) {
			t.Fatalf("%d taps stored, want %d", got, n)
		}
		// 7 sizes (1, 2, 4, …, 64) for each of a dozen statements, and
		// pairs of sizes for the one with two row sources (without the
		// padding: about 40 texts for each of the statements).
		if got := s.bulkStmts.Load(); got > 110 {
			t.Errorf("%d bulk statements prepared for 40 batch sizes", got)
		}
		t.Logf("%d bulk statements prepared", s.bulkStmts.Load())
	})
}

// TestLargestBatch commits the largest batch a call takes, half of it
// sent before, so that every bulk statement of the batch is split into
// several (SQLite's parameter limit) and its last chunk padded: a tenth
// of the taps are of 300 accounts, the others each of an account the
// ledger does not know (kept flagged; so many accounts to lock take the
// statements that split). Every tap is settled once, the ones sent before come back
// duplicates, the unknown accounts' taps are kept flagged, and the
// ledger's invariants hold (checked at cleanup).
func TestLargestBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		putTableAt(t, s, tableV1, tablesSince)
		const accounts = 300
		bulkAccounts(t, s, accounts, 1_000_000)
		g := &benchTaps{r: rand.New(rand.NewPCG(5, 6)), accounts: accounts}
		taps := g.next(MaxCommitTaps)
		unknown := func(i int) bool { return i%10 != 0 }
		for i := range taps {
			if !unknown(i) {
				continue
			}
			tp := &taps[i]
			tp.Account = uint64(500_000 + i)
			tp.CodeKey = paycode.ID{Account: tp.Account, Serial: 1, Time: uint32(tp.Time.Unix()), Counter: uint16(tp.Seq)}.Key()
		}
		first, err := s.CommitTaps(ctx, taps[:MaxCommitTaps/2])
		if err != nil {
			t.Fatal(err)
		}
		all, err := s.CommitTaps(ctx, taps)
		if err != nil {
			t.Fatal(err)
		}
		var charged int64
		for i, r := range all {
			switch {
			case r.Conflict, unknown(i) && r.Flag != FlagUnknownAccount, !unknown(i) && r.Flag != "":
				t.Fatalf("tap %d: %+v", i, r)
			case i < len(first) && !r.Duplicate:
				t.Fatalf("tap %d, sent before, settled again: %+v", i, r)
			case i >= len(first) && r.Duplicate:
				t.Fatalf("tap %d, new, came back a duplicate: %+v", i, r)
			case i >= len(first):
				charged += r.Charge
			}
		}
		if n, _ := s.TapCount(ctx); n != MaxCommitTaps {
			t.Fatalf("%d taps stored, want %d", n, MaxCommitTaps)
		}
		if charged == 0 {
			t.Fatal("nothing charged")
		}
	})
}

// TestNoTableScansInSettlement settles batches on a young PostgreSQL
// ledger whose connection caches generic plans, as pgx's prepared
// statements and PostgreSQL's plan cache do once a statement has run a
// few times, then lets the ledger grow without new statistics (autovacuum
// off: a surge faster than autoanalyze) and shows every cached plan of the
// settlement: none may scan a table that grows with the ledger. A scan
// there costs every later batch time in proportion to the ledger (the
// lock, the re-rated taps' update and the balances' update did, until
// their rows were found by index lookups: see matching and updateFrom).
func TestNoTableScansInSettlement(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		if db.backend != "postgres" {
			t.Skip("SQLite's planner has no cached generic plans")
		}
		ctx := context.Background()
		grows := []string{"taps", "accounts", "code_uses", "credentials", "postings", "held_taps"}
		s, err := Open(ctx, db.dsn+"&plan_cache_mode=force_generic_plan", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.db.SetMaxOpenConns(1) // one connection: its statements are the ones shown
		for _, tbl := range grows {
			if _, err := s.db.ExecContext(ctx, `ALTER TABLE `+tbl+` SET (autovacuum_enabled = false)`); err != nil {
				t.Fatal(err)
			}
		}
		putTableAt(t, s, tableV1, tablesSince)
		bulkAccounts(t, s, 40, 1_000_000)
		g := &benchTaps{r: rand.New(rand.NewPCG(5, 6)), accounts: 40}
		var first []Tap
		for i := range 6 {
			taps := g.next(20)
			if i == 0 {
				first = taps
			}
			if _, err := s.CommitTaps(ctx, taps); err != nil {
				t.Fatal(err)
			}
		}
		// Resent (duplicates), and an earlier use of a code that a stored
		// tap holds (the stored tap loses it and is refunded).
		early := first[0]
		early.ID, early.Seq = TapID(early.DeviceID, "e", 1_000_000), 1_000_000
		early.Time = early.Time.Add(-time.Minute)
		res, err := s.CommitTaps(ctx, append(slices.Clone(first[1:5]), early))
		if err != nil {
			t.Fatal(err)
		}
		if !res[0].Duplicate || res[4].Flag != "" {
			t.Fatalf("resent and earlier taps: %+v", res)
		}
		held := g.next(1)
		if err := s.Hold(ctx, []HeldTap{{DeviceID: held[0].DeviceID, Epoch: held[0].Epoch, Seq: held[0].Seq,
			Reason: "issuer key unknown", Record: held[0].Record}}); err != nil {
			t.Fatal(err)
		}
		held[0].Held = true
		if _, err := s.CommitTaps(ctx, held); err != nil {
			t.Fatal(err)
		}
		conn, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, q := range []string{
			`INSERT INTO accounts (id, profile, name, secret_hash, currency, created_ns)
				SELECT i, 0, '', '\x00', 'EUR', 0 FROM generate_series(100000, 150000) AS i`,
			`INSERT INTO credentials (account_id, serial, not_after_ns, rider_public_key, issued_ns)
				SELECT i, 1, 0, '\x00', 0 FROM generate_series(100000, 150000) AS i`,
			`INSERT INTO taps (tap_id, device_id, seq, epoch, at_ns, account_id, serial, code_key, rider_key, code_hash,
					profile, base_fare, claimed_fare, currency, fare_version, route, vehicle, record, service_day, committed_ns)
				SELECT 'bus-x/e/' || i, 'bus-x', i, 'e', i, 100000 + i, 1, sha256(CAST(CAST(i AS TEXT) AS BYTEA)), '\x00', 'h',
					0, 250, 250, 'EUR', 1, '42', 'v', '\x00', '2026-01-01', i FROM generate_series(1, 50000) AS i`,
			`INSERT INTO code_uses (code_key, account_id, serial, tap_id, created_ns)
				SELECT sha256(CAST(CAST(i AS TEXT) AS BYTEA)), 100000 + i, 1, 'bus-x/e/' || i, 0 FROM generate_series(1, 50000) AS i`,
		} {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		rows, err := conn.QueryContext(ctx, `SELECT name, statement, cardinality(parameter_types) FROM pg_prepared_statements`)
		if err != nil {
			t.Fatal(err)
		}
		type prepared struct {
			name, text string
			params     int
		}
		var stmts []prepared
		for rows.Next() {
			var p prepared
			if err := rows.Scan(&p.name, &p.text, &p.params); err != nil {
				t.Fatal(err)
			}
			stmts = append(stmts, p)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		if len(stmts) < 8 {
			t.Fatalf("%d prepared statements on the connection, want the settlement's", len(stmts))
		}
		scan := regexp.MustCompile(`Seq Scan on (` + strings.Join(grows, "|") + `)\b`)
		for _, p := range stmts {
			exec := "EXPLAIN EXECUTE " + p.name
			if p.params > 0 {
				exec += "(" + strings.TrimSuffix(strings.Repeat("NULL, ", p.params), ", ") + ")"
			}
			prows, err := conn.QueryContext(ctx, exec)
			if err != nil {
				t.Fatalf("%s: %v", p.text, err)
			}
			var plan []string
			for prows.Next() {
				var l string
				if err := prows.Scan(&l); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, l)
			}
			prows.Close()
			if m := scan.FindString(strings.Join(plan, "\n")); m != "" {
				t.Errorf("cached plan scans a growing table (%s):\n%s\n%s", m, p.text, strings.Join(plan, "\n"))
			}
		}
		conn.Close()
		if n, err := s.HeldCount(ctx); err != nil || n != 0 {
			t.Fatalf("held taps after the commit: %d, %v", n, err)
		}
	})
}

// TestRatingReadsIndexOnly checks that SQLite reads the account-days a
// batch re-rates from the index alone (migration 0012): a column added to
// the read, or dropped from the index, would have every tap of the day
// looked up in the table again.
func TestRatingReadsIndexOnly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		if db.backend != "sqlite" {
			t.Skip("PostgreSQL reads the table (see migration 0012)")
		}
		s := db.open(t, nil)
		days := newBulk(tBigint, tText, tBigint)
		for i := range 100 {
			days.add(int64(1000+i), "2026-03-01", int64(i))
		}
		q, args := (&txn{s: s}).daysQuery(days)
		rows, err := s.db.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		p := strings.Join(plan, "\n")
		// Two parts (the taps from each day's start of rating, the state
		// before it), each an index range per account-day.
		if strings.Count(p, "SEARCH t USING COVERING INDEX taps_account_day (account_id=? AND service_day=? AND at_ns") != 2 ||
			strings.Contains(p, "SCAN t") {
			t.Errorf("the account-days are not read from the index alone:\n%s", p)
		}
	})
}
