package queue

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// TestMain lets the crash tests re-execute the test binary as a child that
// appends or acks until it is killed.
func TestMain(m *testing.M) {
	if mode := os.Getenv(crashModeEnv); mode != "" {
		os.Exit(crashChild(mode, os.Getenv(crashPathEnv)))
	}
	os.Exit(m.Run())
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// tempPath returns a path for a queue file in a fresh temporary directory.
func tempPath(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), "queue.db")
}

// openTest opens a queue and, at the end of the test, closes it and runs a
// full consistency check on its file.
func openTest(tb testing.TB, path string, opts *Options) *Queue {
	tb.Helper()
	q, err := Open(path, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() {
		if err := q.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		checkFile(tb, path)
	})
	return q
}

// checkFile runs bbolt's tx.Check and the queue's own checks on a closed
// queue file, if it exists.
func checkFile(tb testing.TB, path string) {
	tb.Helper()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 30 * time.Second})
	if err != nil {
		tb.Errorf("consistency check: open %s: %v", path, err)
		return
	}
	defer db.Close()
	if err := db.View(func(tx *bbolt.Tx) error { return checkTx(path, db, tx) }); err != nil {
		tb.Errorf("consistency check of %s: %v", path, err)
	}
}

// mustAppend appends data and returns its seq.
func mustAppend(tb testing.TB, q *Queue, data string) uint64 {
	tb.Helper()
	seq, err := q.Append(context.Background(), []byte(data))
	if err != nil {
		tb.Fatalf("Append(%q): %v", data, err)
	}
	return seq
}

// peekAll returns every unacked record.
func peekAll(tb testing.TB, q *Queue) []Record {
	tb.Helper()
	recs, err := q.Peek(0, 0)
	if err != nil {
		tb.Fatalf("Peek: %v", err)
	}
	return recs
}

// seqsOf returns the sequence numbers of recs.
func seqsOf(recs []Record) []uint64 {
	out := make([]uint64, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Seq)
	}
	return out
}

// archived returns the archived records, read straight from the file.
func archived(tb testing.TB, q *Queue) map[uint64]string {
	tb.Helper()
	out := map[uint64]string{}
	err := q.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bArchive).ForEach(func(k, v []byte) error {
			s, _ := keySeq(k)
			out[s] = string(v[archiveHeader:])
			return nil
		})
	})
	if err != nil {
		tb.Fatalf("read archive: %v", err)
	}
	return out
}

// waitFor polls cond until it holds, failing the test after a generous
// timeout. It is for waiting on another goroutine to reach a state that
// has no event to wait on; it asserts nothing about time.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waiting returns how many appends wait for the writer.
func (q *Queue) waitingLen() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}

// data returns the test payload for writer w, record i.
func data(w, i int) string { return fmt.Sprintf("w%d-r%06d", w, i) }

// appendBulk appends n records of size bytes through the real append path
// (commitGroup), up to 1000 per transaction instead of one fsync each, and
// returns their seqs. Nothing else may append meanwhile.
func appendBulk(tb testing.TB, q *Queue, n, size int) []uint64 {
	tb.Helper()
	var seqs []uint64
	for n > 0 {
		group := make([]*appendReq, min(n, 1000))
		for i := range group {
			d := make([]byte, size)
			copy(d, fmt.Sprintf("bulk-%d", len(seqs)+i))
			group[i] = &appendReq{ctx: context.Background(), data: d, done: make(chan appendResult, 1)}
		}
		q.commitGroup(group)
		for _, r := range group {
			res := <-r.done
			if res.err != nil {
				tb.Fatalf("bulk append: %v", res.err)
			}
			seqs = append(seqs, res.seq)
		}
		n -= len(group)
	}
	return seqs
}
