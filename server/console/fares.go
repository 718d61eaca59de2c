package console

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/driver/feedback"
)

// fareChange is one difference between the current fare table and a new
// one.
type fareChange struct {
	What     string // "fare X1 adult", "daily cap child", "time zone", …
	Old, New string // "" when absent
	Kind     string // added, removed, changed
	// Warn is why the new value deserves a second look ("" for none): a
	// fare many times what it was, or above its profile's daily cap (a
	// slip of a digit, 2.50 → 25000.00, was shown as a plain row).
	Warn string
}

// diffTables lists what a new fare table changes against the current one
// (nil: every entry of the new one is added).
func diffTables(cur, next *fare.Table) []fareChange {
	var out []fareChange
	// add lists a change and returns it (nil: o and n are the same).
	add := func(what, o, n string) *fareChange {
		switch {
		case o == n:
			return nil
		case o == "":
			out = append(out, fareChange{What: what, New: n, Kind: "added"})
		case n == "":
			out = append(out, fareChange{What: what, Old: o, Kind: "removed"})
		default:
			out = append(out, fareChange{What: what, Old: o, New: n, Kind: "changed"})
		}
		return &out[len(out)-1]
	}
	if cur == nil {
		cur = &fare.Table{}
	}
	ver := func(v uint64) string {
		if v == 0 {
			return ""
		}
		return fmt.Sprint(v)
	}
	amount := func(t *fare.Table) func(int64) string {
		return func(v int64) string { return feedback.FormatNumber(v, t.Currency) }
	}
	oldAmount, newAmount := amount(cur), amount(next)
	add("version", ver(cur.Version), ver(next.Version))
	add("currency", cur.Currency, next.Currency)
	add("time zone", cur.TimeZone, next.TimeZone)
	add("service day starts", cur.ServiceDayStart, next.ServiceDayStart)
	// The routes the table serves: a validator assigned a route a table
	// lists none of refuses every tap (route_not_in_fares), so a list
	// added or shortened is a change the operator must see.
	if c := add("routes served", routeList(cur.Routes), routeList(next.Routes)); c != nil {
		if gone := dropped(cur, next); len(gone) > 0 {
			c.Warn = "validators on " + strings.Join(gone, ", ") + " go out of service"
		}
	}
	var routes []string
	for r := range cur.Fares {
		routes = append(routes, r)
	}
	for r := range next.Fares {
		if _, ok := cur.Fares[r]; !ok {
			routes = append(routes, r)
		}
	}
	slices.Sort(routes)
	for _, r := range routes {
		for _, p := range profiles {
			o, n := "", ""
			if v, ok := cur.Fares[r][p]; ok {
				o = oldAmount(v)
			}
			if v, ok := next.Fares[r][p]; ok {
				n = newAmount(v)
			}
			if c := add("fare "+r+" "+p, o, n); c != nil && n != "" {
				c.Warn = fareWarning(cur.Fares[r][p], next.Fares[r][p], o != "", next, p, newAmount)
			}
		}
	}
	transfer := func(t *fare.Transfer, amount func(int64) string) (string, string) {
		if t == nil {
			return "", ""
		}
		return time.Duration(t.Window).String(), amount(t.Fare)
	}
	ow, of := transfer(cur.Transfer, oldAmount)
	nw, nf := transfer(next.Transfer, newAmount)
	add("transfer window", ow, nw)
	add("transfer fare", of, nf)
	for _, p := range profiles {
		o, n := "", ""
		if v, ok := cur.DailyCap[p]; ok {
			o = oldAmount(v)
		}
		if v, ok := next.DailyCap[p]; ok {
			n = newAmount(v)
		}
		add("daily cap "+p, o, n)
	}
	return out
}

// routeList is a table's route list as the preview shows it ("" when it
// lists none: every route is served).
func routeList(routes []string) string {
	rs := slices.Clone(routes)
	slices.Sort(rs)
	return strings.Join(slices.Compact(rs), ", ")
}

// dropped names what next serves no longer of what cur served: the routes
// cur lists (or has fares for, when it lists none) that next does not
// cover, or "every route it does not list" when next starts a list.
func dropped(cur, next *fare.Table) []string {
	if len(next.Routes) == 0 {
		return nil
	}
	known := cur.Routes
	if len(known) == 0 {
		known = nil
		for r := range cur.Fares {
			if r != fare.DefaultRoute {
				known = append(known, r)
			}
		}
	}
	var out []string
	for _, r := range known {
		if !next.Covers(r) {
			out = append(out, "route "+r)
		}
	}
	slices.Sort(out)
	if len(cur.Routes) == 0 {
		out = append(out, "every other route it does not list")
	}
	return out
}

// fareWarning says why a new fare v (before: was, if had) of profile p in
// table next deserves a second look, or "".
func fareWarning(was, v int64, had bool, next *fare.Table, p string, amount func(int64) string) string {
	if limit, ok := next.DailyCap[p]; ok && v > limit {
		return "above the daily cap of " + amount(limit)
	}
	switch {
	case had && was > 0 && v >= 3*was:
		return fmt.Sprintf("%.1f times the fare before", float64(v)/float64(was))
	case had && v > 0 && was >= 3*v:
		return fmt.Sprintf("%.0f %% of the fare before", 100*float64(v)/float64(was))
	}
	return ""
}
