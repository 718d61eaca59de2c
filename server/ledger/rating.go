package ledger

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/farego/farego/agent/fare"
)

// DefaultFareGrace is how long after a newer fare table came into force a
// tap may still be rated with the older table its validator used (a bus
// that was offline when the new table was published keeps charging the old
// one for a while), and how far a validator's clock may run behind when it
// names a table.
const DefaultFareGrace = 24 * time.Hour

// fareCatalog lists the stored fare tables: their versions and when each
// came into force (was stored). Tables never change once stored, so a
// catalogue is valid until a newer version is stored.
type fareCatalog struct {
	latest   uint64
	versions []catalogEntry // ascending by version (and so by since)
}

type catalogEntry struct {
	version uint64
	since   int64 // unix ns
	// claimable is from when a validator's claim to have used the table
	// is believed: since, or earlier for a table put back after a restore
	// (see restored_fare_tables).
	claimable int64
}

// loadCatalog returns the catalogue of the stored fare tables, read once
// per transaction (see readCatalog).
func (t *txn) loadCatalog() (*fareCatalog, error) {
	if t.catalog != nil {
		return t.catalog, nil
	}
	cached := t.s.catalog.Load()
	latest, read := t.fareVersion, t.fareVersionRead
	if !read {
		if err := t.tx.QueryRowContext(t.ctx, fareVersionQuery).Scan(&latest); err != nil {
			return nil, fmt.Errorf("ledger: read fare version: %w", err)
		}
		t.s.roundTrips.Add(1) // the fare_version counter
	}
	c, err := t.s.readCatalogAt(t.ctx, t.tx, latest)
	if err != nil {
		return nil, err
	}
	if c != cached {
		t.s.roundTrips.Add(1) // and the tables
	}
	t.catalog = c
	return c, nil
}

// readCatalog returns the catalogue of the stored fare tables through q
// (a transaction or the database), reading it again only when the
// fare_version counter says a newer table was stored (by this Store or
// another); ErrNoFareTable when none is stored.
func (s *Store) readCatalog(ctx context.Context, q queryer) (*fareCatalog, error) {
	var latest int64
	if err := q.QueryRowContext(ctx, fareVersionQuery).Scan(&latest); err != nil {
		return nil, fmt.Errorf("ledger: read fare version: %w", err)
	}
	return s.readCatalogAt(ctx, q, latest)
}

// fareVersionQuery reads the fare_version counter: the latest fare table
// stored.
const fareVersionQuery = `SELECT value FROM counters WHERE name = 'fare_version'`

// readCatalogAt is readCatalog with the fare_version counter read already
// (latest).
func (s *Store) readCatalogAt(ctx context.Context, q queryer, latest int64) (*fareCatalog, error) {
	if c := s.catalog.Load(); c != nil && c.latest == uint64(latest) {
		return c, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT f.version, f.created_ns, COALESCE(r.claimable_from_ns, f.created_ns)
		FROM fare_tables f LEFT JOIN restored_fare_tables r ON r.version = f.version ORDER BY f.version`)
	if err != nil {
		return nil, fmt.Errorf("ledger: read fare tables: %w", err)
	}
	c := &fareCatalog{latest: uint64(latest)}
	for rows.Next() {
		var v, since, claimable int64
		if err := rows.Scan(&v, &since, &claimable); err != nil {
			rows.Close()
			return nil, fmt.Errorf("ledger: read fare tables: %w", err)
		}
		c.versions = append(c.versions, catalogEntry{version: uint64(v), since: since, claimable: claimable})
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: read fare tables: %w", err)
	}
	if len(c.versions) == 0 {
		return nil, fmt.Errorf("%w: store one with PutFareTable before committing taps", ErrNoFareTable)
	}
	inOrder(c.versions)
	s.catalog.Store(c)
	return c, nil
}

// choose picks the fare table version that rates a tap made at "at" whose
// validator used version claimed:
//
//   - the claimed version, if the server has it and it was in force at the
//     tap's time give or take grace (came into force no later than at +
//     grace, and was replaced no earlier than at − grace); a table put
//     back after a restore counts as in force from its claimable time;
//   - otherwise the version in force at the tap's time: the latest one
//     stored before it, or the first one for a tap older than every
//     stored table. known is false then: the tap is noted
//     unknown_fare_version.
func (c *fareCatalog) choose(claimed uint64, at time.Time, grace time.Duration) (version uint64, known bool) {
	ns := at.UnixNano()
	i, found := slices.BinarySearchFunc(c.versions, claimed, func(e catalogEntry, v uint64) int {
		switch {
		case e.version < v:
			return -1
		case e.version > v:
			return 1
		}
		return 0
	})
	if found {
		e := c.versions[i]
		replaced := i+1 < len(c.versions) && c.versions[i+1].since < ns-int64(grace)
		if e.claimable <= ns+int64(grace) && !replaced {
			return e.version, true
		}
	}
	return c.inForce(at), false
}

// inOrder makes the times the fare tables came into force (ascending by
// version) ascending too: a table is in force no later than the one after
// it. A table is stored in force from the storing server's clock, and one
// stored while that clock ran ahead (an hour, say), then the next one
// after NTP set it back, were in force in the reverse order of their
// versions: the catalogue is searched by time (inForce) and a table is
// taken to last until the next version's time, so the settlement report
// summed the instants between the two twice (TestFareTableClockStepBack: a
// shop's payments of that hour paid out twice). The table stored ahead
// then comes into force when the next did, which is all the ledger can
// tell (a validator's claim of it is still believed from its own time,
// claimable).
func inOrder(versions []catalogEntry) {
	for i := len(versions) - 2; i >= 0; i-- {
		versions[i].since = min(versions[i].since, versions[i+1].since)
	}
}

// inForce returns the version in force at time at: the latest one stored
// before it, or the first one for a time older than every stored table.
func (c *fareCatalog) inForce(at time.Time) uint64 {
	return inForce(c.versions, at.UnixNano())
}

func inForce(versions []catalogEntry, ns int64) uint64 {
	return versions[inForceIndex(versions, ns)].version
}

// table returns the parsed fare table of a stored version.
func (t *txn) table(version uint64) (*fare.Table, error) {
	e, err := t.s.loadTable(t.ctx, t.tx, version)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, fmt.Errorf("ledger: fare table %d vanished", version)
	}
	return e.table, nil
}

// serviceDayAt returns the service day of the instant ns (unix ns): the
// day the fare table in force then gives it (fare.Table.ServiceDay), but
// never earlier than the day of the instant before that table came into
// force. A table that moves the day's start later (04:00 Berlin to 04:00
// UTC, say) coming into force between the two starts put the rides just
// after it on the day before the rides just before it: a ride 25 minutes
// after a full fare, on another day, was no transfer
// (TestFareChangeDayNeverBackwards). table returns a stored version's
// table.
func serviceDayAt(versions []catalogEntry, table func(uint64) (*fare.Table, error), ns int64) (string, error) {
	i := inForceIndex(versions, ns)
	tbl, err := table(versions[i].version)
	if err != nil {
		return "", err
	}
	day := tbl.ServiceDay(time.Unix(0, ns))
	// Three days after a change no zone or start can put an instant on
	// a day before the change's.
	if since := versions[i].since; ns >= since && ns-since < int64(72*time.Hour) && inForceIndex(versions, since-1) < i {
		before, err := serviceDayAt(versions, table, since-1)
		if err != nil {
			return "", err
		}
		day = max(day, before)
	}
	return day, nil
}

// ServiceDayAt returns the service day a tap at time at is put on
// (serviceDayAt, with the stored fare tables), or ErrNoFareTable: the
// console's "today" is the day the taps being made now are on, which
// the latest table alone does not say just after a change that moves the
// day's start later.
func (s *Store) ServiceDayAt(ctx context.Context, at time.Time) (string, error) {
	c, err := s.readCatalog(ctx, s.db)
	if err != nil {
		return "", err
	}
	return serviceDayAt(c.versions, s.storedTable(ctx), at.UnixNano())
}

// storedTable returns serviceDayAt's look-up of a stored fare table.
func (s *Store) storedTable(ctx context.Context) func(uint64) (*fare.Table, error) {
	return func(v uint64) (*fare.Table, error) {
		fe, err := s.loadTable(ctx, s.db, v)
		if err == nil && fe == nil {
			err = fmt.Errorf("%w: fare table %d", ErrNotFound, v)
		}
		if err != nil {
			return nil, err
		}
		return fe.table, nil
	}
}

// inForceIndex is the index in versions (by since) of the table in force
// at ns: the last stored at or before it, or the first if none was.
func inForceIndex(versions []catalogEntry, ns int64) int {
	j, _ := slices.BinarySearchFunc(versions, ns, func(e catalogEntry, ns int64) int {
		if e.since <= ns {
			return -1
		}
		return 1
	})
	return max(j-1, 0)
}

// rated is a stored, unflagged tap of a day being re-rated.
type rated struct {
	id               string
	account          uint64
	day              string
	at               int64
	profile, base    int64
	version          int64
	charge           int64
	transfer, capped bool
	postings         int64
}

// ratingWrites are the postings and the changes of stored taps a rating
// makes, written by writeRating.
type ratingWrites struct {
	postings *bulk
	taps     *bulk
}

// rate re-rates the account-days with their stored unflagged taps and the
// batch's new charged taps, and refunds the stored taps that lost their
// code. It sets the new taps' charges (stored with them) and returns the
// postings and the stored taps' changes; balances change in the locked
// accounts (written by finish).
func (t *txn) rate(days []dayKey, from map[dayKey]int64, work []tapWork, refunds []refund) (*ratingWrites, error) {
	rw := &ratingWrites{
		postings: newBulk(tBigint, tBigint, tText, tBigint, tText, tBigint, tBigint),
		taps:     newBulk(tText, tBigint, tBool, tBool, tBigint, tBigint),
	}
	if len(days) == 0 {
		return rw, nil
	}
	stored, states, err := t.readDays(days, from)
	if err != nil {
		return nil, err
	}
	post := func(a *acctState, tapID string, postings, amount int64, version uint64) {
		kind := KindFareCorrection
		if postings == 0 {
			kind = KindFare
		}
		a.postings++
		a.balance += amount
		a.dirty = true
		t.stat(statPostings, 1)
		t.stat(statBalance, amount)
		rw.postings.add(int64(a.id), a.postings, kind, amount, tapID, int64(version), t.now)
	}
	refunded := map[string]bool{}
	for _, r := range refunds {
		refunded[r.tapID] = true
		a := t.accounts[r.day.account]
		postings := r.postings
		if r.charge != 0 {
			post(a, r.tapID, postings, r.charge, 0)
			postings++
		}
		rw.taps.add(r.tapID, int64(0), false, false, postings, int64(0))
	}
	fresh := map[dayKey][]*tapWork{}
	for i := range work {
		if w := &work[i]; w.isNew && w.flag == "" {
			k := dayKey{w.tp.Account, w.day}
			fresh[k] = append(fresh[k], w)
		}
	}
	for _, k := range days {
		a := t.accounts[k.account]
		if a == nil {
			continue
		}
		var rides []fare.Ride
		old := map[string]*rated{}
		news := map[string]*tapWork{}
		var rules *fare.Table
		for i := range stored[k] {
			r := &stored[k][i]
			if refunded[r.id] {
				continue
			}
			tbl, err := t.table(uint64(r.version))
			if err != nil {
				return nil, err
			}
			rules = tbl
			rides = append(rides, fare.Ride{ID: r.id, Time: time.Unix(0, r.at), Profile: profileOf(r.profile), Fare: r.base, Rules: tbl})
			old[r.id] = r
		}
		for _, w := range fresh[k] {
			tbl, err := t.table(w.version)
			if err != nil {
				return nil, err
			}
			rules = tbl
			rides = append(rides, fare.Ride{ID: w.tp.ID, Time: w.tp.Time, Profile: w.tp.Profile, Fare: w.fare, Rules: tbl})
			news[w.tp.ID] = w
		}
		if len(rides) == 0 {
			continue
		}
		for _, c := range rules.RateFrom(states[k], rides) {
			if w := news[c.ID]; w != nil {
				w.charge, w.transfer, w.capped = c.Amount, c.Transfer, c.Capped
				if c.Amount != 0 {
					post(a, w.tp.ID, 0, -c.Amount, w.version)
					w.postings = 1
				}
				continue
			}
			r := old[c.ID]
			postings := r.postings
			if c.Amount != r.charge {
				post(a, r.id, postings, r.charge-c.Amount, uint64(r.version))
				postings++
			}
			if c.Amount != r.charge || c.Transfer != r.transfer || c.Capped != r.capped {
				rw.taps.add(r.id, c.Amount, c.Transfer, c.Capped, postings, r.version)
			}
		}
	}
	return rw, nil
}

// writeRating appends the rating's postings and updates the stored taps'
// charges, one statement each (per chunk).
func (t *txn) writeRating(rw *ratingWrites) error {
	err := t.bulkWrite("append postings", rw.postings, true, func(src string) string {
		return `INSERT INTO postings (account_id, seq, kind, amount, tap_id, fare_version, created_ns) ` + src
	})
	if err != nil {
		return err
	}
	// exact: the taps were read by this transaction, their accounts
	// locked.
	return t.bulkWrite("update tap charges", rw.taps, true, func(src string) string {
		return t.updateFrom("taps", "tap_id", []string{"charge", "transfer", "capped", "postings", "rated_version"}, src)
	})
}

// readDays reads the account-days to re-rate, each from the time its
// rating starts (from: the earliest tap of the day that is new in the
// batch or refunded): the unflagged taps at or after it, and the state
// the taps before it leave (fare.DayState: their charges' sum and the
// latest of them not charged the transfer fare). The stored taps' charges
// are their day's rating (an invariant: every commit re-rates what it
// changes), so the taps before are not rated again: a tap arriving in
// time order costs its own rating, not its day's. A tap's charge column
// equals minus the sum of its postings, so no postings are read. One
// statement per chunk.
func (t *txn) readDays(days []dayKey, from map[dayKey]int64) (map[dayKey][]rated, map[dayKey]fare.DayState, error) {
	out := map[dayKey][]rated{}
	states := map[dayKey]fare.DayState{}
	b := newBulk(tBigint, tText, tBigint)
	for _, k := range days {
		b.add(int64(k.account), k.day, from[k])
	}
	for _, c := range b.chunks(t.pg()) {
		q, args := t.daysQuery(c)
		rows, err := t.bulkQuery(q, args...)
		if err != nil {
			return nil, nil, fmt.Errorf("ledger: read service days: %w", err)
		}
		for rows.Next() {
			var r rated
			var kind, account int64
			if err := rows.Scan(&kind, &r.id, &account, &r.day, &r.at, &r.profile, &r.base, &r.version, &r.charge, &r.transfer,
				&r.capped, &r.postings); err != nil {
				rows.Close()
				return nil, nil, fmt.Errorf("ledger: read service days: %w", err)
			}
			r.account = uint64(account)
			k := dayKey{r.account, r.day}
			if kind == 1 { // the state before: total in charge, last full fare in at (if profile is 1)
				states[k] = fare.DayState{Total: r.charge, LastFull: time.Unix(0, r.at), HaveFull: r.profile == 1}
				continue
			}
			out[k] = append(out[k], r)
		}
		if err := rows.Close(); err != nil {
			return nil, nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, nil, fmt.Errorf("ledger: read service days: %w", err)
		}
	}
	return out, states, nil
}

// daysQuery is the read of readDays for the rows (account, day, from) of
// b: the unflagged taps of each account-day at or after from (kind 0),
// and one row (kind 1) with the state the taps before from leave: their
// charges' sum (as charge), the latest time of those not charged the
// transfer fare (as at_ns), and whether there is one (as profile, 1 or 0).
// On PostgreSQL one index scan per account-day for each part (lateral
// subqueries: see matching — it would otherwise hash the days and scan
// every tap of the ledger once it guesses that a batch's days hold a few
// per cent of its taps); on SQLite from the index taps_account_day alone,
// which holds every column read here (migration 0012;
// TestRatingReadsIndexOnly).
func (t *txn) daysQuery(b *bulk) (string, []any) {
	src, args := t.rows(b, 1)
	const cols = `t.tap_id, t.account_id, t.service_day, t.at_ns, t.profile, t.base_fare, t.rated_version, t.charge,
			t.transfer, t.capped, t.postings`
	const state = `CAST(COALESCE(SUM(t.charge), 0) AS BIGINT) AS charge,
			MAX(CASE WHEN t.transfer THEN NULL ELSE t.at_ns END) AS last_full`
	if t.pg() {
		return `WITH v (account_id, service_day, from_ns) AS (` + src + `)
			SELECT 0, ` + cols + ` FROM v CROSS JOIN LATERAL (SELECT * FROM taps
				WHERE taps.account_id = v.account_id AND taps.service_day = v.service_day AND taps.at_ns >= v.from_ns
					AND taps.flag = '' OFFSET 0) AS t
			UNION ALL
			SELECT 1, '', v.account_id, v.service_day, COALESCE(p.last_full, 0), CASE WHEN p.last_full IS NULL THEN 0 ELSE 1 END,
				0, 0, p.charge, FALSE, FALSE, 0
			FROM v CROSS JOIN LATERAL (SELECT ` + state + ` FROM taps AS t
				WHERE t.account_id = v.account_id AND t.service_day = v.service_day AND t.at_ns < v.from_ns
					AND t.flag = '') AS p`, args
	}
	// CROSS JOIN keeps v the outer loop: an index range per account-day.
	return `WITH v (account_id, service_day, from_ns) AS (` + src + `)
		SELECT 0, ` + cols + ` FROM v CROSS JOIN taps AS t
			ON t.account_id = v.account_id AND t.service_day = v.service_day AND t.at_ns >= v.from_ns
		WHERE t.flag = ''
		UNION ALL
		SELECT 1, '', p.account_id, p.service_day, COALESCE(p.last_full, 0), CASE WHEN p.last_full IS NULL THEN 0 ELSE 1 END,
			0, 0, p.charge, FALSE, FALSE, 0
		FROM (SELECT v.account_id, v.service_day, ` + state + `
			FROM v CROSS JOIN taps AS t ON t.account_id = v.account_id AND t.service_day = v.service_day
				AND t.at_ns < v.from_ns AND t.flag = ''
			GROUP BY v.account_id, v.service_day) AS p`, args
}
