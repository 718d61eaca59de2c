package fare

import (
	"slices"
	"strings"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// Ride is one accepted tap as the rating sees it.
type Ride struct {
	ID      string // tap id, "device/seq": breaks ties between equal times
	Time    time.Time
	Profile paycode.Profile
	Fare    int64 // base fare, as the validator computed it
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
// costs its base fare, or the transfer fare when it starts within the
// transfer window after the last ride that paid its base fare; then the
// running total is held to the daily cap of the first ride's profile.
func (t *Table) RateDay(rides []Ride) []Charge {
	rs := slices.Clone(rides)
	slices.SortFunc(rs, func(a, b Ride) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	out := make([]Charge, len(rs))
	var total int64
	var lastFull time.Time
	haveFull := false
	for i, r := range rs {
		c := Charge{ID: r.ID, Amount: r.Fare}
		if t.Transfer != nil && haveFull && r.Time.Sub(lastFull) <= time.Duration(t.Transfer.Window) && t.Transfer.Fare < r.Fare {
			c.Amount, c.Transfer = t.Transfer.Fare, true
		} else {
			lastFull, haveFull = r.Time, true
		}
		if limit, ok := t.DailyCap[rs[0].Profile.String()]; ok && total+c.Amount > limit {
			c.Amount, c.Capped = max(limit-total, 0), true
		}
		total += c.Amount
		out[i] = c
	}
	return out
}
