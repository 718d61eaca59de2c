package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// MaxSettlementDays bounds the service days of one settlement report (a
// quarter): each day is two indexed reads (two more for each change of
// fare table in it).
const MaxSettlementDays = 92

// MerchantDay is what one merchant took online, and gave back, on one
// service day.
type MerchantDay struct {
	Day        string // the service day, YYYY-MM-DD
	MerchantID string
	Payments   int64 // the payments made on the day
	Paid       int64 // their amounts in all, minor units
	// Refunds are the refunds made on the day, of payments of any day (a
	// refund counts on the day it gave the money back); Refunded is what
	// they gave back.
	Refunds  int64
	Refunded int64
}

// Net is what the merchant is owed for the day: paid less refunded
// (negative when the day's refunds gave back more than it took).
func (m MerchantDay) Net() int64 { return m.Paid - m.Refunded }

// Settlement is what merchants took and gave back over a range of service
// days.
type Settlement struct {
	From, To string // the service days, inclusive
	// TimeZone and DayStart are the latest fare table's (fare.Table's
	// TimeZone and ServiceDayStart): with those of the tables before it,
	// each while it was in force, they decide the service day of a payment
	// or refund by its time, as the console's money page decides its
	// days. Without a fare table, days are UTC dates from 00:00.
	TimeZone, DayStart string
	// Days are the merchants' days with a payment or a refund, by day,
	// then merchant.
	Days []MerchantDay
}

// settlementQuery sums a table's (payments' or refunds') rows of one
// service day by merchant: created_ns from $1, before $2; all merchants,
// or one ($3). It reads the day's rows through the table's created_ns
// index (payments_time, refunds_time; migration 28), which holds what is
// summed. SQLite is told so (INDEXED BY): left to choose, it read the
// whole table through its merchant_id index, whose order the GROUP BY
// wants, rather than sort one day's rows.
func (s *Store) settlementQuery(table string, oneMerchant bool) string {
	q := `SELECT merchant_id, COUNT(*), CAST(SUM(amount) AS BIGINT) FROM ` + table
	if s.backend == backendSQLite {
		q += ` INDEXED BY ` + table + `_time`
	}
	q += ` WHERE created_ns >= $1 AND created_ns < $2`
	if oneMerchant {
		q += ` AND merchant_id = $3`
	}
	return q + ` GROUP BY merchant_id`
}

// MerchantSettlement sums, per service day from from to to (YYYY-MM-DD,
// inclusive, at most MaxSettlementDays) and per merchant (all, or
// merchant if not ""), the online payments made and the refunds made:
// what the operator pays each shop out. A payment or refund is on the
// service day its creation time (server time) falls in, by the ServiceDay
// of the fare table in force then, as a tap's (the console's money page's
// days). A bad range is ErrInvalid.
func (s *Store) MerchantSettlement(ctx context.Context, from, to, merchant string) (Settlement, error) {
	first, last, err := SettlementRange(from, to)
	if err != nil {
		return Settlement{}, invalid("settlement: %v", err)
	}
	if err := checkText("merchant id", merchant, maxName, false); err != nil {
		return Settlement{}, invalid("settlement: %v", err)
	}
	out := Settlement{From: from, To: to, TimeZone: "UTC", DayStart: "00:00"}
	_, tbl, err := s.LatestFareTableShared(ctx)
	switch {
	case err == nil:
		out.TimeZone, out.DayStart = tbl.TimeZone, tbl.ServiceDayStart
	case !errors.Is(err, ErrNoFareTable):
		return Settlement{}, err
	}
	rules, err := s.dayRules(ctx, first.Add(-72*time.Hour).UnixNano(), last.Add(24*time.Hour+72*time.Hour).UnixNano())
	if err != nil {
		return Settlement{}, err
	}
	var days []string
	var spans [][][2]int64 // spans[i] are days[i]'s instants, [from, until)
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		days = append(days, d.Format(time.DateOnly))
		spans = append(spans, serviceDaySpans(rules, d))
	}
	args := func(span [2]int64) []any {
		if merchant != "" {
			return []any{span[0], span[1], merchant}
		}
		return []any{span[0], span[1]}
	}
	payments, refunds := s.settlementQuery("payments", merchant != ""), s.settlementQuery("refunds", merchant != "")
	err = s.read(ctx, func(tx *sql.Tx) error {
		out.Days = out.Days[:0]
		for i, day := range days {
			byMerchant := map[string]*MerchantDay{}
			at := func(m string) *MerchantDay {
				if byMerchant[m] == nil {
					byMerchant[m] = &MerchantDay{Day: day, MerchantID: m}
				}
				return byMerchant[m]
			}
			for _, span := range spans[i] {
				if err := sumByMerchant(ctx, tx, payments, args(span), func(m string, n, sum int64) {
					at(m).Payments += n
					at(m).Paid += sum
				}); err != nil {
					return err
				}
				if err := sumByMerchant(ctx, tx, refunds, args(span), func(m string, n, sum int64) {
					at(m).Refunds += n
					at(m).Refunded += sum
				}); err != nil {
					return err
				}
			}
			start := len(out.Days)
			for _, m := range byMerchant {
				out.Days = append(out.Days, *m)
			}
			slices.SortFunc(out.Days[start:], func(a, b MerchantDay) int { return strings.Compare(a.MerchantID, b.MerchantID) })
		}
		return nil
	})
	if err != nil {
		return Settlement{}, err
	}
	return out, nil
}

// SettlementRange parses a settlement report's range of service days
// (YYYY-MM-DD, inclusive): an error saying what is wrong (for the one who
// asked) unless from is a date no later than to and the range holds at
// most MaxSettlementDays.
func SettlementRange(from, to string) (first, last time.Time, err error) {
	first, err = time.Parse(time.DateOnly, from)
	if err != nil {
		return first, last, fmt.Errorf("from must be a date YYYY-MM-DD, got %q", from)
	}
	last, err = time.Parse(time.DateOnly, to)
	if err != nil {
		return first, last, fmt.Errorf("to must be a date YYYY-MM-DD, got %q", to)
	}
	if last.Before(first) {
		return first, last, fmt.Errorf("to %s is before from %s", to, from)
	}
	// A ledger's times are Unix nanoseconds (1678 to 2262): a day
	// outside them has no bounds to read between.
	if first.Year() < 1970 || last.Year() > 2200 {
		return first, last, fmt.Errorf("%s to %s: service days from 1970 to 2200 only", from, to)
	}
	if n := int(last.Sub(first)/(24*time.Hour)) + 1; n > MaxSettlementDays {
		return first, last, fmt.Errorf("%s to %s is %d service days; at most %d at a time", from, to, n, MaxSettlementDays)
	}
	return first, last, nil
}

// dayRule is a fare table's service days (fare.Table.ServiceDay) while
// it is in force: from since (unix ns; the first table's, from always)
// until the next rule's.
type dayRule struct {
	since int64
	dayOf func(time.Time) string
}

// dayRules returns the rules of the fare tables in force at some instant
// from lo to hi (unix ns), by when they came into force, as the taps'
// service days take them (fareCatalog.inForce); without a fare table, one
// rule: UTC dates from 00:00.
func (s *Store) dayRules(ctx context.Context, lo, hi int64) ([]dayRule, error) {
	c, err := s.readCatalog(ctx, s.db)
	if errors.Is(err, ErrNoFareTable) {
		return []dayRule{{dayOf: func(at time.Time) string { return at.UTC().Format(time.DateOnly) }}}, nil
	}
	if err != nil {
		return nil, err
	}
	all := c.versions
	var rules []dayRule
	for i, e := range all {
		if (i+1 < len(all) && all[i+1].since <= lo) || (i > 0 && e.since > hi) {
			continue // not in force from lo to hi
		}
		fe, err := s.loadTable(ctx, s.db, e.version)
		if err != nil {
			return nil, err
		}
		if fe == nil {
			return nil, fmt.Errorf("%w: fare table %d", ErrNotFound, e.version)
		}
		dayOf := fe.table.ServiceDay
		if i > 0 {
			// Never a day before the instant's before the table came
			// into force, as a tap's (serviceDayAt).
			floor, err := serviceDayAt(all, s.storedTable(ctx), e.since-1)
			if err != nil {
				return nil, err
			}
			tbl := fe.table
			dayOf = func(at time.Time) string { return max(tbl.ServiceDay(at), floor) }
		}
		rules = append(rules, dayRule{since: e.since, dayOf: dayOf})
	}
	return rules, nil
}

// serviceDaySpans returns the instants of the service day of date (a UTC
// midnight), as ranges [from, until) of unix ns: each fare table decides
// the service day of the instants while it is in force, as for taps
// (fareCatalog.inForce). So a table stored later (a new zone or day
// start) moves no instant already past to another day: a report made
// before it and one made after count each payment once. A day is one
// range, or more around a change of table.
func serviceDaySpans(rules []dayRule, date time.Time) [][2]int64 {
	var out [][2]int64
	for i, r := range rules {
		from, until := int64(math.MinInt64), int64(math.MaxInt64)
		if i > 0 {
			from = r.since
		}
		if i+1 < len(rules) {
			until = rules[i+1].since
		}
		from, until = max(from, dayStart(r.dayOf, date)), min(until, dayStart(r.dayOf, date.AddDate(0, 0, 1)))
		if from < until {
			out = append(out, [2]int64{from, until})
		}
	}
	return out
}

// dayStart returns the first instant (unix ns) of the service day of
// date (a UTC midnight), by dayOf (fare.Table.ServiceDay), which never
// gives a later instant an earlier day: the service day's start is found
// by bisection, so that it is the one dayOf decides (daylight saving,
// ServiceDayStart and all). Three days either side of the date hold the
// start of its service day in every zone.
func dayStart(dayOf func(time.Time) string, date time.Time) int64 {
	want := date.Format(time.DateOnly)
	lo, hi := date.Add(-72*time.Hour).UnixNano(), date.Add(72*time.Hour).UnixNano() // dayOf(lo) < want <= dayOf(hi)
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if dayOf(time.Unix(0, mid)) < want {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// sumByMerchant runs a settlementQuery and hands each merchant's count and
// sum to add.
func sumByMerchant(ctx context.Context, tx *sql.Tx, query string, args []any, add func(merchant string, n, sum int64)) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("ledger: read settlement: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m string
		var n, sum int64
		if err := rows.Scan(&m, &n, &sum); err != nil {
			return fmt.Errorf("ledger: read settlement: %w", err)
		}
		add(m, n, sum)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ledger: read settlement: %w", err)
	}
	return nil
}

// Merchants returns each merchant's days summed (Day ""), by merchant.
func (st Settlement) Merchants() []MerchantDay {
	at := map[string]int{} // merchant: index in out
	var out []MerchantDay
	for _, d := range st.Days {
		i, ok := at[d.MerchantID]
		if !ok {
			i = len(out)
			at[d.MerchantID] = i
			out = append(out, MerchantDay{MerchantID: d.MerchantID})
		}
		out[i].add(d)
	}
	slices.SortFunc(out, func(a, b MerchantDay) int { return strings.Compare(a.MerchantID, b.MerchantID) })
	return out
}

// Total returns every merchant's days summed (Day and MerchantID "").
func (st Settlement) Total() MerchantDay {
	var t MerchantDay
	for _, d := range st.Days {
		t.add(d)
	}
	return t
}

func (m *MerchantDay) add(d MerchantDay) {
	m.Payments += d.Payments
	m.Paid += d.Paid
	m.Refunds += d.Refunds
	m.Refunded += d.Refunded
}
