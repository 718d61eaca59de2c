package ledger

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
)

// Property tests of the money path: the same taps committed in any order
// and batching give the same charges, flags and balances, equal to
// fare.Table.RateDay over each account-day from scratch; redelivery
// changes nothing; balances are the sum of their postings at every step.

// Fare tables of the property tests, each in force from propSince[i]:
// v2 starts its day at 02:30 (inside the spring-forward gap and the
// repeated hour of the fall-back in Berlin), charges children 0, caps
// adults at one fare and students at one fare; v3's transfer is dearer
// than the fare (never taken) in a 2-minute window.
var propTables = []string{
	tableV1,
	`{"version":2,"currency":"EUR","timezone":"Europe/Berlin","service_day_start":"02:30",
		"fares":{"*":{"adult":250,"child":0,"senior":120,"student":180},"X1":{"adult":400}},
		"transfer":{"window":"90m","fare":50},"daily_cap":{"adult":250,"child":0,"senior":300,"student":180}}`,
	`{"version":3,"currency":"EUR","timezone":"Europe/Berlin","service_day_start":"04:00",
		"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180},"X1":{"adult":400}},
		"transfer":{"window":"2m","fare":300},"daily_cap":{"adult":700,"child":350,"senior":350,"student":500}}`,
}

var propSince = []time.Time{
	tablesSince,
	time.Date(2026, 3, 29, 0, 30, 0, 0, time.UTC),  // 01:30 CET, in the night of the spring-forward
	time.Date(2026, 10, 25, 1, 15, 0, 0, time.UTC), // 02:15 CET, the repeated hour
}

// propDays are the local dates the taps fall around: both DST changes of
// 2026 in Berlin, and their neighbours.
var propDays = []time.Time{
	time.Date(2026, 3, 28, 0, 0, 0, 0, berlin),
	time.Date(2026, 3, 29, 0, 0, 0, 0, berlin),
	time.Date(2026, 3, 30, 0, 0, 0, 0, berlin),
	time.Date(2026, 10, 24, 0, 0, 0, 0, berlin),
	time.Date(2026, 10, 25, 0, 0, 0, 0, berlin),
	time.Date(2026, 10, 26, 0, 0, 0, 0, berlin),
}

type propDevice struct{ id, vehicle string }

var propDevices = []propDevice{{"dA", "bus-1"}, {"dB", "bus-2"}, {"dC", "bus-3"}, {"dD", "bus-1"}}

// propScenario is a set of taps over accounts made in a fresh ledger.
type propScenario struct {
	accounts int
	taps     []Tap // ids and accounts by index: account i is the i-th made
}

// propDayStarts returns the instants around which service days begin: the
// first instant of each date reading 02:30 or 04:00, or the end of a gap.
func propDayStarts(d time.Time) []time.Time {
	var out []time.Time
	for _, hm := range [][2]int{{2, 30}, {4, 0}, {3, 0}, {2, 0}} {
		x := time.Date(d.Year(), d.Month(), d.Day(), hm[0], hm[1], 0, 0, berlin)
		out = append(out, x, x.Add(-time.Hour), x.Add(time.Hour))
	}
	return out
}

// genPropScenario makes n taps over accounts (indexes 0..accounts-1; index
// accounts is an account the ledger does not have).
func genPropScenario(r *rand.Rand, accounts, n int) propScenario {
	sc := propScenario{accounts: accounts}
	seqs := map[string]uint64{}
	windows := []time.Duration{60 * time.Minute, 90 * time.Minute, 2 * time.Minute}
	profiles := []paycode.Profile{paycode.Adult, paycode.Adult, paycode.Child, paycode.Senior, paycode.Student}
	for i := 0; i < n; i++ {
		acct := r.Intn(accounts)
		if r.Intn(40) == 0 {
			acct = accounts // unknown
		}
		dev := propDevices[r.Intn(len(propDevices))]
		seqs[dev.id]++
		var when time.Time
		var prev *Tap
		for j := len(sc.taps) - 1; j >= 0; j-- {
			if int(sc.taps[j].Account) == acct && r.Intn(2) == 0 {
				prev = &sc.taps[j]
				break
			}
		}
		switch k := r.Intn(10); {
		case prev != nil && k < 4: // on or next to a transfer window's end, or at the same instant
			d := windows[r.Intn(len(windows))]
			if r.Intn(5) == 0 {
				d = 0
			}
			when = prev.Time.Add(d + time.Duration(r.Intn(3)-1))
		case k < 7: // on or next to a service day's start
			starts := propDayStarts(propDays[r.Intn(len(propDays))])
			when = starts[r.Intn(len(starts))].Add(time.Duration(r.Intn(3)-1) * time.Duration([]int{1, 1000, 60e9}[r.Intn(3)]))
		default:
			d := propDays[r.Intn(len(propDays))]
			when = d.Add(time.Duration(r.Int63n(int64(30 * time.Hour))))
		}
		route := "42"
		if r.Intn(4) == 0 {
			route = "X1"
		}
		tp := Tap{
			ID: TapID(dev.id, "e1", seqs[dev.id]), DeviceID: dev.id, Seq: seqs[dev.id], Epoch: "e1", Time: when,
			Account: uint64(acct), Serial: 1, Profile: profiles[r.Intn(len(profiles))], BaseFare: 250, Currency: "EUR",
			FareVersion: []uint64{1, 2, 3, 9}[r.Intn(4)], Route: route, Vehicle: dev.vehicle,
		}
		tp.ClaimedProfile = tp.Profile
		tp.Record = []byte("record " + tp.ID)
		if prev != nil && r.Intn(5) == 0 { // the code of an earlier tap of the account
			tp.CodeKey = slices.Clone(prev.CodeKey)
			if r.Intn(2) == 0 {
				tp.Time = prev.Time.Add(time.Duration(r.Intn(401)-200) * time.Second)
			}
		} else {
			tp.CodeKey = paycode.ID{Account: uint64(acct), Serial: 1, Time: uint32(when.Unix()), Counter: uint16(i)}.Key()
		}
		if r.Intn(30) == 0 {
			tp.Flag = FlagInvalidCode
		}
		sc.taps = append(sc.taps, tp)
	}
	return sc
}

// propLedger is a fresh ledger with the scenario's accounts and tables.
type propLedger struct {
	s     *Store
	ids   []uint64 // account index → id
	topup int64
}

func newPropLedger(t testing.TB, db *testDB, accounts int) *propLedger {
	t.Helper()
	s := db.open(t, nil)
	for i, doc := range propTables {
		putTableAt(t, s, doc, propSince[i])
	}
	pl := &propLedger{s: s, topup: 5000}
	for i := 0; i < accounts; i++ {
		pl.ids = append(pl.ids, newAccount(t, s, pl.topup))
	}
	return pl
}

// taps returns the scenario's taps with the ledger's account ids (the
// unknown account's index becomes an id the ledger never made).
func (pl *propLedger) taps(sc propScenario) []Tap {
	out := make([]Tap, len(sc.taps))
	for i, tp := range sc.taps {
		id := uint64(999_999_999)
		if int(tp.Account) < len(pl.ids) {
			id = pl.ids[tp.Account]
		}
		tp.Account = id
		tp.RiderKey = riderKey(id)
		key := paycode.ID{Account: id, Serial: 1, Time: uint32(tp.Time.Unix()), Counter: uint16(i)}.Key()
		// The code's account and serial are the tap's; the rest of the
		// key says which code (shared keys stay shared).
		ck := slices.Clone(tp.CodeKey)
		copy(ck[:12], key[:12])
		tp.CodeKey = ck
		tp.CodeHash = hex.EncodeToString(ck[len(ck)-6:])
		out[i] = tp
	}
	return out
}

// tapState is what the ledger holds of a tap.
type tapState struct {
	Charge           int64
	Flag             string
	Transfer, Capped bool
	Rated            uint64
	Day              string
	Notes            string
}

// state reads every tap's state and every balance, by account index.
func (pl *propLedger) state(t testing.TB) (map[string]tapState, []int64) {
	t.Helper()
	rows, err := pl.s.db.QueryContext(context.Background(),
		`SELECT tap_id, charge, flag, transfer, capped, rated_version, service_day, notes FROM taps`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]tapState{}
	for rows.Next() {
		var id string
		var st tapState
		if err := rows.Scan(&id, &st.Charge, &st.Flag, &st.Transfer, &st.Capped, &st.Rated, &st.Day, &st.Notes); err != nil {
			t.Fatal(err)
		}
		out[id] = st
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var bals []int64
	for _, id := range pl.ids {
		bals = append(bals, balance(t, pl.s, id))
	}
	return out, bals
}

func (pl *propLedger) commit(t testing.TB, batch []Tap) []TapResult {
	t.Helper()
	res, err := pl.s.CommitTaps(context.Background(), batch)
	if err != nil {
		t.Fatalf("CommitTaps: %v", err)
	}
	return res
}

// propOrderings of a scenario's taps: each a list of batches.
func propOrderings(r *rand.Rand, taps []Tap) map[string][][]Tap {
	single := func(ts []Tap) [][]Tap {
		var out [][]Tap
		for _, tp := range ts {
			out = append(out, []Tap{tp})
		}
		return out
	}
	perm := func() []Tap {
		ts := slices.Clone(taps)
		r.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
		return ts
	}
	byTime := slices.Clone(taps)
	sort.SliceStable(byTime, func(i, j int) bool { return byTime[i].Time.Before(byTime[j].Time) })
	revTime := slices.Clone(byTime)
	slices.Reverse(revTime)
	rev := slices.Clone(taps)
	slices.Reverse(rev)
	// random splits, each tap sent twice (in its batch and again later)
	var twice [][]Tap
	p := perm()
	for i := 0; i < len(p); {
		n := 1 + r.Intn(7)
		b := slices.Clone(p[i:min(i+n, len(p))])
		if r.Intn(2) == 0 {
			b = append(b, b[r.Intn(len(b))]) // within the batch too
		}
		twice = append(twice, b)
		if len(twice) > 1 {
			twice = append(twice, twice[r.Intn(len(twice)-1)])
		}
		i += n
	}
	twice = append(twice, p)
	return map[string][][]Tap{
		"one-batch":     {taps},
		"one-reversed":  {rev},
		"single-random": single(perm()),
		"single-time":   single(byTime),
		"single-rtime":  single(revTime),
		"splits-twice":  twice,
	}
}

// propModelCheck checks a ledger's final state against the rules computed
// from scratch: the table each tap is rated with, its service day, which
// tap keeps each code, and RateDay over every account-day.
func propModelCheck(t *testing.T, pl *propLedger, taps []Tap, got map[string]tapState, bals []int64) {
	t.Helper()
	tables := map[uint64]*fare.Table{}
	for _, doc := range propTables {
		tb := mustTable(t, doc)
		tables[tb.Version] = tb
	}
	// The table in force at a time: its service day is the tap's.
	inForce := func(at time.Time) uint64 {
		v := uint64(1)
		for i := range propSince {
			if !propSince[i].After(at) {
				v = uint64(i + 1)
			}
		}
		return v
	}
	choose := func(claimed uint64, at time.Time) uint64 {
		for i, doc := range propTables {
			if mustTable(t, doc).Version != claimed {
				continue
			}
			ok := !propSince[i].After(at.Add(DefaultFareGrace))
			if i+1 < len(propSince) && propSince[i+1].Before(at.Add(-DefaultFareGrace)) {
				ok = false
			}
			if ok {
				return claimed
			}
		}
		return inForce(at)
	}
	// A tap's service day: the one the table in force at its time gives
	// it, never earlier than the instant's before that table came into
	// force (TestFareChangeDayNeverBackwards).
	var dayOf func(at time.Time) string
	dayOf = func(at time.Time) string {
		v := inForce(at)
		day := tables[v].ServiceDay(at)
		if v > 1 && !at.Before(propSince[v-1]) {
			day = max(day, dayOf(propSince[v-1].Add(-time.Nanosecond)))
		}
		return day
	}
	known := map[uint64]bool{}
	for _, id := range pl.ids {
		known[id] = true
	}
	// Which taps claim a code: known account, not flagged by the caller.
	byCode := map[string][]*Tap{}
	want := map[string]string{} // tap → flag
	for i := range taps {
		tp := &taps[i]
		switch {
		case tp.Flag != "":
			want[tp.ID] = tp.Flag
		case !known[tp.Account]:
			want[tp.ID] = FlagUnknownAccount
		default:
			byCode[string(tp.CodeKey)] = append(byCode[string(tp.CodeKey)], tp)
		}
	}
	for _, ts := range byCode {
		slices.SortFunc(ts, func(a, b *Tap) int {
			if c := a.Time.Compare(b.Time); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		want[ts[0].ID] = ""
		for _, l := range ts[1:] {
			want[l.ID] = FlagDuplicateCode
		}
	}
	type dk struct {
		acct uint64
		day  string
	}
	days := map[dk][]fare.Ride{}
	for _, tp := range taps {
		st, ok := got[tp.ID]
		if !ok {
			t.Errorf("tap %s not stored", tp.ID)
			continue
		}
		if st.Flag != want[tp.ID] {
			t.Errorf("tap %s (%s) flag %q, want %q", tp.ID, tp.Time.UTC().Format(time.RFC3339Nano), st.Flag, want[tp.ID])
			continue
		}
		if st.Flag != "" {
			if st.Charge != 0 {
				t.Errorf("flagged tap %s charged %d", tp.ID, st.Charge)
			}
			continue
		}
		v := choose(tp.FareVersion, tp.Time)
		if st.Rated != v {
			t.Errorf("tap %s (%s, claimed %d) rated by %d, want %d", tp.ID, tp.Time.UTC().Format(time.RFC3339Nano), tp.FareVersion, st.Rated, v)
		}
		tbl := tables[v]
		day := dayOf(tp.Time)
		if day != st.Day {
			t.Errorf("tap %s on day %s, table %d (in force) says %s", tp.ID, st.Day, inForce(tp.Time), day)
		}
		base, err := tbl.Fare(tp.Route, tp.Profile)
		if err != nil {
			t.Fatal(err)
		}
		k := dk{tp.Account, day}
		days[k] = append(days[k], fare.Ride{ID: tp.ID, Time: tp.Time, Profile: tp.Profile, Fare: base, Rules: tbl})
	}
	var nDup, nTransfer, nCapped, nFree int
	for _, st := range got {
		switch {
		case st.Flag == FlagDuplicateCode:
			nDup++
		case st.Transfer:
			nTransfer++
		}
		if st.Capped {
			nCapped++
		}
		if st.Flag == "" && st.Charge == 0 {
			nFree++
		}
	}
	t.Logf("%d taps, %d account-days, %d duplicate codes, %d transfers, %d capped, %d charged 0", len(got), len(days), nDup, nTransfer, nCapped, nFree)
	spent := map[uint64]int64{}
	for k, rides := range days {
		for _, c := range tables[1].RateDay(rides) {
			st := got[c.ID]
			if st.Charge != c.Amount || st.Transfer != c.Transfer || st.Capped != c.Capped {
				t.Errorf("tap %s (account-day %d %s) charged %d (transfer %t, capped %t), RateDay gives %d (%t, %t)",
					c.ID, k.acct, k.day, st.Charge, st.Transfer, st.Capped, c.Amount, c.Transfer, c.Capped)
			}
			spent[k.acct] += c.Amount
		}
	}
	for i, id := range pl.ids {
		if want := pl.topup - spent[id]; bals[i] != want {
			t.Errorf("account %d balance %d, want %d", id, bals[i], want)
		}
	}
}

// TestPropertyOrderIndependence commits the same taps in several orders
// and batchings, each into a fresh ledger: the charges, flags, ratings and
// balances are the same and equal the rules computed from scratch.
func TestPropertyOrderIndependence(t *testing.T) { testOrderIndependence(t, false) }

// TestPropertyOrderIndependenceNotes asks the same of the taps' notes
// (same_device_reuse, code_reuse_window).
func TestPropertyOrderIndependenceNotes(t *testing.T) { testOrderIndependence(t, true) }

func testOrderIndependence(t *testing.T, checkNotes bool) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		seeds := propSeeds(3)
		if db.backend == "postgres" {
			if checkNotes {
				t.Skip("the SQLite run checks the notes")
			}
			seeds = seeds[:1]
		}
		for _, seed := range seeds {
			t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
				r := rand.New(rand.NewSource(seed))
				sc := genPropScenario(r, 3, 60)
				var ref map[string]tapState
				var refBals []int64
				var refName string
				ords := propOrderings(r, sc.taps) // on the scenario's indexes, mapped per ledger
				names := make([]string, 0, len(ords))
				for n := range ords {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, name := range names {
					pl := newPropLedger(t, newDB(t, db.backend), sc.accounts)
					idx := map[string]int{}
					for i, tp := range sc.taps {
						idx[tp.ID] = i
					}
					mapped := pl.taps(sc)
					for _, b := range ords[name] {
						batch := make([]Tap, len(b))
						for i, tp := range b {
							batch[i] = mapped[idx[tp.ID]]
						}
						pl.commit(t, batch)
					}
					if err := pl.s.CheckInvariants(context.Background()); err != nil {
						t.Fatalf("%s: CheckInvariants: %v", name, err)
					}
					got, bals := pl.state(t)
					// Account ids are the same in every fresh ledger.
					if ref == nil {
						ref, refBals, refName = got, bals, name
						propModelCheck(t, pl, mapped, got, bals)
						continue
					}
					if !slices.Equal(bals, refBals) {
						t.Errorf("%s: balances %v, %s gave %v", name, bals, refName, refBals)
					}
					for id, st := range ref {
						g := got[id]
						if checkNotes {
							if g.Notes != st.Notes {
								// Which reuses of a day are forgiven, at most
								// MaxForgivenReuses, is first come first
								// served (documented): only a note that
								// differs below that limit is a finding.
								forgiven := func(m map[string]tapState) int {
									n := 0
									for _, o := range m {
										if o.Day == st.Day && strings.Contains(o.Notes, NoteCodeReuseWindow) {
											n++
										}
									}
									return n
								}
								limit := forgiven(ref) >= MaxForgivenReuses || forgiven(got) >= MaxForgivenReuses
								if !limit || g.Notes == NoteSameDeviceReuse || st.Notes == NoteSameDeviceReuse {
									t.Errorf("%s: tap %s notes %q, %s gave %q", name, id, g.Notes, refName, st.Notes)
								}
							}
						}
						g.Notes, st.Notes = "", ""
						if g != st {
							t.Errorf("%s: tap %s %+v, %s gave %+v", name, id, g, refName, st)
						}
					}
				}
			})
		}
	})
}

// propSeeds are the seeds a property test runs: 1..n, or 1..FAREGO_PROP_SEEDS
// to search longer.
func propSeeds(n int) []int64 {
	if v, err := strconv.Atoi(os.Getenv("FAREGO_PROP_SEEDS")); err == nil && v > 0 {
		n = v
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}

// TestReuseVerdictOrderIndependent: one code at bus-1 (device A) at
// 08:00:00, bus-2 (device B) at 08:00:20 and device A again at 08:00:40.
// In time order: A keeps the code, B's use is one reuse forgiven as a
// quick transfer (code_reuse_window), A's second record is A's word alone
// (same_device_reuse): the credential stays valid. The very same records
// arriving latest first must end the same; they denied the credential
// (B's use counted as a second reuse, A's second record as the first).
func TestReuseVerdictOrderIndependent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		mk := func(acct uint64) []Tap {
			a1 := mkTap("dev-A", 1, acct, at(0), "")
			b := mkTap("dev-B", 1, acct, at(0).Add(20*time.Second), "")
			a2 := mkTap("dev-A", 2, acct, at(0).Add(40*time.Second), "")
			a1.Vehicle, b.Vehicle, a2.Vehicle = "bus-1", "bus-2", "bus-1"
			b.CodeKey, a2.CodeKey = a1.CodeKey, a1.CodeKey
			return []Tap{a1, b, a2}
		}
		type outcome struct {
			denied bool
			notes  [3]string
			bal    int64
		}
		run := func(order []int) outcome {
			s := ledgerWithTable(t, newDB(t, db.backend))
			acct := newAccount(t, s, 2000)
			taps := mk(acct)
			for _, i := range order {
				commit(t, s, taps[i])
			}
			var o outcome
			o.denied = hasDeny(denyList(t, s), acct, 1, ReasonCodeReused)
			rides, err := s.Rides(context.Background(), acct, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rides {
				for i, tp := range taps {
					if tp.ID == r.TapID {
						o.notes[i] = r.Flag + ":" + strings.Join(r.Notes, ",")
					}
				}
			}
			o.bal = balance(t, s, acct)
			return o
		}
		want := run([]int{0, 1, 2})
		if want.denied || want.bal != 2000-250 {
			t.Fatalf("in time order: %+v, want not denied, one fare charged", want)
		}
		for _, order := range [][]int{{2, 1, 0}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {1, 0, 2}} {
			if got := run(order); got != want {
				t.Errorf("order %v: %+v; in time order %+v", order, got, want)
			}
		}
	})
}

// TestPropertyRetriesAndMixed commits a scenario's taps in random batches
// interleaved with top-ups, online payments (some with codes the taps use)
// and refunds, amounts up to the ledger's limits. After every step the
// invariants hold (balances are the sums of their postings, money is
// conserved); a batch delivered again is all Duplicate and changes
// nothing; a tap id sent with other contents is a Conflict and changes
// nothing.
func TestPropertyRetriesAndMixed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		seeds := propSeeds(2)
		if db.backend == "postgres" {
			seeds = seeds[:1]
		}
		for _, seed := range seeds {
			t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
				ctx := context.Background()
				r := rand.New(rand.NewSource(seed))
				sc := genPropScenario(r, 3, 80)
				pl := newPropLedger(t, newDB(t, db.backend), sc.accounts)
				taps := pl.taps(sc)
				check := func(step string) {
					t.Helper()
					if err := pl.s.CheckInvariants(ctx); err != nil {
						t.Fatalf("after %s: %v", step, err)
					}
				}
				var sent [][]Tap
				type paid struct {
					order  string
					amount int64
				}
				var payments []paid
				refundN := 0
				for i := 0; i < len(taps); {
					switch k := r.Intn(10); {
					case k < 5: // a batch of taps
						n := 1 + r.Intn(6)
						b := taps[i:min(i+n, len(taps))]
						pl.commit(t, b)
						sent = append(sent, b)
						i += n
						check("taps")
					case k == 5 && len(sent) > 0: // a batch again, and a tap id with other contents
						before := snapshot(t, pl.s)
						b := sent[r.Intn(len(sent))]
						for _, res := range pl.commit(t, b) {
							if !res.Duplicate || res.Conflict {
								t.Fatalf("redelivered %s: %+v", res.ID, res)
							}
						}
						other := b[r.Intn(len(b))]
						switch r.Intn(3) {
						case 0:
							other.Time = other.Time.Add(time.Nanosecond)
						case 1:
							other.Record = append(slices.Clone(other.Record), 'x')
						default:
							ck := slices.Clone(other.CodeKey)
							ck[len(ck)-1] ^= 0xff
							other.CodeKey = ck
						}
						if res := pl.commit(t, []Tap{other}); !res[0].Duplicate || !res[0].Conflict {
							t.Fatalf("tap %s with other contents: %+v", other.ID, res[0])
						}
						if after := snapshot(t, pl.s); after != before {
							t.Fatalf("a retry changed the ledger:\n%s\n%s", before, after)
						}
						check("retry")
					case k == 6: // a top-up, sometimes the largest one
						amount := 1 + r.Int63n(5000)
						if r.Intn(4) == 0 {
							amount = MaxAmount
						}
						acct := pl.ids[r.Intn(len(pl.ids))]
						refundN++
						if _, err := pl.s.TopUp(ctx, acct, amount, fmt.Sprint("top-", refundN)); err != nil {
							t.Fatal(err)
						}
						check("top-up")
					case k <= 8: // an online payment, by a fresh code or a tap's
						ai := r.Intn(len(pl.ids))
						acct := pl.ids[ai]
						key := paycode.ID{Account: acct, Serial: 1, Time: uint32(day0.Unix()), Counter: uint16(30000 + len(payments) + r.Intn(1000))}.Key()
						if r.Intn(3) == 0 {
							for _, tp := range taps {
								if tp.Account == acct {
									key = slices.Clone(tp.CodeKey)
									break
								}
							}
						}
						amount := 1 + r.Int63n(3000)
						if r.Intn(5) == 0 {
							amount = MaxAmount
						}
						refundN++
						order := fmt.Sprint("o-", refundN)
						_, _, err := pl.s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: order, Account: acct, Serial: 1,
							RiderKey: riderKey(acct), CodeKey: key, CodeHash: "h", Amount: amount, Currency: "EUR"})
						switch {
						case err == nil:
							payments = append(payments, paid{order, amount})
						case errors.Is(err, ErrInsufficientFunds), errors.Is(err, ErrCodeUsed), errors.Is(err, ErrDenied):
						default:
							t.Fatalf("Pay: %v", err)
						}
						check("payment")
					case len(payments) > 0: // a refund, sometimes more than is left
						p := payments[r.Intn(len(payments))]
						amount := 1 + r.Int63n(p.amount)
						if r.Intn(3) == 0 {
							amount = p.amount
						}
						refundN++
						_, _, err := pl.s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: p.order,
							RefundID: fmt.Sprint("r", refundN), Amount: amount})
						if err != nil && !errors.Is(err, ErrOverRefund) {
							t.Fatalf("RefundPayment: %v", err)
						}
						check("refund")
					}
				}
			})
		}
	})
}
