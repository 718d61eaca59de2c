package fare

import (
	"fmt"
	"testing"
	"time"
)

// TestServiceDayClocksBackAcrossMidnight: where the clocks went back
// across midnight (St. John's, Goose Bay and Moncton put them back at
// 00:01 to 23:01 of the day before, until 2011 and 2006) or by more than
// two hours (Casey station, +11 to +08), a day starting at or near
// midnight had begun when the wall clock read the day before's times
// again: a ride in them is on the day that began, never on the day
// before a ride minutes earlier.
func TestServiceDayClocksBackAcrossMidnight(t *testing.T) {
	for _, c := range []struct {
		zone, start string
		change      time.Time // a UTC instant of the change back
	}{
		{"America/St_Johns", "00:00", time.Date(2010, 11, 7, 2, 31, 0, 0, time.UTC)},
		{"America/Goose_Bay", "00:00", time.Date(2010, 11, 7, 3, 1, 0, 0, time.UTC)},
		{"America/Moncton", "00:00", time.Date(2006, 10, 29, 3, 1, 0, 0, time.UTC)},
		{"Antarctica/Casey", "00:30", time.Date(2023, 3, 8, 16, 0, 0, 0, time.UTC)},
		{"Antarctica/Casey", "23:30", time.Date(2022, 3, 12, 13, 0, 0, 0, time.UTC)},
		{"Antarctica/Casey", "03:00", time.Date(2018, 3, 10, 17, 0, 0, 0, time.UTC)},
	} {
		tb, err := Parse(fmt.Appendf(nil, `{"version":1,"currency":"EUR","timezone":%q,"service_day_start":%q,
			"fares":{"*":{"adult":1,"child":1,"senior":1,"student":1}}}`, c.zone, c.start))
		if err != nil {
			t.Fatal(err)
		}
		prev, prevAt := "", time.Time{}
		for at := c.change.Add(-26 * time.Hour); at.Before(c.change.Add(26 * time.Hour)); at = at.Add(time.Minute) {
			d := tb.ServiceDay(at)
			if d < prev {
				t.Errorf("%s from %s: %s (%s) on %s, a minute after %s (%s) on %s", c.zone, c.start, at.Format(time.RFC3339),
					at.In(tb.loc).Format("Jan 2 15:04 MST"), d, prevAt.Format(time.RFC3339), prevAt.In(tb.loc).Format("Jan 2 15:04 MST"), prev)
				break
			}
			prev, prevAt = d, at
		}
	}
}
