package ledger

import (
	"fmt"
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
