package queue

import (
	"fmt"
	"math"
	"sort"

	"go.etcd.io/bbolt"
)

// maxEpochLen bounds the epoch name of adopted records (the link's limit
// for names in messages).
const maxEpochLen = 64

// Adopted records
//
// A queue file that had to be replaced (it was damaged and moved aside)
// may still hold unsent records: Salvage reads them, and Adopt keeps them
// in the new file under their own epoch and sequence numbers, until the
// server acknowledges them (AckAdopted). They never mix with this file's
// own records: their epoch differs, and sequence numbers are per epoch.

// Adopt keeps records of another queue file, whose epoch is epoch, until
// AckAdopted: each keeps its sequence number and append time. A record
// already adopted under the same epoch and sequence number is left as it
// is, so adopting the same salvage twice changes nothing. Adopt ignores
// MaxRecords and MaxBytes (the records exist already; refusing them would
// lose them) but not the file size. It returns how many records it added.
// Records are committed in transactions of up to 1000.
func (q *Queue) Adopt(epoch string, recs []Record) (int, error) {
	if epoch == "" || len(epoch) > maxEpochLen || epoch == q.epoch {
		return 0, fmt.Errorf("queue: adopt: epoch %q is empty, longer than %d bytes or this file's own", epoch, maxEpochLen)
	}
	recs = append([]Record(nil), recs...)
	sort.Slice(recs, func(i, j int) bool { return recs[i].Seq < recs[j].Seq })
	for _, r := range recs {
		if r.Seq == 0 || len(r.Data) > q.opts.MaxRecordBytes {
			return 0, fmt.Errorf("queue: adopt: record %d: sequence number 0 or more than %d bytes", r.Seq, q.opts.MaxRecordBytes)
		}
	}
	total := 0
	for len(recs) > 0 {
		part := recs[:min(len(recs), ackChunk)]
		recs = recs[len(part):]
		n, err := q.update(func(w *wtx) (int, error) {
			eb, err := w.adoptedEpoch(epoch, true)
			if err != nil {
				return 0, err
			}
			eb.FillPercent = fillPercent
			n := 0
			for _, r := range part {
				k := seqKey(r.Seq)
				if eb.Get(k) != nil {
					continue
				}
				if err := eb.Put(k, pendingValue(r.Time, r.Data)); err != nil {
					return 0, err
				}
				w.c.adoptedN++
				w.c.adoptedBytes += uint64(len(r.Data))
				n++
			}
			return n, nil
		})
		total += n
		if err != nil {
			return total, wrapErr("adopt", err)
		}
	}
	return total, nil
}

// AdoptedEpochs returns the epochs that have adopted records waiting, in
// order (Stats counts the records).
func (q *Queue) AdoptedEpochs() ([]string, error) {
	var out []string
	err := q.view(func(_ *bbolt.Tx, b buckets) error {
		if b.adopted == nil {
			return nil
		}
		return b.adopted.ForEach(func(k, v []byte) error {
			if v != nil {
				return corruptf("queue: %s: %x is not an epoch bucket", AdoptedBucket, k)
			}
			out = append(out, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, wrapErr("adopted epochs", err)
	}
	return out, nil
}

// PeekAdopted is PeekAfter for the adopted records of epoch: the oldest
// ones with sequence numbers greater than after, at most max records and
// maxBytes of data (the first always). It returns an empty slice when
// none is waiting.
func (q *Queue) PeekAdopted(epoch string, after uint64, max, maxBytes int) ([]Record, error) {
	if after == math.MaxUint64 {
		return nil, nil
	}
	var out []Record
	err := q.view(func(_ *bbolt.Tx, b buckets) error {
		if b.adopted == nil {
			return nil
		}
		eb := b.adopted.Bucket([]byte(epoch))
		if eb == nil {
			return nil
		}
		var err error
		out, err = peekBucket(eb, AdoptedBucket+"/"+epoch, after, math.MaxUint64, max, maxBytes)
		return err
	})
	if err != nil {
		return nil, wrapErr("peek adopted", err)
	}
	return out, nil
}

// AckAdopted deletes the given adopted records of epoch, delivered
// (adopted records are not archived: the damaged file they came from is
// kept aside). Unknown sequence numbers are ignored; an epoch left empty
// is removed. It returns how many records it deleted.
func (q *Queue) AckAdopted(epoch string, seqs ...uint64) (int, error) {
	total := 0
	for len(seqs) > 0 {
		part := seqs[:min(len(seqs), ackChunk)]
		seqs = seqs[len(part):]
		n, err := q.update(func(w *wtx) (int, error) {
			eb, err := w.adoptedEpoch(epoch, false)
			if err != nil || eb == nil {
				return 0, err
			}
			n := 0
			for _, seq := range part {
				k := seqKey(seq)
				v := eb.Get(k)
				if v == nil {
					continue
				}
				if len(v) < pendingHeader {
					return 0, corruptf("queue: bad adopted record %d in epoch %q", seq, epoch)
				}
				size := uint64(len(v) - pendingHeader)
				if err := eb.Delete(k); err != nil {
					return 0, err
				}
				w.c.adoptedN--
				w.c.adoptedBytes -= size
				n++
			}
			if k, _ := eb.Cursor().First(); k == nil {
				if err := w.b.adopted.DeleteBucket([]byte(epoch)); err != nil {
					return 0, err
				}
			}
			return n, nil
		})
		total += n
		if err != nil {
			return total, wrapErr("ack adopted", err)
		}
	}
	return total, nil
}

// adoptedEpoch returns the bucket of epoch's adopted records, creating it
// (and the adopted bucket) when create is set; nil if it does not exist.
func (w *wtx) adoptedEpoch(epoch string, create bool) (*bbolt.Bucket, error) {
	if w.b.adopted == nil {
		if !create {
			return nil, nil
		}
		b, err := w.b.meta.Tx().CreateBucket(bAdopted)
		if err != nil {
			return nil, err
		}
		w.b.adopted = b
	}
	if eb := w.b.adopted.Bucket([]byte(epoch)); eb != nil || !create {
		return eb, nil
	}
	return w.b.adopted.CreateBucket([]byte(epoch))
}
