package fare

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
)

func loadTable(tb testing.TB) *Table {
	tb.Helper()
	t, err := Load(filepath.Join("..", "..", "testdata", "fare", "table.json"))
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func TestFare(t *testing.T) {
	tb := loadTable(t)
	for _, tc := range []struct {
		route string
		p     paycode.Profile
		want  int64
	}{
		{"42", paycode.Adult, 250},
		{"42", paycode.Child, 120},
		{"X1", paycode.Adult, 400},
		{"X1", paycode.Student, 180}, // falls back to the default route
	} {
		got, err := tb.Fare(tc.route, tc.p)
		if err != nil || got != tc.want {
			t.Errorf("Fare(%q, %s) = %d, %v, want %d", tc.route, tc.p, got, err, tc.want)
		}
	}
	if _, err := tb.Fare("42", paycode.Profile(9)); !errors.Is(err, ErrNoFare) {
		t.Errorf("reserved profile: err = %v, want ErrNoFare", err)
	}
}

func TestServiceDay(t *testing.T) {
	tb := loadTable(t)
	berlin, _ := time.LoadLocation("Europe/Berlin")
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2026, 3, 10, 3, 59, 0, 0, berlin), "2026-03-09"},
		{time.Date(2026, 3, 10, 4, 0, 0, 0, berlin), "2026-03-10"},
		{time.Date(2026, 3, 10, 23, 30, 0, 0, berlin), "2026-03-10"},
		{time.Date(2026, 3, 10, 2, 30, 0, 0, time.UTC), "2026-03-09"}, // 03:30 in Berlin
	} {
		if got := tb.ServiceDay(tc.at); got != tc.want {
			t.Errorf("ServiceDay(%s) = %s, want %s", tc.at, got, tc.want)
		}
	}
}

func TestParseRefusesBadTables(t *testing.T) {
	base := `"version":1,"currency":"EUR","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}`
	for name, doc := range map[string]string{
		"not json":          `version=1`,
		"version 0":         strings.Replace(`{`+base+`}`, `"version":1`, `"version":0`, 1),
		"bad currency":      strings.Replace(`{`+base+`}`, `"EUR"`, `"euro"`, 1),
		"no default route":  `{"version":1,"currency":"EUR","fares":{"42":{"adult":1}}}`,
		"missing profile":   `{"version":1,"currency":"EUR","fares":{"*":{"adult":250}}}`,
		"unknown profile":   `{` + base + `,"daily_cap":{"pensioner":1}}`,
		"negative fare":     strings.Replace(`{`+base+`}`, `"adult":250`, `"adult":-1`, 1),
		"unknown field":     `{` + base + `,"surcharge":1}`,
		"bad timezone":      `{` + base + `,"timezone":"Mars/Olympus"}`,
		"bad day start":     `{` + base + `,"service_day_start":"25:00"}`,
		"bad window":        `{` + base + `,"transfer":{"window":"soon","fare":0}}`,
		"zero window":       `{` + base + `,"transfer":{"window":"0s","fare":0}}`,
		"negative transfer": `{` + base + `,"transfer":{"window":"1h","fare":-5}}`,
		"trailing":          `{` + base + `}{}`,
		"float amount":      strings.Replace(`{`+base+`}`, `"adult":250`, `"adult":2.5`, 1),
		// encoding/json takes the last: a table read one way by its
		// reviewer and charged another (the API refused these; a file
		// given to init --fares, or a downlink, did not).
		"route twice":   strings.Replace(`{`+base+`}`, `"fares":{`, `"fares":{"*":{"adult":1,"child":1,"senior":1,"student":1},`, 1),
		"fares twice":   `{` + base + `,"fares":{"*":{"adult":1,"child":1,"senior":1,"student":1}}}`,
		"fare twice":    strings.Replace(`{`+base+`}`, `"adult":250`, `"adult":1,"adult":250`, 1),
		"version twice": `{` + base + `,"version":2}`,
		// Fields are matched regardless of case: these are the same key.
		"Version":  `{` + base + `,"Version":7}`,
		"TimeZone": `{` + base + `,"timezone":"Europe/Berlin","TimeZone":"UTC"}`,
		"FARE":     `{` + base + `,"transfer":{"window":"1h","fare":0,"FARE":900}}`,
	} {
		if _, err := Parse([]byte(doc)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := Parse([]byte(`{` + base + `}`)); err != nil {
		t.Errorf("minimal table: %v", err)
	}
	// Route names are map keys: "x1" and "X1" are two routes.
	if tb, err := Parse([]byte(strings.Replace(`{`+base+`}`, `"fares":{`, `"fares":{"x1":{"adult":1},"X1":{"adult":2},`, 1))); err != nil ||
		len(tb.Fares) != 3 {
		t.Errorf("routes x1 and X1: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	tb := loadTable(t)
	data, err := tb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != tb.Version || again.Transfer.Window != tb.Transfer.Window || again.DailyCap["adult"] != 700 {
		t.Errorf("round trip lost fields: %+v", again)
	}
}

func TestRateDay(t *testing.T) {
	tb := loadTable(t)
	t0 := time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC)
	ride := func(id string, min int, fare int64) Ride {
		return Ride{ID: id, Time: t0.Add(time.Duration(min) * time.Minute), Profile: paycode.Adult, Fare: fare}
	}
	for _, tc := range []struct {
		name  string
		rides []Ride
		want  []int64 // in time order
	}{
		{"one ride", []Ride{ride("a/1", 0, 250)}, []int64{250}},
		{"transfer within window", []Ride{ride("a/1", 0, 250), ride("a/2", 60, 250)}, []int64{250, 0}},
		{"outside window", []Ride{ride("a/1", 0, 250), ride("a/2", 61, 250)}, []int64{250, 250}},
		{"window from last full fare", []Ride{ride("a/1", 0, 250), ride("a/2", 30, 250), ride("a/3", 70, 250)}, []int64{250, 0, 250}},
		{"cap", []Ride{ride("a/1", 0, 250), ride("a/2", 100, 250), ride("a/3", 200, 250), ride("a/4", 300, 250)}, []int64{250, 250, 200, 0}},
		{"late tap arrives first", []Ride{ride("a/2", 30, 250), ride("a/1", 0, 250)}, []int64{250, 0}},
		{"tie broken by id", []Ride{ride("b/1", 0, 400), ride("a/1", 0, 250)}, []int64{250, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tb.RateDay(tc.rides)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d charges, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i].Amount != tc.want[i] {
					t.Errorf("charge %d (%s) = %d, want %d (all: %+v)", i, got[i].ID, got[i].Amount, tc.want[i], got)
				}
			}
		})
	}
}

// The result of rating a day does not depend on the order the rides arrive
// in, and never exceeds the cap or the sum of base fares.
func TestRateDayOrderIndependent(t *testing.T) {
	tb := loadTable(t)
	r := rand.New(rand.NewPCG(7, 9))
	t0 := time.Date(2026, 3, 10, 5, 0, 0, 0, time.UTC)
	for round := range 500 {
		n := 1 + r.IntN(8)
		rides := make([]Ride, n)
		var sum int64
		for i := range rides {
			rides[i] = Ride{ID: fmt.Sprintf("d%d/%d", r.IntN(3), i), Time: t0.Add(time.Duration(r.IntN(900)) * time.Minute),
				Profile: paycode.Adult, Fare: []int64{250, 400}[r.IntN(2)]}
			sum += rides[i].Fare
		}
		want := total(tb.RateDay(rides))
		for range 5 {
			r.Shuffle(len(rides), func(i, j int) { rides[i], rides[j] = rides[j], rides[i] })
			if got := total(tb.RateDay(rides)); got != want {
				t.Fatalf("round %d: total %d after shuffle, want %d", round, got, want)
			}
		}
		if want > 700 || want > sum || want < 0 {
			t.Fatalf("round %d: total %d breaks the cap 700 or the sum %d", round, want, sum)
		}
	}
}

func total(cs []Charge) (s int64) {
	for _, c := range cs {
		s += c.Amount
	}
	return s
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"currency":"EUR","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`))
	f.Add([]byte(`{"version":2,"currency":"EUR","timezone":"Europe/Berlin","service_day_start":"04:00","fares":{"*":{"adult":1,"child":1,"senior":1,"student":1}},"transfer":{"window":"1h","fare":0},"daily_cap":{"adult":3}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := Parse(data)
		if err != nil {
			return
		}
		// A table that parses has a default fare for every profile and rates without panicking.
		for p := paycode.Adult; p <= paycode.Student; p++ {
			if _, err := tb.Fare("any", p); err != nil {
				t.Fatalf("parsed table has no default fare for %s", p)
			}
		}
		tb.RateDay([]Ride{{ID: "a", Fare: 1}, {ID: "b", Fare: 2}})
		tb.ServiceDay(time.Unix(0, 0))
	})
}

// TestServiceDayDST checks both daylight-saving transitions in two time
// zones: the service day starts at ServiceDayStart on the wall clock even on
// days of 23 and 25 hours.
func TestServiceDayDST(t *testing.T) {
	for _, tc := range []struct {
		zone, start string
		local       [5]int // year, month, day, hour, minute (wall clock in zone)
		want        string
	}{
		// Europe/Berlin: clocks go forward on 29 Mar 2026 (02:00 → 03:00)
		// and back on 25 Oct 2026 (03:00 → 02:00).
		{"Europe/Berlin", "04:00", [5]int{2026, 3, 29, 4, 30}, "2026-03-29"},
		{"Europe/Berlin", "04:00", [5]int{2026, 3, 29, 3, 59}, "2026-03-28"},
		{"Europe/Berlin", "04:00", [5]int{2026, 3, 30, 3, 59}, "2026-03-29"},
		{"Europe/Berlin", "04:00", [5]int{2026, 10, 25, 3, 30}, "2026-10-24"},
		{"Europe/Berlin", "04:00", [5]int{2026, 10, 25, 4, 0}, "2026-10-25"},
		{"Europe/Berlin", "04:00", [5]int{2026, 10, 25, 23, 59}, "2026-10-25"},
		{"Europe/Berlin", "02:30", [5]int{2026, 3, 29, 3, 0}, "2026-03-29"}, // 02:30 never happened that day
		// America/New_York: forward on 8 Mar 2026, back on 1 Nov 2026.
		{"America/New_York", "03:00", [5]int{2026, 3, 8, 3, 30}, "2026-03-08"},
		{"America/New_York", "03:00", [5]int{2026, 3, 8, 1, 30}, "2026-03-07"},
		{"America/New_York", "03:00", [5]int{2026, 11, 1, 1, 30}, "2026-10-31"},
		{"America/New_York", "03:00", [5]int{2026, 11, 1, 3, 0}, "2026-11-01"},
		{"America/New_York", "00:00", [5]int{2026, 11, 1, 0, 0}, "2026-11-01"},
		// A start inside the hour the clocks repeat: the day has begun at
		// its first 02:30 (CEST, 00:30 UTC), and 02:10 CET (01:10 UTC) after
		// it is still that day.
		{"UTC", "02:30", [5]int{2026, 10, 25, 0, 10}, "2026-10-24"}, // zone below: Europe/Berlin
		{"UTC", "02:30", [5]int{2026, 10, 25, 0, 40}, "2026-10-25"},
		{"UTC", "02:30", [5]int{2026, 10, 25, 1, 10}, "2026-10-25"},
		{"UTC", "02:30", [5]int{2026, 10, 25, 1, 40}, "2026-10-25"},
	} {
		zone := tc.zone
		if zone == "UTC" { // an instant given in UTC, of a Berlin day (a wall-clock time the zone repeats)
			zone = "Europe/Berlin"
		}
		doc := fmt.Sprintf(`{"version":1,"currency":"EUR","timezone":%q,"service_day_start":%q,
			"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`, zone, tc.start)
		tb, err := Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		loc, _ := time.LoadLocation(tc.zone)
		l := tc.local
		at := time.Date(l[0], time.Month(l[1]), l[2], l[3], l[4], 0, 0, loc)
		if got := tb.ServiceDay(at); got != tc.want {
			t.Errorf("%s, day start %s: ServiceDay(%s) = %s, want %s", tc.zone, tc.start, at, got, tc.want)
		}
		// The same instant seen from UTC gives the same day.
		if got := tb.ServiceDay(at.UTC()); got != tc.want {
			t.Errorf("%s: ServiceDay(%s UTC) = %s, want %s", tc.zone, at.UTC(), got, tc.want)
		}
	}
}

// TestServiceDayMonotonic walks every daylight-saving change of 2026 in
// zones with 1-hour, 30-minute (Lord Howe Island) and 2-hour (Troll)
// shifts, a minute at a time, for day starts on, inside and around the
// shifted hours: a later instant never gets an earlier service day, the
// day never moves by more than one, and each day begins at the first
// instant its wall clock reads the start. It used to put a ride at 02:10
// CET (clocks gone back) on the day before the ride at 02:40 CEST half an
// hour earlier, with a start of 02:30: two rides inside one free transfer
// were charged twice.
func TestServiceDayMonotonic(t *testing.T) {
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Antarctica/Troll", "Europe/London"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		// The instants of 2026 where the zone's offset changes.
		var shifts []time.Time
		for h := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC); h.Year() == 2026; h = h.Add(time.Hour / 2) {
			if _, a := h.In(loc).Zone(); func() bool { _, b := h.Add(time.Hour / 2).In(loc).Zone(); return a != b }() {
				shifts = append(shifts, h)
			}
		}
		if len(shifts) != 2 {
			t.Fatalf("%s: %d clock changes in 2026, want 2", zone, len(shifts))
		}
		for _, start := range []string{"00:00", "00:45", "01:00", "01:30", "01:45", "02:00", "02:10", "02:30", "03:00", "03:30", "04:00"} {
			doc := fmt.Sprintf(`{"version":1,"currency":"EUR","timezone":%q,"service_day_start":%q,
				"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`, zone, start)
			tb, err := Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			var hh, mm int
			fmt.Sscanf(start, "%d:%d", &hh, &mm)
			for _, sh := range shifts {
				prev := ""
				for at := sh.Add(-30 * time.Hour); at.Before(sh.Add(30 * time.Hour)); at = at.Add(time.Minute) {
					day := tb.ServiceDay(at)
					if prev != "" && day != prev {
						p, _ := time.Parse(time.DateOnly, prev)
						if n, _ := time.Parse(time.DateOnly, day); !n.Equal(p.AddDate(0, 0, 1)) {
							t.Fatalf("%s, start %s: %s is on %s, a minute before on %s", zone, start, at.In(loc), day, prev)
						}
						// The first instant of the new day reads the start, or is
						// the first after a gap that skipped it.
						lt := at.In(loc)
						if lt.Hour()*60+lt.Minute() < hh*60+mm {
							t.Fatalf("%s, start %s: day %s begins at %s, before the start", zone, start, day, lt)
						}
						if before := at.Add(-time.Minute).In(loc); before.Hour()*60+before.Minute() >= hh*60+mm && before.Day() == lt.Day() {
							t.Fatalf("%s, start %s: day %s begins at %s, a minute after the wall clock read the start", zone, start, day, lt)
						}
					}
					prev = day
				}
			}
		}
	}
}

// TestRateDayMixedRules rates a day whose rides span a fare change and two
// profiles: each ride is rated with its own table's transfer rule and its
// own profile's cap.
func TestRateDayMixedRules(t *testing.T) {
	v1, err := Parse([]byte(`{"version":1,"currency":"EUR","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}},
		"transfer":{"window":"60m","fare":0},"daily_cap":{"adult":700,"child":200}}`))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := Parse([]byte(`{"version":2,"currency":"EUR","fares":{"*":{"adult":300,"child":150,"senior":150,"student":200}},
		"transfer":{"window":"60m","fare":100},"daily_cap":{"adult":500,"child":300}}`))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 5, 4, 8, 0, 0, 0, time.UTC)
	rides := []Ride{
		{ID: "a", Time: t0, Profile: paycode.Child, Fare: 120, Rules: v1},                                   // 120
		{ID: "b", Time: t0.Add(2 * time.Hour), Profile: paycode.Child, Fare: 120, Rules: v1},                // cap 200: 80
		{ID: "c", Time: t0.Add(4 * time.Hour), Profile: paycode.Adult, Fare: 300, Rules: v2},                // 300 (adult cap 500)
		{ID: "d", Time: t0.Add(4*time.Hour + 10*time.Minute), Profile: paycode.Adult, Fare: 300, Rules: v2}, // transfer 100
		{ID: "e", Time: t0.Add(6 * time.Hour), Profile: paycode.Adult, Fare: 300, Rules: v2},                // 600 so far → capped 0
	}
	want := map[string]int64{"a": 120, "b": 80, "c": 300, "d": 0, "e": 0}
	wantTransfer := map[string]bool{"d": true}
	// total after d: 120+80+300+100 = 600 > adult cap 500 → d is capped to 0.
	want["d"] = 0
	for _, c := range v1.RateDay(rides) {
		if c.Amount != want[c.ID] || c.Transfer != wantTransfer[c.ID] {
			t.Errorf("ride %s: %+v, want amount %d transfer %t", c.ID, c, want[c.ID], wantTransfer[c.ID])
		}
	}
}

// TestRateFromEqualsRateDay: rating a day's later rides from the state of
// its earlier ones (their charges as RateDay gave them) gives the later
// rides what rating the whole day gives them, whatever the cut, with
// equal times, transfers, the cap and two tables' rules mixed.
func TestRateFromEqualsRateDay(t *testing.T) {
	v1, err := Parse([]byte(`{"version":1,"currency":"EUR","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}},
		"transfer":{"window":"60m","fare":0},"daily_cap":{"adult":700,"child":200}}`))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := Parse([]byte(`{"version":2,"currency":"EUR","fares":{"*":{"adult":300,"child":150,"senior":150,"student":200}},
		"transfer":{"window":"90m","fare":100},"daily_cap":{"adult":500,"child":300}}`))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 11))
	t0 := time.Date(2026, 3, 10, 5, 0, 0, 0, time.UTC)
	for round := range 2000 {
		n := 1 + r.IntN(12)
		rides := make([]Ride, n)
		for i := range rides {
			rules := []*Table{v1, v2}[r.IntN(2)]
			p := []paycode.Profile{paycode.Adult, paycode.Child}[r.IntN(2)]
			fare, _ := rules.Fare("42", p)
			// Times on a 20-minute grid: ties are common.
			rides[i] = Ride{ID: fmt.Sprintf("d%d/%d", r.IntN(3), i), Time: t0.Add(time.Duration(r.IntN(48)) * 20 * time.Minute),
				Profile: p, Fare: fare, Rules: rules}
		}
		full := map[string]Charge{}
		for _, c := range v1.RateDay(rides) {
			full[c.ID] = c
		}
		cut := rides[r.IntN(n)].Time
		var earlier, later []Ride
		var earlierCharges []Charge
		for _, rd := range rides {
			if rd.Time.Before(cut) {
				earlier = append(earlier, rd)
				earlierCharges = append(earlierCharges, full[rd.ID])
			} else {
				later = append(later, rd)
			}
		}
		for _, c := range v1.RateFrom(StateOf(earlier, earlierCharges), later) {
			if c != full[c.ID] {
				t.Fatalf("round %d: ride %s rated from the state at %v: %+v; the whole day gives %+v", round, c.ID, cut, c, full[c.ID])
			}
		}
	}
}

// TestLoadMissingFile: a fare table file that is not there is said as
// such ("fare table: open …: no such file"), not as an invalid table.
func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.json")
	_, err := Load(path)
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(missing): %v; want a not-exist error naming %s, not ErrInvalid", err, path)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"version":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("Load(invalid): %v, want ErrInvalid", err)
	}
}
