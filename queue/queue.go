package queue

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/farego/farego/queue/durable"
)

// Record is one record read from the queue.
type Record struct {
	Seq  uint64    // sequence number, unique and increasing within the queue's epoch
	Time time.Time // when it was appended (the queue's clock)
	Data []byte    // the bytes given to Append; a copy the caller owns
}

// Queue is a durable FIFO of byte records in one bbolt file. It is safe for
// concurrent use. Use Open to get one and Close to release the file.
type Queue struct {
	path     string
	opts     Options
	log      *slog.Logger
	db       *bbolt.DB
	epoch    string
	pageSize int64
	budget   int64 // used-space ceiling for appends; see appendBudget
	// cappedUntil (UnixNano; 0: not capped): bbolt refused to grow the
	// file past MaxFileSize, and appends are refused before their build
	// runs until then (cappedFor), or until an ack, a replay or a prune
	// (update) has committed: they free pages. Pages can also come free
	// without one (a reader ends), so the cap lasts only a while.
	cappedUntil atomic.Int64

	// Group commit: Append puts requests in waiting and wakes the writer
	// goroutine, which commits everything waiting in one transaction.
	mu         sync.Mutex
	waiting    []*appendReq
	closing    bool // no new requests are accepted
	wake       chan struct{}
	writerDone chan struct{}
	refusals   int // consecutive ErrFull refusals; writer goroutine only
	// seqFloor is what Options.SeqFloor gave at the first append that
	// asked it a number (0: not yet); writer goroutine only.
	seqFloor uint64

	// rw lets Close wait for reads and acks in progress; closed makes new
	// ones fail with ErrClosed.
	rw        sync.RWMutex
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// failing is set once a failed commit could not be taken back
	// (ErrStorageFailing): every change is refused from then on.
	failing atomic.Pointer[error]
	// commitMu is held by every write transaction, and by an append's
	// across taking back its failed commit (writeTx): an ack or state
	// update waiting on bbolt's writer lock while that commit failed
	// would otherwise begin on the failed commit's meta, still read from
	// the page cache, and commit its taps for good. Taken before rw.
	commitMu sync.Mutex

	commits atomic.Uint64 // group commits done (for tests and benchmarks)

	// durable is the highest sequence number whose commit has returned,
	// fsync included. bbolt makes a commit visible to new read
	// transactions when it writes the meta page, before the fsync that
	// makes it durable returns: Peek must not hand out records that a
	// power cut in that window would take back (and whose sequence
	// numbers would then be handed out again).
	durable atomic.Uint64
}

// Open opens the queue file at path, creating it (and a new epoch) if it
// does not exist or is empty. opts may be nil for the defaults.
//
// An existing file is first checked (see Options.SkipOpenCheck). A file
// that fails to open or check is renamed to path+".corrupt-<UTC time>" and
// Open returns a *CorruptError (errors.Is(err, ErrCorrupt)); it does not
// create a new file in its place. Errors that say nothing about the file's
// contents (permissions, the lock held by another process, mmap failures)
// are returned as they are, and the file is left alone.
func Open(path string, opts *Options) (*Queue, error) {
	return OpenContext(context.Background(), path, opts)
}

// OpenContext is Open that stops waiting for another process's lock on the
// file (Options.LockTimeout) when ctx is done, returning ctx's error: a
// validator told to stop while an earlier process still holds its queue
// file stops at once, not after the whole timeout.
func OpenContext(ctx context.Context, path string, opts *Options) (*Queue, error) {
	o := opts.withDefaults()
	o.ctx = ctx
	if err := o.validate(); err != nil {
		return nil, err
	}
	info, err := os.Stat(path)
	switch {
	case err == nil && !info.Mode().IsRegular():
		return nil, fmt.Errorf("queue: open %s: not a regular file", path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("queue: open: %w", err)
	}
	existed := err == nil && info.Size() > 0
	if !existed && o.NoCreate {
		return nil, fmt.Errorf("%w: %s", ErrNoFile, path)
	}
	if err == nil && info.Size() == 0 {
		// Nothing in it to salvage, but not a first start either: a
		// power cut before the file's first write reached the disk, a
		// full disk at creation, or a file truncated. The codes it had
		// seen and its counters are gone; the operator is told.
		o.Logger.Warn("queue: the queue file is empty (0 bytes): a new queue file is made in its place; whatever it held is gone (a power cut or a full disk at its creation, or the file truncated)",
			"path", path, "modified", info.ModTime().UTC())
	}

	var recount *counters
	if existed && !o.SkipOpenCheck {
		if recount, err = precheck(path, &o); err != nil {
			return nil, o.openFailed(path, err)
		}
	}

	db, err := openBolt(path, &o, false)
	if err != nil {
		return nil, o.openFailed(path, err)
	}
	q := &Queue{
		path:       path,
		opts:       o,
		log:        o.Logger,
		db:         db,
		pageSize:   int64(db.Info().PageSize),
		budget:     appendBudget(o.MaxFileSize),
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
	}
	c, err := q.init(recount)
	if err != nil {
		_ = db.Close()
		return nil, o.openFailed(path, err)
	}
	q.durable.Store(c.lastSeq)
	// bbolt fsyncs the file but not the directory entry that names it;
	// without this a power cut could lose the whole file. At every Open,
	// not only when this one made the file: a start killed after making
	// it and before this sync (or whose sync failed) left a file the next
	// start found and filled, its name never on the disk, and the next
	// power cut took it back with every tap committed in it.
	if err := durable.SyncDir(filepath.Dir(path)); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("queue: sync the directory of %s: %w", path, err)
	}
	if err := q.reserve(); err != nil {
		q.log.Warn("queue: reserving the file's disk blocks failed: appends may find the disk full before the file is", "path", path, "err", err)
	}
	// Not a reason to keep the file closed (a full file cannot take the
	// records moved back): what is left stays recorded for the next Open.
	if n, err := q.resumeReplay(); err != nil {
		q.log.Error("queue: finishing a replay cut short (a power cut) failed; tried again at the next start",
			"path", path, "records", n, "err", err)
	} else if n > 0 {
		q.log.Warn("queue: a replay cut short (a power cut) finished: its records are sent again", "path", path, "records", n)
	}
	q.log.Info("queue: opened", "path", path, "epoch", q.epoch,
		"records", c.pendingN, "bytes", c.pendingBytes, "last_seq", c.lastSeq,
		"archived", c.archiveN, "initial_mmap", o.InitialMmapSize, "max_file_size", o.MaxFileSize)
	go q.writer()
	return q, nil
}

// openBolt opens path with bbolt and the queue's settings, turning panics
// and errors that mean a damaged file into corruption errors.
func openBolt(path string, o *Options, readOnly bool) (db *bbolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			// bbolt panics on some kinds of damage (for example in its
			// freelist rebuild). The file descriptor it had opened is lost.
			db, err = nil, corruptf("queue: bbolt panicked opening %s: %v", path, p)
		}
	}()
	bo := &bbolt.Options{
		Timeout: o.LockTimeout,
		// bbolt's guidance: NoSync is never safe for data that matters.
		NoSync: false,
		// Do not write the freelist on every commit (it is rebuilt by
		// scanning the file on open): fewer pages written per append.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
		ReadOnly:       readOnly,
		MaxSize:        int(o.MaxFileSize),
		PageSize:       o.pageSize,
	}
	if !readOnly {
		bo.InitialMmapSize = o.InitialMmapSize
	}
	db, err = openLocked(o.ctx, path, bo)
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v for its lock: %w)", ErrLocked, path, o.LockTimeout, err)
	}
	if err != nil && o.ctx != nil && o.ctx.Err() != nil && errors.Is(err, o.ctx.Err()) {
		return nil, fmt.Errorf("queue: open %s: stopped waiting for its lock: %w", path, err)
	}
	if err != nil {
		err = fmt.Errorf("queue: open %s: %w", path, err)
		if isBoltCorruption(err) {
			return nil, corruption{err}
		}
		return nil, err
	}
	return db, nil
}

// lockPoll is how long one bbolt.Open waits for the lock before
// openLocked looks at its context again.
const lockPoll = 100 * time.Millisecond

// openLocked is bbolt.Open waiting up to bo.Timeout for the file's lock,
// in steps of lockPoll between which it gives up if ctx is done (bbolt's
// own wait takes no context). A nil or never-done ctx waits in one call.
func openLocked(ctx context.Context, path string, bo *bbolt.Options) (*bbolt.DB, error) {
	if ctx == nil || ctx.Done() == nil || bo.Timeout <= lockPoll {
		return bbolt.Open(path, 0o600, bo)
	}
	deadline := time.Now().Add(bo.Timeout)
	step := *bo
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		step.Timeout = min(lockPoll, max(time.Until(deadline), time.Millisecond))
		db, err := bbolt.Open(path, 0o600, &step)
		if !errors.Is(err, berrors.ErrTimeout) || !time.Now().Before(deadline) {
			return db, err
		}
	}
}

// isBoltCorruption reports whether an error from bbolt.Open means the file
// is damaged (rather than unreadable, locked or unmappable).
func isBoltCorruption(err error) bool {
	return errors.Is(err, berrors.ErrInvalid) ||
		errors.Is(err, berrors.ErrChecksum) ||
		errors.Is(err, berrors.ErrVersionMismatch) ||
		// Unexported error for a file shorter than its two meta pages.
		strings.Contains(err.Error(), "file size too small")
}

// precheck opens the file read-only and checks it fully before it is opened
// for writing: opening for writing rebuilds the freelist by walking the
// whole file and panics on damage in a goroutine nobody can recover, and a
// truncated file would fault on access. It returns the records actually
// found, so init can compare them with the stored counters.
func precheck(path string, o *Options) (*counters, error) {
	db, err := openBolt(path, o, true)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("queue: open: %w", err)
	}
	var found *counters
	err = safeTx(db, false, func(tx *bbolt.Tx) error {
		if tx.Size() > info.Size() {
			return corruptf("queue: file is %d bytes but its pages reach %d (truncated)", info.Size(), tx.Size())
		}
		// Check the page tree first, without trusting it: bbolt's own
		// check rebuilds the freelist in a goroutine of its own, where a
		// damaged page would crash or hang the process.
		if err := verifyTx(path, db, tx); err != nil {
			return err
		}
		if err := boltCheck(tx); err != nil {
			return err
		}
		if tx.Bucket(bMeta) == nil && tx.Bucket(bPending) == nil && tx.Bucket(bArchive) == nil {
			return nil // a bbolt file the queue has not initialised yet
		}
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		if _, err := readHeader(b.meta); err != nil {
			return err
		}
		c, err := scanRecords(b)
		if err != nil {
			return err
		}
		found = &c
		return nil
	})
	return found, err
}

// safeTx runs fn in a bbolt transaction, turning a panic or a memory fault
// (bbolt panics on some kinds of damage, and a damaged page can point
// outside the file) into a corruption error instead of a crash. bbolt rolls
// the transaction back on the way out.
func safeTx(db *bbolt.DB, writable bool, fn func(*bbolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = corruptf("queue: bbolt panicked: %v", p)
		}
	}()
	if writable {
		return db.Update(fn)
	}
	return db.View(fn)
}

// init creates the queue's buckets in a new file, or validates an existing
// one and repairs its counters if a full scan (found, from precheck) shows
// they are wrong. It returns the counters.
func (q *Queue) init(found *counters) (c counters, err error) {
	now := q.opts.Now()
	err = safeTx(q.db, true, func(tx *bbolt.Tx) error {
		if tx.Bucket(bMeta) == nil {
			if tx.Bucket(bPending) != nil || tx.Bucket(bArchive) != nil {
				return corruptf("queue: bucket %s missing", MetaBucket)
			}
			if q.opts.NoCreate {
				return fmt.Errorf("%w: %s has no queue buckets", ErrNoFile, q.path)
			}
			c = counters{lastSeq: q.opts.FirstSeq - 1}
			return q.create(tx, now)
		}
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		if q.epoch, err = readHeader(b.meta); err != nil {
			return err
		}
		if err := c.load(b.meta); err != nil {
			return err
		}
		if found != nil && (found.pendingN != c.pendingN || found.pendingBytes != c.pendingBytes ||
			found.archiveN != c.archiveN || found.archiveBytes != c.archiveBytes ||
			found.adoptedN != c.adoptedN || found.adoptedBytes != c.adoptedBytes) {
			q.log.Warn("queue: stored counters did not match the records; repaired",
				"path", q.path, "records", found.pendingN, "archived", found.archiveN, "adopted", found.adoptedN)
			c.pendingN, c.pendingBytes = found.pendingN, found.pendingBytes
			c.archiveN, c.archiveBytes = found.archiveN, found.archiveBytes
			c.adoptedN, c.adoptedBytes = found.adoptedN, found.adoptedBytes
		}
		// A sequence number must never be handed out twice, whatever
		// happened to the counter.
		for _, bk := range []*bbolt.Bucket{b.pending, b.archive} {
			if k, _ := bk.Cursor().Last(); k != nil {
				if s, ok := keySeq(k); ok && s > c.lastSeq {
					q.log.Warn("queue: last sequence number was behind the records; repaired",
						"path", q.path, "last_seq", s)
					c.lastSeq = s
				}
			}
		}
		w := &wtx{b: b, c: c, now: now, keep: q.opts.archiveEnabled()}
		if err := q.prune(w); err != nil {
			return err
		}
		c = w.c
		return c.store(b.meta)
	})
	return c, err
}

// create makes the queue's buckets and a new epoch in tx.
func (q *Queue) create(tx *bbolt.Tx, now time.Time) error {
	var epoch [epochLen]byte
	if _, err := rand.Read(epoch[:]); err != nil {
		return fmt.Errorf("queue: make epoch: %w", err)
	}
	meta, err := tx.CreateBucket(bMeta)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bPending); err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bArchive); err != nil {
		return err
	}
	var f, t [8]byte
	putUint64(f[:], formatVersion)
	putUint64(t[:], uint64(timeNanos(now)))
	for _, kv := range [][2][]byte{{kFormat, f[:]}, {kEpoch, epoch[:]}, {kCreated, t[:]}} {
		if err := meta.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	c := counters{lastSeq: q.opts.FirstSeq - 1}
	if err := c.store(meta); err != nil {
		return err
	}
	q.epoch, _ = readHeader(meta)
	q.log.Info("queue: created new queue file", "path", q.path, "epoch", q.epoch)
	return nil
}

// openFailed closes the loop on an Open error: a damaged file is moved
// aside and reported as a *CorruptError; other errors are returned as they
// are.
func (o *Options) openFailed(path string, err error) error {
	var c corruption
	if !errors.As(err, &c) {
		return err
	}
	cause := c.err
	dst, err := asideName(path, o.Now())
	if err == nil {
		err = durable.Rename(path, dst)
	}
	if err != nil {
		o.Logger.Error("queue: corrupt file, and moving it aside failed", "path", path, "err", cause, "rename_err", err)
		return &CorruptError{Path: path, Err: errors.Join(cause, fmt.Errorf("move aside: %w", err))}
	}
	o.Logger.Error("queue: corrupt file moved aside", "path", path, "moved_to", dst, "err", cause)
	return &CorruptError{Path: path, MovedTo: dst, Err: cause}
}

// reserve gives the file at path disk blocks for its whole length
// (fallocate, its size unchanged). bbolt grows a file with ftruncate, 16
// MiB at a time: sparse, so the room it seemed to have was not the disk's,
// and anything else filling the partition (a log, a core dump) made the
// next tap fail to record, out of service, within a file that looked
// half empty (an agent's field review: 16.8 MB long, 0.6 to 1.9 MiB
// allocated). Reserved at each Open, what the file has grown to since is
// covered too. A file system without fallocate is left as it is. Only
// with Options.ReserveDisk.
func (q *Queue) reserve() error {
	if !q.opts.ReserveDisk {
		return nil
	}
	f, err := os.OpenFile(q.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, fi.Size())
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	return err
}

// maxAsideNames bounds the names asideName tries.
const maxAsideNames = 1000

// asideName returns the name a damaged file at path is moved aside to at
// now: path.corrupt-<time>, or path.corrupt-<time>-2, -3… when that name
// is taken, by a file or by one renamed from it since (a name with a
// further suffix: the caller marks a file it dealt with so,
// ….corrupt-<time>.salvaged). A board without a battery-backed clock
// comes back after a power cut at the time it saved before: a second
// damaged file got the name of an earlier one that had been salvaged
// since, and marking it salvaged replaced that file, with the records it
// kept that could not be adopted.
func asideName(path string, now time.Time) (string, error) {
	stamp := now.UTC().Format("20060102T150405Z")
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return "", fmt.Errorf("queue: name for the damaged file: %w", err)
	}
	for i := 1; i <= maxAsideNames; i++ {
		dst := path + ".corrupt-" + stamp
		if i > 1 {
			dst = fmt.Sprintf("%s-%d", dst, i)
		}
		_, err := os.Lstat(dst)
		free := errors.Is(err, fs.ErrNotExist)
		for _, e := range entries {
			free = free && !strings.HasPrefix(e.Name(), filepath.Base(dst)+".")
		}
		if free {
			return dst, nil
		}
	}
	return "", fmt.Errorf("queue: no free name for the damaged file beside %s (%d tried)", path, maxAsideNames)
}

// Epoch returns the queue's epoch id: 32 hex digits (16 random bytes) made
// when the file was created. A new epoch with sequence numbers starting
// again at 1 tells the server that the file was replaced, as opposed to
// records having gone missing.
func (q *Queue) Epoch() string { return q.epoch }

// Limits returns the bounds Append refuses at (the defaults applied): the
// unacked records, and the file space in use (Stats.UsedSize). The latter
// is not MaxFileSize: appends stop at 7/8 of what bbolt can allocate under
// it (see appendBudget), which for a MaxFileSize of 128 MiB or less is
// under 80 % of it: an alert on UsedSize/MaxFileSize never fired before
// the queue was full.
func (q *Queue) Limits() (maxRecords int, maxUsedSize int64) {
	return q.opts.MaxRecords, q.budget
}

// Path returns the path of the queue file.
func (q *Queue) Path() string { return q.path }

// Close stops accepting appends, waits for those already accepted to
// commit, waits for reads and acks in progress, and closes the file. Every
// Append racing with Close either commits durably (and returns its seq) or
// returns ErrClosed. Calling Close again returns the first call's result.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		q.closed.Store(true)
		q.mu.Lock()
		q.closing = true
		q.mu.Unlock()
		q.notify()
		<-q.writerDone
		q.rw.Lock()
		defer q.rw.Unlock()
		if err := q.db.Close(); err != nil {
			q.closeErr = fmt.Errorf("queue: close: %w", err)
		}
	})
	return q.closeErr
}

// view runs fn in a read transaction with the queue's buckets.
func (q *Queue) view(fn func(tx *bbolt.Tx, b buckets) error) error {
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed.Load() {
		return ErrClosed
	}
	return safeTx(q.db, false, func(tx *bbolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		return fn(tx, b)
	})
}

// wtx is the state of one Ack, AckThrough or Replay transaction.
type wtx struct {
	b   buckets
	c   counters
	now time.Time
	// keep is whether acked records go to the archive (the archive is
	// enabled); room is how much file space archiving may still use in
	// this transaction before acked records are deleted instead (see
	// fileRoom), so that the archive never crowds out unacked records.
	keep    bool
	room    int64
	dropped int // acked records not archived for lack of room
}

// ackChunk is the most records one Ack, AckThrough or Replay transaction
// moves. Bigger requests are split, bounding the memory bbolt holds for
// dirty pages and the extra file space the copy needs.
const ackChunk = 1000

// update runs fn in a write transaction with the queue's buckets and
// counters; the archive is pruned and the counters stored back before the
// commit. It returns fn's count.
func (q *Queue) update(fn func(w *wtx) (int, error)) (int, error) {
	q.commitMu.Lock()
	defer q.commitMu.Unlock()
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed.Load() {
		return 0, ErrClosed
	}
	if err := q.failing.Load(); err != nil {
		return 0, *err // bbolt's free pages may be wrong: no commit is safe
	}
	var n int
	var w *wtx
	err := safeTx(q.db, true, func(tx *bbolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		w = &wtx{b: b, now: q.opts.Now(), keep: q.opts.archiveEnabled(), room: q.fileSpace(tx)}
		if err := w.c.load(b.meta); err != nil {
			return err
		}
		if n, err = fn(w); err != nil {
			return err
		}
		if err := q.prune(w); err != nil {
			return err
		}
		return w.c.store(b.meta)
	})
	if err != nil {
		return 0, err
	}
	q.cappedUntil.Store(0)
	if w.dropped > 0 {
		q.log.Warn("queue: file space low; acked records deleted instead of archived",
			"path", q.path, "records", w.dropped)
	}
	return n, nil
}
