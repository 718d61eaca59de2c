package ledger

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestFareChangeMidDayLateTaps: a fare table published in the middle of a
// service day (v2 at 12:00: transfer 90 min for 50 instead of 60 min for
// 0, adult cap 600 instead of 700), a bus that had applied it and one still
// offline on v1 (believed within the fare grace), and the day's taps
// arriving in time order, in reverse, and the offline bus's last: each
// ride is rated by the table its bus named, with that table's transfer
// rule and cap, and the day's charges and the balance are the same
// whatever order the taps arrived in.
func TestFareChangeMidDayLateTaps(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		type ride struct {
			dev     string
			seq     uint64
			minute  int // after 08:00
			version uint64
		}
		rides := []ride{
			{"bus-a", 1, 0, 1},   // 08:00 v1: 250
			{"bus-a", 2, 90, 1},  // 09:30 v1: outside v1's 60 min window: 250 (total 500)
			{"bus-b", 1, 270, 2}, // 12:30 v2: 180 min after the last full fare: 250, held to v2's cap 600: 100
			{"bus-c", 1, 345, 1}, // 13:45 offline bus still on v1 (within the grace), 75 min after the last full fare: v1's cap 700: 100
			{"bus-b", 2, 400, 2}, // 14:40 v2: within v2's 90 min window: 50, held to v2's cap: 0
		}
		want := "bus-a/e1/1 250 v1, bus-a/e1/2 250 v1, bus-b/e1/1 100 v2 capped, bus-c/e1/1 100 v1 capped, bus-b/e1/2 0 v2 transfer capped"
		orders := map[string][]int{
			"time order":       {0, 1, 2, 3, 4},
			"reverse":          {4, 3, 2, 1, 0},
			"offline bus last": {0, 1, 2, 4, 3},
		}
		for _, name := range slices.Sorted(maps.Keys(orders)) {
			s := ledgerWithTable(t, newDB(t, db.backend))
			putTableAt(t, s, tableV2, time.Date(2026, 3, 10, 12, 0, 0, 0, berlin))
			acct := newAccount(t, s, 10000)
			for _, i := range orders[name] {
				r := rides[i]
				tp := mkTap(r.dev, r.seq, acct, at(r.minute), "42")
				tp.FareVersion = r.version
				tp.Vehicle = r.dev
				commit(t, s, tp)
			}
			got, err := s.Rides(context.Background(), acct, 0)
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(got, func(a, b Ride) int { return a.Time.Compare(b.Time) })
			var out []string
			for _, r := range got {
				line := fmt.Sprintf("%s %d v%d", r.TapID, r.Charge, r.RatedVersion)
				if r.Transfer {
					line += " transfer"
				}
				if r.Capped {
					line += " capped"
				}
				out = append(out, line)
			}
			if g := strings.Join(out, ", "); g != want {
				t.Errorf("%s: %s\nwant %s", name, g, want)
			}
			if b := balance(t, s, acct); b != 10000-700 {
				t.Errorf("%s: balance %d, want %d", name, b, 10000-700)
			}
		}
	})
}

// TestLongDSTDayCapAndTransfer: the 25-hour service day (Berlin, days from
// 04:00, clocks back at 03:00 CEST on 25 October 2026) is one day for the
// cap, a ride in the repeated hour 30 minutes after one in its first pass
// is a transfer though its wall clock reads earlier, the ride at 03:55 CET
// (24 h 50 min after the day began) is still on it, and the ride at 04:05
// CET starts the next day; the same in either arrival order.
func TestLongDSTDayCapAndTransfer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		cet := time.FixedZone("CET", 3600)
		cest := time.FixedZone("CEST", 7200)
		times := []time.Time{
			time.Date(2026, 10, 24, 4, 5, 0, 0, cest),  // 250
			time.Date(2026, 10, 24, 12, 0, 0, 0, cest), // 250
			time.Date(2026, 10, 24, 18, 0, 0, 0, cest), // 200, capped at 700
			time.Date(2026, 10, 25, 2, 40, 0, 0, cest), // 0, capped
			time.Date(2026, 10, 25, 2, 10, 0, 0, cet),  // 30 min later: a transfer, 0
			time.Date(2026, 10, 25, 3, 55, 0, 0, cet),  // 0, capped, still the 24th's
			time.Date(2026, 10, 25, 4, 5, 0, 0, cet),   // the 25th's: 250
		}
		want := "2026-10-24 250, 2026-10-24 250, 2026-10-24 200 capped, 2026-10-24 0 capped, 2026-10-24 0 transfer, " +
			"2026-10-24 0 capped, 2026-10-25 250"
		for _, reverse := range []bool{false, true} {
			s := ledgerWithTable(t, newDB(t, db.backend))
			acct := newAccount(t, s, 10000)
			order := []int{0, 1, 2, 3, 4, 5, 6}
			if reverse {
				slices.Reverse(order)
			}
			for _, i := range order {
				tp := mkTap(fmt.Sprintf("bus-%d", i), 1, acct, times[i], "42")
				tp.Vehicle = tp.DeviceID
				commit(t, s, tp)
			}
			got, err := s.Rides(context.Background(), acct, 0)
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(got, func(a, b Ride) int { return a.Time.Compare(b.Time) })
			var out []string
			for _, r := range got {
				line := fmt.Sprintf("%s %d", r.ServiceDay, r.Charge)
				if r.Transfer {
					line += " transfer"
				}
				if r.Capped {
					line += " capped"
				}
				out = append(out, line)
			}
			if g := strings.Join(out, ", "); g != want {
				t.Errorf("reverse %v: %s\nwant %s", reverse, g, want)
			}
			if b := balance(t, s, acct); b != 10000-700-250 {
				t.Errorf("reverse %v: balance %d, want %d", reverse, b, 10000-950)
			}
		}
	})
}
