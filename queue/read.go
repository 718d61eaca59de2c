package queue

import (
	"math"
	"os"
	"time"

	"go.etcd.io/bbolt"
)

// Peek returns the oldest unacked records in sequence order without
// removing them: at most max records (no limit if max <= 0) and at most
// maxBytes of record data (no limit if maxBytes <= 0), except that the
// oldest record is always returned even if it alone is larger than
// maxBytes. It returns an empty slice when nothing is waiting.
func (q *Queue) Peek(max, maxBytes int) ([]Record, error) {
	return q.PeekAfter(0, max, maxBytes)
}

// PeekAfter is Peek for the unacked records with sequence numbers greater
// than after, so an uplink can send the next batch before the previous one
// is acked.
//
// Peek and PeekAfter return only records whose Append has returned (whose
// commit is fsynced): a record still being committed is not sent, since a
// power cut before its fsync returns would take it back and its sequence
// number would be handed out again.
func (q *Queue) PeekAfter(after uint64, max, maxBytes int) ([]Record, error) {
	if after == math.MaxUint64 {
		return nil, nil
	}
	var out []Record
	err := q.view(func(_ *bbolt.Tx, b buckets) error {
		var err error
		// Up to the last durable record: a later one is committing, and
		// its fsync has not returned yet.
		out, err = peekBucket(b.pending, PendingBucket, after, q.durable.Load(), max, maxBytes)
		return err
	})
	if err != nil {
		return nil, wrapErr("peek", err)
	}
	return out, nil
}

// peekBucket reads the records of a bucket of pending values with
// sequence numbers after < seq <= through, at most max records and
// maxBytes of data (the first always; no limit when <= 0).
func peekBucket(bk *bbolt.Bucket, name string, after, through uint64, max, maxBytes int) ([]Record, error) {
	var out []Record
	total := 0
	c := bk.Cursor()
	for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
		seq, ok := keySeq(k)
		if !ok || len(v) < pendingHeader {
			return nil, corruptf("queue: bad record %x in %s", k, name)
		}
		if seq > through {
			break
		}
		n := len(v) - pendingHeader
		if maxBytes > 0 && len(out) > 0 && total+n > maxBytes {
			break
		}
		out = append(out, Record{Seq: seq, Time: appendTime(v), Data: append([]byte(nil), v[pendingHeader:]...)})
		total += n
		if max > 0 && len(out) >= max {
			break
		}
	}
	return out, nil
}

// Newest returns the record with the highest sequence number the file
// holds, unacked or still in the archive (Time: when it was appended), and
// false when it holds none. A caller that numbers records from a clock
// (Options.SeqFloor) reads from it how far the file's numbers run ahead of
// that clock.
func (q *Queue) Newest() (Record, bool, error) {
	var out Record
	found := false
	err := q.view(func(_ *bbolt.Tx, b buckets) error {
		for _, part := range []struct {
			bucket *bbolt.Bucket
			name   string
			header int
		}{{b.pending, PendingBucket, pendingHeader}, {b.archive, ArchiveBucket, archiveHeader}} {
			k, v := part.bucket.Cursor().Last()
			if k == nil {
				continue
			}
			seq, ok := keySeq(k)
			if !ok || len(v) < part.header {
				return corruptf("queue: bad %s record %x", part.name, k)
			}
			if found && seq <= out.Seq {
				continue
			}
			// Both headers begin with the append time.
			out, found = Record{Seq: seq, Time: appendTime(v), Data: append([]byte(nil), v[part.header:]...)}, true
		}
		return nil
	})
	if err != nil {
		return Record{}, false, wrapErr("newest", err)
	}
	return out, found, nil
}

// Stats describes the queue at one instant.
type Stats struct {
	Count         int       // unacked records
	Bytes         int64     // their total data bytes
	OldestUnacked time.Time // append time of the oldest unacked record; zero if none
	LastSeq       uint64    // last sequence number handed out (0 if none yet)
	Archived      int       // acked records still in the archive
	Adopted       int       // records of earlier queue files waiting for delivery (Adopt)
	AdoptedBytes  int64     // their total data bytes
	ArchivedBytes int64     // their total data bytes
	FileSize      int64     // size of the file on disk
	UsedSize      int64     // bytes of the file in use (bbolt pages not free)
}

// Stats returns the queue's counters. It is cheap (no scan).
func (q *Queue) Stats() (Stats, error) {
	var s Stats
	err := q.view(func(tx *bbolt.Tx, b buckets) error {
		var c counters
		if err := c.load(b.meta); err != nil {
			return err
		}
		s.Count, s.Bytes = int(c.pendingN), int64(c.pendingBytes)
		s.Archived, s.ArchivedBytes = int(c.archiveN), int64(c.archiveBytes)
		s.Adopted, s.AdoptedBytes = int(c.adoptedN), int64(c.adoptedBytes)
		s.LastSeq = c.lastSeq
		if _, v := b.pending.Cursor().First(); len(v) >= pendingHeader {
			s.OldestUnacked = appendTime(v)
		}
		st := q.db.Stats()
		s.UsedSize = tx.Size() - int64(st.FreePageN+st.PendingPageN)*q.pageSize
		return nil
	})
	if err != nil {
		return Stats{}, wrapErr("stats", err)
	}
	info, err := os.Stat(q.path)
	if err != nil {
		return Stats{}, wrapErr("stats", err)
	}
	s.FileSize = info.Size()
	return s, nil
}

// Walk calls fn for every record the file holds — the unacked ones, then
// the acked ones still in the archive (archived true) — in sequence order,
// with the caller's state of the same snapshot; it stops at fn's first
// error and returns it. It is for inspection and salvage, not the send
// path: it copies every record. The Record's Data is fn's to keep.
func (q *Queue) Walk(fn func(s *State, r Record, archived bool) error) error {
	err := q.view(func(tx *bbolt.Tx, b buckets) error {
		st := &State{tx: tx}
		for _, part := range []struct {
			bucket   *bbolt.Bucket
			name     string
			header   int
			archived bool
		}{{b.pending, PendingBucket, pendingHeader, false}, {b.archive, ArchiveBucket, archiveHeader, true}} {
			err := part.bucket.ForEach(func(k, v []byte) error {
				seq, ok := keySeq(k)
				if !ok || len(v) < part.header {
					return corruptf("queue: bad %s record %x", part.name, k)
				}
				r := Record{Seq: seq, Data: append([]byte(nil), v[part.header:]...)}
				if !part.archived {
					r.Time = appendTime(v)
				}
				return fn(st, r, part.archived)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return wrapErr("walk", err)
}
