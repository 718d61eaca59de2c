package ledger

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
)

// TestSettlementDayStart checks the first instant of a service day that
// the settlement report sums from, against fare.Table.ServiceDay (the
// console's days): the instant before it is on the day before, it is on
// the day, across daylight saving changes (the clocks going back inside the
// hour after the day's start, too) and a zone that skipped a date.
func TestSettlementDayStart(t *testing.T) {
	for _, c := range []struct{ zone, start string }{
		{"America/New_York", "04:00"}, {"Europe/Berlin", "00:00"}, {"Europe/Berlin", "02:30"},
		{"Australia/Lord_Howe", "01:45"}, {"Pacific/Apia", "00:00"}, {"UTC", "23:59"}, {"Pacific/Kiritimati", "03:00"},
	} {
		tbl, err := fare.Parse(fmt.Appendf(nil, `{"version":1,"currency":"EUR","timezone":%q,"service_day_start":%q,
			"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`, c.zone, c.start))
		if err != nil {
			t.Fatal(err)
		}
		for _, from := range []string{"2011-12-27", "2025-03-28", "2025-10-24", "2025-11-01", "2026-04-03"} {
			d0, _ := time.Parse(time.DateOnly, from)
			for d := d0; d.Before(d0.AddDate(0, 0, 8)); d = d.AddDate(0, 0, 1) {
				day := d.Format(time.DateOnly)
				at := dayStart(tbl.ServiceDay, d)
				before, on := tbl.ServiceDay(time.Unix(0, at-1)), tbl.ServiceDay(time.Unix(0, at))
				// A skipped date (Samoa, 2011-12-30) has no instant: its
				// start is the next day's.
				if before >= day || (on != day && on <= day) {
					t.Errorf("%s from %s: %s starts %v; the instant before is on %s, it on %s", c.zone, c.start, day,
						time.Unix(0, at).In(time.UTC), before, on)
				}
			}
		}
	}
}

// TestSettlementFareTableChange: a payment's service day is the one of the
// fare table in force when it was made, as a tap's: a table stored later
// that moves the day's start moves no payment already made to another
// day (an operator who paid days out before it would pay a payment twice,
// or never).
func TestSettlementFareTableChange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db) // Berlin, days from 04:00
		acct := newAccount(t, s, 10000)
		pay := func(order string, when time.Time) {
			t.Helper()
			now := s.now
			s.now = func() time.Time { return when }
			defer func() { s.now = now }()
			if _, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: order, Account: acct, Serial: 1,
				RiderKey: riderKey(acct), CodeKey: codeKey(acct, 1, when), CodeHash: "h", Amount: 100, Currency: "EUR"}); err != nil {
				t.Fatal(err)
			}
		}
		report := func() string {
			t.Helper()
			st, err := s.MerchantSettlement(ctx, "2026-03-09", "2026-03-12", "")
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, d := range st.Days {
				out = append(out, fmt.Sprintf("%s %d", d.Day, d.Payments))
			}
			return strings.Join(out, ", ")
		}
		pay("o-1", time.Date(2026, 3, 10, 2, 0, 0, 0, berlin)) // the 9th's service day
		pay("o-2", time.Date(2026, 3, 11, 2, 0, 0, 0, berlin)) // the 10th's
		pay("o-3", time.Date(2026, 3, 12, 5, 30, 0, 0, berlin))
		before := "2026-03-09 1, 2026-03-10 1, 2026-03-12 1"
		if got := report(); got != before {
			t.Fatalf("before the new table: %s; want %s", got, before)
		}
		// Days from 06:00 from the 12th at 06:30 (a table comes into force
		// when it is stored: after o-3).
		putTableAt(t, s, strings.Replace(tableV2, `"04:00"`, `"06:00"`, 1), time.Date(2026, 3, 12, 6, 30, 0, 0, berlin))
		pay("o-4", time.Date(2026, 3, 12, 7, 0, 0, 0, berlin))
		pay("o-5", time.Date(2026, 3, 13, 5, 0, 0, 0, berlin)) // the 12th's, by the new table
		want := "2026-03-09 1, 2026-03-10 1, 2026-03-12 3"
		if got := report(); got != want {
			t.Errorf("after the new table: %s; want %s", got, want)
		}
	})
}

// TestFareTableClockStepBack: a fare table stored while the server's
// clock ran ahead (an hour here), and the next one stored after NTP set
// it back, came into force in the reverse order of their versions: the
// settlement report summed the instants between the two twice (the table
// before's, up to the first's since, and the second's, from its own), and
// paid a shop's payment of that hour out twice; a tap of that hour was
// rated by the table before both.
func TestFareTableClockStepBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 10000)
		putTableAt(t, s, tableV2, at(60)) // clock an hour ahead
		putTableAt(t, s, tableV3, at(10)) // stepped back
		now := s.now
		s.now = func() time.Time { return at(30) }
		if _, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: "o-1", Account: acct, Serial: 1,
			RiderKey: riderKey(acct), CodeKey: codeKey(acct, 1, at(30)), CodeHash: "h", Amount: 100, Currency: "EUR"}); err != nil {
			t.Fatal(err)
		}
		s.now = now
		st, err := s.MerchantSettlement(ctx, "2026-03-10", "2026-03-10", "")
		if err != nil {
			t.Fatal(err)
		}
		if tot := st.Total(); tot.Payments != 1 || tot.Paid != 100 {
			t.Errorf("settlement of the day: %d payments, %d paid; want 1, 100", tot.Payments, tot.Paid)
		}
		// A tap at 08:40 naming a table the ledger does not have is rated
		// by the one in force: table 3, stored at 08:10 (adult 300), not
		// table 1 (250).
		tp := mkTap("bus-1", 1, newAccount(t, s, 10000), at(40), "42")
		tp.FareVersion = 9
		if res := commit(t, s, tp); res[0].Charge != 300 || res[0].RatedVersion != 3 {
			t.Errorf("tap at 08:40 charged %d by table %d; want 300 by table 3", res[0].Charge, res[0].RatedVersion)
		}
		if err := s.CheckInvariants(ctx); err != nil {
			t.Errorf("invariants: %v", err)
		}
	})
}
