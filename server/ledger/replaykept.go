package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A replay of the whole archive asked of the fleet (after a restore) is
// kept for each device not revoked, and sent when the device is next
// heard online (migration 33): a device offline at the request, or whose
// link had dropped before the broker noticed, was never asked, and the
// taps it had acked since the backup stayed out of the ledger.
const (
	// KeptReplayFor is how long a fleet's replay request is kept.
	KeptReplayFor = 24 * time.Hour
	// KeptReplaySends is how many times at the most a kept request is
	// sent to one device (the request sent at once counts): a device
	// carries a request out once, whatever the copies, and refuses the
	// others (logged).
	KeptReplaySends = 3
	// KeptReplayGap is the least time between two sends to one device.
	KeptReplayGap = time.Minute
)

// KeepReplay keeps the replay request id (of the whole archive) for every
// device not revoked, for KeptReplayFor; sent names those it was sent to
// at once (one send each).
func (s *Store) KeepReplay(ctx context.Context, id uint64, sent []string) error {
	if id == 0 || id > 1<<62 {
		return invalid("replay request id %d", id)
	}
	return s.write(ctx, "keep replay", func(t *txn) error {
		if _, err := t.exec("keep replay", `UPDATE devices SET replay_id = $1, replay_until_ns = $2, replay_sent_ns = 0, replay_sends = 0
			WHERE revoked_ns = 0`, int64(id), t.now+KeptReplayFor.Nanoseconds()); err != nil {
			return err
		}
		for _, d := range sent {
			if _, err := t.exec("keep replay", `UPDATE devices SET replay_sent_ns = $1, replay_sends = 1 WHERE id = $2`, t.now, d); err != nil {
				return err
			}
		}
		return nil
	})
}

// KeptReplays returns the devices a kept replay request is still to be
// sent to (not revoked, within its time, fewer than KeptReplaySends sends).
func (s *Store) KeptReplays(ctx context.Context) (map[string]bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM devices WHERE replay_until_ns > $1 AND replay_sends < $2 AND revoked_ns = 0`,
		s.now().UnixNano(), KeptReplaySends)
	if err != nil {
		return nil, fmt.Errorf("ledger: kept replays: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("ledger: kept replays: %w", err)
		}
		out[id] = true
	}
	return out, rows.Err()
}

// TakeKeptReplay claims a send of the replay request kept for device (one
// instance of several gets it): its id, or 0 when there is none to send
// now (none kept, its time over, sent KeptReplaySends times, or less than
// KeptReplayGap ago).
func (s *Store) TakeKeptReplay(ctx context.Context, device string) (uint64, error) {
	var id int64
	err := s.write(ctx, "take kept replay", func(t *txn) error {
		id = 0
		err := t.queryRow(`UPDATE devices SET replay_sent_ns = $1, replay_sends = replay_sends + 1
			WHERE id = $2 AND revoked_ns = 0 AND replay_id > 0 AND replay_until_ns > $1 AND replay_sends < $3 AND replay_sent_ns <= $4
			RETURNING replay_id`, t.now, device, KeptReplaySends, t.now-KeptReplayGap.Nanoseconds()).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	return uint64(id), err
}

// ReturnKeptReplay gives back a send of the replay request id claimed for
// device (TakeKeptReplay) that could not be made (no broker link, a
// publish timed out): the device's next online status may claim it at
// once. Without it a failed send counted as one of KeptReplaySends, and
// a device the instance could not reach KeptReplaySends times was never
// sent the request. Nothing changes if the request kept is another one.
func (s *Store) ReturnKeptReplay(ctx context.Context, device string, id uint64) error {
	if id == 0 || id > 1<<62 {
		return invalid("replay request id %d", id)
	}
	return s.write(ctx, "return kept replay", func(t *txn) error {
		_, err := t.exec("return kept replay", `UPDATE devices SET replay_sends = replay_sends - 1, replay_sent_ns = 0
			WHERE id = $1 AND replay_id = $2 AND replay_sends > 0`, device, int64(id))
		return err
	})
}
