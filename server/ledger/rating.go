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
	c, err := t.s.readCatalog(t.ctx, t.tx)
	if err != nil {
		return nil, err
	}
	t.s.roundTrips.Add(1) // the fare_version counter
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
	if err := q.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'fare_version'`).Scan(&latest); err != nil {
		return nil, fmt.Errorf("ledger: read fare version: %w", err)
	}
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
