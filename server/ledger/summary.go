package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// The console's summaries: revenue by service day and route, and the
// settlement lag by ten-minute slot of commit time. Summing ten million
// taps on every page load would take seconds, so RefreshSummaries keeps
// them in tables (console_days, console_lag) and the pages read those.
//
// A day's revenue changes when a tap of that day is committed: its own
// charge, and the re-rating of its account's day, which is the same
// service day. RefreshSummaries finds the days of the taps committed since
// it last ran (by commit time, through the taps_committed index) and sums
// each such day again from its taps (found through the taps_day index).
// A commit's time is taken when its transaction starts, so a transaction
// may become visible a little after later ones: every run looks
// SummaryGrace back.

// LagBounds are the upper bounds of the settlement-lag histogram's buckets;
// one more bucket holds longer lags.
var LagBounds = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute,
	time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour, 48 * time.Hour, 7 * 24 * time.Hour,
}

const (
	// LagSlot is the width of a settlement-lag slot.
	LagSlot = 10 * time.Minute
	// SummaryGrace is how far back RefreshSummaries looks for commits that
	// became visible late.
	SummaryGrace = 2 * time.Minute
	// SummaryDays is how many service days back the first refresh sums.
	SummaryDays = 62
	// lagBackfill is how far back the first refresh sums the lag.
	lagBackfill = 48 * time.Hour
	// lagKeep is how long lag slots are kept.
	lagKeep = 31 * 24 * time.Hour
)

// summaryState is what RefreshSummaries remembers between runs.
type summaryState struct {
	mu sync.Mutex // one refresh at a time per Store
	// wm is the days watermark the last run left, and older the number
	// of taps it saw committed within SummaryGrace at or before it.
	wm, older int64
	// lag is what the last lag summary read: unchanged, nothing is written.
	lag lagRead
}

// lagRead identifies what one lag summary read: how many taps, the first
// and last commit times, and the first slot not closed.
type lagRead struct {
	taps, first, last, next int64
}

// DaySummary is the revenue of one route on one service day. Amounts are
// in minor units of the fare tables' currency.
type DaySummary struct {
	Day, Route string
	Taps       int64 // all taps, flagged ones included
	Flagged    int64 // flagged taps (charged nothing)
	BaseTotal  int64 // base fares of the charged taps
	Charged    int64 // what they cost after transfers and the daily cap
	Transfers  int64 // taps charged the transfer fare
	// TransferSavings is what riders saved by transfers, CapSavings by the
	// daily cap (BaseTotal = Charged + TransferSavings + CapSavings).
	TransferSavings int64
	Capped          int64 // taps reduced by the daily cap
	CapSavings      int64
	// Corrected counts taps whose charge changed after their first
	// posting (a late tap re-rated their day, a duplicate code or a void
	// gave it back); Corrections is the revenue those changes made
	// (negative: refunds).
	Corrected, Corrections int64
	Computed               time.Time
}

// Add adds x's counts and amounts to d's (its day, route and computed
// time stay d's).
func (d *DaySummary) Add(x DaySummary) {
	d.Taps += x.Taps
	d.Flagged += x.Flagged
	d.BaseTotal += x.BaseTotal
	d.Charged += x.Charged
	d.Transfers += x.Transfers
	d.TransferSavings += x.TransferSavings
	d.Capped += x.Capped
	d.CapSavings += x.CapSavings
	d.Corrected += x.Corrected
	d.Corrections += x.Corrections
}

// RevenueTotals are day summaries summed by day, by route and in all.
type RevenueTotals struct {
	Days     []DaySummary // by day (Route empty)
	Routes   []DaySummary // by route name (Day empty)
	Total    DaySummary
	Computed time.Time // the newest summary's
}

// Totals sums what Revenue returns (by day, then route) by day, by route
// and in all.
func Totals(sums []DaySummary) RevenueTotals {
	var t RevenueTotals
	routes := map[string]*DaySummary{}
	for _, x := range sums {
		if n := len(t.Days); n == 0 || t.Days[n-1].Day != x.Day {
			t.Days = append(t.Days, DaySummary{Day: x.Day})
		}
		t.Days[len(t.Days)-1].Add(x)
		if routes[x.Route] == nil {
			routes[x.Route] = &DaySummary{Route: x.Route}
		}
		routes[x.Route].Add(x)
		t.Total.Add(x)
		if x.Computed.After(t.Computed) {
			t.Computed = x.Computed
		}
	}
	for _, r := range routes {
		t.Routes = append(t.Routes, *r)
	}
	slices.SortFunc(t.Routes, func(a, b DaySummary) int { return strings.Compare(a.Route, b.Route) })
	return t
}

// LagSummary is the settlement lag of the taps committed in one slot.
type LagSummary struct {
	Start    time.Time
	Taps     int64
	Sum, Max time.Duration
	Buckets  []int64 // counts per LagBounds bucket, and one more
	Computed time.Time
}

// Quantile returns the upper bound of the bucket holding the q-quantile
// (0 < q ≤ 1) of the slots' lags together (the slot's maximum for the last
// bucket), or 0 without taps.
func Quantile(slots []LagSummary, q float64) time.Duration {
	var total int64
	counts := make([]int64, len(LagBounds)+1)
	var maxLag time.Duration
	for _, s := range slots {
		total += s.Taps
		maxLag = max(maxLag, s.Max)
		for i, c := range s.Buckets {
			if i < len(counts) {
				counts[i] += c
			}
		}
	}
	if total == 0 {
		return 0
	}
	rank := int64(q*float64(total) + 0.999999)
	var cum int64
	for i, c := range counts {
		cum += c
		if cum >= rank {
			if i < len(LagBounds) {
				return min(LagBounds[i], maxLag)
			}
			return maxLag
		}
	}
	return maxLag
}

// summaryLockKey is the first half of the PostgreSQL advisory lock that
// serializes the instances' writes of the summaries (as migrationLockKey
// does migrations); the second half is a hash of the current schema.
const summaryLockKey = 0x73756d73 // "sums"

// RefreshStats says what a RefreshSummaries run did.
type RefreshStats struct {
	Days  int // service days summed again
	Slots int // lag slots summed again
}

// RefreshSummaries brings the console's summaries up to date (see above).
// It reads everything it sums in one read transaction (one snapshot of
// the ledger) and writes the days and the lag slots in one write
// transaction, so a page that reads both (Summaries) sees them agree: a
// tap counted in its day's revenue is counted in its settlement lag slot.
// Several settlement instances may run it on one ledger: each run sums
// from the ledger itself, so they agree, and their writes take turns.
func (s *Store) RefreshSummaries(ctx context.Context) (RefreshStats, error) {
	s.summary.mu.Lock()
	defer s.summary.mu.Unlock()
	var days dirty
	var sums [][]DaySummary // one per day of days.list, by route
	var lag lagSums
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if days, err = s.dirtyDays(ctx, tx); err != nil {
			return err
		}
		for _, d := range days.list {
			sum, err := s.sumDay(ctx, tx, d)
			if err != nil {
				return err
			}
			sums = append(sums, sum)
		}
		lag, err = s.readLag(ctx, tx)
		return err
	})
	if err != nil {
		return RefreshStats{}, err
	}
	storeLag := lag.read != s.summary.lag // unchanged since the last run: nothing to write
	storeWM := days.wm != s.summary.wm || len(days.list) > 0
	if len(days.list) > 0 || storeWM || storeLag {
		err := s.write(ctx, "store summaries", func(t *txn) error {
			// Another instance storing its summaries at once: each drops
			// a day's rows and inserts them again, and neither saw the
			// other's uncommitted rows, so the second insert failed on the
			// key and its run was lost (logged every few seconds with three
			// instances). In turn, each delete sees the rows committed
			// before.
			if err := t.xactLock("take summaries lock", summaryLockKey); err != nil {
				return err
			}
			for i, day := range days.list {
				if err := t.storeDay(day, sums[i]); err != nil {
					return err
				}
			}
			for day, at := range days.stale {
				// Summed from a snapshot that holds the change of this
				// mark; a later commit's mark stays for the next run.
				if _, err := t.exec("clear stale day", `DELETE FROM console_stale_days WHERE service_day = $1 AND mark <= $2`,
					day, at); err != nil {
					return err
				}
			}
			if storeWM {
				if err := t.setSummaryState("days_wm", days.wm); err != nil {
					return err
				}
			}
			if storeLag {
				return t.storeLag(lag)
			}
			return nil
		})
		if err != nil {
			return RefreshStats{}, err
		}
	}
	s.summary.wm, s.summary.older = days.wm, days.older
	s.summary.lag = lag.read
	st := RefreshStats{Days: len(days.list)}
	if storeLag {
		st.Slots = len(lag.slots)
	}
	return st, nil
}

type dirty struct {
	list      []string
	wm, older int64
	// stale are the marks of console_stale_days read: day → mark.
	stale map[string]int64
}

// dirtyDays returns the service days whose taps changed since the last
// run, and the new watermark.
func (s *Store) dirtyDays(ctx context.Context, tx *sql.Tx) (dirty, error) {
	var d dirty
	err := func() error {
		var wm int64
		err := tx.QueryRowContext(ctx, `SELECT value FROM console_state WHERE name = 'days_wm'`).Scan(&wm)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("ledger: read summary state: %w", err)
		}
		if wm == 0 {
			// The first run: every day of the last SummaryDays (the
			// service day is local; a day's margin covers the time zones).
			cutoff := s.now().AddDate(0, 0, -SummaryDays-1).UTC().Format("2006-01-02")
			rows, err := tx.QueryContext(ctx, `SELECT DISTINCT service_day FROM taps WHERE service_day >= $1 ORDER BY service_day`, cutoff)
			if err != nil {
				return fmt.Errorf("ledger: read service days: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				var day string
				if err := rows.Scan(&day); err != nil {
					return err
				}
				d.list = append(d.list, day)
			}
			if err := rows.Err(); err != nil {
				return err
			}
			var hi sql.NullInt64
			if err := tx.QueryRowContext(ctx, `SELECT MAX(committed_ns) FROM taps`).Scan(&hi); err != nil {
				return fmt.Errorf("ledger: read summary watermark: %w", err)
			}
			d.wm = max(hi.Int64, 1)
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM taps WHERE committed_ns > $1`,
				d.wm-int64(SummaryGrace)).Scan(&d.older); err != nil {
				return fmt.Errorf("ledger: read recent taps: %w", err)
			}
			return nil
		}
		// From the watermark, or from now if the clock is behind it: a
		// server clock stepped back (NTP) commits taps below the
		// watermark until it catches up, and a clock that ran ahead for a
		// while left the watermark there. Those commits are older than
		// the watermark and were never summed: a day's revenue on the
		// console stayed short until a tap of that day came after the
		// clock passed the watermark again (TestSummariesClockStepBack).
		from := min(wm, s.now().UnixNano()) - int64(SummaryGrace)
		rows, err := tx.QueryContext(ctx, `SELECT service_day, committed_ns FROM taps WHERE committed_ns > $1`, from)
		if err != nil {
			return fmt.Errorf("ledger: read recent taps: %w", err)
		}
		defer rows.Close()
		type recent struct {
			day string
			at  int64
		}
		var seen []recent
		d.wm = wm
		var older int64
		newer, all := map[string]bool{}, map[string]bool{}
		for rows.Next() {
			var r recent
			if err := rows.Scan(&r.day, &r.at); err != nil {
				return err
			}
			seen = append(seen, r)
			all[r.day] = true
			if r.at > wm {
				newer[r.day] = true
				d.wm = max(d.wm, r.at)
			} else {
				older++
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		pick := newer
		if wm != s.summary.wm || older != s.summary.older || from != wm-int64(SummaryGrace) {
			// Not the state this Store left (a restart, another
			// instance), commits that became visible late, or a clock
			// behind the watermark: every day in the window.
			pick = all
		}
		for day := range pick {
			d.list = append(d.list, day)
		}
		stale, err := tx.QueryContext(ctx, `SELECT service_day, mark FROM console_stale_days`)
		if err != nil {
			return fmt.Errorf("ledger: read stale days: %w", err)
		}
		defer stale.Close()
		for stale.Next() {
			var day string
			var at int64
			if err := stale.Scan(&day, &at); err != nil {
				return err
			}
			if d.stale == nil {
				d.stale = map[string]int64{}
			}
			d.stale[day] = at
			if !pick[day] {
				d.list = append(d.list, day)
			}
		}
		if err := stale.Err(); err != nil {
			return err
		}
		for _, r := range seen {
			if r.at > d.wm-int64(SummaryGrace) {
				d.older++ // what the next run compares
			}
		}
		return nil
	}()
	return d, err
}

func (t *txn) setSummaryState(name string, v int64) error {
	_, err := t.exec("summary state", `INSERT INTO console_state (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, v)
	return err
}

// dayCorrectionsQuery sums a service day's fare corrections by route:
// the day's corrected taps (postings > 1, read as the day's other sums
// are), each one's correction postings looked up by tap through the
// partial index postings_correction (migration 27). A join let the
// planner read the other way round: every posting (PostgreSQL, and
// SQLite before the index) or every correction of the ledger (SQLite), for
// every day summed, and today's is summed on every refresh (a scale
// review). A tap with postings > 1 has a correction: the routes are those
// of the join.
const dayCorrectionsQuery = `SELECT t.route, CAST(COALESCE(SUM((SELECT SUM(p.amount) FROM postings p
		WHERE p.tap_id = t.tap_id AND p.kind = 'fare_correction')), 0) AS BIGINT)
	FROM taps t WHERE t.service_day = $1 AND t.postings > 1 GROUP BY t.route`

// sumDay sums one service day's taps by route, in the read transaction.
func (s *Store) sumDay(ctx context.Context, tx *sql.Tx, day string) ([]DaySummary, error) {
	type group struct {
		route, flag            string
		transfer, capped       bool
		version                int64
		taps, base, charge, pc int64
	}
	var groups []group
	corrections := map[string]int64{}
	err := func() error {
		rows, err := tx.QueryContext(ctx, `SELECT route, flag, transfer, capped, rated_version, COUNT(*), SUM(base_fare),
				SUM(charge), SUM(CASE WHEN postings > 1 THEN 1 ELSE 0 END)
			FROM taps WHERE service_day = $1 GROUP BY route, flag, transfer, capped, rated_version`, day)
		if err != nil {
			return fmt.Errorf("ledger: sum service day %s: %w", day, err)
		}
		defer rows.Close()
		for rows.Next() {
			var g group
			if err := rows.Scan(&g.route, &g.flag, &g.transfer, &g.capped, &g.version, &g.taps, &g.base, &g.charge, &g.pc); err != nil {
				return fmt.Errorf("ledger: sum service day %s: %w", day, err)
			}
			groups = append(groups, g)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		crows, err := tx.QueryContext(ctx, dayCorrectionsQuery, day)
		if err != nil {
			return fmt.Errorf("ledger: sum corrections of %s: %w", day, err)
		}
		defer crows.Close()
		for crows.Next() {
			var route string
			var amount int64
			if err := crows.Scan(&route, &amount); err != nil {
				return err
			}
			corrections[route] = -amount // a correction posting's amount is the rider's side
		}
		return crows.Err()
	}()
	if err != nil {
		return nil, err
	}
	byRoute := map[string]*DaySummary{}
	var order []string
	for _, g := range groups {
		d := byRoute[g.route]
		if d == nil {
			d = &DaySummary{Day: day, Route: g.route, Corrections: corrections[g.route]}
			byRoute[g.route] = d
			order = append(order, g.route)
		}
		d.Taps += g.taps
		// A flagged tap with a correction was charged, then given back
		// (duplicate_code, voided): counted with its correction.
		d.Corrected += g.pc
		if g.flag != "" {
			d.Flagged += g.taps
			continue
		}
		d.BaseTotal += g.base
		d.Charged += g.charge
		switch {
		case g.transfer:
			// Every tap of the group paid the transfer fare of its table
			// (cheaper than its base fare) before the cap.
			tf, err := s.transferFare(ctx, tx, g.version)
			if err != nil {
				return nil, err
			}
			d.Transfers += g.taps
			d.TransferSavings += g.base - g.taps*tf
			if g.capped {
				d.Capped += g.taps
				d.CapSavings += g.taps*tf - g.charge
			}
		case g.capped:
			d.Capped += g.taps
			d.CapSavings += g.base - g.charge
		}
	}
	out := make([]DaySummary, len(order))
	for i, r := range order {
		out[i] = *byRoute[r]
	}
	return out, nil
}

// storeDay replaces a service day's summary rows.
func (t *txn) storeDay(day string, sums []DaySummary) error {
	if _, err := t.exec("drop day summary", `DELETE FROM console_days WHERE service_day = $1`, day); err != nil {
		return err
	}
	for _, d := range sums {
		if _, err := t.exec("store day summary", `INSERT INTO console_days (service_day, route, taps, flagged, base_total,
				charge_total, transfers, transfer_savings, capped, cap_savings, corrected, corrections, computed_ns)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			d.Day, d.Route, d.Taps, d.Flagged, d.BaseTotal, d.Charged, d.Transfers, d.TransferSavings, d.Capped,
			d.CapSavings, d.Corrected, d.Corrections, t.now); err != nil {
			return err
		}
	}
	return nil
}

// transferFare is the transfer fare of a stored fare table (0 without a
// transfer rule).
func (s *Store) transferFare(ctx context.Context, q queryer, version int64) (int64, error) {
	e, err := s.loadTable(ctx, q, uint64(version))
	if err != nil {
		return 0, err
	}
	if e == nil || e.table.Transfer == nil {
		return 0, nil
	}
	return e.table.Transfer.Fare, nil
}

// lagSums is what readLag summed: the slots since the first one not yet
// closed (a slot closes SummaryGrace after its end).
type lagSums struct {
	from  int64 // the first slot summed
	slots map[int64]*LagSummary
	read  lagRead
}

// readLag sums the settlement lag of every slot since the first one not
// yet closed, in the read transaction.
func (s *Store) readLag(ctx context.Context, tx *sql.Tx) (lagSums, error) {
	var from int64
	err := tx.QueryRowContext(ctx, `SELECT value FROM console_state WHERE name = 'lag_wm'`).Scan(&from)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return lagSums{}, fmt.Errorf("ledger: read summary state: %w", err)
	}
	now := s.now().UnixNano()
	slot := int64(LagSlot)
	if from == 0 {
		from = now - int64(lagBackfill)
	}
	from -= from % slot
	slots := map[int64]*LagSummary{}
	var read lagRead
	rows, err := tx.QueryContext(ctx, `SELECT committed_ns, committed_ns - at_ns FROM taps WHERE committed_ns >= $1`, from)
	if err != nil {
		return lagSums{}, fmt.Errorf("ledger: read lag: %w", err)
	}
	for rows.Next() {
		var committed, ns int64
		if err := rows.Scan(&committed, &ns); err != nil {
			rows.Close()
			return lagSums{}, fmt.Errorf("ledger: read lag: %w", err)
		}
		if read.taps == 0 || committed < read.first {
			read.first = committed
		}
		read.taps++
		read.last = max(read.last, committed)
		start := committed - committed%slot
		sum := slots[start]
		if sum == nil {
			sum = &LagSummary{Buckets: make([]int64, len(LagBounds)+1)}
			slots[start] = sum
		}
		lag := time.Duration(max(ns, 0))
		sum.Taps++
		sum.Sum += lag
		sum.Max = max(sum.Max, lag)
		i := 0
		for i < len(LagBounds) && lag > LagBounds[i] {
			i++
		}
		sum.Buckets[i]++
	}
	if err := rows.Close(); err != nil {
		return lagSums{}, err
	}
	if err := rows.Err(); err != nil {
		return lagSums{}, fmt.Errorf("ledger: read lag: %w", err)
	}
	next := from // the first slot not closed
	for next+slot+int64(SummaryGrace) < now {
		next += slot
	}
	read.next = next
	return lagSums{from: from, slots: slots, read: read}, nil
}

// storeLag replaces the lag slots from l.from on (and drops those past
// lagKeep), and moves the lag watermark to the first slot not closed.
func (t *txn) storeLag(l lagSums) error {
	if _, err := t.exec("drop lag slots", `DELETE FROM console_lag WHERE slot_ns >= $1 OR slot_ns < $2`,
		l.from, t.now-int64(lagKeep)); err != nil {
		return err
	}
	for start, sum := range l.slots {
		buckets, _ := json.Marshal(sum.Buckets)
		if _, err := t.exec("store lag slot", `INSERT INTO console_lag (slot_ns, taps, lag_sum_ms, lag_max_ms, buckets, computed_ns)
			VALUES ($1, $2, $3, $4, $5, $6)`,
			start, sum.Taps, sum.Sum.Milliseconds(), sum.Max.Milliseconds(), string(buckets), t.now); err != nil {
			return err
		}
	}
	return t.setSummaryState("lag_wm", l.read.next)
}

// Revenue returns the day summaries of the service days from..to
// (inclusive, "YYYY-MM-DD"), by day and route.
func (s *Store) Revenue(ctx context.Context, from, to string) ([]DaySummary, error) {
	return revenue(ctx, s.db, from, to)
}

// Summaries returns what Revenue(from, to) and Lag(since) return, read in
// one transaction: the two agree (see RefreshSummaries). With from "" it
// reads the lag alone.
func (s *Store) Summaries(ctx context.Context, from, to string, since time.Time) (days []DaySummary, lag []LagSummary, err error) {
	err = s.read(ctx, func(tx *sql.Tx) error {
		if from != "" {
			if days, err = revenue(ctx, tx, from, to); err != nil {
				return err
			}
		}
		lag, err = lagSlots(ctx, tx, since)
		return err
	})
	return days, lag, err
}

func revenue(ctx context.Context, q queryer, from, to string) ([]DaySummary, error) {
	rows, err := q.QueryContext(ctx, `SELECT service_day, route, taps, flagged, base_total, charge_total, transfers,
			transfer_savings, capped, cap_savings, corrected, corrections, computed_ns
		FROM console_days WHERE service_day >= $1 AND service_day <= $2 ORDER BY service_day, route`, from, to)
	if err != nil {
		return nil, fmt.Errorf("ledger: read revenue: %w", err)
	}
	defer rows.Close()
	var out []DaySummary
	for rows.Next() {
		var d DaySummary
		var computed int64
		if err := rows.Scan(&d.Day, &d.Route, &d.Taps, &d.Flagged, &d.BaseTotal, &d.Charged, &d.Transfers,
			&d.TransferSavings, &d.Capped, &d.CapSavings, &d.Corrected, &d.Corrections, &computed); err != nil {
			return nil, fmt.Errorf("ledger: read revenue: %w", err)
		}
		d.Computed = fromNS(computed)
		out = append(out, d)
	}
	return out, rows.Err()
}

// Lag returns the settlement-lag slots that start at or after since,
// oldest first.
func (s *Store) Lag(ctx context.Context, since time.Time) ([]LagSummary, error) {
	return lagSlots(ctx, s.db, since)
}

func lagSlots(ctx context.Context, q queryer, since time.Time) ([]LagSummary, error) {
	rows, err := q.QueryContext(ctx, `SELECT slot_ns, taps, lag_sum_ms, lag_max_ms, buckets, computed_ns FROM console_lag
		WHERE slot_ns >= $1 ORDER BY slot_ns`, since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("ledger: read lag: %w", err)
	}
	defer rows.Close()
	var out []LagSummary
	for rows.Next() {
		var l LagSummary
		var start, sum, maxMS, computed int64
		var buckets string
		if err := rows.Scan(&start, &l.Taps, &sum, &maxMS, &buckets, &computed); err != nil {
			return nil, fmt.Errorf("ledger: read lag: %w", err)
		}
		if err := json.Unmarshal([]byte(buckets), &l.Buckets); err != nil {
			return nil, fmt.Errorf("ledger: lag slot buckets: %w", err)
		}
		l.Start, l.Sum, l.Max, l.Computed = fromNS(start), time.Duration(sum)*time.Millisecond,
			time.Duration(maxMS)*time.Millisecond, fromNS(computed)
		out = append(out, l)
	}
	return out, rows.Err()
}

// markStaleDays has the console sum days again whose summaries change
// with no tap of them committed (a refund, a void): console_stale_days.
// One mark a call, that only grows (a counter, not a count per row, which
// began again at 1 once the row was removed, so that another instance's
// summary could remove a mark it had not summed), written once a day.
func (t *txn) markStaleDays(days []string) error {
	mark, err := t.nextID("stale_mark")
	if err != nil {
		return err
	}
	marked := map[string]bool{}
	for _, day := range days {
		if marked[day] {
			continue
		}
		marked[day] = true
		if _, err := t.exec("mark stale day", `INSERT INTO console_stale_days (service_day, mark) VALUES ($1, $2)
			ON CONFLICT (service_day) DO UPDATE SET mark = excluded.mark`, day, mark); err != nil {
			return err
		}
	}
	return nil
}
