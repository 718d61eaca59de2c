package queue

import (
	"errors"
	"fmt"
	"os"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// ErrStorageFailing is returned by every change (Append, Ack, Replay,
// UpdateState, …) to a queue whose file could not be made to say what its
// callers were told: an append's fsync failed (the flash returned EIO),
// the commit showed all the same, and taking it back failed too. bbolt's
// view of its free pages may then be wrong, so nothing more is committed
// until the queue is opened again (a restart), which checks the file;
// reads still work, unless the file could not be opened again after
// being put right (they fail too then). The validator goes out of
// service. The flash is failing: replace the storage (the records whose
// Append returned are kept).
var ErrStorageFailing = errors.New("queue: the storage failed a write and the queue file could not be put right: the flash is failing (replace it); no more records are taken")

// writeTx runs fn in a bbolt write transaction and commits it: the
// appends' group commit (writer goroutine only). A commit whose write or
// fsync failed is reported as failed, yet bbolt may have written its meta
// page into the page cache before the fsync failed: its rollback leaves
// the mapped file reading the new meta, so the commit the callers were
// told failed shows to every later transaction (a tap refused to the
// rider, then sent and charged), and Linux, having marked the page clean,
// may never write it while later fsyncs succeed. writeTx then takes the
// commit back: it makes that meta page invalid, durably, so the file
// reads as before the commit, and opens the file again (bbolt's free
// pages are those of the failed commit until then). If that fails too,
// the queue commits nothing more (ErrStorageFailing). The success path
// does nothing more.
func (q *Queue) writeTx(fn func(tx *bbolt.Tx) error) error {
	if err := q.failing.Load(); err != nil {
		return *err
	}
	// No other write transaction may begin between this one's failed
	// commit and its taking back (see Queue.commitMu).
	q.commitMu.Lock()
	defer q.commitMu.Unlock()
	var txid int
	committing := false
	err := safeTx(q.db, true, func(tx *bbolt.Tx) error {
		txid = tx.ID()
		if err := fn(tx); err != nil {
			return err
		}
		committing = true
		return nil
	})
	if err != nil && committing {
		if uerr := q.undoFailedCommit(txid); uerr != nil {
			q.failing.CompareAndSwap(nil, &uerr)
			q.log.Error("queue: a commit failed to reach the storage and could not be taken back: no more taps until the validator is restarted; the flash is failing, replace it",
				"path", q.path, "commit_err", err, "err", uerr)
			return fmt.Errorf("%w (%v)", uerr, err)
		}
	}
	return err
}

// undoFailedCommit makes the file read as before the failed commit txid,
// durably, if the commit shows. It waits for reads, acks and state
// updates in progress and runs alone.
func (q *Queue) undoFailedCommit(txid int) error {
	q.rw.Lock()
	defer q.rw.Unlock()
	shown, err := q.shownTx()
	switch {
	case err != nil:
		return fmt.Errorf("%w: reading the file after a failed commit: %v", ErrStorageFailing, err)
	case shown < txid:
		return nil // bbolt's rollback held: nothing of it shows
	case shown > txid:
		// An ack or a state update committed on top of it: the failed
		// commit is in their tree (commitMu keeps them out; a guard).
		return fmt.Errorf("%w: the failed commit %d shows and %d more were made on it", ErrStorageFailing, txid, shown-txid)
	}
	// bbolt writes commit txid's meta to page txid%2; the other meta page
	// holds the commit before it, whose pages the failed one did not
	// touch (copy on write). A meta page whose checksum fails is ignored.
	f, err := os.OpenFile(q.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStorageFailing, err)
	}
	off := int64(txid%2) * q.pageSize
	sum := make([]byte, metaChecksumLen)
	_, err = f.ReadAt(sum, off+metaChecksumAt)
	if err == nil {
		for i := range sum {
			sum[i] ^= 0xff
		}
		_, err = f.WriteAt(sum, off+metaChecksumAt)
	}
	if err == nil {
		err = unix.Fdatasync(int(f.Fd()))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: taking back the failed commit %d: %v", ErrStorageFailing, txid, err)
	}
	// bbolt's free pages are still those of the failed commit: open the
	// file again, which rebuilds them from the meta it now reads.
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("%w: closing the file after taking back commit %d: %v", ErrStorageFailing, txid, err)
	}
	// Not under OpenContext's context: it bounded the first open's wait
	// for the lock, and may be done by now (a validator stopping), which
	// would leave a queue that took its commit back unable to go on.
	o := q.opts
	o.ctx = nil
	db, err := openBolt(q.path, &o, false)
	if err != nil {
		// q.db is closed: every later call fails, as it must.
		return fmt.Errorf("%w: opening the file again after taking back commit %d: %v", ErrStorageFailing, txid, err)
	}
	q.db = db
	if shown, err = q.shownTx(); err != nil || shown >= txid {
		return fmt.Errorf("%w: the failed commit %d still shows after it was taken back (%d, %v)", ErrStorageFailing, txid, shown, err)
	}
	q.log.Warn("queue: a commit failed to reach the storage (fsync error) and was taken back: the taps in it were refused; if this repeats, the flash is failing",
		"path", q.path, "txid", txid)
	return nil
}

// Where a bbolt meta page holds its checksum: after the 16-byte page
// header, magic, version, page size, flags (4 bytes each), the root
// bucket (16), the freelist, high-water mark and txid (8 each).
const (
	metaChecksumAt  = 16 + 4*4 + 16 + 3*8
	metaChecksumLen = 8
)

// shownTx returns the id of the last commit the file shows.
func (q *Queue) shownTx() (int, error) {
	var id int
	err := safeTx(q.db, false, func(tx *bbolt.Tx) error {
		id = tx.ID()
		return nil
	})
	return id, err
}
