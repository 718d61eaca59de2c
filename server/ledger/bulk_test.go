package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

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
