package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// DeviceRegistration is what RegisterDevice records of a validator.
type DeviceRegistration struct {
	ID        string // see record.ValidDeviceID
	PublicKey []byte // Ed25519: signs the device's batches and status
	// Replace allows another key than the registered one (a validator
	// re-flashed).
	Replace bool
	// Unrevoke lifts the device's revocation: a revoked device is
	// registered again only with it (ErrDeviceRevoked otherwise), with
	// Replace too for another key. Replace alone lifted it: a revoked
	// (stolen) validator's id re-registered by a script or a re-flash
	// came back silently.
	Unrevoke bool
	// MQTTHash is the hash of the device's broker password (random per
	// registration; see broker.HashPassword). Required.
	MQTTHash string
	// CertSHA256 is the SHA-256 of the device's client certificate (DER),
	// or nil: the broker's TLS listener accepts only that certificate for
	// the device.
	CertSHA256 []byte
}

// DeviceAuth is what the broker and the ingest check of a device.
type DeviceAuth struct {
	PublicKey  []byte
	MQTTHash   string
	CertSHA256 []byte
	Revoked    time.Time // zero: not revoked
}

// DeviceRegistered is what RegisterDeviceReport did.
type DeviceRegistered struct {
	KeyReplaced bool      // another key than the registered one
	Unrevoked   time.Time // the revocation lifted (zero: none was)
}

// RegisterDevice registers a validator: its Ed25519 public key, its broker
// password hash and (optionally) its certificate's fingerprint. Registering
// again with the same key replaces the broker credential (the old password
// and certificate stop working); another key needs Replace
// (ErrDeviceExists otherwise); a revoked device needs Unrevoke
// (ErrDeviceRevoked otherwise), which lifts the revocation.
func (s *Store) RegisterDevice(ctx context.Context, reg DeviceRegistration) error {
	_, err := s.RegisterDeviceReport(ctx, reg)
	return err
}

// RegisterDeviceReport is RegisterDevice, and says whether it replaced the
// key and lifted a revocation.
func (s *Store) RegisterDeviceReport(ctx context.Context, reg DeviceRegistration) (DeviceRegistered, error) {
	var done DeviceRegistered
	if err := validDeviceID(reg.ID); err != nil {
		return done, invalid("%v", err)
	}
	if err := paycode.CheckPublicKey(reg.PublicKey); err != nil {
		return done, invalid("device public key: %v", err)
	}
	if err := checkText("MQTT password hash", reg.MQTTHash, 256, true); err != nil {
		return done, invalid("%v", err)
	}
	if reg.CertSHA256 != nil && len(reg.CertSHA256) != 32 {
		return done, invalid("certificate fingerprint is %d bytes, want 32 (SHA-256)", len(reg.CertSHA256))
	}
	err := s.write(ctx, "register device", func(t *txn) error {
		done = DeviceRegistered{}
		var old []byte
		var revoked int64
		err := t.queryRow(`SELECT public_key, revoked_ns FROM devices WHERE id = $1`+s.forUpdate(), reg.ID).Scan(&old, &revoked)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			n, err := t.execCount("register device",
				`INSERT INTO devices (id, public_key, registered_ns, mqtt_hash, cert_sha256) VALUES ($1, $2, $3, $4, $5)
				 ON CONFLICT (id) DO NOTHING`,
				reg.ID, reg.PublicKey, t.now, reg.MQTTHash, reg.CertSHA256)
			if err == nil && n == 0 {
				err = errRetry // registered concurrently: compare keys again
			}
			if err != nil {
				return err
			}
			t.stat(statDevices, n)
			return t.deviceEvent(reg.ID, EventRegistered)
		case err != nil:
			return fmt.Errorf("ledger: read device: %w", err)
		case revoked != 0 && !reg.Unrevoke:
			return fmt.Errorf("%w: %s was revoked on %s (register it again with unrevoke to lift that, with replace too for a new key)",
				ErrDeviceRevoked, reg.ID, time.Unix(0, revoked).UTC().Format(time.RFC3339))
		case !bytes.Equal(old, reg.PublicKey) && !reg.Replace:
			return fmt.Errorf("%w: %s", ErrDeviceExists, reg.ID)
		}
		done.KeyReplaced = !bytes.Equal(old, reg.PublicKey)
		if revoked != 0 {
			done.Unrevoked = time.Unix(0, revoked)
		}
		replaced := done.KeyReplaced
		_, err = t.exec("register device again",
			`UPDATE devices SET public_key = $1, registered_ns = $2, mqtt_hash = $3, cert_sha256 = $4, revoked_ns = 0,
				cert_not_after_ns = 0 WHERE id = $5`,
			reg.PublicKey, t.now, reg.MQTTHash, reg.CertSHA256, reg.ID)
		if err != nil {
			return err
		}
		event := EventRegistered
		if replaced || revoked != 0 {
			event = EventReplaced
		}
		return t.deviceEvent(reg.ID, event)
	})
	switch {
	case err != nil:
		return DeviceRegistered{}, err
	case !done.Unrevoked.IsZero():
		s.log.Warn("ledger: device registered again: its revocation is lifted", "device", reg.ID, "key_replaced", done.KeyReplaced,
			"revoked_at", done.Unrevoked.UTC().Format(time.RFC3339))
	default:
		s.log.Info("ledger: device registered", "device", reg.ID, "key_replaced", done.KeyReplaced)
	}
	return done, nil
}

// RevokeDevice revokes a validator: from then on its broker login and
// certificate are refused and its batches are kept aside, never charged.
// A fleet's replay request kept for it ends (KeepReplay): once its
// revocation is lifted, its archive, with the batches kept aside, is not
// resent unasked. Revoking again is a no-op. ErrNotFound for an unregistered device.
func (s *Store) RevokeDevice(ctx context.Context, id string) error {
	if err := validDeviceID(id); err != nil {
		return invalid("%v", err)
	}
	err := s.write(ctx, "revoke device", func(t *txn) error {
		n, err := t.execCount("revoke device",
			`UPDATE devices SET revoked_ns = CASE WHEN revoked_ns = 0 THEN $1 ELSE revoked_ns END, online = FALSE, replay_until_ns = 0 WHERE id = $2`,
			t.now, id)
		if err == nil && n == 0 {
			err = fmt.Errorf("%w: device %q", ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		return t.deviceEvent(id, EventRevoked)
	})
	if err == nil {
		s.log.Warn("ledger: device revoked", "device", id)
	}
	return err
}

// DeviceAuth returns what the broker and the ingest check of a device, or
// ErrNotFound.
func (s *Store) DeviceAuth(ctx context.Context, id string) (DeviceAuth, error) {
	var a DeviceAuth
	var revoked int64
	err := s.db.QueryRowContext(ctx, `SELECT public_key, mqtt_hash, cert_sha256, revoked_ns FROM devices WHERE id = $1`, id).
		Scan(&a.PublicKey, &a.MQTTHash, &a.CertSHA256, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("%w: device %q", ErrNotFound, id)
	}
	if err != nil {
		return a, fmt.Errorf("ledger: read device: %w", err)
	}
	a.Revoked = fromNS(revoked)
	return a, nil
}

const deviceColumns = `id, public_key, registered_ns, online, queue_depth, oldest_unsent_ns, last_seen_ns, software, epoch,
	out_of_service, versions, status_ns, last_seq, synced_ns, revoked_ns, clock_offset_ns,
	update_pending, update_failed, update_failed_reason, update_failed_ns, reported_route, reported_vehicle,
	reported_server_version, cert_not_after_ns`

func scanDevice(r rowScanner) (Device, error) {
	var d Device
	var serverVersion int64
	var registered, depth, oldest, seen, statusAt, lastSeq, synced, revoked, offset, failedAt, certEnd int64
	var versions string
	u := &d.Status.Update
	err := r.Scan(&d.ID, &d.PublicKey, &registered, &d.Status.Online, &depth, &oldest, &seen, &d.Status.Software,
		&d.Status.Epoch, &d.Status.OutOfService, &versions, &statusAt, &lastSeq, &synced, &revoked, &offset,
		&u.Pending, &u.Failed, &u.FailedReason, &failedAt, &d.Status.Route, &d.Status.Vehicle, &serverVersion, &certEnd)
	if err != nil {
		return d, err
	}
	d.Status.CertNotAfter = fromNS(certEnd)
	u.FailedAt = fromNS(failedAt)
	d.RegisteredAt, d.StatusAt, d.LastSync = fromNS(registered), fromNS(statusAt), fromNS(synced)
	d.Status.QueueDepth, d.Status.OldestUnsent, d.Status.LastSeen = int(depth), time.Duration(oldest), fromNS(seen)
	d.LastSeq, d.Revoked, d.ClockOffset = uint64(lastSeq), fromNS(revoked), time.Duration(offset)
	d.Status.ServerVersion = uint64(serverVersion)
	if versions != "" && versions != "{}" {
		if err := json.Unmarshal([]byte(versions), &d.Status.Versions); err != nil {
			return d, fmt.Errorf("device %s versions: %w", d.ID, err)
		}
	}
	return d, nil
}

// Device returns a registered device, or ErrNotFound.
func (s *Store) Device(ctx context.Context, id string) (Device, error) {
	if unstorable(id) {
		return Device{}, fmt.Errorf("%w: device %q", ErrNotFound, id)
	}
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("%w: device %q", ErrNotFound, id)
	}
	if err != nil {
		return d, fmt.Errorf("ledger: read device: %w", err)
	}
	return d, nil
}

// Devices returns all registered devices, by id.
func (s *Store) Devices(ctx context.Context) ([]Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("ledger: list devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("ledger: list devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// UpdateDeviceStatus records what a device reported about itself (the
// latest report wins; an offline report older than the recorded status,
// a last will written at connect time, only marks the device offline).
// ErrNotFound for an unregistered device.
func (s *Store) UpdateDeviceStatus(ctx context.Context, id string, st DeviceStatus) error {
	u, err := checkDeviceStatus(id, st)
	if err != nil {
		return err
	}
	return s.write(ctx, "update device status", func(t *txn) error { return t.updateDeviceStatus(u) })
}

// DeviceStatusUpdate is one device's status, for UpdateDevicesStatus.
type DeviceStatusUpdate struct {
	ID     string
	Status DeviceStatus
}

// UpdateDevicesStatus records several devices' statuses, each as
// UpdateDeviceStatus does, in one write transaction: the ingest's workers
// take many devices' messages at once, and a validator reports its status
// each time an ack empties its queue, about once a tap while riders tap,
// so one transaction per status was as many write transactions as taps.
// A status UpdateDeviceStatus would refuse for what it holds (a stolen
// validator's, dated before 1970) is left out and returned in refused, by
// its index in us, the others recorded: one device's bad status must not
// cost every other's their transaction together. A device named twice
// (its status history keeps one event per transaction time) or an
// unregistered device (ErrNotFound) fails the whole call and records
// nothing: the caller may then record them one by one.
func (s *Store) UpdateDevicesStatus(ctx context.Context, us []DeviceStatusUpdate) (refused map[int]error, err error) {
	checked := make([]statusUpdate, 0, len(us))
	for i, u := range us {
		c, err := checkDeviceStatus(u.ID, u.Status)
		if err != nil {
			if refused == nil {
				refused = map[int]error{}
			}
			refused[i] = err
			continue
		}
		checked = append(checked, c)
	}
	if len(checked) == 0 {
		return refused, nil
	}
	// In id order, so that instances sharing a PostgreSQL database take
	// the rows in one order.
	slices.SortFunc(checked, func(a, b statusUpdate) int { return strings.Compare(a.id, b.id) })
	for i := 1; i < len(checked); i++ {
		if checked[i].id == checked[i-1].id {
			return nil, invalid("device %q twice in one call", checked[i].id)
		}
	}
	err = s.write(ctx, "update device status", func(t *txn) error {
		for _, c := range checked {
			if err := t.updateDeviceStatus(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return refused, nil
}

// statusUpdate is a device status checked for the ledger, with its
// columns' values.
type statusUpdate struct {
	id                      string
	st                      DeviceStatus
	versions                string
	failedAt, seen, written int64
	certEnd                 int64 // unix ns, 0: not reported
}

// checkDeviceStatus checks a device status (see UpdateDeviceStatus).
func checkDeviceStatus(id string, st DeviceStatus) (statusUpdate, error) {
	if err := validDeviceID(id); err != nil {
		return statusUpdate{}, invalid("%v", err)
	}
	if st.QueueDepth < 0 || st.OldestUnsent < 0 {
		return statusUpdate{}, invalid("negative queue figures")
	}
	if st.LastSeen.UnixNano() < 0 {
		return statusUpdate{}, invalid("last seen %v out of range", st.LastSeen)
	}
	if st.Software != "" {
		if err := wire.ValidSoftwareVersion(st.Software); err != nil {
			return statusUpdate{}, invalid("%v", err)
		}
	}
	for _, f := range []struct{ name, v string }{{"epoch", st.Epoch}, {"out of service", st.OutOfService}} {
		if err := checkText(f.name, f.v, maxLongName, false); err != nil {
			return statusUpdate{}, invalid("%v", err)
		}
	}
	if st.Route != "" || st.Vehicle != "" {
		if err := record.CheckAssignment(st.Route, st.Vehicle); err != nil {
			return statusUpdate{}, invalid("reported assignment: %v", err)
		}
	}
	if st.ServerVersion > math.MaxInt64 {
		return statusUpdate{}, invalid("reported assignment version %d out of range", st.ServerVersion)
	}
	var certEnd int64
	if !st.CertNotAfter.IsZero() {
		if !wire.ValidCertTime(st.CertNotAfter) {
			return statusUpdate{}, invalid("reported certificate end %v out of range (2000 to 2200)", st.CertNotAfter)
		}
		certEnd = st.CertNotAfter.UnixNano()
	}
	if len(st.Versions) > 32 {
		return statusUpdate{}, invalid("%d versions, limit 32", len(st.Versions))
	}
	for k, v := range st.Versions {
		if err := checkText("version kind", k, maxName, true); err != nil || v > math.MaxInt64 {
			return statusUpdate{}, invalid("version %q=%d out of range", k, v)
		}
	}
	if err := checkUpdate(st.Update); err != nil {
		return statusUpdate{}, invalid("update: %v", err)
	}
	versions, err := json.Marshal(st.Versions)
	if err != nil {
		return statusUpdate{}, invalid("versions: %v", err)
	}
	var failedAt int64
	if !st.Update.FailedAt.IsZero() {
		failedAt = st.Update.FailedAt.UnixNano()
	}
	var seen, written int64
	if !st.LastSeen.IsZero() {
		seen = st.LastSeen.UnixNano()
	}
	if !st.Written.IsZero() {
		if written = st.Written.UnixNano(); written < 0 {
			return statusUpdate{}, invalid("written %v out of range", st.Written)
		}
	}
	return statusUpdate{id: id, st: st, versions: string(versions), failedAt: failedAt, seen: seen, written: written, certEnd: certEnd}, nil
}

// updateDeviceStatus records a checked status (see UpdateDeviceStatus).
func (t *txn) updateDeviceStatus(u statusUpdate) error {
	id, st, versions, failedAt, seen, written := u.id, u.st, u.versions, u.failedAt, u.seen, u.written
	var offset int64
	if seen != 0 {
		offset = seen - t.now
	}
	prev, err := t.statusBefore(id)
	if err != nil {
		return err
	}
	if err := t.s.hook("device-status"); err != nil {
		return err
	}
	// A revoked device's word is taken for nothing: both updates below
	// change only a row not revoked (read again by the UPDATE, which on
	// PostgreSQL waits for a revocation's row lock). A status the ingest
	// took just before the revocation and recorded after it set the row
	// online again (under its revoked event) and could lift the deny-list
	// version (followFleetDeny). The server refuses its statuses from the
	// revocation on; this closes the seconds in between (an attack review).
	//
	// An offline report written before the status recorded: the
	// device's last will, written when it connected, delivered when
	// its connection died. Its queue, versions and software are from
	// then; the status recorded since is newer. Only that the device
	// went offline is news. Compared by when the device wrote each
	// (a status recorded before that was kept compares by LastSeen).
	older := seen != 0 && seen < prev.lastSeen
	if written != 0 && prev.written != 0 {
		older = written < prev.written
	}
	if !st.Online && older {
		n, err := t.execCount("device offline", `UPDATE devices SET online = FALSE, status_ns = $1 WHERE id = $2 AND revoked_ns = 0`, t.now, id)
		if err != nil || n == 0 {
			return err // n 0: revoked (the row was read above)
		}
		return t.noteStatusChange(id, prev, DeviceStatus{OutOfService: prev.outOfService, Software: prev.software,
			Update: DeviceUpdate{Failed: prev.updateFailed}}, prev.versions, prev.clockOffset)
	}
	n, err := t.execCount("update device status",
		`UPDATE devices SET online = $1, queue_depth = $2, oldest_unsent_ns = $3, last_seen_ns = $4, software = $5,
			epoch = $6, out_of_service = $7, versions = $8, status_ns = $9, clock_offset_ns = $10,
			update_pending = $11, update_failed = $12, update_failed_reason = $13, update_failed_ns = $14, written_ns = $15,
			reported_route = CASE WHEN $17 = '' THEN reported_route ELSE $17 END,
			reported_vehicle = CASE WHEN $17 = '' THEN reported_vehicle ELSE $18 END,
			reported_server_version = CASE WHEN $17 = '' THEN reported_server_version ELSE $19 END,
			cert_not_after_ns = CASE WHEN CAST($20 AS BIGINT) = 0 THEN cert_not_after_ns ELSE CAST($20 AS BIGINT) END
		WHERE id = $16 AND revoked_ns = 0`,
		st.Online, int64(st.QueueDepth), int64(st.OldestUnsent), seen, st.Software, st.Epoch, st.OutOfService,
		string(versions), t.now, offset, st.Update.Pending, st.Update.Failed, st.Update.FailedReason, failedAt, written, id,
		st.Route, st.Vehicle, int64(st.ServerVersion), u.certEnd)
	if err == nil && n == 0 {
		// Unknown, or revoked (also since statusBefore read the row: on
		// PostgreSQL that read takes no lock).
		var revoked int64
		switch rerr := t.queryRow(`SELECT revoked_ns FROM devices WHERE id = $1`, id).Scan(&revoked); {
		case rerr == nil && revoked != 0:
			return nil // taken for nothing, as above
		case rerr != nil && !errors.Is(rerr, sql.ErrNoRows):
			return fmt.Errorf("ledger: read device: %w", rerr)
		}
		err = fmt.Errorf("%w: device %q", ErrNotFound, id)
	}
	if err != nil {
		return err
	}
	if versions != prev.versions {
		if err := t.followFleetDeny(st.Versions[record.DocDenyList]); err != nil {
			return err
		}
	}
	return t.noteStatusChange(id, prev, st, string(versions), offset)
}

// MaxFleetDenyAhead bounds how far ahead of the ledger's clock a deny-list
// version a device reports applied is followed (followFleetDeny): a
// version further ahead is a false report (revoke the device), not a
// list a server published.
const MaxFleetDenyAhead = 24 * time.Hour

// followFleetDeny notes v, a deny-list version a device reports applied,
// as the floor of the next deny-list version (bumpDenyVersion) if it is
// above the ledger's: validators refuse a list not above the one they
// applied, and the version is the time in milliseconds, which a restored
// ledger (Restored moves it to now) is below when the lists the fleet
// holds were published by a server whose clock ran ahead, or the
// restored server's runs behind. Every deny entry made after the restore
// was refused on every bus until the clock caught up. The ledger's
// version itself does not move: no list is published at a version a
// device reports (the publisher sends the shards whose content changed),
// so every other device would stay below it — the console and
// FaregoDenyListNotDelivered naming the whole fleet behind — and every
// instance would read the whole list again; a stolen validator moved it
// at each status (TestFleetDenyReportMovesNoVersion).
func (t *txn) followFleetDeny(v uint64) error {
	if v == 0 || v > uint64((t.now+int64(MaxFleetDenyAhead))/int64(time.Millisecond)) {
		return nil
	}
	var cur int64
	if err := t.queryRow(`SELECT value FROM counters WHERE name = 'deny_version'`).Scan(&cur); err != nil {
		return fmt.Errorf("ledger: read deny-list version: %w", err)
	}
	if v <= uint64(cur) {
		return nil // the common case: nothing written
	}
	_, err := t.exec("note the fleet's deny-list version", `INSERT INTO counters (name, value) VALUES ('deny_fleet_version', $1)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE counters.value < excluded.value`, int64(v))
	return err
}

// checkUpdate checks a device's update report as the wire does
// (wire.UpdateStatus): release versions (wire.ValidVersion), a reason and
// a time only with a failed version; the reason bounded and printable.
func checkUpdate(u DeviceUpdate) error {
	for _, v := range []struct{ name, v string }{{"pending", u.Pending}, {"failed", u.Failed}} {
		if v.v == "" {
			continue
		}
		if err := wire.ValidVersion(v.v); err != nil {
			return fmt.Errorf("%s update: %v", v.name, err)
		}
	}
	if u.Failed == "" && (u.FailedReason != "" || !u.FailedAt.IsZero()) {
		return errors.New("a failure reason or time without a failed version")
	}
	if err := checkText("failure reason", u.FailedReason, MaxUpdateReason, false); err != nil {
		return err
	}
	if !u.FailedAt.IsZero() && (!u.FailedAt.After(time.Unix(0, 0)) || u.FailedAt.After(time.Unix(0, math.MaxInt64))) {
		return fmt.Errorf("failure time %v out of range", u.FailedAt)
	}
	return nil
}

// NoteDeviceSync records that a device's taps up to lastSeq are committed
// (the ingest layer calls it after acknowledging a batch). The recorded
// sequence number only moves forward. ErrNotFound for an unregistered device.
func (s *Store) NoteDeviceSync(ctx context.Context, id string, lastSeq uint64) error {
	return s.NoteDevicesSync(ctx, map[string]uint64{id: lastSeq})
}

// NoteDevicesSync is NoteDeviceSync for several devices (device id → last
// committed sequence number) in one write transaction: the server's
// coalesced commit of many devices' batches notes them all at once, not
// in one transaction (a SQLite write lock and fsync, a PostgreSQL commit)
// per device. Devices are updated in id order, so that instances sharing
// a PostgreSQL database take their rows in one order. An unregistered
// device does not hold the others back: they are noted, and the error
// (ErrNotFound) names it. An invalid id or sequence number changes
// nothing (ErrInvalid).
func (s *Store) NoteDevicesSync(ctx context.Context, last map[string]uint64) error {
	ids := make([]string, 0, len(last))
	for id, seq := range last {
		if err := validDeviceID(id); err != nil {
			return invalid("%v", err)
		}
		if seq > math.MaxInt64 {
			return invalid("device %q: seq %d out of range", id, seq)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	var missing []string
	err := s.write(ctx, "note device sync", func(t *txn) error {
		missing = missing[:0]
		for _, id := range ids {
			n, err := t.execCount("note device sync",
				`UPDATE devices SET last_seq = CASE WHEN last_seq > $1 THEN last_seq ELSE $1 END, synced_ns = $2 WHERE id = $3`,
				int64(last[id]), t.now, id)
			if err != nil {
				return err
			}
			if n == 0 {
				missing = append(missing, id)
			}
		}
		return nil
	})
	if err == nil && len(missing) > 0 {
		err = fmt.Errorf("%w: device %s", ErrNotFound, strings.Join(quoteAll(missing), ", "))
	}
	return err
}

// quoteAll quotes each string as %q does.
func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// Stats returns ledger-wide figures, read in one snapshot. It reads the
// kept figures (ledger_stats) and two small indexed counts, never the taps:
// it costs the same with ten taps or ten million.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT name, CAST(SUM(value) AS BIGINT) FROM ledger_stats GROUP BY name`)
		if err != nil {
			return fmt.Errorf("ledger: stats: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var v int64
			if err := rows.Scan(&name, &v); err != nil {
				return fmt.Errorf("ledger: stats: %w", err)
			}
			switch name {
			case statAccounts:
				st.Accounts = v
			case statBalance:
				st.TotalBalance = v
			case statTaps:
				st.Taps = v
			case statFlagged:
				st.FlaggedTaps = v
			case statPostings:
				st.Postings = v
			case statPayments:
				st.Payments = v
			case statRefunds:
				st.Refunds = v
			case statDevices:
				st.Devices = v
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ledger: stats: %w", err)
		}
		var dv int64
		err = tx.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM accounts WHERE neg_denied),
			(SELECT value FROM counters WHERE name = 'deny_version'),
			(SELECT COUNT(*) FROM deny_entries)`).Scan(&st.NegativeAccounts, &dv, &st.DenyEntries)
		st.DenyVersion = uint64(dv)
		if err != nil {
			return fmt.Errorf("ledger: stats: %w", err)
		}
		return nil
	})
	return st, err
}
