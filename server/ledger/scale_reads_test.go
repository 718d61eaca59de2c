package ledger

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestScaleReadsByIndex checks the plans of reads that once grew with the
// whole ledger (migration 27), on a ledger with enough rows that the
// planner has a choice: a rider's recent payments (GET /v1/accounts/{id})
// for a rider with many payments, none recent; a service day's fare
// corrections (RefreshSummaries); the newest taps of a rare flag (the
// console); a service day's payments and refunds by merchant (the
// settlement report, migration 28). PostgreSQL's plans are checked custom
// and generic (the ledger's statements are prepared, and a generic plan may be cached).
func TestScaleReadsByIndex(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		// Not db.open: the seeded ledger is not a valid one (see seedTaps).
		s, err := Open(ctx, db.dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		const taps = 20_000
		const heavy = 1_000_000 + taps/tapsPerAccount - 1
		seedTaps(t, s, taps)
		pg := s.backend == backendPostgres
		series := func(lo, hi int) string {
			if pg {
				return fmt.Sprintf("generate_series(CAST(%d AS BIGINT), %d) AS g(n)", lo, hi-1)
			}
			return fmt.Sprintf("(WITH RECURSIVE g(n) AS (SELECT %d UNION ALL SELECT n + 1 FROM g WHERE n < %d) SELECT n FROM g) AS g", lo, hi-1)
		}
		empty := "decode('', 'hex')"
		if !pg {
			empty = "x''"
		}
		old, recent := day0.Add(-30*24*time.Hour).UnixNano(), day0.UnixNano()
		for _, q := range []string{
			// 8,000 payments of one rider, a month ago; 12,000 of the
			// other riders, lately.
			fmt.Sprintf(`INSERT INTO payments (id, merchant_id, order_id, account_id, serial, code_key, code_hash, amount, currency,
				status, created_ns, token_id)
				SELECT n, 'shop', 'o' || n, CASE WHEN n <= 8000 THEN %d ELSE 1000000 + n %% %d END, 1, %s, 'ab', 100, 'EUR', 'paid',
				CASE WHEN n <= 8000 THEN %d ELSE %d + n END, 'tok' || (n %% 20) FROM %s`,
				heavy, taps/tapsPerAccount-1, empty, old, recent, series(1, 20_001)),
			// One tap in a hundred corrected; one in fifty flagged expired.
			`UPDATE taps SET postings = 2 WHERE seq % 100 = 13`,
			`INSERT INTO postings (account_id, seq, kind, amount, tap_id, fare_version, created_ns)
				SELECT account_id, 1000 + seq, 'fare_correction', 50, tap_id, 1, committed_ns FROM taps WHERE seq % 100 = 13`,
			`UPDATE taps SET flag = 'expired' WHERE seq % 50 = 7`,
			// One in twenty noted, a rare note among them once.
			`UPDATE taps SET notes = 'fare_mismatch' WHERE seq % 20 = 3`,
			// One payment in ten refunded, a minute after it.
			`INSERT INTO refunds (merchant_id, refund_id, payment_id, account_id, posting_seq, amount, reason, created_ns, token_id)
				SELECT merchant_id, 'r' || id, id, account_id, 100000 + id, 10, '', created_ns + 60000000000, token_id
				FROM payments WHERE id % 10 = 0`,
			`ANALYZE`,
		} {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		for _, c := range []struct {
			what   string
			query  string
			args   []any
			want   string   // the index the plan reads
			refuse []string // what it must not do
			bound  string   // PostgreSQL: a column the index scan is bounded on (Index Cond)
		}{
			{"a rider's recent payments", `SELECT ` + paymentColumns + ` FROM payments ` + recentPaymentsWhere,
				[]any{int64(heavy), recent - int64(10*time.Minute), int64(MaxRecentPayments)}, "payments_account_time",
				[]string{"payments_pkey", "Seq Scan", "SCAN payments", "TEMP B-TREE", "Sort"}, ""},
			{"a day's fare corrections", dayCorrectionsQuery, []any{"2026-03-10"}, "postings_correction",
				[]string{"Seq Scan on postings", "SCAN p"}, ""},
			{"the newest taps of a rare note in the console's window", notedByNoteQuery,
				[]any{recent - int64(30*24*time.Hour), "%,unknown_note,%", int64(100)}, "taps_noted_received",
				// A sort of the window's matches is bounded by the window.
				[]string{"Seq Scan", "SCAN taps"}, "committed_ns"},
			{"the newest taps of a rare flag", flaggedByFlagQuery, []any{"unknown_device", int64(100)}, "taps_flag_received",
				[]string{"taps_flagged_received", "Seq Scan", "SCAN taps", "TEMP B-TREE", "Sort"}, ""},
			// The day before the recent payments: a ledger of many days
			// holds few of its rows in one.
			{"a service day's payments by merchant", s.settlementQuery("payments", false),
				[]any{recent - int64(24*time.Hour), recent}, "payments_time",
				[]string{"Seq Scan", "SCAN payments", "payments_pkey", "payments_account_time"}, "created_ns"},
			{"a service day's payments of one merchant", s.settlementQuery("payments", true),
				[]any{recent - int64(24*time.Hour), recent, "shop"}, "payments_time",
				[]string{"Seq Scan", "SCAN payments", "payments_pkey", "payments_account_time"}, "created_ns"},
			{"a service day's refunds by merchant", s.settlementQuery("refunds", false),
				[]any{recent - int64(24*time.Hour), recent}, "refunds_time",
				[]string{"Seq Scan", "SCAN refunds", "refunds_pkey"}, "created_ns"},
			{"a token's newest refunds", refundsQuery + tokenRefundsWhere, []any{"tok10", int64(math.MaxInt64), int64(MaxPaymentsPage)},
				"refunds_token", []string{"Seq Scan on refunds", "SCAN r", "TEMP B-TREE", "Sort"}, "token_id"},
			{"a service day's refunds of one merchant", s.settlementQuery("refunds", true),
				[]any{recent - int64(24*time.Hour), recent, "shop"}, "refunds_time",
				[]string{"Seq Scan", "SCAN refunds", "refunds_pkey"}, "created_ns"},
		} {
			for mode, p := range queryPlans(t, s, c.query, c.args...) {
				bad := !strings.Contains(p, c.want)
				for _, r := range c.refuse {
					bad = bad || strings.Contains(p, r)
				}
				if c.bound != "" && pg && !regexp.MustCompile(`Index Cond: .*`+c.bound).MatchString(p) {
					bad = true
				}
				if bad {
					t.Errorf("%s (%s plan) does not read %s alone:\n%s", c.what, mode, c.want, p)
				}
			}
		}
	})
}

// queryPlans returns the plans of a query with its arguments: SQLite's
// query plan; PostgreSQL's custom and generic plans of it prepared.
func queryPlans(t *testing.T, s *Store, query string, args ...any) map[string]string {
	t.Helper()
	ctx := context.Background()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lines := func(q string, args ...any) string {
		t.Helper()
		rows, err := conn.QueryContext(ctx, q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		var out []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(vals[len(vals)-1])) // the plan line (SQLite: its detail)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, "\n")
	}
	if s.backend != backendPostgres {
		return map[string]string{"sqlite": lines("EXPLAIN QUERY PLAN "+query, args...)}
	}
	lits := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			lits[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		case int64:
			lits[i] = fmt.Sprint(v)
		default:
			t.Fatalf("argument %d: %T", i, a)
		}
	}
	if _, err := conn.ExecContext(ctx, "PREPARE scale_read AS "+query); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(ctx, "DEALLOCATE scale_read")
	defer conn.ExecContext(ctx, "RESET plan_cache_mode")
	out := map[string]string{}
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		if _, err := conn.ExecContext(ctx, "SET plan_cache_mode = "+mode); err != nil {
			t.Fatal(err)
		}
		out[mode] = lines("EXPLAIN EXECUTE scale_read(" + strings.Join(lits, ", ") + ")")
	}
	return out
}
