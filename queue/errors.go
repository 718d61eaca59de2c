package queue

import (
	"errors"
	"fmt"
)

// ErrFull is returned (possibly wrapped, with the limit that was hit) by
// Append and AppendFunc when accepting the record would exceed MaxRecords,
// MaxBytes or the file-size budget. Nothing is dropped or overwritten to
// make room: the caller must refuse the tap ("out of service") until
// delivered records are acked.
var ErrFull = errors.New("queue: full")

// ErrClosed is returned by every method called after Close has begun, and by
// an Append that Close overtook before its record was accepted.
var ErrClosed = errors.New("queue: closed")

// ErrTooLarge is returned by Append and AppendFunc for a record longer than
// Options.MaxRecordBytes.
var ErrTooLarge = errors.New("queue: record too large")

// ErrReplayed is returned (wrapped, with both ids) by Replay for a request
// whose id is not above the last one carried out: a copy of a request
// already handled, or an older one.
var ErrReplayed = errors.New("queue: replay request already carried out")

// ErrCorrupt matches (with errors.Is) every *CorruptError returned by Open,
// and the errors of other methods that found the open file damaged: Close
// the queue and Open it again, which checks the file and moves it aside.
var ErrCorrupt = errors.New("queue: corrupt file")

// ErrNoFile is returned by Open with Options.NoCreate when there is no
// queue file to open (none, an empty one, or a bbolt file without the
// queue's buckets); nothing is created.
var ErrNoFile = errors.New("queue: no queue file")

// ErrLocked is returned (wrapped, with bbolt's timeout) by Open when
// another process holds the file open: a validator running on it, or a
// second one given the same data directory.
var ErrLocked = errors.New("queue: the file is in use by another process (a running validator, or another one with the same data_dir)")

// ErrUnsupportedFormat is returned by Open for a queue file written by a
// newer, incompatible version of this package. Such a file is left in place.
var ErrUnsupportedFormat = errors.New("queue: unsupported file format")

// CorruptError is returned by Open when the file exists but fails to open or
// fails its consistency check. The file has been renamed to MovedTo (or, if
// the rename failed, left at Path and MovedTo is empty) and nothing has been
// created in its place: calling Open again creates a fresh, empty queue with
// a new epoch. The moved file is kept for inspection and recovery
// (bbolt's `bbolt check`, `bbolt surgery`).
type CorruptError struct {
	Path    string // where the file was
	MovedTo string // where it is now; empty if it could not be moved
	Err     error  // what was wrong with it
}

func (e *CorruptError) Error() string {
	if e.MovedTo == "" {
		return fmt.Sprintf("queue: corrupt file %s (could not move it aside): %v", e.Path, e.Err)
	}
	return fmt.Sprintf("queue: corrupt file %s moved to %s: %v", e.Path, e.MovedTo, e.Err)
}

// Unwrap returns the underlying cause.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// corruption marks an error found while opening or checking a file as
// evidence that the file itself is damaged (as opposed to, say, a permission
// problem or a lock held by another process), so Open moves the file aside.
type corruption struct{ err error }

func (c corruption) Error() string        { return c.err.Error() }
func (c corruption) Unwrap() error        { return c.err }
func (c corruption) Is(target error) bool { return target == ErrCorrupt }

// corruptf returns a corruption error with a formatted message.
func corruptf(format string, args ...any) error {
	return corruption{fmt.Errorf(format, args...)}
}
