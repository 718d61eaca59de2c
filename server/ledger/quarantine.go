package ledger

// Device records that could not be read as taps, kept aside.

import (
	"context"
	"log/slog"
)

// Quarantine keeps device records that could not be read as taps, so the
// device's queue can move on; idempotent on device, epoch and seq.
func (s *Store) Quarantine(ctx context.Context, recs []QuarantinedRecord) error {
	_, err := s.QuarantineKept(ctx, recs)
	return err
}

// QuarantineKept is Quarantine that also returns how many of each
// device's records this call kept (those quarantined before, a batch sent
// again, are not counted): what the device's aside budget is charged.
func (s *Store) QuarantineKept(ctx context.Context, recs []QuarantinedRecord) (map[string]int, error) {
	for i, r := range recs {
		if err := validDeviceID(r.DeviceID); err != nil {
			return nil, invalid("quarantine %d: %v", i, err)
		}
		// Any seq: a damaged device may send one above what a tap id
		// holds, and refusing it would block its queue for good (the
		// batch never acked). It is stored as its 64 bits (a negative
		// BIGINT above 2^63-1).
		if len(r.Record) > MaxRecordSize*4 {
			return nil, invalid("quarantine %d: record of %d bytes out of range", i, len(r.Record))
		}
		if err := checkText("epoch", r.Epoch, maxName, false); err != nil {
			return nil, invalid("quarantine %d: %v", i, err)
		}
		if err := checkText("reason", r.Reason, 256, true); err != nil {
			return nil, invalid("quarantine %d: %v", i, err)
		}
	}
	if len(recs) == 0 {
		return nil, nil
	}
	var kept map[string]int
	err := s.write(ctx, "quarantine", func(t *txn) error {
		kept = map[string]int{}
		for _, r := range recs {
			n, err := t.execCount("quarantine record",
				`INSERT INTO quarantine (device_id, epoch, seq, reason, record, received_ns) VALUES ($1, $2, $3, $4, $5, $6)
				 ON CONFLICT (device_id, epoch, seq) DO NOTHING`,
				r.DeviceID, r.Epoch, int64(r.Seq), r.Reason, r.Record, t.now)
			if err != nil {
				return err
			}
			kept[r.DeviceID] += int(n)
			// A record kept aside for good is no longer waiting to be
			// checked (a held record found not to be a tap at all).
			if _, err := t.exec("release held tap", `DELETE FROM held_taps WHERE device_id = $1 AND epoch = $2 AND seq = $3`,
				r.DeviceID, r.Epoch, int64(r.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		logByDevice(s.log, "ledger: device records quarantined", len(recs), func(i int) string { return recs[i].DeviceID },
			logKeyReason, recs[0].Reason)
	}
	return kept, err
}

// logByDevice writes msg once per device of n records (device(i) names
// record i's), with its count: a flood of records is a line a device.
func logByDevice(log *slog.Logger, msg string, n int, device func(int) string, args ...any) {
	count := map[string]int{}
	var order []string
	for i := range n {
		d := device(i)
		if count[d] == 0 {
			order = append(order, d)
		}
		count[d]++
	}
	for _, d := range order {
		log.Warn(msg, append([]any{logKeyDevice, d, "count", count[d]}, args...)...)
	}
}

// QuarantineCount returns the number of quarantined records.
func (s *Store) QuarantineCount(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM quarantine`).Scan(&n)
	return n, err
}
