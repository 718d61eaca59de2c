package queue

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Bucket names. The queue owns every top-level bucket whose name starts with
// BucketPrefix; callers that keep their own state in the same file (through
// State) must use other names.
const (
	// BucketPrefix starts the name of every bucket the queue owns.
	BucketPrefix = "queue."

	// MetaBucket holds the file format version, the epoch, the creation
	// time, the last sequence number handed out and the record counters.
	MetaBucket = BucketPrefix + "meta"

	// PendingBucket holds the unacked records, keyed by sequence number.
	PendingBucket = BucketPrefix + "pending"

	// ArchiveBucket holds acked records until they are pruned, keyed by
	// sequence number.
	ArchiveBucket = BucketPrefix + "archive"

	// AdoptedBucket holds records of other queue files (salvaged from a
	// damaged one) waiting for delivery under their own epoch: one nested
	// bucket per epoch, keyed by sequence number.
	AdoptedBucket = BucketPrefix + "adopted"
)

// formatVersion is the version of the layout described here. Open refuses
// files with a newer version (ErrUnsupportedFormat).
//
// Layout, version 1 (integers big-endian):
//
//	queue.meta     "format"        uint64 version
//	               "epoch"         16 random bytes, made when the file was created
//	               "created"       int64 unix nanoseconds
//	               "seq"           uint64 last sequence number handed out (0: none yet)
//	               "pending.count" uint64 ┐
//	               "pending.bytes" uint64 │ number and total data bytes of the
//	               "archive.count" uint64 │ records in each bucket
//	               "archive.bytes" uint64 ┘
//	               "adopted.count" uint64 ┐ optional (0 when absent): the
//	               "adopted.bytes" uint64 ┘ records in queue.adopted
//	               "replay.id"     uint64 optional: the id of the last Replay
//	                               request carried out
//	queue.pending  uint64 seq → int64 append time (unix ns) ‖ data
//	queue.archive  uint64 seq → int64 append time ‖ int64 ack time ‖ data
//	queue.adopted  epoch → bucket of uint64 seq → int64 append time ‖ data
//	               (optional: only in files that adopted salvaged records)
const formatVersion = 1

// epochLen is the size of the random epoch id in bytes.
const epochLen = 16

var (
	bMeta    = []byte(MetaBucket)
	bPending = []byte(PendingBucket)
	bArchive = []byte(ArchiveBucket)
	bAdopted = []byte(AdoptedBucket)

	kFormat       = []byte("format")
	kEpoch        = []byte("epoch")
	kCreated      = []byte("created")
	kSeq          = []byte("seq")
	kPendingCount = []byte("pending.count")
	kPendingBytes = []byte("pending.bytes")
	kArchiveCount = []byte("archive.count")
	kArchiveBytes = []byte("archive.bytes")
	kAdoptedCount = []byte("adopted.count")
	kAdoptedBytes = []byte("adopted.bytes")
	kReplayID     = []byte("replay.id")
	kReplayLeft   = []byte("replay.left") // next seq ‖ last seq of a replay not finished
)

const (
	pendingHeader = 8  // append time
	archiveHeader = 16 // append time, ack time
)

// fillPercent is used for the record buckets: keys are appended in
// increasing order, so packing leaf pages full keeps the file small (bbolt's
// default, 0.5, would leave every page half empty).
const fillPercent = 1.0

// seqKey encodes a sequence number as a bucket key.
func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// keySeq decodes a bucket key made by seqKey.
func keySeq(k []byte) (uint64, bool) {
	if len(k) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k), true
}

func putUint64(b []byte, v uint64) { binary.BigEndian.PutUint64(b, v) }

func getUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// timeNanos converts a time to what is stored; the zero time is stored as 0.
func timeNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// nanosTime is the inverse of timeNanos.
func nanosTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// pendingValue encodes an unacked record.
func pendingValue(appended time.Time, data []byte) []byte {
	v := make([]byte, pendingHeader+len(data))
	putUint64(v, uint64(timeNanos(appended)))
	copy(v[pendingHeader:], data)
	return v
}

// archiveValue turns a pending value into an archive value acked at acked,
// or at its append time if acked is earlier: a record is never acked
// before it was appended, and a clock set back since (a restart without a
// battery-backed clock) would otherwise date the ack weeks before the
// record, which prune then dropped at once (ackedAt).
func archiveValue(pending []byte, acked time.Time) []byte {
	v := make([]byte, archiveHeader+len(pending)-pendingHeader)
	copy(v, pending[:pendingHeader])
	putUint64(v[pendingHeader:], uint64(timeNanos(laterOf(acked, appendTime(pending)))))
	copy(v[archiveHeader:], pending[pendingHeader:])
	return v
}

// unarchiveValue turns an archive value back into a pending value.
func unarchiveValue(archived []byte) []byte {
	v := make([]byte, len(archived)-(archiveHeader-pendingHeader))
	copy(v, archived[:pendingHeader])
	copy(v[pendingHeader:], archived[archiveHeader:])
	return v
}

// appendTime returns the append time stored at the start of a pending or
// archive value.
func appendTime(v []byte) time.Time { return nanosTime(int64(getUint64(v))) }

// ackTime returns the ack time of an archive value.
func ackTime(v []byte) time.Time { return nanosTime(int64(getUint64(v[pendingHeader:]))) }

// ackedAt is the time an archive value's age counts from: its ack time,
// or its append time if that is later (a file written before archiveValue
// kept the ack from going before the append holds such values).
func ackedAt(v []byte) time.Time { return laterOf(ackTime(v), appendTime(v)) }

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// counters mirrors the counters and last sequence number in MetaBucket.
// Every write transaction loads them, updates them with its changes and
// stores them back, so they are always exactly consistent with the buckets.
type counters struct {
	lastSeq      uint64
	pendingN     uint64
	pendingBytes uint64
	archiveN     uint64
	archiveBytes uint64
	adoptedN     uint64 // optional keys: files without adopted records may lack them
	adoptedBytes uint64
}

// fields pairs each counter with its key, for loading and storing.
func (c *counters) fields() [5]struct {
	key []byte
	val *uint64
} {
	return [5]struct {
		key []byte
		val *uint64
	}{
		{kSeq, &c.lastSeq},
		{kPendingCount, &c.pendingN},
		{kPendingBytes, &c.pendingBytes},
		{kArchiveCount, &c.archiveN},
		{kArchiveBytes, &c.archiveBytes},
	}
}

// load reads the counters from the meta bucket.
func (c *counters) load(meta *bbolt.Bucket) error {
	for _, f := range c.fields() {
		v := meta.Get(f.key)
		if len(v) != 8 {
			return corruptf("queue: meta %q has %d bytes, want 8", f.key, len(v))
		}
		*f.val = getUint64(v)
	}
	for _, f := range c.optional() {
		switch v := meta.Get(f.key); {
		case v == nil:
			*f.val = 0
		case len(v) != 8:
			return corruptf("queue: meta %q has %d bytes, want 8", f.key, len(v))
		default:
			*f.val = getUint64(v)
		}
	}
	return nil
}

// optional pairs the counters that files written before they existed lack
// with their keys; they are stored only once they are not zero.
func (c *counters) optional() [2]struct {
	key []byte
	val *uint64
} {
	return [2]struct {
		key []byte
		val *uint64
	}{{kAdoptedCount, &c.adoptedN}, {kAdoptedBytes, &c.adoptedBytes}}
}

// store writes the counters to the meta bucket.
func (c *counters) store(meta *bbolt.Bucket) error {
	for _, f := range c.fields() {
		var b [8]byte
		putUint64(b[:], *f.val)
		if err := meta.Put(f.key, b[:]); err != nil {
			return err
		}
	}
	for _, f := range c.optional() {
		if *f.val == 0 && meta.Get(f.key) == nil {
			continue
		}
		var b [8]byte
		putUint64(b[:], *f.val)
		if err := meta.Put(f.key, b[:]); err != nil {
			return err
		}
	}
	return nil
}

// replayID is the id of the last replay request carried out in the file
// (0: none); a value of another size is damage (read as none, every old
// request would be carried out again).
func replayID(meta *bbolt.Bucket) (uint64, error) {
	switch v := meta.Get(kReplayID); {
	case v == nil:
		return 0, nil
	case len(v) != 8:
		return 0, corruptf("queue: meta %q has %d bytes, want 8", kReplayID, len(v))
	default:
		return getUint64(v), nil
	}
}

// buckets are the queue's buckets in one transaction; adopted is nil in a
// file that never adopted records (and in a read-only transaction until
// then).
type buckets struct {
	meta, pending, archive *bbolt.Bucket
	adopted                *bbolt.Bucket
}

// openBuckets returns the queue's buckets in tx, or a corruption error if
// any is missing.
func openBuckets(tx *bbolt.Tx) (buckets, error) {
	b := buckets{meta: tx.Bucket(bMeta), pending: tx.Bucket(bPending), archive: tx.Bucket(bArchive), adopted: tx.Bucket(bAdopted)}
	if b.meta == nil || b.pending == nil || b.archive == nil {
		return b, corruptf("queue: bucket missing (meta %t, pending %t, archive %t)", b.meta != nil, b.pending != nil, b.archive != nil)
	}
	if tx.Writable() {
		b.pending.FillPercent = fillPercent
		b.archive.FillPercent = fillPercent
	}
	return b, nil
}

// readHeader validates the format version and returns the epoch (hex).
func readHeader(meta *bbolt.Bucket) (string, error) {
	f := meta.Get(kFormat)
	if len(f) != 8 {
		return "", corruptf("queue: meta format has %d bytes, want 8", len(f))
	}
	if v := getUint64(f); v != formatVersion {
		if v > formatVersion {
			return "", fmt.Errorf("%w: version %d, this program reads version %d", ErrUnsupportedFormat, v, formatVersion)
		}
		return "", corruptf("queue: meta format version %d is invalid", v)
	}
	e := meta.Get(kEpoch)
	if len(e) != epochLen {
		return "", corruptf("queue: meta epoch has %d bytes, want %d", len(e), epochLen)
	}
	return hex.EncodeToString(e), nil
}
