package ledger

import (
	"context"
	"strings"
	"testing"
)

// TestVerifyBaseFares: verify re-derives every charged tap's base fare
// from its fare table, route and profile, so a row edited to a lower base
// fare (with a charge to match), or to another route, is reported; and a
// stored fare table cannot be edited at all (it rated the taps that name
// it). Verify re-rated with the rows' own base fares and found nothing.
func TestVerifyBaseFares(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		commit(t, s, mkTap("bus-1", 1, acct, at(0), ""))
		if err := s.CheckInvariants(ctx); err != nil {
			t.Fatal(err)
		}
		for _, edit := range []struct{ name, set, undo string }{
			{"a lower base fare", `base_fare = 100`, `base_fare = 250`},
			{"another route", `route = 'X1'`, `route = ''`},
		} {
			if _, err := s.db.ExecContext(ctx, `UPDATE taps SET `+edit.set+` WHERE tap_id = $1`, tid("bus-1", 1)); err != nil {
				t.Fatal(err)
			}
			if err := s.CheckInvariants(ctx); err == nil || !strings.Contains(err.Error(), "base fare") {
				t.Errorf("%s: CheckInvariants = %v; want the base fare reported", edit.name, err)
			}
			if _, err := s.db.ExecContext(ctx, `UPDATE taps SET `+edit.undo+` WHERE tap_id = $1`, tid("bus-1", 1)); err != nil {
				t.Fatal(err)
			}
		}
		for _, q := range []string{`UPDATE fare_tables SET body = REPLACE(body, '250', '10')`, `DELETE FROM fare_tables`} {
			if _, err := s.db.ExecContext(ctx, q); err == nil {
				t.Errorf("%s: succeeded on an append-only table", q)
			}
		}
	})
}
