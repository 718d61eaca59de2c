package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/farego/farego/agent/record"
)

// MaxAssignmentHistory is how many assignments per device the ledger keeps
// (the newest).
const MaxAssignmentHistory = 100

// NoteRouteMismatch is noted on a tap whose route is not the one the
// operator had assigned its device at the tap's time (the newest
// assignment made at or before it, the tap's device time taken to the
// server's clock: AssignmentHistory.At). The tap is rated and charged by its
// own route all the same — the rider was shown that fare — and the
// operator sees the note: the onboard computer changed the route locally,
// or the device was offline when the assignment was made and took taps
// on its old route until it connected.
const NoteRouteMismatch = "route_mismatch"

// Assignment is a route and vehicle the operator assigned a device.
type Assignment struct {
	DeviceID string
	Version  uint64 // 1, 2, … per device
	Route    string
	Vehicle  string
	At       time.Time // when it was made (server clock)
	By       string    // who made it (the API token's name)
}

// AssignDevice records a new assignment of a registered device and
// returns it with its version (one above the device's last). ErrNotFound
// for an unknown device, ErrInvalid for a bad route or vehicle.
func (s *Store) AssignDevice(ctx context.Context, id, route, vehicle, by string) (Assignment, error) {
	a := Assignment{DeviceID: id, Route: route, Vehicle: vehicle, By: by}
	if err := validDeviceID(id); err != nil {
		return a, invalid("%v", err)
	}
	if err := record.CheckNewAssignment(route, vehicle); err != nil { // the fare table's rule for a route
		return a, invalid("%v", err)
	}
	if err := checkText("by", by, maxLongName, false); err != nil {
		return a, invalid("%v", err)
	}
	err := s.write(ctx, "assign device", func(t *txn) error {
		var n int64
		if err := t.queryRow(`SELECT COUNT(*) FROM devices WHERE id = $1`, id).Scan(&n); err != nil {
			return fmt.Errorf("ledger: read device: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("%w: device %q", ErrNotFound, id)
		}
		// Past the device's stored assignments, and past any a restore
		// lost (Restored keeps a floor): a validator refuses a version not
		// above the one it applied.
		var last, floor int64
		if err := t.queryRow(`SELECT COALESCE(MAX(version), 0) FROM device_assignments WHERE device_id = $1`, id).Scan(&last); err != nil {
			return fmt.Errorf("ledger: read assignments: %w", err)
		}
		if err := t.queryRow(`SELECT COALESCE(MAX(CAST(value AS BIGINT)), 0) FROM ledger_settings WHERE name = 'assignment_floor'`).Scan(&floor); err != nil {
			return fmt.Errorf("ledger: read the assignment floor: %w", err)
		}
		a.Version, a.At = uint64(max(last, floor))+1, time.Unix(0, t.now)
		if _, err := t.exec("store assignment", `INSERT INTO device_assignments (device_id, version, route, vehicle, at_ns, by_who)
			VALUES ($1, $2, $3, $4, $5, $6)`, id, int64(a.Version), route, vehicle, t.now, by); err != nil {
			return err
		}
		// The newest MaxAssignmentHistory are kept (versions jump at a
		// restore: counted, not by number).
		_, err := t.exec("trim assignments", `DELETE FROM device_assignments WHERE device_id = $1 AND version < (
			SELECT MIN(version) FROM (SELECT version FROM device_assignments WHERE device_id = $1 ORDER BY version DESC LIMIT $2) AS newest)`,
			id, MaxAssignmentHistory)
		return err
	})
	return a, err
}

// AssignmentHistory is what a device's taps' routes are checked against:
// its assignments and its clock's offset from the server's.
type AssignmentHistory struct {
	Assignments []Assignment // newest first
	// ClockOffset is the device's clock minus the server's when its last
	// status arrived (Device.ClockOffset; 0 before its first).
	ClockOffset time.Duration
}

// At returns the assignment in force when the device's clock read t: at
// server time t - ClockOffset (see AssignmentAt). The offset is the one
// the device's last status reported, the best the server knows of its
// clock at any earlier tap.
//
// The offset is the device's word: a stolen validator reported +2 h just
// before a batch and 0 just after, which put its taps before every
// assignment (never noted route_mismatch) and left nothing in its status.
// It is taken only up to MaxAssignmentClockOffset either way.
func (h AssignmentHistory) At(t time.Time) (Assignment, bool) {
	off := min(max(h.ClockOffset, -MaxAssignmentClockOffset), MaxAssignmentClockOffset)
	return AssignmentAt(h.Assignments, t.Add(-off))
}

// MaxAssignmentClockOffset bounds the clock offset a device's taps are
// moved by to find their assignment (AssignmentHistory.At). A validator
// further off than its max_clock_offset (30 s) takes no taps.
const MaxAssignmentClockOffset = 10 * time.Minute

// DeviceAssignments returns a device's assignments, newest first (at most
// MaxAssignmentHistory; none for a device never assigned).
func (s *Store) DeviceAssignments(ctx context.Context, id string) ([]Assignment, error) {
	m, err := s.DevicesAssignments(ctx, []string{id})
	return m[id].Assignments, err
}

// DevicesAssignments returns the assignments of several devices (as
// DeviceAssignments does for one) and their clock offsets, with one query
// (on SQLite, one per chunk of ids a statement may hold): the server reads
// those of every device in a coalesced commit at once. A device never
// assigned is not in the map; an id given twice is read once. The query
// takes a few forms whatever the number of ids (see matching), so each is
// prepared once per connection, and on PostgreSQL is an index lookup per
// device.
func (s *Store) DevicesAssignments(ctx context.Context, ids []string) (map[string]AssignmentHistory, error) {
	out := map[string]AssignmentHistory{}
	if len(ids) == 0 {
		return out, nil
	}
	seen := map[string]bool{}
	b := newBulk(tText)
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			b.add(id)
		}
	}
	pg := s.backend == backendPostgres
	err := s.read(ctx, func(tx *sql.Tx) error {
		for _, c := range b.chunks(pg) {
			from, where, args := matching(pg, c, "device_assignments", "a", "device_id")
			rows, err := tx.QueryContext(ctx, `SELECT a.device_id, a.version, a.route, a.vehicle, a.at_ns, a.by_who, d.clock_offset_ns
				FROM `+from+` JOIN devices d ON d.id = a.device_id
				WHERE `+where+` ORDER BY a.device_id, a.version DESC`, args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var a Assignment
				var version, at, offset int64
				if err := rows.Scan(&a.DeviceID, &version, &a.Route, &a.Vehicle, &at, &a.By, &offset); err != nil {
					rows.Close()
					return err
				}
				a.Version, a.At = uint64(version), time.Unix(0, at)
				h := out[a.DeviceID]
				h.Assignments, h.ClockOffset = append(h.Assignments, a), time.Duration(offset)
				out[a.DeviceID] = h
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: read assignments: %w", err)
	}
	return out, nil
}

// AssignmentAt returns the assignment in force at t in history (newest
// first, as DeviceAssignments returns it): the newest made at or before t.
func AssignmentAt(history []Assignment, t time.Time) (Assignment, bool) {
	for _, a := range history {
		if !a.At.After(t) {
			return a, true
		}
	}
	return Assignment{}, false
}
