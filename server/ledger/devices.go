package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// RegisterDevice registers a validator and its Ed25519 public key (the key
// that signs its batches). Registering again with the same key is a no-op;
// with another key it is ErrDeviceExists unless replace is set (a validator
// re-flashed with a new key). The id follows the wire rule: 1-64 letters,
// digits, '_', '.' or '-'.
func (s *Store) RegisterDevice(ctx context.Context, id string, publicKey []byte, replace bool) error {
	if err := validDeviceID(id); err != nil {
		return invalid("%v", err)
	}
	if len(publicKey) != ed25519.PublicKeySize {
		return invalid("device public key is %d bytes, want %d", len(publicKey), ed25519.PublicKeySize)
	}
	changed := false
	err := s.write(ctx, "register device", func(t *txn) error {
		changed = false
		var old []byte
		err := t.queryRow(`SELECT public_key FROM devices WHERE id = $1`+s.forUpdate(), id).Scan(&old)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			n, err := t.execCount("register device",
				`INSERT INTO devices (id, public_key, registered_ns) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`,
				id, publicKey, t.now)
			if err == nil && n == 0 {
				err = errRetry // registered concurrently: compare keys again
			}
			changed = err == nil
			return err
		case err != nil:
			return fmt.Errorf("ledger: read device: %w", err)
		case bytes.Equal(old, publicKey):
			return nil
		case !replace:
			return fmt.Errorf("%w: %s", ErrDeviceExists, id)
		}
		changed = true
		_, err = t.exec("replace device key",
			`UPDATE devices SET public_key = $1, registered_ns = $2 WHERE id = $3`, publicKey, t.now, id)
		return err
	})
	if err == nil && changed {
		s.log.Info("ledger: device registered", logKeyDevice, id)
	}
	return err
}

const deviceColumns = `id, public_key, registered_ns, online, queue_depth, oldest_unsent_ns, last_seen_ns, software, epoch,
	out_of_service, versions, status_ns, last_seq, synced_ns`

func scanDevice(r rowScanner) (Device, error) {
	var d Device
	var registered, depth, oldest, seen, statusAt, lastSeq, synced int64
	var versions string
	err := r.Scan(&d.ID, &d.PublicKey, &registered, &d.Status.Online, &depth, &oldest, &seen, &d.Status.Software,
		&d.Status.Epoch, &d.Status.OutOfService, &versions, &statusAt, &lastSeq, &synced)
	if err != nil {
		return d, err
	}
	d.RegisteredAt, d.StatusAt, d.LastSync = fromNS(registered), fromNS(statusAt), fromNS(synced)
	d.Status.QueueDepth, d.Status.OldestUnsent, d.Status.LastSeen = int(depth), time.Duration(oldest), fromNS(seen)
	d.LastSeq = uint64(lastSeq)
	if versions != "" && versions != "{}" {
		if err := json.Unmarshal([]byte(versions), &d.Status.Versions); err != nil {
			return d, fmt.Errorf("device %s versions: %w", d.ID, err)
		}
	}
	return d, nil
}

// Device returns a registered device, or ErrNotFound.
func (s *Store) Device(ctx context.Context, id string) (Device, error) {
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
// latest report wins). ErrNotFound for an unregistered device.
func (s *Store) UpdateDeviceStatus(ctx context.Context, id string, st DeviceStatus) error {
	if err := validDeviceID(id); err != nil {
		return invalid("%v", err)
	}
	if st.QueueDepth < 0 || st.OldestUnsent < 0 {
		return invalid("negative queue figures")
	}
	if st.LastSeen.UnixNano() < 0 {
		return invalid("last seen %v out of range", st.LastSeen)
	}
	for _, f := range []struct{ name, v string }{{"software", st.Software}, {"epoch", st.Epoch}, {"out of service", st.OutOfService}} {
		if err := checkText(f.name, f.v, maxLongName, false); err != nil {
			return invalid("%v", err)
		}
	}
	if len(st.Versions) > 32 {
		return invalid("%d versions, limit 32", len(st.Versions))
	}
	for k, v := range st.Versions {
		if err := checkText("version kind", k, maxName, true); err != nil || v > math.MaxInt64 {
			return invalid("version %q=%d out of range", k, v)
		}
	}
	versions, err := json.Marshal(st.Versions)
	if err != nil {
		return invalid("versions: %v", err)
	}
	var seen int64
	if !st.LastSeen.IsZero() {
		seen = st.LastSeen.UnixNano()
	}
	return s.write(ctx, "update device status", func(t *txn) error {
		n, err := t.execCount("update device status",
			`UPDATE devices SET online = $1, queue_depth = $2, oldest_unsent_ns = $3, last_seen_ns = $4, software = $5,
				epoch = $6, out_of_service = $7, versions = $8, status_ns = $9 WHERE id = $10`,
			st.Online, int64(st.QueueDepth), int64(st.OldestUnsent), seen, st.Software, st.Epoch, st.OutOfService,
			string(versions), t.now, id)
		if err == nil && n == 0 {
			err = fmt.Errorf("%w: device %q", ErrNotFound, id)
		}
		return err
	})
}

// NoteDeviceSync records that a device's taps up to lastSeq are committed
// (the ingest layer calls it after acknowledging a batch). The recorded
// sequence number only moves forward. ErrNotFound for an unregistered device.
func (s *Store) NoteDeviceSync(ctx context.Context, id string, lastSeq uint64) error {
	if err := validDeviceID(id); err != nil {
		return invalid("%v", err)
	}
	if lastSeq > math.MaxInt64 {
		return invalid("seq %d out of range", lastSeq)
	}
	return s.write(ctx, "note device sync", func(t *txn) error {
		n, err := t.execCount("note device sync",
			`UPDATE devices SET last_seq = CASE WHEN last_seq > $1 THEN last_seq ELSE $1 END, synced_ns = $2 WHERE id = $3`,
			int64(lastSeq), t.now, id)
		if err == nil && n == 0 {
			err = fmt.Errorf("%w: device %q", ErrNotFound, id)
		}
		return err
	})
}

// Stats returns ledger-wide figures, read in one snapshot.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.read(ctx, func(tx *sql.Tx) error {
		var dv int64
		err := tx.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM accounts),
			(SELECT COUNT(*) FROM accounts WHERE balance < 0),
			(SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM accounts),
			(SELECT COUNT(*) FROM taps),
			(SELECT COUNT(*) FROM taps WHERE flag <> ''),
			(SELECT COUNT(*) FROM postings),
			(SELECT COUNT(*) FROM payments),
			(SELECT COUNT(*) FROM devices),
			(SELECT value FROM counters WHERE name = 'deny_version'),
			(SELECT COUNT(*) FROM deny_entries)`).Scan(&st.Accounts, &st.NegativeAccounts, &st.TotalBalance, &st.Taps,
			&st.FlaggedTaps, &st.Postings, &st.Payments, &st.Devices, &dv, &st.DenyEntries)
		st.DenyVersion = uint64(dv)
		if err != nil {
			return fmt.Errorf("ledger: stats: %w", err)
		}
		return nil
	})
	return st, err
}
