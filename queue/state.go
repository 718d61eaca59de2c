package queue

import (
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/bbolt"
)

// State is the caller's view of one transaction on its own buckets in the
// queue's file: the device state that must move in step with the records
// (codes seen, per-account counters, the record chain, the device's
// documents). The queue owns the engine; the caller sees named buckets of
// byte keys and values, nothing of bbolt.
//
// A State is valid only inside the function it was given to, and only on
// that goroutine. Values returned by Get stay valid only until then, too:
// copy what must outlive it.
type State struct {
	tx *bbolt.Tx
	// changed is set by every Put, Delete and bucket creation: a write
	// transaction in which nothing changed is rolled back, not committed.
	changed bool
}

// errUnchanged rolls back a write transaction in which fn changed nothing.
var errUnchanged = errors.New("queue: state unchanged")

// errReadOnly is returned by a write in ViewState.
var errReadOnly = errors.New("queue: state is read-only here")

// bucket returns the caller's bucket name, creating it in a writable
// transaction when create is set; nil if it does not exist.
func (s *State) bucket(name string, create bool) (*bbolt.Bucket, error) {
	if name == "" || strings.HasPrefix(name, BucketPrefix) {
		return nil, fmt.Errorf("queue: state bucket %q: empty or reserved (%q…)", name, BucketPrefix)
	}
	if b := s.tx.Bucket([]byte(name)); b != nil || !create {
		return b, nil
	}
	if !s.tx.Writable() {
		return nil, errReadOnly
	}
	s.changed = true
	return s.tx.CreateBucket([]byte(name))
}

// Get returns the value of key in bucket, or nil if either does not exist.
func (s *State) Get(bucket string, key []byte) []byte {
	b, err := s.bucket(bucket, false)
	if err != nil || b == nil {
		return nil
	}
	return b.Get(key)
}

// Put sets key to value in bucket, creating the bucket if needed.
func (s *State) Put(bucket string, key, value []byte) error {
	b, err := s.bucket(bucket, true)
	if err != nil {
		return err
	}
	s.changed = true
	return b.Put(key, value)
}

// Delete removes key from bucket; a missing key or bucket is not an error.
func (s *State) Delete(bucket string, key []byte) error {
	b, err := s.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	if !s.tx.Writable() {
		return errReadOnly
	}
	s.changed = true
	return b.Delete(key)
}

// ForEach calls fn for every key and value of bucket in key order, until
// fn returns an error (which ForEach returns). fn must not change the
// bucket: collect keys and change them after ForEach.
func (s *State) ForEach(bucket string, fn func(key, value []byte) error) error {
	b, err := s.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	return b.ForEach(fn)
}

// Unacked returns how many records wait for the server's ack in this
// transaction's snapshot: the unacked records of this file and the adopted
// records of older files (Adopt). A caller that must act only when
// everything is delivered (the agent resetting its offline risk counters)
// checks it in the same transaction as the change, so that no record
// appended in between escapes the check.
func (s *State) Unacked() (int, error) {
	b, err := openBuckets(s.tx)
	if err != nil {
		return 0, err
	}
	var c counters
	if err := c.load(b.meta); err != nil {
		return 0, err
	}
	return int(c.pendingN + c.adoptedN), nil
}

// UpdateState runs fn in a write transaction on the caller's buckets and
// commits it (one fsync) if fn returns nil and changed something; an error
// from fn rolls every change back. A transaction in which fn neither put
// nor deleted anything is rolled back and writes nothing: the agent's
// pruning runs every minute, and a bbolt commit writes and syncs a meta
// page even when nothing changed (flash wear on an idle bus). It waits for
// appends in flight (bbolt has one writer).
func (q *Queue) UpdateState(fn func(s *State) error) error {
	return q.stateTx(true, fn)
}

// ViewState runs fn in a read transaction on the caller's buckets.
func (q *Queue) ViewState(fn func(s *State) error) error {
	return q.stateTx(false, fn)
}

func (q *Queue) stateTx(writable bool, fn func(s *State) error) error {
	if writable {
		q.commitMu.Lock() // see Queue.commitMu
		defer q.commitMu.Unlock()
	}
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed.Load() {
		return ErrClosed
	}
	if err := q.failing.Load(); writable && err != nil {
		return *err // bbolt's free pages may be wrong: no commit is safe
	}
	err := safeTx(q.db, writable, func(tx *bbolt.Tx) error {
		s := &State{tx: tx}
		if err := fn(s); err != nil {
			return err
		}
		if writable && !s.changed {
			return errUnchanged
		}
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}
