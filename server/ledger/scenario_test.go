package ledger

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
)

// scenario is a random set of taps over several accounts and service days,
// with the charges and balances they must end up with whatever the order
// of arrival. Accounts are 1000, 1001, … in a fresh ledger.
type scenario struct {
	profiles []paycode.Profile
	topups   []int64
	taps     []Tap
	charge   map[string]int64 // by tap id
	balance  map[uint64]int64 // by account
}

// Fare table v2 of a scenario comes into force at scenarioV2Since (v1 is in
// force from tablesSince), and validators may keep naming a table for
// scenarioGrace after it was replaced.
var (
	scenarioV2Since = day0.Add(24*time.Hour + 4*time.Hour)
	scenarioGrace   = time.Hour
)

// scenarioOptions are the Options a scenario's Stores are opened with.
var scenarioOptions = &Options{FareGrace: scenarioGrace}

// genScenario makes a scenario from r: nAccounts accounts, nDays service
// days, up to maxPerDay taps per account and day naming either fare table,
// through a handful of devices. Some accounts get too little money and end
// negative. It is deterministic for a given r.
func genScenario(tb testing.TB, r *rand.Rand, nAccounts, nDays, maxPerDay int) *scenario {
	tb.Helper()
	tables := map[uint64]*fare.Table{1: mustTable(tb, tableV1), 2: mustTable(tb, tableV2)}
	sc := &scenario{charge: map[string]int64{}, balance: map[uint64]int64{}}
	seqs := map[string]uint64{}
	devices := []string{"bus-1", "bus-2", "bus-3", "tram-9"}
	var counter uint16
	for i := range nAccounts {
		acct := uint64(1000 + i)
		p := []paycode.Profile{paycode.Adult, paycode.Adult, paycode.Child, paycode.Student}[r.IntN(4)]
		sc.profiles = append(sc.profiles, p)
		sc.topups = append(sc.topups, []int64{0, 500, 3000, 20000}[r.IntN(4)])
		for d := range nDays {
			for range r.IntN(maxPerDay + 1) {
				// 05:00 to 03:30 the next morning: all one service day.
				when := day0.Add(time.Duration(d*24*60-180+r.IntN(22*60+30)) * time.Minute).Add(time.Duration(r.IntN(60)) * time.Second)
				route := []string{"42", "X1"}[r.IntN(2)]
				claimed := uint64(1 + r.IntN(2))
				base, err := tables[claimed].Fare(route, p)
				if err != nil {
					tb.Fatal(err)
				}
				dev := devices[r.IntN(len(devices))]
				seqs[dev]++
				counter++
				key := paycode.ID{Account: acct, Serial: 1, Time: uint32(when.Unix()), Counter: counter}.Key()
				id := TapID(dev, "e", seqs[dev])
				sc.taps = append(sc.taps, Tap{
					ID: id, DeviceID: dev, Seq: seqs[dev], Epoch: "e", Time: when, Account: acct, Serial: 1,
					RiderKey: riderKey(acct), CodeKey: key, CodeHash: fmt.Sprintf("%x", key[12:]), Profile: p,
					ClaimedProfile: p, BaseFare: base, Currency: "EUR", FareVersion: claimed, Route: route, Vehicle: "v",
					Record: []byte(id),
				})
			}
		}
	}
	// Two taps of an account the ledger does not have: flagged, charged 0.
	for i := range 2 {
		dev := devices[i]
		seqs[dev]++
		counter++
		when := day0.Add(time.Duration(i) * time.Hour)
		key := paycode.ID{Account: 999_999, Serial: 1, Time: uint32(when.Unix()), Counter: counter}.Key()
		id := TapID(dev, "e", seqs[dev])
		sc.taps = append(sc.taps, Tap{ID: id, DeviceID: dev, Seq: seqs[dev], Epoch: "e", Time: when, Account: 999_999,
			Serial: 1, RiderKey: riderKey(999_999), CodeKey: key, BaseFare: 250, Currency: "EUR", FareVersion: 1})
	}
	// The model, written independently of the ledger's code: a tap is rated
	// with the table it names while that table was in force (give or take
	// the grace), else with the table in force at its time; each ride of a
	// day with its own table's fares and rules.
	version := func(tp Tap) uint64 {
		switch {
		case tp.FareVersion == 1 && !tp.Time.After(scenarioV2Since.Add(scenarioGrace)):
			return 1
		case tp.FareVersion == 2 && !tp.Time.Before(scenarioV2Since.Add(-scenarioGrace)):
			return 2
		case tp.Time.Before(scenarioV2Since):
			return 1
		}
		return 2
	}
	groups := map[dayKey][]fare.Ride{}
	for _, tp := range sc.taps {
		if tp.Account == 999_999 {
			sc.charge[tp.ID] = 0
			continue
		}
		tbl := tables[version(tp)]
		base, err := tbl.Fare(tp.Route, tp.Profile)
		if err != nil {
			tb.Fatal(err)
		}
		k := dayKey{tp.Account, tbl.ServiceDay(tp.Time)}
		groups[k] = append(groups[k], fare.Ride{ID: tp.ID, Time: tp.Time, Profile: tp.Profile, Fare: base, Rules: tbl})
	}
	for i := range nAccounts {
		sc.balance[uint64(1000+i)] = sc.topups[i]
	}
	for k, rides := range groups {
		for _, c := range tables[1].RateDay(rides) {
			sc.charge[c.ID] = c.Amount
			sc.balance[k.account] -= c.Amount
		}
	}
	return sc
}

// setUp stores both fare tables (v2 in force from scenarioV2Since) and
// creates, funds and issues a credential to the accounts in a fresh ledger.
func (sc *scenario) setUp(tb testing.TB, s *Store) {
	tb.Helper()
	ctx := context.Background()
	putTableAt(tb, s, tableV1, tablesSince)
	putTableAt(tb, s, tableV2, scenarioV2Since)
	for i, p := range sc.profiles {
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: p})
		if err != nil {
			tb.Fatal(err)
		}
		if a.ID != uint64(1000+i) {
			tb.Fatalf("account id %d, want %d (not a fresh ledger?)", a.ID, 1000+i)
		}
		if sc.topups[i] > 0 {
			if _, err := s.TopUp(ctx, a.ID, sc.topups[i], "setup-"+strconv.Itoa(i)); err != nil {
				tb.Fatal(err)
			}
		}
		issue(tb, s, a.ID)
	}
}

// batches returns the taps shuffled by r and cut into batches of 1 to
// maxBatch taps.
func (sc *scenario) batches(r *rand.Rand, maxBatch int) [][]Tap {
	taps := slices.Clone(sc.taps)
	r.Shuffle(len(taps), func(i, j int) { taps[i], taps[j] = taps[j], taps[i] })
	var out [][]Tap
	for len(taps) > 0 {
		n := min(1+r.IntN(maxBatch), len(taps))
		out = append(out, taps[:n])
		taps = taps[n:]
	}
	return out
}

// verify checks a ledger against the model: every tap's charge, every
// balance, and the negative_balance entries.
func (sc *scenario) verify(tb testing.TB, s *Store) {
	tb.Helper()
	ctx := context.Background()
	n, err := s.TapCount(ctx)
	if err != nil || n != int64(len(sc.taps)) {
		tb.Errorf("TapCount = %d, %v, want %d", n, err, len(sc.taps))
	}
	dl := denyList(tb, s)
	for i := range sc.profiles {
		acct := uint64(1000 + i)
		got := charges(tb, s, acct)
		for id, c := range got {
			if want, ok := sc.charge[id]; !ok || c != want {
				tb.Errorf("tap %s charged %d, want %d", id, c, want)
			}
		}
		if b := balance(tb, s, acct); b != sc.balance[acct] {
			tb.Errorf("account %d balance %d, want %d", acct, b, sc.balance[acct])
		}
		if denied := hasDeny(dl, acct, 0, ReasonNegativeBalance); denied != (sc.balance[acct] < 0) {
			tb.Errorf("account %d balance %d, denied %t", acct, sc.balance[acct], denied)
		}
	}
	if err := s.CheckInvariants(ctx); err != nil {
		tb.Error(err)
	}
}

// The property: the same taps, committed in any order and any batching, with
// some batches delivered twice, end in the same charges and balances, and
// those are the model's (every account's day rated at once).
func TestOrderIndependence(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		r := rand.New(rand.NewPCG(2026, 3))
		sc := genScenario(t, r, 8, 3, 7)
		capped, transfers := 0, 0
		orders := 12
		if db.backend == "postgres" {
			orders = 5
		}
		for run := range orders {
			fresh := db
			if run > 0 {
				fresh = newDB(t, db.backend)
			}
			s, err := Open(context.Background(), fresh.dsn, scenarioOptions)
			if err != nil {
				t.Fatal(err)
			}
			sc.setUp(t, s)
			bs := sc.batches(r, 1+run*3)
			for i, b := range bs {
				commit(t, s, b...)
				if r.IntN(4) == 0 { // a redelivery of an earlier batch
					commit(t, s, bs[r.IntN(i+1)]...)
				}
			}
			sc.verify(t, s)
			if run == 0 {
				for _, acct := range []uint64{1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007} {
					rides, _ := s.Rides(context.Background(), acct, 0)
					for _, rd := range rides {
						if rd.Capped {
							capped++
						}
						if rd.Transfer {
							transfers++
						}
					}
				}
			}
			s.Close()
			if t.Failed() {
				t.Fatalf("run %d (%d batches) differs from the model", run, len(bs))
			}
		}
		// The scenario must exercise the rules it is about.
		if capped == 0 || transfers == 0 || len(sc.taps) < 60 {
			t.Errorf("weak scenario: %d taps, %d capped, %d transfers", len(sc.taps), capped, transfers)
		}
	})
}

// TestRatingFromEarliestChange: a batch re-rates each account-day from its
// earliest new or refunded tap, taking the earlier taps' charges as they
// stand (rate, readDays). Taps on a ten-minute grid (equal times are
// common), arriving in random batches and order, some showing a code
// another tap used (the earlier use keeps it: a stored later holder is
// flagged and refunded, in the middle of its day), some batches delivered
// twice: after every batch CheckInvariants re-rates every day whole and
// must find each tap's charge, and each balance, as the ledger has them.
func TestRatingFromEarliestChange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		r := rand.New(rand.NewPCG(2026, 12))
		accts := []uint64{newAccount(t, s, 3000), newAccount(t, s, 100_000), newAccount(t, s, 100_000)}
		var taps []Tap
		seq := map[string]uint64{}
		for range 90 {
			acct := accts[r.IntN(len(accts))]
			dev := []string{"bus-1", "bus-2", "bus-3"}[r.IntN(3)]
			seq[dev]++
			// Over 25 hours: two service days.
			tp := mkTap(dev, seq[dev], acct, at(10*r.IntN(150)), []string{"42", "X1"}[r.IntN(2)])
			if len(taps) > 0 && r.IntN(6) == 0 {
				// The code of an earlier-made tap of the same account,
				// shown again at another time: one of the two uses
				// loses it, whichever arrives first.
				for _, o := range taps {
					if o.Account == acct {
						tp.CodeKey, tp.CodeHash = o.CodeKey, o.CodeHash
						break
					}
				}
			}
			taps = append(taps, tp)
		}
		r.Shuffle(len(taps), func(i, j int) { taps[i], taps[j] = taps[j], taps[i] })
		var batches [][]Tap
		for rest := taps; len(rest) > 0; {
			n := min(len(rest), 1+r.IntN(7))
			batches = append(batches, rest[:n])
			rest = rest[n:]
		}
		refunds := 0
		for i, b := range batches {
			commit(t, s, b...)
			if r.IntN(5) == 0 {
				commit(t, s, batches[r.IntN(i+1)]...) // a redelivery
			}
			if err := s.CheckInvariants(ctx); err != nil {
				t.Fatalf("after batch %d of %d: %v", i+1, len(batches), err)
			}
		}
		for _, a := range accts {
			rides, err := s.Rides(ctx, a, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, rd := range rides {
				if rd.Flag == FlagDuplicateCode {
					refunds++
				}
			}
		}
		if refunds == 0 {
			t.Errorf("weak scenario: no tap lost its code")
		}
		t.Logf("%d taps in %d batches, %d lost their code", len(taps), len(batches), refunds)
	})
}
