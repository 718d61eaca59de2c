package console

import (
	"fmt"
	"slices"
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
}

// diffTables lists what a new fare table changes against the current one
// (nil: every entry of the new one is added).
func diffTables(cur, next *fare.Table) []fareChange {
	var out []fareChange
	add := func(what, o, n string) {
		switch {
		case o == n:
		case o == "":
			out = append(out, fareChange{What: what, New: n, Kind: "added"})
		case n == "":
			out = append(out, fareChange{What: what, Old: o, Kind: "removed"})
		default:
			out = append(out, fareChange{What: what, Old: o, New: n, Kind: "changed"})
		}
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
			add("fare "+r+" "+p, o, n)
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
