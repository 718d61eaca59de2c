package fare

import (
	"slices"
	"strings"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// Ride is one accepted tap as the rating sees it.
type Ride struct {
	ID      string // tap id, "device/epoch/seq": breaks ties between equal times
	Time    time.Time
	Profile paycode.Profile
	Fare    int64 // base fare of the ride, from its own fare table
	// Rules is the fare table whose transfer rule and daily cap apply to
	// this ride (the table in force when it was made); nil means the table
	// RateDay is called on. A day whose rides span a fare change is rated
	// ride by ride with each ride's own rules.
	Rules *Table
}

// Charge is what one ride costs after transfer and cap rules.
type Charge struct {
	ID       string
	Amount   int64
	Transfer bool // charged the transfer fare
	Capped   bool // reduced by the daily cap
}

// RateDay rates one account's rides of one service day. The result does not
// depend on the order of rides: they are sorted by time, then id. Each ride
// costs its base fare, or the transfer fare of its rules when it starts
// within their transfer window after the last ride that paid its base fare;
// then the day's running total is held to the daily cap of the ride's own
// profile under its rules (so a day with a child's and an adult's credential,
// or a fare change, is rated ride by ride, never with one ride's rules for
// all).
func (t *Table) RateDay(rides []Ride) []Charge { return t.RateFrom(DayState{}, rides) }

// DayState is where the rating of a service day stands after its earlier
// rides: what they were charged together, and the time of the last of them
// that paid its base fare (the start of a transfer window). It follows
// from their charges alone (see StateOf).
type DayState struct {
	Total    int64
	LastFull time.Time
	HaveFull bool // some earlier ride paid its base fare
}

// StateOf is the state after rides that were charged cs (as rated): the
// sum of the charges, and the latest time among the rides not charged the
// transfer fare.
func StateOf(rides []Ride, cs []Charge) DayState {
	var st DayState
	at := map[string]time.Time{}
	for _, r := range rides {
		at[r.ID] = r.Time
	}
	for _, c := range cs {
		st.Add(c.Amount, at[c.ID], c.Transfer)
	}
	return st
}

// Add counts a rated ride, charged amount at time at, in the state.
func (s *DayState) Add(amount int64, at time.Time, transfer bool) {
	s.Total += amount
	if !transfer && (!s.HaveFull || at.After(s.LastFull)) {
		s.LastFull, s.HaveFull = at, true
	}
}

// RateFrom rates the rest of a day's rides, those after the rides that
// made st (every one of them earlier than each of rides), as RateDay
// rates the whole day: RateDay(all) gives the later rides what
// RateFrom(StateOf(earlier), later) gives them. The ledger uses it to
// re-rate a day from its earliest new tap instead of from its first.
func (t *Table) RateFrom(st DayState, rides []Ride) []Charge {
	rs := slices.Clone(rides)
	slices.SortFunc(rs, func(a, b Ride) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	out := make([]Charge, len(rs))
	total, lastFull, haveFull := st.Total, st.LastFull, st.HaveFull
	for i, r := range rs {
		rules := t
		if r.Rules != nil {
			rules = r.Rules
		}
		c := Charge{ID: r.ID, Amount: r.Fare}
		if tr := rules.Transfer; tr != nil && haveFull && r.Time.Sub(lastFull) <= time.Duration(tr.Window) && tr.Fare < r.Fare {
			c.Amount, c.Transfer = tr.Fare, true
		} else {
			lastFull, haveFull = r.Time, true
		}
		if limit, ok := rules.DailyCap[r.Profile.String()]; ok && total+c.Amount > limit {
			c.Amount, c.Capped = max(limit-total, 0), true
		}
		total += c.Amount
		out[i] = c
	}
	return out
}
