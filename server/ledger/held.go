package ledger

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// HeldTap is a device record the server kept aside because it could not
// check it with its current state — a code signed by an issuer key its
// keyring lacks (after a keyring restored from an old backup, say). The
// device's queue moves on; the record waits here, uncharged, until the
// server's state changes, and is then committed as a tap (CommitTaps with
// Tap.Held set removes it from here in the same transaction).
type HeldTap struct {
	DeviceID string
	Epoch    string
	Seq      uint64
	Reason   string // why it could not be checked (a verification reason)
	Record   []byte
	Received time.Time
}

// MaxHeldList bounds one HeldTaps read.
const MaxHeldList = 1000

// Hold keeps device records aside; idempotent on device, epoch and seq. A
// record whose tap is in the ledger already is not held again.
func (s *Store) Hold(ctx context.Context, recs []HeldTap) error {
	_, err := s.HoldKept(ctx, recs)
	return err
}

// HoldKept is Hold that also returns how many of each device's records
// this call held (those held before, or in the ledger, are not counted).
func (s *Store) HoldKept(ctx context.Context, recs []HeldTap) (map[string]int, error) {
	for i, r := range recs {
		if err := validDeviceID(r.DeviceID); err != nil {
			return nil, invalid("held tap %d: %v", i, err)
		}
		if r.Seq > math.MaxInt64 || len(r.Record) > MaxRecordSize {
			return nil, invalid("held tap %d: seq or record size out of range", i)
		}
		if err := checkText("epoch", r.Epoch, maxName, true); err != nil {
			return nil, invalid("held tap %d: %v", i, err)
		}
		if strings.Contains(r.Epoch, "/") { // as CommitTaps would refuse it
			return nil, invalid("held tap %d: epoch %q contains '/'", i, r.Epoch)
		}
		if err := checkText("reason", r.Reason, 256, true); err != nil {
			return nil, invalid("held tap %d: %v", i, err)
		}
	}
	if len(recs) == 0 {
		return nil, nil
	}
	var held []int // the records this call held (not held before)
	err := s.write(ctx, "hold taps", func(t *txn) error {
		held = held[:0]
		for i, r := range recs {
			n, err := t.execCount("hold tap",
				`INSERT INTO held_taps (device_id, epoch, seq, reason, record, received_ns)
				 SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (
					SELECT 1 FROM taps WHERE device_id = $1 AND epoch = $2 AND seq = $3)
				 ON CONFLICT (device_id, epoch, seq) DO NOTHING`,
				r.DeviceID, r.Epoch, int64(r.Seq), r.Reason, r.Record, t.now)
			if err != nil {
				return err
			}
			if n > 0 {
				held = append(held, i)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	kept := map[string]int{}
	for _, i := range held {
		kept[recs[i].DeviceID]++
	}
	if len(held) > 0 {
		logByDevice(s.log, "ledger: taps held aside until the server can check them", len(held),
			func(i int) string { return recs[held[i]].DeviceID }, logKeyReason, recs[held[0]].Reason)
	}
	return kept, nil
}

// HeldTapsAfter returns up to limit held records (as HeldTaps) that come
// after the one named by after's device, epoch and seq, in that order: pass
// a page's last record to read the next (a zero HeldTap: from the first).
// A pass over every held record costs one index range read a page, however
// many there are.
func (s *Store) HeldTapsAfter(ctx context.Context, after HeldTap, limit int) ([]HeldTap, error) {
	if limit <= 0 || limit > MaxHeldList {
		limit = MaxHeldList
	}
	if after.Seq > math.MaxInt64 {
		return nil, invalid("seq %d", after.Seq)
	}
	return s.heldRows(ctx, `WHERE (device_id, epoch, seq) > ($1, $2, $3) ORDER BY device_id, epoch, seq LIMIT $4`,
		after.DeviceID, after.Epoch, int64(after.Seq), limit)
}

// HeldTapsReceivedSince returns up to limit held records with reason
// received at since or later, oldest first, after the one after names
// (its Received, device, epoch and seq; a zero HeldTap: from since): the
// records held since a moment, read by the index of reason and time.
func (s *Store) HeldTapsReceivedSince(ctx context.Context, reason string, since time.Time, after HeldTap,
	limit int) ([]HeldTap, error) {
	if limit <= 0 || limit > MaxHeldList {
		limit = MaxHeldList
	}
	if after.Seq > math.MaxInt64 {
		return nil, invalid("seq %d", after.Seq)
	}
	from := since.UnixNano() - 1
	if !after.Received.IsZero() {
		from = after.Received.UnixNano()
	}
	return s.heldRows(ctx, `WHERE reason = $1 AND (received_ns, device_id, epoch, seq) > ($2, $3, $4, $5)
		ORDER BY received_ns, device_id, epoch, seq LIMIT $6`, reason, from, after.DeviceID, after.Epoch, int64(after.Seq), limit)
}

// heldRows reads held records: the query's WHERE, ORDER and LIMIT.
func (s *Store) heldRows(ctx context.Context, where string, args ...any) ([]HeldTap, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT device_id, epoch, seq, reason, record, received_ns FROM held_taps `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: read held taps: %w", err)
	}
	defer rows.Close()
	var out []HeldTap
	for rows.Next() {
		var h HeldTap
		var seq, received int64
		if err := rows.Scan(&h.DeviceID, &h.Epoch, &seq, &h.Reason, &h.Record, &received); err != nil {
			return nil, fmt.Errorf("ledger: read held taps: %w", err)
		}
		h.Seq, h.Received = uint64(seq), fromNS(received)
		out = append(out, h)
	}
	return out, rows.Err()
}

// HeldCount returns the number of held records.
func (s *Store) HeldCount(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM held_taps`).Scan(&n)
	return n, err
}

// releaseHeld removes the batch's taps that were held from held_taps,
// but for conflicts (results[i] is taps[i]'s), which stay held until the
// caller quarantines them.
func (t *txn) releaseHeld(taps []Tap, results []TapResult) error {
	b := newBulk(tText, tText, tBigint)
	for i := range taps {
		if taps[i].Held && !results[i].Conflict {
			b.add(taps[i].DeviceID, taps[i].Epoch, int64(taps[i].Seq))
		}
	}
	return t.bulkWrite("release held taps", b, false, func(src string) string {
		if t.pg() { // index lookups, then by row address (see updateFrom)
			return `DELETE FROM held_taps USING (SELECT k.ctid AS row_ctid FROM (` + src + `) AS v (device_id, epoch, seq)
				CROSS JOIN LATERAL (SELECT ctid FROM held_taps WHERE held_taps.device_id = v.device_id
					AND held_taps.epoch = v.epoch AND held_taps.seq = v.seq OFFSET 0) AS k) AS v
				WHERE held_taps.ctid = v.row_ctid`
		}
		return `DELETE FROM held_taps WHERE (device_id, epoch, seq) IN (` + src + `)`
	})
}
