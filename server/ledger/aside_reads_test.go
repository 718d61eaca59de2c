package ledger

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAsideReadsByIndex checks the plans of the console's pages of
// records kept aside (AsideBefore, migration 35) on a ledger of 20,000
// held taps and 20,000 quarantined records, one in fifty of a rare reason:
// newest first, of every reason or the rare one (a common one may be read
// by time, filtered), from the newest or from a record before.
// Without a reason no index had received_ns first: both backends read and
// sorted the whole table for each page of 100.
func TestAsideReadsByIndex(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		pg := s.backend == backendPostgres
		series := fmt.Sprintf("(WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < %d) SELECT n FROM g) AS g", 19_999)
		blob := "zeroblob(120)"
		if pg {
			series, blob = "generate_series(CAST(0 AS BIGINT), 19999) AS g(n)", "decode(repeat('00', 120), 'hex')"
		}
		start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano()
		for _, table := range []string{"held_taps", "quarantine"} {
			// 100 records a batch (one received_ns), one in fifty of a rare reason.
			q := fmt.Sprintf(`INSERT INTO %s (device_id, epoch, seq, reason, record, received_ns)
				SELECT 'bus-' || (n %% 300), 'e', n, CASE WHEN n %% 50 = 0 THEN 'rare' ELSE 'common' END, %s, %d + (n / 100) * 1000000000
				FROM %s`, table, blob, start, series)
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if _, err := s.db.ExecContext(ctx, `ANALYZE`); err != nil {
			t.Fatal(err)
		}
		before := []any{start + 100*1000000000, "bus-7", "e", int64(10_007)}
		for _, table := range []string{"held_taps", "quarantine"} {
			for _, c := range []struct {
				what     string
				byReason bool
				args     []any
				want     string
			}{
				{"the newest", false, []any{int64(101)}, table + "_received"},
				{"the page before a record", false, append([]any{int64(101)}, before...), table + "_received"},
				{"the newest of a reason", true, []any{int64(101), "rare"}, table + "_reason_received"},
				{"the page of a reason before a record", true, append([]any{int64(101), "rare"}, before...), table + "_reason_received"},
			} {
				for mode, p := range queryPlans(t, s, asideQuery(table, c.byReason, len(c.args) > 2), c.args...) {
					bad := !strings.Contains(p, c.want)
					for _, r := range []string{"Seq Scan", "TEMP B-TREE", "Sort"} {
						bad = bad || strings.Contains(p, r)
					}
					if bad {
						t.Errorf("%s records kept aside in %s (%s plan) are not read by %s alone:\n%s", c.what, table, mode, c.want, p)
					}
				}
			}
		}
		// The pages of 100 list every record once, newest first, across the
		// batches that share a time.
		for _, reason := range []string{"", "rare"} {
			seen := map[uint64]bool{}
			var last AsideRecord
			for range 300 {
				page, err := s.AsideBefore(ctx, true, reason, last, 100)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range page {
					if seen[r.Seq] {
						t.Fatalf("reason %q: record %d listed twice", reason, r.Seq)
					}
					seen[r.Seq] = true
				}
				if len(page) < 100 {
					break
				}
				last = page[len(page)-1]
			}
			if want := map[string]int{"": 20_000, "rare": 400}[reason]; len(seen) != want {
				t.Errorf("reason %q: the pages list %d held records, want %d", reason, len(seen), want)
			}
		}
	})
}
