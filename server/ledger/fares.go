package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/record"
)

// tableCache keeps parsed fare tables by version. A stored version never
// changes (PutFareTable refuses to), so the cache is valid across Stores.
type tableCache struct {
	mu        sync.Mutex
	byVersion map[uint64]*fareEntry
}

type fareEntry struct {
	table *fare.Table
	body  string
}

func (c *tableCache) get(v uint64) *fareEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byVersion[v]
}

func (c *tableCache) put(v uint64, e *fareEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byVersion[v] = e
}

// queryer is what *sql.DB and *sql.Tx have in common for reads.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// loadTable returns the stored table of a version, or nil if there is none.
func (s *Store) loadTable(ctx context.Context, q queryer, version uint64) (*fareEntry, error) {
	if e := s.tables.get(version); e != nil {
		return e, nil
	}
	var body string
	err := q.QueryRowContext(ctx, `SELECT body FROM fare_tables WHERE version = $1`, int64(version)).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: read fare table %d: %w", version, err)
	}
	return s.cacheTable(version, body)
}

func (s *Store) cacheTable(version uint64, body string) (*fareEntry, error) {
	t, err := fare.Parse([]byte(body))
	if err != nil {
		return nil, fmt.Errorf("ledger: stored fare table %d: %w", version, err)
	}
	e := &fareEntry{table: t, body: body}
	s.tables.put(version, e)
	return e, nil
}

// latestVersion returns the highest stored fare table version (0: none).
func latestVersion(ctx context.Context, q queryer) (uint64, error) {
	var v int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM fare_tables`).Scan(&v); err != nil {
		return 0, fmt.Errorf("ledger: latest fare table: %w", err)
	}
	return uint64(v), nil
}

// CheckFareTable checks what PutFareTable asks of a parsed table beyond
// Parse's checks (the console asks before its confirmation): a version in
// range, route names as every other route name, a timezone named and not
// "Local", the ledger's currency.
func (s *Store) CheckFareTable(table *fare.Table) error {
	if table.Version > 1<<62 {
		return invalid("fare table version %d out of range", table.Version)
	}
	if err := table.CheckRouteNames(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if table.ZoneDefaulted() {
		return invalid("fare table names no timezone: name the zone whose wall clock the service day follows, like \"Europe/Berlin\" (\"UTC\" if that is meant)")
	}
	if table.LocalZone() {
		return invalid("fare table timezone %q is the zone of whichever machine reads the table: name the zone, like \"Europe/Berlin\"", table.TimeZone)
	}
	if table.Currency != s.currency {
		return invalid("fare table in %s: the ledger's accounts are in %s, and a fare table in another currency charges them nothing", table.Currency, s.currency)
	}
	return nil
}

// PutFareTable stores a fare table. Its version must be higher than every
// stored one; storing the very same table again is a no-op (so a retried
// publication succeeds), another table under a stored version is
// ErrFareVersion.
func (s *Store) PutFareTable(ctx context.Context, table *fare.Table) error {
	body, err := s.fareBody(table)
	if err != nil {
		return err
	}
	err = s.write(ctx, "put fare table", func(t *txn) error {
		latest, err := t.lockFareVersion()
		if err != nil {
			return err
		}
		if int64(table.Version) > latest {
			if err := t.checkFleetFareVersion(table.Version, latest); err != nil {
				return err
			}
		}
		_, err = t.storeFareTable(table.Version, body, latest)
		return err
	})
	if err != nil {
		return err
	}
	s.log.Info("ledger: fare table stored", logKeyVersion, table.Version)
	return nil
}

// checkFleetFareVersion refuses a new fare table of version v when an
// unrevoked validator reports a fare table of version v or above applied
// that the ledger (latest) does not hold: a table published after a
// restored backup and not given back to Restored. Validators take a table
// of the version they hold for the one they applied and refuse an older
// one, so the new table would never reach them, and their taps, naming the
// lost table, would be rated by this one. Only a restore (or a device's
// false report: revoke it) makes a device ahead of the ledger.
func (t *txn) checkFleetFareVersion(v uint64, latest int64) error {
	top, device, err := fleetVersion(t.ctx, t.tx, record.DocFares)
	if err != nil {
		return err
	}
	if top <= uint64(max(latest, 0)) || v > top {
		return nil
	}
	return fmt.Errorf("%w: validators hold fare table version %d (%s reports it), which this ledger does not: "+
		"published after the backup it was restored from? Give that table to `farego-settlement restored --fares`, "+
		"or publish this one as version %d or above (a validator keeps the table it applied over one of the same or an older version); "+
		"if no such table was ever published, the report is false: revoke %s",
		ErrFareVersion, top, device, top+1, device)
}

// lockFareVersion locks and returns the fare_version counter, the latest
// stored version: locking its row first serializes concurrent puts, and
// the reads after it see what a concurrent put committed.
func (t *txn) lockFareVersion() (int64, error) {
	var latest int64
	if err := t.queryRow(`SELECT value FROM counters WHERE name = 'fare_version'` + t.s.forUpdate()).Scan(&latest); err != nil {
		return 0, fmt.Errorf("ledger: lock fare version: %w", err)
	}
	return latest, nil
}

// storeFareTable stores body as fare table version, in force from now, and
// moves the fare_version counter (latest, locked by lockFareVersion) to it.
// The very same table stored already is no change (added false); another
// under its version, or a version not above latest, is ErrFareVersion.
func (t *txn) storeFareTable(version uint64, body string, latest int64) (added bool, err error) {
	var stored string
	err = t.queryRow(`SELECT body FROM fare_tables WHERE version = $1`, int64(version)).Scan(&stored)
	switch {
	case err == nil && stored == body:
		return false, nil
	case err == nil:
		return false, fmt.Errorf("%w: version %d is stored with other contents", ErrFareVersion, version)
	case !errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("ledger: read fare table: %w", err)
	}
	if int64(version) <= latest {
		return false, fmt.Errorf("%w: version %d is not above the latest stored, %d", ErrFareVersion, version, latest)
	}
	if _, err := t.exec("move fare version", `UPDATE counters SET value = $1 WHERE name = 'fare_version'`, int64(version)); err != nil {
		return false, err
	}
	_, err = t.exec("store fare table", `INSERT INTO fare_tables (version, body, created_ns) VALUES ($1, $2, $3)`,
		int64(version), body, t.now)
	return err == nil, err
}

// fareBody checks a fare table as publishing it does (CheckFareTable) and
// returns the form it is stored in.
func (s *Store) fareBody(table *fare.Table) (string, error) {
	if table == nil {
		return "", invalid("nil fare table")
	}
	data, err := table.Marshal()
	if err != nil {
		return "", invalid("fare table: %v", err)
	}
	// Re-parse: the stored form must be one that loads (a Table built by
	// hand skips Parse's checks).
	if _, err := fare.Parse(data); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := s.CheckFareTable(table); err != nil {
		return "", err
	}
	return string(data), nil
}

// FareTable returns the stored fare table of a version, or ErrNotFound.
func (s *Store) FareTable(ctx context.Context, version uint64) (*fare.Table, error) {
	if version > 1<<62 {
		return nil, fmt.Errorf("%w: fare table %d", ErrNotFound, version)
	}
	e, err := s.loadTable(ctx, s.db, version)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, fmt.Errorf("%w: fare table %d", ErrNotFound, version)
	}
	// A fresh copy: the cached one is shared by the rating code.
	return fare.Parse([]byte(e.body))
}

// LatestFareTableShared returns the version of the stored fare table with
// the highest version and the table as the ledger caches it, or
// ErrNoFareTable. The table is shared (with the rating code and every other
// caller): it must not be changed. LatestFareTable parses a fresh copy, as
// costly as the table is long (tens of milliseconds for a large one): a
// request anyone may send (GET /v1/fares) or any rider (a credential) must
// not make the server pay that each time.
func (s *Store) LatestFareTableShared(ctx context.Context) (uint64, *fare.Table, error) {
	v, err := latestVersion(ctx, s.db)
	if err != nil {
		return 0, nil, err
	}
	if v == 0 {
		return 0, nil, ErrNoFareTable
	}
	e, err := s.loadTable(ctx, s.db, v)
	if err != nil {
		return 0, nil, err
	}
	if e == nil {
		return 0, nil, fmt.Errorf("%w: fare table %d", ErrNotFound, v)
	}
	return v, e.table, nil
}

// LatestFareTable returns the stored fare table with the highest version,
// or ErrNoFareTable.
func (s *Store) LatestFareTable(ctx context.Context) (*fare.Table, error) {
	v, err := latestVersion(ctx, s.db)
	if err != nil {
		return nil, err
	}
	if v == 0 {
		return nil, ErrNoFareTable
	}
	return s.FareTable(ctx, v)
}

// FleetVersion returns the highest version of a device document (kind: a
// record.Doc*) that a validator not revoked reports applied, and that
// validator's id (0 and "" when none reports one).
func (s *Store) FleetVersion(ctx context.Context, kind string) (uint64, string, error) {
	var top uint64
	var device string
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		top, device, err = fleetVersion(ctx, tx, kind)
		return err
	})
	return top, device, err
}

func fleetVersion(ctx context.Context, tx *sql.Tx, kind string) (top uint64, device string, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, versions FROM devices WHERE revoked_ns = 0 AND versions LIKE $1 ORDER BY id`,
		`%"`+kind+`"%`)
	if err != nil {
		return 0, "", fmt.Errorf("ledger: read the fleet's %s versions: %w", kind, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, doc string
		if err := rows.Scan(&id, &doc); err != nil {
			return 0, "", fmt.Errorf("ledger: read the fleet's %s versions: %w", kind, err)
		}
		var vs map[string]uint64
		if json.Unmarshal([]byte(doc), &vs) != nil {
			continue
		}
		if f := vs[kind]; f > top {
			top, device = f, id
		}
	}
	if err := rows.Err(); err != nil {
		return 0, "", fmt.Errorf("ledger: read the fleet's %s versions: %w", kind, err)
	}
	return top, device, nil
}
