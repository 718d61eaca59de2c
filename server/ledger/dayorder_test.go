package ledger

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestFareChangeDayNeverBackwards: a fare table that moves the service
// day's start later (04:00 Berlin to 04:00 UTC, 05:00 Berlin) comes into
// force at 04:10 Berlin, between the two starts. A ride at 04:05 is on the
// old table's 03-10; one 25 minutes later, at 04:30, was put on the new
// table's 03-09, the day before: no transfer (250 + 250), and counted in
// yesterday's cap. A later ride is never on an earlier day: both are on
// 03-10, the second a transfer.
func TestFareChangeDayNeverBackwards(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := db.open(t, nil)
		putTableAt(t, s, tableV1, tablesSince)
		utcDays := strings.Replace(strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1), `"version":1`, `"version":2`, 1)
		putTableAt(t, s, utcDays, time.Date(2026, 3, 10, 4, 10, 0, 0, berlin))
		acct := newAccount(t, s, 10000)
		a := mkTap("bus-a", 1, acct, time.Date(2026, 3, 10, 4, 5, 0, 0, berlin), "")
		b := mkTap("bus-b", 1, acct, time.Date(2026, 3, 10, 4, 30, 0, 0, berlin), "")
		b.FareVersion = 2
		r := commit(t, s, a, b)
		if r[0].Charge != 250 || r[1].Charge != 0 {
			t.Errorf("charged %d and %d, want 250 and 0 (a transfer 25 minutes later)", r[0].Charge, r[1].Charge)
		}
		rides, err := s.Rides(context.Background(), acct, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, rd := range rides {
			if rd.ServiceDay != "2026-03-10" {
				t.Errorf("ride %s (%s) on service day %s, want 2026-03-10", rd.TapID, rd.Time.In(berlin).Format(time.TimeOnly), rd.ServiceDay)
			}
		}
	})
}

// TestFareChangesDaysInOrder: across fare changes of zone and day start
// (Europe/London, America/New_York, Australia/Lord_Howe, America/Havana,
// whose midnight the spring-forward skips), each coming into force at an
// instant near the starts, a later tap's service day is never earlier
// than an earlier tap's, and verify is clean.
func TestFareChangesDaysInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := db.open(t, nil)
		zones := []struct{ zone, start string }{
			{"Europe/Berlin", "04:00"}, {"America/New_York", "03:00"}, {"Europe/London", "02:30"},
			{"Australia/Lord_Howe", "01:45"}, {"America/Havana", "00:00"}, {"UTC", "04:00"}, {"Pacific/Kiritimati", "03:00"},
		}
		base := time.Date(2026, 3, 7, 0, 0, 0, 0, time.UTC)
		for i, z := range zones {
			doc := strings.Replace(strings.Replace(strings.Replace(tableV1, `"Europe/Berlin"`, `"`+z.zone+`"`, 1),
				`"version":1`, fmt.Sprintf(`"version":%d`, i+1), 1), `"04:00"`, `"`+z.start+`"`, 1)
			since := tablesSince
			if i > 0 {
				since = base.Add(time.Duration(i)*17*time.Hour + time.Duration(i*37)*time.Minute)
			}
			putTableAt(t, s, doc, since)
		}
		acct := newAccount(t, s, 1_000_000)
		var taps []Tap
		for i := range 150 { // every 65 minutes over 6.8 days
			tp := mkTap("bus-o", uint64(i+1), acct, base.Add(time.Duration(i)*65*time.Minute), "")
			tp.FareVersion = 0
			taps = append(taps, tp)
		}
		commit(t, s, taps...)
		rides, err := s.Rides(context.Background(), acct, 0)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(rides, func(a, b Ride) int { return a.Time.Compare(b.Time) })
		for i := 1; i < len(rides); i++ {
			if rides[i].ServiceDay < rides[i-1].ServiceDay {
				t.Errorf("ride at %s on %s, the ride before (%s) on %s", rides[i].Time, rides[i].ServiceDay, rides[i-1].Time, rides[i-1].ServiceDay)
			}
		}
	})
}

// TestSettlementFareChangeDayNeverBackwards: the settlement report puts a
// shop payment on the service day a tap of its time is on, also after a
// fare change that moves the day's start later (see
// TestFareChangeDayNeverBackwards): a payment at 04:30, after the change,
// was paid out with the day before.
func TestSettlementFareChangeDayNeverBackwards(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		putTableAt(t, s, tableV1, tablesSince)
		utcDays := strings.Replace(strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1), `"version":1`, `"version":2`, 1)
		putTableAt(t, s, utcDays, time.Date(2026, 3, 10, 4, 10, 0, 0, berlin))
		acct := newAccount(t, s, 10000)
		now := s.now
		for i, when := range []time.Time{time.Date(2026, 3, 10, 4, 5, 0, 0, berlin), time.Date(2026, 3, 10, 4, 30, 0, 0, berlin)} {
			s.now = func() time.Time { return when }
			if _, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: fmt.Sprint("o-", i), Account: acct, Serial: 1,
				RiderKey: riderKey(acct), CodeKey: codeKey(acct, 1, when), CodeHash: "h", Amount: 100, Currency: "EUR"}); err != nil {
				t.Fatal(err)
			}
		}
		s.now = now
		st, err := s.MerchantSettlement(ctx, "2026-03-08", "2026-03-11", "")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range st.Days {
			got = append(got, fmt.Sprintf("%s %d", d.Day, d.Payments))
		}
		if g := strings.Join(got, ", "); g != "2026-03-10 2" {
			t.Errorf("settlement: %s; want 2026-03-10 2", g)
		}
	})
}

// TestPropertyFareChangesDaysInOrder: six fare tables of random zones
// (daylight saving of an hour and of half an hour, a skipped date, clocks
// going back at midnight) and day starts, each coming into force at a
// random instant of four days, and 40 taps over them committed in three
// orders and batchings: a later ride is never on an earlier service day,
// each tap's day and charge are the same in every order, and verify is
// clean.
func TestPropertyFareChangesDaysInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		seeds := propSeeds(8)
		if db.backend == "postgres" {
			seeds = seeds[:1]
		}
		testFareChangesDaysInOrder(t, db, seeds)
	})
}

func testFareChangesDaysInOrder(t *testing.T, db *testDB, seeds []int64) {
	zones := []string{"Europe/Berlin", "America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Havana", "UTC", "Pacific/Kiritimati", "Pacific/Apia", "America/Santiago", "Asia/Beirut"}
	starts := []string{"00:00", "01:45", "02:30", "03:00", "04:00", "23:30", "12:00"}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewSource(seed))
			base := time.Date(2026, time.Month(1+r.Intn(12)), 1+r.Intn(27), 0, 0, 0, 0, time.UTC)
			var docs []string
			var sinces []time.Time
			for i := 0; i < 6; i++ {
				doc := strings.Replace(strings.Replace(strings.Replace(tableV1, `"Europe/Berlin"`, `"`+zones[r.Intn(len(zones))]+`"`, 1),
					`"version":1`, fmt.Sprintf(`"version":%d`, i+1), 1), `"04:00"`, `"`+starts[r.Intn(len(starts))]+`"`, 1)
				since := tablesSince
				if i > 0 {
					since = base.Add(time.Duration(r.Int63n(int64(96 * time.Hour))))
				}
				docs = append(docs, doc)
				sinces = append(sinces, since)
			}
			var taps []Tap
			for i := 0; i < 40; i++ {
				tp := mkTap([]string{"dA", "dB"}[r.Intn(2)], uint64(i+1), 0, base.Add(time.Duration(r.Int63n(int64(100*time.Hour)))), "")
				tp.FareVersion = uint64(1 + r.Intn(7))
				taps = append(taps, tp)
			}
			var ref []int64
			var refDays map[string]string
			for ord := 0; ord < 3; ord++ {
				s := newDB(t, db.backend).open(t, nil)
				for i := range docs {
					putTableAt(t, s, docs[i], sinces[i])
				}
				acct := newAccount(t, s, 1_000_000)
				mine := slices.Clone(taps)
				for i := range mine {
					mine[i].Account, mine[i].RiderKey = acct, riderKey(acct)
					mine[i].CodeKey = codeKey(acct, 1, mine[i].Time)
				}
				if ord > 0 {
					r.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
				}
				for i := 0; i < len(mine); i += 3 {
					commit(t, s, mine[i:min(i+3, len(mine))]...)
				}
				rides, _ := s.Rides(context.Background(), acct, 0)
				slices.SortFunc(rides, func(a, b Ride) int {
					if c := a.Time.Compare(b.Time); c != 0 {
						return c
					}
					return strings.Compare(a.TapID, b.TapID)
				})
				var ch []int64
				days := map[string]string{}
				for i, rd := range rides {
					ch = append(ch, rd.Charge)
					days[rd.TapID] = rd.ServiceDay
					if i > 0 && rd.ServiceDay < rides[i-1].ServiceDay {
						t.Errorf("ride %s at %s on %s after %s on %s", rd.TapID, rd.Time, rd.ServiceDay, rides[i-1].Time, rides[i-1].ServiceDay)
					}
				}
				if ref == nil {
					ref, refDays = ch, days
				} else if !slices.Equal(ch, ref) {
					t.Errorf("order %d charges %v, first %v", ord, ch, ref)
				}
				for id, d := range days {
					if refDays[id] != d {
						t.Errorf("tap %s day %s, first order %s", id, d, refDays[id])
					}
				}
				if err := s.CheckInvariants(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
