package queue

import (
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Ack marks exactly the given records as delivered: each moves from the
// unacked records to the archive (or is deleted, if the archive is disabled
// or the file is short of space), durably (fsynced) before Ack returns.
// Sequence numbers that are unknown or already acked are ignored. It
// returns how many records it acked.
//
// Up to 1000 records are acked in one transaction; a longer list is split,
// and if a later part fails the earlier parts stay acked (the count says
// how many). Acks are idempotent, so retrying the whole list is safe.
func (q *Queue) Ack(seqs ...uint64) (int, error) {
	total := 0
	for len(seqs) > 0 {
		part := seqs[:min(len(seqs), ackChunk)]
		seqs = seqs[len(part):]
		n, err := q.update(func(w *wtx) (int, error) {
			n := 0
			for _, seq := range part {
				k := seqKey(seq)
				v := w.b.pending.Get(k)
				if v == nil {
					continue
				}
				if err := w.archive(k, v); err != nil {
					return 0, err
				}
				n++
			}
			return n, nil
		})
		total += n
		if err != nil {
			return total, wrapErr("ack", err)
		}
	}
	return total, nil
}

// AckThrough acks every unacked record with a sequence number up to and
// including seq, like Ack (and, like Ack, in transactions of up to 1000
// records). It returns how many records it acked.
func (q *Queue) AckThrough(seq uint64) (int, error) {
	total := 0
	for {
		n, err := q.update(func(w *wtx) (int, error) {
			n := 0
			for n < ackChunk {
				// A fresh cursor each time: a bbolt cursor must not be
				// moved on after the bucket under it has changed.
				k, v := w.b.pending.Cursor().First()
				if k == nil {
					break
				}
				if s, ok := keySeq(k); !ok || s > seq {
					break
				}
				if err := w.archive(k, v); err != nil {
					return 0, err
				}
				n++
			}
			return n, nil
		})
		total += n
		if err != nil {
			return total, wrapErr("ack", err)
		}
		if n < ackChunk {
			return total, nil
		}
	}
}

// archive moves one pending record (key k, value v) to the archive, or
// deletes it if the archive is off or the transaction has no room left.
func (w *wtx) archive(k, v []byte) error {
	if len(v) < pendingHeader {
		return corruptf("queue: bad pending record %x", k)
	}
	size := uint64(len(v) - pendingHeader)
	k = append([]byte(nil), k...)
	if w.keep {
		if cost := recordCost(int(size)) + 8; cost <= w.room {
			// Copy before deleting: v points into the page being changed.
			if err := w.b.archive.Put(k, archiveValue(v, w.now)); err != nil {
				return err
			}
			w.room -= cost
			w.c.archiveN++
			w.c.archiveBytes += size
		} else {
			w.dropped++
		}
	}
	if err := w.b.pending.Delete(k); err != nil {
		return err
	}
	w.c.pendingN--
	w.c.pendingBytes -= size
	return nil
}

// Replay moves the archived records with from <= seq <= to back to the
// unacked records, keeping their sequence numbers and append times, so they
// are delivered again (for a server that restored an older backup of its
// ledger). It returns how many records it moved. Records already pruned
// from the archive cannot be replayed; compare the count with the range.
// Replay ignores MaxRecords and MaxBytes (the records are already in the
// file), so the queue may be over its limits until they are acked again.
// Like Ack it works in transactions of up to 1000 records.
//
// id names the request, in milliseconds of the requester's clock (the
// server's): it must be greater than the id of every request replayed
// before in this file, or Replay returns an error matching ErrReplayed
// and moves nothing. The id is stored with the first records moved, so a
// request is carried out at most once, even when it is delivered again (a
// copy kept by whoever could read the device's commands, sent later to
// make it send its archive once more); a replay a power cut interrupts is
// finished when the file is opened again.
//
// now is the requester's clock as the caller knows it (0: unknown). A
// stored id more than ReplaySlack ahead of it was set while that clock
// ran ahead: it does not hold back a request whose id is within
// ReplaySlack of now (else every request would be refused until the
// clock caught up with the wrong one). A copy of an old request is still
// refused: its id is far below now, or not above an id set since.
func (q *Queue) Replay(id, now, from, to uint64) (int, error) {
	if id == 0 {
		return 0, fmt.Errorf("queue: replay: request id 0")
	}
	return q.replay(from, to, func(meta *bbolt.Bucket) error {
		last, err := replayID(meta)
		if err != nil {
			return err
		}
		ahead := now != 0 && last > now+ReplaySlack && id+ReplaySlack >= now && id <= now+ReplaySlack
		if id <= last && !ahead {
			return fmt.Errorf("%w: request %d, the last one carried out was %d", ErrReplayed, id, last)
		}
		var v [8]byte
		putUint64(v[:], id)
		return meta.Put(kReplayID, v[:])
	})
}

// replay moves the archived records from..to back to the unacked ones in
// transactions of up to ackChunk records, first (if not nil) running in
// the first. Each transaction but the last records in the meta bucket
// what is left (kReplayLeft), and Open finishes it (resumeReplay): the
// request is carried out once, so a replay the power cut short was left
// half done for good, the rest of its records never sent again.
func (q *Queue) replay(from, to uint64, first func(meta *bbolt.Bucket) error) (int, error) {
	total := 0
	for {
		done := false
		next := from
		n, err := q.update(func(w *wtx) (int, error) {
			b, c := w.b, &w.c
			if first != nil {
				if err := first(b.meta); err != nil {
					return 0, err
				}
			}
			n := 0
			for n < ackChunk {
				k, v := b.archive.Cursor().Seek(seqKey(next))
				s, ok := keySeq(k)
				if k == nil || !ok || s > to {
					done = true
					break
				}
				if len(v) < archiveHeader {
					return 0, corruptf("queue: bad archive record %x", k)
				}
				size := uint64(len(v) - archiveHeader)
				k = append([]byte(nil), k...)
				if err := b.pending.Put(k, unarchiveValue(v)); err != nil {
					return 0, err
				}
				if err := b.archive.Delete(k); err != nil {
					return 0, err
				}
				c.archiveN--
				c.archiveBytes -= size
				c.pendingN++
				c.pendingBytes += size
				n++
				if s == to {
					done = true
					break
				}
				next = s + 1
			}
			if done {
				return n, b.meta.Delete(kReplayLeft)
			}
			var left [16]byte
			putUint64(left[:8], next)
			putUint64(left[8:], to)
			return n, b.meta.Put(kReplayLeft, left[:])
		})
		total += n
		if err != nil {
			return total, wrapErr("replay", err)
		}
		if done {
			return total, nil
		}
		first, from = nil, next
	}
}

// resumeReplay finishes a replay that was cut short (see replay), and
// returns how many records it moved.
func (q *Queue) resumeReplay() (int, error) {
	var from, to uint64
	left := false
	err := q.view(func(_ *bbolt.Tx, b buckets) error {
		v := b.meta.Get(kReplayLeft)
		switch {
		case v == nil:
		case len(v) != 16:
			return corruptf("queue: meta %q has %d bytes, want 16", kReplayLeft, len(v))
		default:
			from, to, left = getUint64(v), getUint64(v[8:]), true
		}
		return nil
	})
	if err != nil || !left {
		return 0, wrapErr("resume replay", err)
	}
	return q.replay(from, to, nil)
}

// ReplaySlack is how far (in the ids' milliseconds) a replay request's id
// may be from the requester's clock and still count as made now, and how
// far ahead of that clock a stored id must be to be taken for one set by
// a clock that ran ahead (see Replay).
const ReplaySlack = 10 * 60 * 1000

// prune deletes archived records, lowest sequence numbers first, while the
// archive is over ArchiveMaxRecords or ArchiveMaxBytes or its oldest record
// was acked more than ArchiveMaxAge before the newest record was appended,
// or before now if that is earlier (or all of them when w.keep is false).
// A record's age counts from its ack, or from its append if that is later
// (ackedAt): a clock set back at the ack (a restart at the image's build
// date, acks delivered before NTP set it) dated the ack weeks before the
// record, which the first prune on a right clock then dropped
// (TestArchiveSurvivesAckOnAClockBehind).
// Pruning goes in sequence order and stops at the first record that may
// stay, so a record acked out of order can outlive its age limit until the
// records before it go: none is pruned before its time.
//
// The age is not counted up to now alone: a clock that jumps ahead (an RTC
// that lost its battery, an NTP step from a bad source) made every record
// look weeks old, and the first ack or open on it emptied the archive,
// which is what a ledger restored from a backup gets the taps settled
// since back from (TestArchiveSurvivesClockJump). Nothing is appended on
// such a clock (the validator takes no code as fresh), so the newest
// record stays where it was; once records are appended on a right clock
// the limit applies as before.
func (q *Queue) prune(w *wtx) error {
	b, c := w.b, &w.c
	var newest time.Time // the latest append time of the newest records
	for _, r := range []struct {
		bk *bbolt.Bucket
		n  uint64
	}{{b.pending, c.pendingN}, {b.archive, c.archiveN}} {
		// Only a bucket with records: bbolt's Cursor.Last loops for good
		// on one this transaction emptied (its leaf pages are all empty
		// until the commit rebalances them).
		if r.n == 0 {
			continue
		}
		if k, v := r.bk.Cursor().Last(); k != nil && len(v) >= pendingHeader && appendTime(v).After(newest) {
			newest = appendTime(v)
		}
	}
	cutoff := w.now
	if newest.Before(cutoff) {
		cutoff = newest
	}
	cutoff = cutoff.Add(-q.opts.ArchiveMaxAge)
	// The records to drop are found in one pass of one cursor, then
	// deleted by key. A fresh cursor's First for each record (a cursor
	// must not move on after the bucket under it changed) skipped every
	// leaf emptied so far in this transaction: quadratic, 20 s on x86-64
	// to prune 100,000 records, the write lock (and every tap) held all
	// along — the first ack after a validator stood a week.
	var drop [][]byte
	n, nb := c.archiveN, c.archiveBytes
	cur := b.archive.Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		if len(v) < archiveHeader {
			return corruptf("queue: bad archive record %x", k)
		}
		over := !w.keep || n > uint64(q.opts.ArchiveMaxRecords) || nb > uint64(q.opts.ArchiveMaxBytes)
		if !over && !ackedAt(v).Before(cutoff) {
			break
		}
		size := uint64(len(v) - archiveHeader)
		drop = append(drop, append([]byte(nil), k...))
		n--
		nb -= size
	}
	for _, k := range drop {
		if err := b.archive.Delete(k); err != nil {
			return err
		}
	}
	c.archiveN, c.archiveBytes = n, nb
	return nil
}

// wrapErr prefixes an operation's error; ErrClosed is returned as it is.
func wrapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrClosed):
		return err
	}
	return fmt.Errorf("queue: %s: %w", op, err)
}

// LastReplay returns the id of the last replay request carried out in
// this file (0: none). An ack the requester made before it (its time, in
// the same milliseconds, below the id) was made before the records the
// request moved back were sent again: it must not ack them (a kept copy
// of an old ack, published again).
func (q *Queue) LastReplay() (uint64, error) {
	var id uint64
	err := q.view(func(_ *bbolt.Tx, b buckets) error {
		var err error
		id, err = replayID(b.meta)
		return err
	})
	return id, wrapErr("last replay", err)
}
