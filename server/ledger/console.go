package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/farego/farego/agent/fare"
	"slices"
	"strings"
	"time"
)

// What the operator's console (server/console) reads: a device's taps and
// status history, flagged and noted taps, records kept aside by reason, and
// the fleet with the route each device last served. Every read here is one
// indexed query (migration 0008), cheap on a ledger of millions of taps.

// Device history events.
const (
	EventOnline       = "online"         // the device said it is online
	EventOffline      = "offline"        // the device (or its last will) said it is offline
	EventOutOfService = "out_of_service" // the device refuses taps (DeviceStatus.OutOfService says why)
	EventInService    = "in_service"     // back in service
	EventUpdated      = "updated"        // new software or document versions
	EventUpdateFailed = "update_failed"  // the device reported a newly failed software update (DeviceStatus.Update)
	EventRegistered   = "registered"     // registered (or its broker credential renewed)
	EventReplaced     = "replaced"       // registered again with another key, or after a revocation
	EventRevoked      = "revoked"
	EventClock        = "clock" // the reported clock offset moved by more than ClockJump
)

// ClockJump is how far a device's reported clock offset may move between
// two statuses without a history entry (EventClock): a stolen validator
// reported a large offset for one batch and 0 again right after.
const ClockJump = 10 * time.Second

// MaxStatusHistory is how many history entries of its own statuses the
// ledger keeps per device. Kept besides, whatever the device sends: the
// operator's entries (registered, replaced, revoked) and the clock entry
// with the largest offset. A stolen validator could otherwise push the
// trace of its own lie (a clock offset of hours, which hid its taps'
// route_mismatch) out of the history by sending statuses that each made
// an entry (a review: 599 in 10 s).
const MaxStatusHistory = 50

// operatorEvents are the history entries the operator's actions make; a
// device's statuses never push them out.
const operatorEvents = `('` + EventRegistered + `', '` + EventReplaced + `', '` + EventRevoked + `')`

// DeviceEvent is one entry of a device's status history: what changed, and
// the device's status right after.
type DeviceEvent struct {
	At           time.Time // server time
	Event        string    // Event* constant
	Online       bool
	OutOfService string
	QueueDepth   int
	OldestUnsent time.Duration
	ClockOffset  time.Duration
	Software     string
	Versions     map[string]uint64
}

// prevStatus is what statusBefore read of a device before a status update.
type prevStatus struct {
	known        bool // a status was recorded before
	online       bool
	outOfService string
	software     string
	versions     string
	updateFailed string
	lastSeen     int64 // the recorded status's time, by the device's clock (unix ns; 0: none)
	written      int64 // when the device wrote the recorded status, by its clock (unix ns; 0: not known)
	clockOffset  int64 // the recorded clock offset (ns)
}

// statusBefore reads the device's recorded status, before an update.
func (t *txn) statusBefore(id string) (prevStatus, error) {
	var p prevStatus
	var statusAt int64
	err := t.queryRow(`SELECT online, out_of_service, software, versions, update_failed, status_ns, last_seen_ns, written_ns, clock_offset_ns
		FROM devices WHERE id = $1`, id).
		Scan(&p.online, &p.outOfService, &p.software, &p.versions, &p.updateFailed, &statusAt, &p.lastSeen, &p.written, &p.clockOffset)
	if errors.Is(err, sql.ErrNoRows) {
		return p, nil // UpdateDeviceStatus reports the unknown device
	}
	if err != nil {
		return p, fmt.Errorf("ledger: read device status: %w", err)
	}
	p.known = statusAt != 0
	return p, nil
}

// noteStatusChange records a history entry when a status update changed
// the device's state (online, in service), its software or versions, or
// reported a newly failed update.
func (t *txn) noteStatusChange(id string, p prevStatus, st DeviceStatus, versions string, offset int64) error {
	event := ""
	switch {
	case !p.known || p.online != st.Online:
		event = EventOffline
		if st.Online {
			event = EventOnline
		}
	case p.outOfService != st.OutOfService:
		event = EventInService
		if st.OutOfService != "" {
			event = EventOutOfService
		}
	case p.updateFailed != st.Update.Failed && st.Update.Failed != "":
		event = EventUpdateFailed
	case p.software != st.Software || p.versions != versions:
		event = EventUpdated
	case st.Online && time.Duration(offset-p.clockOffset).Abs() > ClockJump:
		event = EventClock
	default:
		return nil
	}
	return t.deviceEvent(id, event)
}

// deviceEvent appends a history entry with the device's current row and
// drops its entries beyond the newest MaxStatusHistory.
func (t *txn) deviceEvent(id, event string) error {
	if _, err := t.exec("record device event", `INSERT INTO device_status_history (device_id, at_ns, event, online,
			out_of_service, queue_depth, oldest_unsent_ns, clock_offset_ns, software, versions)
		SELECT id, $1, $2, online, out_of_service, queue_depth, oldest_unsent_ns, clock_offset_ns, software, versions
		FROM devices WHERE id = $3
		ON CONFLICT (device_id, at_ns) DO NOTHING`, t.now, event, id); err != nil {
		return err
	}
	_, err := t.exec("trim device history", `DELETE FROM device_status_history WHERE device_id = $1
		AND event NOT IN `+operatorEvents+` AND at_ns <
		(SELECT at_ns FROM device_status_history WHERE device_id = $1 AND event NOT IN `+operatorEvents+`
		 ORDER BY at_ns DESC LIMIT 1 OFFSET $2)
		AND at_ns <> COALESCE((SELECT at_ns FROM device_status_history WHERE device_id = $1 AND event = $3
		 ORDER BY ABS(clock_offset_ns) DESC, at_ns DESC LIMIT 1), -1)`,
		id, MaxStatusHistory-1, EventClock)
	return err
}

// DeviceHistory returns a device's status history, newest first: the
// newest MaxStatusHistory entries of its statuses, and the entries kept
// besides (see MaxStatusHistory), at most 2 × MaxStatusHistory in all.
func (s *Store) DeviceHistory(ctx context.Context, id string) ([]DeviceEvent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT at_ns, event, online, out_of_service, queue_depth, oldest_unsent_ns,
			clock_offset_ns, software, versions
		FROM device_status_history WHERE device_id = $1 ORDER BY at_ns DESC LIMIT $2`, id, 2*MaxStatusHistory)
	if err != nil {
		return nil, fmt.Errorf("ledger: read device history: %w", err)
	}
	defer rows.Close()
	var out []DeviceEvent
	for rows.Next() {
		var e DeviceEvent
		var at, depth, oldest, offset int64
		var versions string
		if err := rows.Scan(&at, &e.Event, &e.Online, &e.OutOfService, &depth, &oldest, &offset, &e.Software, &versions); err != nil {
			return nil, fmt.Errorf("ledger: read device history: %w", err)
		}
		e.At, e.QueueDepth, e.OldestUnsent, e.ClockOffset = fromNS(at), int(depth), time.Duration(oldest), time.Duration(offset)
		if versions != "" && versions != "{}" && versions != "null" {
			if err := json.Unmarshal([]byte(versions), &e.Versions); err != nil {
				return nil, fmt.Errorf("ledger: device %s history versions: %w", id, err)
			}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// FleetDevice is a device with the route and vehicle of its last tap.
type FleetDevice struct {
	Device
	Route, Vehicle string    // of its newest tap ("" before its first)
	LastTap        time.Time // the newest tap's time (the device's clock)
}

// DeviceRoute is a device and the route it serves.
type DeviceRoute struct {
	Device, Route string
}

// DevicesLeftOut returns the devices (not revoked) on a route the fare
// table t does not serve — the route last assigned them if they have not
// applied it yet (newer than the assignment their status reports), else
// the one they report in their status (set at the device after they
// applied an assignment, it stands), else the route last assigned them,
// else that of their last tap — in the fleet's order: they refuse
// every tap (route_not_in_fares) once they apply t. None when t lists no
// routes (it serves every route).
func (s *Store) DevicesLeftOut(ctx context.Context, t *fare.Table) ([]DeviceRoute, error) {
	if len(t.Routes) == 0 {
		return nil, nil
	}
	ds, err := s.Fleet(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.ID
	}
	assigned, err := s.DevicesAssignments(ctx, ids)
	if err != nil {
		return nil, err
	}
	var left []DeviceRoute
	for _, d := range ds {
		route := d.Route
		if d.Status.Route != "" {
			route = d.Status.Route
		}
		if as := assigned[d.ID].Assignments; len(as) > 0 && (d.Status.Route == "" || as[0].Version > d.Status.ServerVersion) {
			route = as[0].Route
		}
		if d.Revoked.IsZero() && route != "" && !t.Covers(route) {
			left = append(left, DeviceRoute{Device: d.ID, Route: route})
		}
	}
	return left, nil
}

// Fleet returns every registered device with the route and vehicle of its
// newest tap, by id.
func (s *Store) Fleet(ctx context.Context) ([]FleetDevice, error) {
	cols := strings.ReplaceAll(deviceColumns, "\n", " ")
	var qualified []string
	for _, c := range strings.Split(cols, ",") {
		qualified = append(qualified, "d."+strings.TrimSpace(c))
	}
	// Index-only through taps_device_time: the newest tap time per
	// device, then its route and vehicle (two taps of one device at the
	// same nanosecond give two rows: the first is kept).
	rows, err := s.db.QueryContext(ctx, `SELECT `+strings.Join(qualified, ", ")+`, l.route, l.vehicle, l.at_ns
		FROM devices d LEFT JOIN taps l ON l.device_id = d.id AND l.at_ns = (
			SELECT MAX(t.at_ns) FROM taps t WHERE t.device_id = d.id)
		ORDER BY d.id, l.route, l.vehicle`)
	if err != nil {
		return nil, fmt.Errorf("ledger: read fleet: %w", err)
	}
	defer rows.Close()
	var out []FleetDevice
	for rows.Next() {
		var f FleetDevice
		var route, vehicle sql.NullString
		var last sql.NullInt64
		d, err := scanDevice(scanPrefix{rows, []any{&route, &vehicle, &last}})
		if err != nil {
			return nil, fmt.Errorf("ledger: read fleet: %w", err)
		}
		if n := len(out); n > 0 && out[n-1].ID == d.ID {
			continue
		}
		f.Device, f.Route, f.Vehicle = d, route.String, vehicle.String
		if last.Valid {
			f.LastTap = time.Unix(0, last.Int64).UTC()
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// scanPrefix scans a row whose first columns are another scanner's and
// whose last are extra.
type scanPrefix struct {
	r     rowScanner
	extra []any
}

func (p scanPrefix) Scan(dest ...any) error { return p.r.Scan(append(dest, p.extra...)...) }

// TapRow is a tap as the console lists it: a ride with its account.
type TapRow struct {
	Ride
	Account uint64
}

const tapRowColumns = `tap_id, device_id, at_ns, service_day, route, vehicle, profile, base_fare, claimed_fare, charge,
	transfer, capped, flag, notes, fare_version, rated_version, code_hash, committed_ns, account_id`

func (s *Store) tapRows(ctx context.Context, what, query string, args ...any) ([]TapRow, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: read %s: %w", what, err)
	}
	defer rows.Close()
	var out []TapRow
	for rows.Next() {
		var r TapRow
		var at, profile, fv, rv, committed, account int64
		var notes string
		if err := rows.Scan(&r.TapID, &r.DeviceID, &at, &r.ServiceDay, &r.Route, &r.Vehicle, &profile, &r.BaseFare,
			&r.ClaimedFare, &r.Charge, &r.Transfer, &r.Capped, &r.Flag, &notes, &fv, &rv, &r.CodeHash, &committed,
			&account); err != nil {
			return nil, fmt.Errorf("ledger: read %s: %w", what, err)
		}
		r.Time, r.Profile, r.FareVersion, r.RatedVersion = time.Unix(0, at).UTC(), profileOf(profile), uint64(fv), uint64(rv)
		r.CommittedAt, r.Notes, r.Account = fromNS(committed), splitNotes(notes), uint64(account)
		out = append(out, r)
	}
	return out, rows.Err()
}

// DeviceTaps returns a device's newest taps (by tap time), at most limit
// (limit <= 0 or above MaxListLimit: MaxListLimit).
func (s *Store) DeviceTaps(ctx context.Context, device string, limit int) ([]TapRow, error) {
	return s.tapRows(ctx, "device taps", `SELECT `+tapRowColumns+` FROM taps WHERE device_id = $1
		ORDER BY at_ns DESC LIMIT $2`, device, listLimit(limit, MaxListLimit))
}

// FlaggedTaps returns the flagged taps the server received last (by
// commit time, then tap time), all flags or one, at most limit. Not by
// tap time alone: a validator's clock (or a stolen one) writes that, and
// taps dated years ahead would stay on top for good.
func (s *Store) FlaggedTaps(ctx context.Context, flag string, limit int) ([]TapRow, error) {
	if flag == "" {
		return s.tapRows(ctx, "flagged taps", `SELECT `+tapRowColumns+` FROM taps WHERE flag <> ''
			ORDER BY committed_ns DESC, at_ns DESC LIMIT $1`, listLimit(limit, MaxListLimit))
	}
	return s.tapRows(ctx, "flagged taps", flaggedByFlagQuery, flag, listLimit(limit, MaxListLimit))
}

// flaggedByFlagQuery reads the newest taps of one flag, through
// taps_flag_received (flag, committed_ns, at_ns; migration 27): through
// taps_flagged_received (by commit time) a rare flag had every flagged tap
// of the ledger read (a scale review).
const flaggedByFlagQuery = `SELECT ` + tapRowColumns + ` FROM taps WHERE flag <> '' AND flag = $1
	ORDER BY committed_ns DESC, at_ns DESC LIMIT $2`

// NotedTaps returns the charged taps with a note (all notes, or one) the
// server received last (as FlaggedTaps) and at since or later, at most
// limit. The window bounds the read of one note through
// taps_noted_received: a rare note (matched with LIKE in the comma list,
// which no index serves) had every noted tap of the ledger read (a scale
// review).
func (s *Store) NotedTaps(ctx context.Context, note string, since time.Time, limit int) ([]TapRow, error) {
	from := since.UnixNano()
	if note == "" {
		return s.tapRows(ctx, "noted taps", `SELECT `+tapRowColumns+` FROM taps WHERE notes <> '' AND committed_ns >= $1
			ORDER BY committed_ns DESC, at_ns DESC LIMIT $2`, from, listLimit(limit, MaxListLimit))
	}
	return s.tapRows(ctx, "noted taps", notedByNoteQuery, from, "%,"+note+",%", listLimit(limit, MaxListLimit))
}

// notedByNoteQuery reads the newest taps of one note received since $1.
const notedByNoteQuery = `SELECT ` + tapRowColumns + ` FROM taps WHERE notes <> '' AND committed_ns >= $1
	AND (',' || notes || ',') LIKE $2 ORDER BY committed_ns DESC, at_ns DESC LIMIT $3`

// ReasonCount is how many records share a reason (a flag, a note, a
// quarantine or hold reason), and the newest one's time.
type ReasonCount struct {
	Reason string
	Count  int64
	Latest time.Time
}

// FlagCounts counts the flagged taps the server received since a time
// (by commit time: a tap a bus kept offline for days is news the day it
// comes in, and a validator's clock does not move a tap out of the
// count), by flag, and the charged taps with notes, by note. Latest is
// the newest one's commit time.
func (s *Store) FlagCounts(ctx context.Context, since time.Time) (flags, notes []ReasonCount, err error) {
	err = s.read(ctx, func(tx *sql.Tx) error {
		if flags, err = reasonCounts(ctx, tx, `SELECT flag, COUNT(*), MAX(committed_ns) FROM taps WHERE flag <> '' AND committed_ns >= $1
			GROUP BY flag ORDER BY flag`, since.UnixNano()); err != nil {
			return err
		}
		byNotes, err := reasonCounts(ctx, tx, `SELECT notes, COUNT(*), MAX(committed_ns) FROM taps WHERE notes <> '' AND committed_ns >= $1
			GROUP BY notes ORDER BY notes`, since.UnixNano())
		if err != nil {
			return err
		}
		per := map[string]*ReasonCount{}
		for _, c := range byNotes {
			for _, n := range splitNotes(c.Reason) {
				r := per[n]
				if r == nil {
					r = &ReasonCount{Reason: n}
					per[n] = r
				}
				r.Count += c.Count
				if c.Latest.After(r.Latest) {
					r.Latest = c.Latest
				}
			}
		}
		for _, r := range per {
			notes = append(notes, *r)
		}
		sortReasons(notes)
		return nil
	})
	return flags, notes, err
}

func sortReasons(rs []ReasonCount) {
	slices.SortFunc(rs, func(a, b ReasonCount) int { return strings.Compare(a.Reason, b.Reason) })
}

func reasonCounts(ctx context.Context, q queryer, query string, args ...any) ([]ReasonCount, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: count by reason: %w", err)
	}
	defer rows.Close()
	var out []ReasonCount
	for rows.Next() {
		var r ReasonCount
		var latest int64
		if err := rows.Scan(&r.Reason, &r.Count, &latest); err != nil {
			return nil, fmt.Errorf("ledger: count by reason: %w", err)
		}
		r.Latest = fromNS(latest)
		out = append(out, r)
	}
	return out, rows.Err()
}

// AsideCounts counts the quarantined and the held records, by reason.
func (s *Store) AsideCounts(ctx context.Context) (quarantined, held []ReasonCount, err error) {
	err = s.read(ctx, func(tx *sql.Tx) error {
		if quarantined, err = reasonCounts(ctx, tx, `SELECT reason, COUNT(*), MAX(received_ns) FROM quarantine
			GROUP BY reason ORDER BY reason`); err != nil {
			return err
		}
		held, err = reasonCounts(ctx, tx, `SELECT reason, COUNT(*), MAX(received_ns) FROM held_taps
			GROUP BY reason ORDER BY reason`)
		return err
	})
	return quarantined, held, err
}

// AsideRecord is a quarantined or held record as the console lists it
// (without its bytes).
type AsideRecord struct {
	DeviceID string
	Epoch    string
	Seq      uint64
	Reason   string
	Size     int
	Received time.Time
}

// Aside lists the newest quarantined (held false) or held records, of one
// reason or all (""), at most limit.
func (s *Store) Aside(ctx context.Context, held bool, reason string, limit int) ([]AsideRecord, error) {
	return s.AsideBefore(ctx, held, reason, AsideRecord{}, limit)
}

// AsideBefore is Aside from the record before one listed (its Received,
// DeviceID, Epoch and Seq; a zero AsideRecord: from the newest): the next
// page back, newest first, records received together in the order of
// their keys. Read as one range of an index (migration 35).
func (s *Store) AsideBefore(ctx context.Context, held bool, reason string, before AsideRecord, limit int) ([]AsideRecord, error) {
	table := "quarantine"
	if held {
		table = "held_taps"
	}
	if unstorable(reason, before.DeviceID, before.Epoch) {
		return nil, nil // no record has such a reason (PostgreSQL refused the query: 500)
	}
	args := []any{listLimit(limit, MaxListLimit)}
	if reason != "" {
		args = append(args, reason)
	}
	if !before.Received.IsZero() {
		// Any seq: a quarantined record's may be above 2^63-1 (a damaged
		// device's), stored as its 64 bits, and so compared; refusing it
		// ended the pages at such a record.
		args = append(args, before.Received.UnixNano(), before.DeviceID, before.Epoch, int64(before.Seq))
	}
	rows, err := s.db.QueryContext(ctx, asideQuery(table, reason != "", !before.Received.IsZero()), args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: read %s: %w", table, err)
	}
	defer rows.Close()
	var out []AsideRecord
	for rows.Next() {
		var r AsideRecord
		var seq, size, received int64
		if err := rows.Scan(&r.DeviceID, &r.Epoch, &seq, &r.Reason, &size, &received); err != nil {
			return nil, fmt.Errorf("ledger: read %s: %w", table, err)
		}
		r.Seq, r.Size, r.Received = uint64(seq), int(size), fromNS(received)
		out = append(out, r)
	}
	return out, rows.Err()
}

// asideQuery is AsideBefore's query of table: $1 the limit, then the
// reason (byReason), then the record before (received_ns, device_id,
// epoch, seq; before).
func asideQuery(table string, byReason, before bool) string {
	var where []string
	n := 1
	if byReason {
		n++
		where = append(where, fmt.Sprintf(`reason = $%d`, n))
	}
	if before {
		where = append(where, fmt.Sprintf(`(received_ns, device_id, epoch, seq) < ($%d, $%d, $%d, $%d)`, n+1, n+2, n+3, n+4))
	}
	q := `SELECT device_id, epoch, seq, reason, LENGTH(record), received_ns FROM ` + table
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	return q + ` ORDER BY received_ns DESC, device_id DESC, epoch DESC, seq DESC LIMIT $1`
}

// TokenByID returns an API credential by its id (revoked ones too: check
// Revoked), or ErrNotFound.
func (s *Store) TokenByID(ctx context.Context, id string) (APIToken, error) {
	if unstorable(id) {
		return APIToken{}, fmt.Errorf("%w: token %q", ErrNotFound, id)
	}
	tok, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return tok, fmt.Errorf("%w: token %q", ErrNotFound, id)
	}
	if err != nil {
		return tok, fmt.Errorf("ledger: read token: %w", err)
	}
	return tok, nil
}

// DenyListPage returns up to limit deny-list entries after the entry
// (account, serial, reason), in that order (zero: from the start), and how
// many entries the list has.
func (s *Store) DenyListPage(ctx context.Context, after DenyEntry, limit int) ([]DenyEntry, int64, error) {
	if unstorable(after.Reason) {
		after.Reason = "" // no entry has it; PostgreSQL refused the query (500)
	}
	var out []DenyEntry
	var total int64
	err := s.read(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deny_entries`).Scan(&total); err != nil {
			return fmt.Errorf("ledger: count deny entries: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT account_id, serial, reason, since_ns, expires_ns FROM deny_entries
			WHERE (account_id, serial, reason) > ($1, $2, $3) ORDER BY account_id, serial, reason LIMIT $4`,
			int64(min(after.Account, 1<<62)), int64(after.Serial), after.Reason, listLimit(limit, MaxListLimit))
		if err != nil {
			return fmt.Errorf("ledger: read deny list: %w", err)
		}
		out, err = scanDenyEntries(rows)
		return err
	})
	return out, total, err
}
