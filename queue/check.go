package queue

import (
	"bytes"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"
)

// Check runs a full consistency check: the page tree (read directly, see
// verifyPages), bbolt's own (tx.Check: every page reachable or free exactly
// once, keys in order) and the queue's (its
// buckets and header are valid, every record is well formed, no sequence
// number is above the last one handed out or both unacked and archived, and
// the stored counters match the records). It reads the whole file.
func (q *Queue) Check() error {
	err := q.view(func(tx *bbolt.Tx, _ buckets) error { return checkTx(q.path, q.db, tx) })
	return wrapErr("check", err)
}

// checkTx is Check within a transaction on db, the bbolt file at path.
func checkTx(path string, db *bbolt.DB, tx *bbolt.Tx) error {
	if err := verifyTx(path, db, tx); err != nil {
		return err
	}
	if err := boltCheck(tx); err != nil {
		return err
	}
	b, err := openBuckets(tx)
	if err != nil {
		return err
	}
	if _, err := readHeader(b.meta); err != nil {
		return err
	}
	if _, err := replayID(b.meta); err != nil {
		return err
	}
	found, err := scanRecords(b)
	if err != nil {
		return err
	}
	var stored counters
	if err := stored.load(b.meta); err != nil {
		return err
	}
	if found.lastSeq > stored.lastSeq {
		return corruptf("queue: record %d is above the last sequence number %d", found.lastSeq, stored.lastSeq)
	}
	found.lastSeq = stored.lastSeq
	if found != stored {
		return corruptf("queue: counters %+v do not match the records %+v", stored, found)
	}
	return nil
}

// boltCheck runs bbolt's tx.Check and collects its findings.
func boltCheck(tx *bbolt.Tx) error {
	var errs []error
	for err := range tx.Check() {
		if len(errs) < 10 { // keep reading: the checker blocks until drained
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return corruption{fmt.Errorf("queue: bbolt check: %w", errors.Join(errs...))}
	}
	return nil
}

// scanRecords reads every record and returns the counts and sizes actually
// found (lastSeq is the highest sequence number seen), or a corruption error
// for a malformed record or a record in both buckets.
func scanRecords(b buckets) (counters, error) {
	var c counters
	scan := func(bk *bbolt.Bucket, name string, header int, n, size *uint64) error {
		return bk.ForEach(func(k, v []byte) error {
			seq, ok := keySeq(k)
			switch {
			case !ok || seq == 0:
				return corruptf("queue: %s: bad key %x", name, k)
			case v == nil:
				return corruptf("queue: %s: unexpected nested bucket %x", name, k)
			case len(v) < header:
				return corruptf("queue: %s: record %d has %d bytes, want at least %d", name, seq, len(v), header)
			}
			*n++
			*size += uint64(len(v) - header)
			c.lastSeq = max(c.lastSeq, seq)
			return nil
		})
	}
	if err := scan(b.pending, PendingBucket, pendingHeader, &c.pendingN, &c.pendingBytes); err != nil {
		return c, err
	}
	if err := scan(b.archive, ArchiveBucket, archiveHeader, &c.archiveN, &c.archiveBytes); err != nil {
		return c, err
	}
	if b.adopted != nil {
		lastSeq := c.lastSeq // adopted records have their own epoch's numbers
		err := b.adopted.ForEach(func(k, v []byte) error {
			if v != nil {
				return corruptf("queue: %s: value %x where an epoch bucket belongs", AdoptedBucket, k)
			}
			if len(k) == 0 || len(k) > maxEpochLen {
				return corruptf("queue: %s: epoch of %d bytes", AdoptedBucket, len(k))
			}
			eb := b.adopted.Bucket(k)
			if eb == nil {
				return corruptf("queue: %s: epoch %q is not a bucket", AdoptedBucket, k)
			}
			return scan(eb, AdoptedBucket+"/"+string(k), pendingHeader, &c.adoptedN, &c.adoptedBytes)
		})
		if err != nil {
			return c, err
		}
		c.lastSeq = lastSeq
	}
	// Both buckets are sorted: walk them side by side to find a sequence
	// number in both.
	pc, ac := b.pending.Cursor(), b.archive.Cursor()
	pk, _ := pc.First()
	ak, _ := ac.First()
	for pk != nil && ak != nil {
		switch bytes.Compare(pk, ak) {
		case 0:
			s, _ := keySeq(pk)
			return c, corruptf("queue: record %d is both unacked and archived", s)
		case -1:
			pk, _ = pc.Next()
		default:
			ak, _ = ac.Next()
		}
	}
	return c, nil
}
