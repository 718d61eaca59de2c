package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Request states. A request is taken by the writer exactly once, or
// cancelled by its caller exactly once, whichever comes first; a taken
// request always gets a reply.
const (
	reqWaiting int32 = iota
	reqTaken
	reqCancelled
)

// appendReq is one Append or AppendFunc waiting for the writer.
type appendReq struct {
	ctx   context.Context
	data  []byte                                     // Append
	build func(s *State, seq uint64) ([]byte, error) // AppendFunc
	state atomic.Int32
	done  chan appendResult // buffered: the writer never blocks on it
}

type appendResult struct {
	seq uint64
	err error
}

// Append adds a record and returns its sequence number once the record is
// committed and fsynced: a nil error means the record survives a power cut
// at any later instant. Concurrent Appends share one commit (group commit).
//
// It returns ErrFull (wrapped, with the limit that was hit) when the queue
// is full, ErrTooLarge for a record over MaxRecordBytes, ErrClosed once
// Close has begun, and ctx.Err() if ctx ends before the record was taken
// into a commit; once taken, Append waits for the commit (one fsync) and
// reports its outcome, so an error always means the record was not stored.
// data is not retained after Append returns.
func (q *Queue) Append(ctx context.Context, data []byte) (uint64, error) {
	if len(data) > q.opts.MaxRecordBytes {
		return 0, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, len(data), q.opts.MaxRecordBytes)
	}
	return q.submit(ctx, &appendReq{data: data})
}

// AppendFunc is Append for records that must commit atomically with
// changes to the caller's own state in the same file. build runs inside
// the group-commit write transaction, on the writer goroutine, with the
// sequence number the record will get; it may read and write the caller's
// buckets through s (never through another Queue method) and returns the
// record bytes.
//
// If build returns an error (or panics), AppendFunc returns that error
// (matchable with errors.Is) and nothing build wrote is kept, while the
// other appends in the same group still commit: the group is rolled back
// and run again without the failing request, as bbolt's db.Batch does. An
// error build returns after other requests of its group wrote (it may have
// failed on their writes: the same code read twice) is returned only once
// their commit is durable, and build runs again if that commit fails, so a
// refusal is true of what is on disk. build may therefore be called more
// than once, possibly with different sequence numbers, and must depend
// only on s and seq. If the queue is already full
// by record count or file size, AppendFunc returns ErrFull without calling
// build; if the bytes build returns do not fit, it returns ErrFull (or
// ErrTooLarge) and discards build's writes.
func (q *Queue) AppendFunc(ctx context.Context, build func(s *State, seq uint64) ([]byte, error)) (uint64, error) {
	if build == nil {
		return 0, errors.New("queue: AppendFunc with nil build")
	}
	return q.submit(ctx, &appendReq{build: build})
}

// submit hands r to the writer and waits for its outcome.
func (q *Queue) submit(ctx context.Context, r *appendReq) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	r.ctx = ctx
	r.done = make(chan appendResult, 1)
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return 0, ErrClosed
	}
	q.waiting = append(q.waiting, r)
	q.mu.Unlock()
	q.notify()

	select {
	case res := <-r.done:
		return res.seq, res.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqWaiting, reqCancelled) {
			return 0, ctx.Err()
		}
		// Already in a commit: its outcome is the truth.
		res := <-r.done
		return res.seq, res.err
	}
}

// notify wakes the writer without blocking.
func (q *Queue) notify() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// writer is the group-commit loop. It commits whatever is waiting as soon
// as it is idle: a lone Append is committed at once (no artificial delay),
// and requests that arrive during a commit form the next group. It exits
// once Close has begun and nothing is left waiting.
func (q *Queue) writer() {
	defer close(q.writerDone)
	for range q.wake {
		for {
			q.mu.Lock()
			n := min(len(q.waiting), q.opts.MaxGroup)
			group := q.waiting[:n:n]
			q.waiting = q.waiting[n:]
			if len(q.waiting) == 0 {
				q.waiting = nil // let the backing array go
			}
			closing := q.closing
			q.mu.Unlock()
			if n == 0 {
				if closing {
					return
				}
				break
			}
			q.commitGroup(group)
			// Let the callers just answered run before the next group is
			// taken: a scanner that appends again at once then joins it
			// instead of making a group of its own. This yields the
			// processor; it does not wait for anything.
			runtime.Gosched()
		}
	}
}

// errRollback makes db.Update roll back after a request in the group
// failed; it never reaches callers.
var errRollback = errors.New("queue: roll back group")

// commitGroup appends the requests of one group in one transaction.
func (q *Queue) commitGroup(group []*appendReq) {
	live := make([]*appendReq, 0, len(group))
	for _, r := range group {
		if !r.state.CompareAndSwap(reqWaiting, reqTaken) {
			continue // the caller gave up
		}
		if err := r.ctx.Err(); err != nil {
			r.done <- appendResult{err: err}
			continue
		}
		live = append(live, r)
	}
	results := make([]appendResult, len(live))
	var aside []asideReq // failed after others wrote: answered once they are committed
	for len(live) > 0 {
		clear(results)
		results = results[:len(live)]
		failed := -1
		var failErr error
		err := q.writeTx(func(tx *bbolt.Tx) error {
			b, err := openBuckets(tx)
			if err != nil {
				return err
			}
			var c counters
			if err := c.load(b.meta); err != nil {
				return err
			}
			room := q.fileRoom(tx)
			for i, r := range live {
				seq, err := q.appendOne(tx, b, &c, &room, r)
				if errors.Is(err, errRollback) {
					failed, failErr = i, errors.Unwrap(err)
					return errRollback
				}
				results[i] = appendResult{seq: seq, err: err}
			}
			return c.store(b.meta)
		})
		if failed == 0 {
			// Decided on the committed state alone: answered now. Those
			// set aside are decided again: what they failed on may have
			// been this request's writes.
			q.noteOutcome(failErr)
			live[0].done <- appendResult{err: failErr}
			live, aside = append(live[1:], reqsOf(aside)...), nil
			continue
		}
		if failed > 0 {
			// The request may have failed on what the requests before
			// it wrote in this very transaction (the same code read
			// twice: "already paid"). That answer is true only once
			// those writes are committed: it waits for the group's
			// commit, and is decided again if the commit fails.
			aside = append(aside, asideReq{live[failed], failErr})
			live = append(live[:failed], live[failed+1:]...)
			continue
		}
		if err != nil {
			if errors.Is(err, berrors.ErrMaxSizeReached) {
				// The budget let through what bbolt could not place (a
				// record of several pages needs a run of free pages): the
				// file is full until something is freed.
				q.cappedUntil.Store(time.Now().Add(cappedFor).UnixNano())
				// bbolt's error stays text: callers match ErrFull, not the engine's.
				err = fmt.Errorf("%w: file reached MaxFileSize %d (%v)", ErrFull, q.opts.MaxFileSize, err)
			} else {
				err = fmt.Errorf("queue: append: %w", err)
			}
		} else {
			q.commits.Add(1)
			for _, res := range results {
				if res.err == nil && res.seq > q.durable.Load() {
					q.durable.Store(res.seq) // writer goroutine only
				}
			}
		}
		for i, r := range live {
			res := results[i]
			if err != nil {
				res = appendResult{err: err}
			}
			q.noteOutcome(res.err)
			r.done <- res
		}
		if err == nil {
			for _, a := range aside {
				q.noteOutcome(a.err)
				a.r.done <- appendResult{err: a.err}
			}
			return
		}
		live, aside = reqsOf(aside), nil
	}
}

// reqsOf returns the requests set aside, to be decided again.
func reqsOf(aside []asideReq) []*appendReq {
	out := make([]*appendReq, len(aside))
	for i, a := range aside {
		out[i] = a.r
	}
	return out
}

// asideReq is a request of a group whose build failed after other
// requests of the group had written in the same transaction: its answer
// waits for their commit.
type asideReq struct {
	r   *appendReq
	err error
}

// rollbackErr wraps a request's own error so that commitGroup rolls the
// transaction back and retries the group without it.
type rollbackErr struct{ err error }

func (e rollbackErr) Error() string        { return e.err.Error() }
func (e rollbackErr) Is(target error) bool { return target == errRollback }
func (e rollbackErr) Unwrap() error        { return e.err }

// appendOne adds one request's record inside the group transaction. An
// error that matches errRollback means the transaction holds writes that
// must not be kept (build ran); other errors mean the request failed
// without writing anything, and the group goes on.
func (q *Queue) appendOne(tx *bbolt.Tx, b buckets, c *counters, room *int64, r *appendReq) (uint64, error) {
	if c.pendingN >= uint64(q.opts.MaxRecords) {
		return 0, fmt.Errorf("%w: %d records waiting (limit %d)", ErrFull, c.pendingN, q.opts.MaxRecords)
	}
	if *room <= 0 {
		return 0, q.fileFullErr()
	}
	if q.seqFloor == 0 && q.opts.SeqFloor != nil {
		q.seqFloor = q.opts.SeqFloor()
	}
	// Stateless past the floor: a group rolled back leaves lastSeq below it
	// and the next record jumps again.
	seq := max(c.lastSeq+1, q.seqFloor)
	data := r.data
	if r.build != nil {
		var err error
		if data, err = callBuild(r.build, tx, seq); err != nil {
			return 0, rollbackErr{err}
		}
	}
	var err error
	cost := recordCost(len(data))
	switch {
	case len(data) > q.opts.MaxRecordBytes:
		err = fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, len(data), q.opts.MaxRecordBytes)
	case c.pendingBytes+uint64(len(data)) > uint64(q.opts.MaxBytes):
		err = fmt.Errorf("%w: %d bytes waiting, %d more would pass the limit %d", ErrFull, c.pendingBytes, len(data), q.opts.MaxBytes)
	case cost > *room:
		err = q.fileFullErr()
	}
	if err != nil {
		if r.build != nil {
			return 0, rollbackErr{err}
		}
		return 0, err
	}
	if err := b.pending.Put(seqKey(seq), pendingValue(q.opts.Now(), data)); err != nil {
		return 0, rollbackErr{fmt.Errorf("queue: append: %w", err)}
	}
	c.lastSeq = seq
	c.pendingN++
	c.pendingBytes += uint64(len(data))
	*room -= cost
	return seq, nil
}

// callBuild calls build, turning a panic into an error so that one bad
// caller cannot kill the writer goroutine.
func callBuild(build func(*State, uint64) ([]byte, error), tx *bbolt.Tx, seq uint64) (data []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("queue: build panicked: %v", p)
		}
	}()
	return build(&State{tx: tx}, seq)
}

// recordCost estimates the file space a record takes: its value, its key
// and bbolt's 16-byte leaf element.
func recordCost(n int) int64 { return int64(n) + pendingHeader + 8 + 16 }

// fileRoom returns how many more bytes appends may use in this transaction
// before the file passes its append budget. Used space is bbolt's page
// high-water mark minus the free and pending pages it will reuse; a few
// pages are set aside for the copy-on-write of the path to the last leaf.
func (q *Queue) fileRoom(tx *bbolt.Tx) int64 {
	if until := q.cappedUntil.Load(); until != 0 && time.Now().UnixNano() < until {
		return 0 // bbolt refused the file's growth a moment ago; nothing freed since
	}
	return q.fileSpace(tx)
}

// cappedFor is how long appends are refused before their build after bbolt
// refused to grow the file (unless an ack frees pages first).
const cappedFor = 5 * time.Second

// fileSpace is fileRoom without the cap: what acks may use for the archive.
func (q *Queue) fileSpace(tx *bbolt.Tx) int64 {
	st := q.db.Stats()
	used := tx.Size() - int64(st.FreePageN+st.PendingPageN)*q.pageSize
	return q.budget - used - 8*q.pageSize
}

func (q *Queue) fileFullErr() error {
	return fmt.Errorf("%w: file space used is at its append budget (%d bytes of MaxFileSize %d)", ErrFull, q.budget, q.opts.MaxFileSize)
}

// noteOutcome logs the first refusal for a full queue and the recovery
// after it, rather than every refusal. Writer goroutine only.
func (q *Queue) noteOutcome(err error) {
	switch {
	case errors.Is(err, ErrFull):
		if q.refusals == 0 {
			q.log.Warn("queue: full, refusing appends", "path", q.path, "err", err)
		}
		q.refusals++
	case err == nil && q.refusals > 0:
		q.log.Info("queue: accepting appends again", "path", q.path, "refusals", q.refusals)
		q.refusals = 0
	}
}
