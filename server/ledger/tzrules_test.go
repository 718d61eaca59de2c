package ledger

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestVerifyNamesTheZoneRules: a tap stored on another service day than
// this host's rules of its table's zone give (what a settlement instance
// reading another version of the time zone database stores: measured with
// a Berlin zone without the summer hour, a ride at 04:10 CEST was put on
// the day before) is reported by verify with the zone and the likely
// cause, not as a bare contradiction (an edge review). On SQLite and,
// with FAREGO_TEST_POSTGRES, PostgreSQL.
func TestVerifyNamesTheZoneRules(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s, err := Open(ctx, db.dsn, nil) // not db.open: its check at the end would fail
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		putTableAt(t, s, tableV1, tablesSince)
		acct := newAccount(t, s, 5000)
		tap := mkTap("bus-1", 1, acct, time.Date(2026, 7, 1, 2, 10, 0, 0, time.UTC), "") // 04:10 CEST
		commit(t, s, tap)
		if err := s.CheckInvariants(ctx); err != nil {
			t.Fatalf("before: %v", err)
		}
		// Where a server whose zone has no summer hour (03:10 CET) puts it.
		if _, err := s.db.ExecContext(ctx, `UPDATE taps SET service_day = '2026-06-30' WHERE tap_id = $1`, tap.ID); err != nil {
			t.Fatal(err)
		}
		err = s.CheckInvariants(ctx)
		if err == nil {
			t.Fatal("verify passed a tap on another service day")
		}
		for _, want := range []string{"tap " + tap.ID + " is on service day 2026-06-30", "puts it on 2026-07-01", "Europe/Berlin", "tzdata"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("verify says %q, want it to say %q", err, want)
			}
		}
	})
}
