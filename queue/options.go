package queue

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"
)

// Defaults for the zero fields of Options. They are the same on every
// architecture except DefaultInitialMmapSize; see the package documentation
// ("32-bit ARM") for why.
const (
	// DefaultMaxRecords is the number of unacked records at which Append
	// starts returning ErrFull.
	DefaultMaxRecords = 1_000_000

	// DefaultMaxBytes is the total size of unacked record data (not counting
	// bbolt's overhead) at which Append starts returning ErrFull.
	DefaultMaxBytes int64 = 256 << 20

	// DefaultMaxRecordBytes is the largest record Append accepts.
	DefaultMaxRecordBytes = 64 << 10

	// DefaultMaxFileSize is the hard limit on the bbolt file (bbolt's
	// Options.MaxSize). It keeps the memory map at or under 512 MiB, which a
	// 32-bit ARM process can map reliably.
	DefaultMaxFileSize int64 = 512 << 20

	// DefaultArchiveMaxRecords is how many acked records the archive keeps.
	DefaultArchiveMaxRecords = 100_000

	// DefaultArchiveMaxBytes is how much acked record data the archive keeps.
	DefaultArchiveMaxBytes int64 = 32 << 20

	// DefaultArchiveMaxAge is how long an acked record stays in the archive.
	DefaultArchiveMaxAge = 7 * 24 * time.Hour

	// DefaultMaxGroup is the most appends committed in one transaction
	// (one fsync) by the group commit.
	DefaultMaxGroup = 256

	// DefaultLockTimeout is how long Open waits for the file lock held by
	// another process before giving up.
	DefaultLockTimeout = 10 * time.Second

	// DefaultInitialMmapSize is the initial size of bbolt's memory map: the
	// whole DefaultMaxFileSize (address space only, not memory) on 64-bit
	// platforms, so the map never has to grow and a long read transaction
	// never stalls an append; 4 MiB on 32-bit platforms, where address space
	// is scarce, so the map grows with the file instead.
	DefaultInitialMmapSize = initialMmap32 + (strconv.IntSize/64)*(initialMmap64-initialMmap32)

	initialMmap32 = 4 << 20
	initialMmap64 = int(DefaultMaxFileSize)
)

const (
	// minFileSize is the smallest MaxFileSize accepted.
	minFileSize int64 = 1 << 20
	// maxFileSize32 is the largest MaxFileSize accepted on 32-bit platforms,
	// where a larger contiguous memory map is unlikely to be available:
	// well under 1 GiB, as bbolt's mapping doubles while the file grows.
	maxFileSize32 int64 = 768 << 20
)

// Options configures a Queue. The zero value of every field means the
// matching Default constant; a nil *Options means all defaults.
type Options struct {
	// MaxRecords and MaxBytes bound the unacked records (count, and total
	// data bytes). Reaching either makes Append return ErrFull.
	MaxRecords int
	MaxBytes   int64

	// MaxRecordBytes is the largest record accepted (ErrTooLarge beyond).
	MaxRecordBytes int

	// MaxFileSize bounds the bbolt file (bbolt Options.MaxSize). Appends are
	// refused with ErrFull while the file's used space is above about 7/8 of
	// what bbolt can allocate under this limit, so Ack, Replay and the
	// caller's own writes always have room to commit. At least 1 MiB; at most
	// 768 MiB on 32-bit platforms.
	MaxFileSize int64

	// ArchiveMaxRecords, ArchiveMaxBytes and ArchiveMaxAge bound the archive
	// of acked records; the oldest (lowest sequence numbers) are pruned
	// first. The age is counted up to the newest record's append time, or
	// to now if that is earlier, so a clock that jumps ahead does not empty
	// the archive. A negative ArchiveMaxRecords disables the archive: Ack
	// then deletes records outright.
	ArchiveMaxRecords int
	ArchiveMaxBytes   int64
	ArchiveMaxAge     time.Duration

	// FirstSeq is the sequence number of the first record of a new file
	// (default 1); an existing file keeps counting from its own. A device
	// whose queue file had to be replaced can start the new one above any
	// number the old one used (the validator uses the wall clock in
	// milliseconds), so record ids built from sequence numbers stay unique.
	FirstSeq uint64

	// SeqFloor, if set, is asked (by the writer, until it returns more than
	// 0) for the least sequence number the next record may have; once it
	// gave one, every record appended after this Open is numbered at least
	// that (the first jumps to it if it must, the next count on by one). A
	// caller that numbers from the wall clock in milliseconds (the
	// validator, while its clock is set) makes a file put back from an
	// older backup jump past every number it handed out after the copy,
	// instead of handing them out again under the same epoch. It must not
	// block.
	SeqFloor func() uint64

	// ReserveDisk makes Open give the file disk blocks for its whole
	// length (fallocate): bbolt grows it sparse, and the room the queue
	// counts in it is then not the disk's. The validator sets it; a
	// process of many queues (a simulator, a benchmark) leaves it off, or
	// each of its files takes 16 MiB of disk at once.
	ReserveDisk bool

	// NoCreate makes Open return ErrNoFile instead of creating a new file
	// (and a new epoch) where none is, or where an empty or uninitialised
	// one is: a caller whose new files take their first sequence number
	// from the clock opens this way while its clock is not set.
	NoCreate bool

	// MaxGroup is the most appends committed together in one transaction.
	MaxGroup int

	// InitialMmapSize is bbolt's initial memory-map size in bytes (clamped
	// to MaxFileSize).
	InitialMmapSize int

	// LockTimeout is how long Open waits for another process's lock on the
	// file.
	LockTimeout time.Duration

	// SkipOpenCheck skips the full consistency check that Open runs on an
	// existing file (the page tree, bbolt's tx.Check, the queue's records
	// and counters). The check reads the whole file (see the package
	// documentation for its cost); without it a damaged file can crash the
	// process inside bbolt instead of being moved aside.
	SkipOpenCheck bool

	// Logger receives the queue's log records; nil discards them.
	Logger *slog.Logger

	// Now is the clock used for append and ack times and archive pruning;
	// nil means time.Now.
	Now func() time.Time

	// pageSize overrides bbolt's page size for new files (tests only: the
	// fuzz test uses small pages to keep its inputs small).
	pageSize int
	// ctx ends Open's wait for the file's lock (OpenContext).
	ctx context.Context
}

// withDefaults returns a copy of o (which may be nil) with every zero field
// set to its default.
func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.MaxRecords == 0 {
		r.MaxRecords = DefaultMaxRecords
	}
	if r.MaxBytes == 0 {
		r.MaxBytes = DefaultMaxBytes
	}
	if r.MaxRecordBytes == 0 {
		r.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if r.MaxFileSize == 0 {
		r.MaxFileSize = DefaultMaxFileSize
	}
	if r.ArchiveMaxRecords == 0 {
		r.ArchiveMaxRecords = DefaultArchiveMaxRecords
	}
	if r.ArchiveMaxBytes == 0 {
		r.ArchiveMaxBytes = DefaultArchiveMaxBytes
	}
	if r.ArchiveMaxAge == 0 {
		r.ArchiveMaxAge = DefaultArchiveMaxAge
	}
	if r.FirstSeq == 0 {
		r.FirstSeq = 1
	}
	if r.MaxGroup == 0 {
		r.MaxGroup = DefaultMaxGroup
	}
	if r.InitialMmapSize == 0 {
		r.InitialMmapSize = DefaultInitialMmapSize
	}
	if int64(r.InitialMmapSize) > r.MaxFileSize {
		r.InitialMmapSize = int(r.MaxFileSize)
	}
	if r.LockTimeout == 0 {
		r.LockTimeout = DefaultLockTimeout
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return r
}

// CheckFileSize checks a MaxFileSize: at least 1 MiB, and on a 32-bit
// process at most what it can map reliably.
func CheckFileSize(n int64) error {
	switch {
	case n < minFileSize:
		return fmt.Errorf("%d is below the minimum %d", n, minFileSize)
	case strconv.IntSize == 32 && n > maxFileSize32:
		return fmt.Errorf("%d is above %d, the most a 32-bit process can map reliably", n, maxFileSize32)
	}
	return nil
}

// validate rejects options that cannot work.
func (o *Options) validate() error {
	fileSize := CheckFileSize(o.MaxFileSize)
	switch {
	case o.MaxRecords < 0:
		return fmt.Errorf("queue: MaxRecords %d is negative", o.MaxRecords)
	case o.MaxBytes < 0:
		return fmt.Errorf("queue: MaxBytes %d is negative", o.MaxBytes)
	case o.MaxRecordBytes < 0:
		return fmt.Errorf("queue: MaxRecordBytes %d is negative", o.MaxRecordBytes)
	case fileSize != nil:
		return fmt.Errorf("queue: MaxFileSize %w", fileSize)
	case o.ArchiveMaxBytes < 0:
		return fmt.Errorf("queue: ArchiveMaxBytes %d is negative", o.ArchiveMaxBytes)
	case o.ArchiveMaxAge < 0:
		return fmt.Errorf("queue: ArchiveMaxAge %v is negative", o.ArchiveMaxAge)
	case o.MaxGroup < 0:
		return fmt.Errorf("queue: MaxGroup %d is negative", o.MaxGroup)
	case o.InitialMmapSize < 0:
		return fmt.Errorf("queue: InitialMmapSize %d is negative", o.InitialMmapSize)
	case o.LockTimeout < 0:
		return fmt.Errorf("queue: LockTimeout %v is negative", o.LockTimeout)
	}
	return nil
}

// archiveEnabled reports whether Ack keeps acked records.
func (o *Options) archiveEnabled() bool { return o.ArchiveMaxRecords > 0 }

// bboltAllocSize is bbolt's DB.AllocSize default (16 MiB), the step by
// which it grows a file once its map is larger than that.
const bboltAllocSize int64 = 16 << 20

// allocatable returns how large bbolt v1.5.0 lets the page high-water mark
// grow under MaxSize = maxSize. bbolt refuses to allocate when the next
// growth step would pass MaxSize: below 16 MiB the file grows to the next
// power of two of the map size, above it by 16 MiB beyond what is needed
// (db.allocate and db.growSize). Mirroring that here lets Append refuse
// records early enough that Ack still has room.
func allocatable(maxSize int64) int64 {
	if maxSize >= 2*bboltAllocSize {
		return maxSize - bboltAllocSize
	}
	if maxSize >= bboltAllocSize {
		return bboltAllocSize
	}
	p := int64(32 << 10)
	for p*2 <= maxSize {
		p *= 2
	}
	return p
}

// appendBudget returns the used-space ceiling above which appends are
// refused: 7/8 of what bbolt can allocate, leaving the rest for acks,
// replays, pruning and the caller's own buckets.
func appendBudget(maxSize int64) int64 {
	a := allocatable(maxSize)
	return a - a/8
}
