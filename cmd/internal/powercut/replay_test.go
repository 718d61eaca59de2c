package powercut_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
)

// TestReplayCutShortIsFinished: the server asks a validator to send its
// archive again (after restoring its ledger from a backup); the device
// moves the archived taps back to the unsent ones a thousand at a time,
// and the power goes after the first thousand. The request is carried out
// once (its id is stored with the first thousand) and never delivered
// again (QoS 1 on a clean session, not retained), and the device said
// nothing: the rest of the archive stayed there, never sent, and the
// restored ledger never charged those rides. Opened again, the queue
// finishes the replay.
func TestReplayCutShortIsFinished(t *testing.T) {
	d := powercut.Mount(t, nil)
	path := filepath.Join(d.Dir(), "validator.db")
	// The power goes when the replay's second transaction starts (it
	// reads the clock first).
	var armed atomic.Bool
	var calls atomic.Int32
	var freezeErr atomic.Pointer[error]
	opts := &queue.Options{Now: func() time.Time {
		if armed.Load() && calls.Add(1) == 2 {
			err := d.Freeze()
			freezeErr.Store(&err)
		}
		return time.Now()
	}}
	q, err := queue.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2500
	var last uint64
	for i := range n {
		if last, err = q.Append(context.Background(), []byte(fmt.Sprintf("tap %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.AckThrough(last); err != nil {
		t.Fatal(err)
	}
	if st, err := q.Stats(); err != nil || st.Count != 0 || st.Archived != n {
		t.Fatalf("before the replay: %+v, %v; want %d archived, none unsent", st, err, n)
	}

	armed.Store(true)
	moved, err := q.Replay(uint64(time.Now().UnixMilli()), 0, 1, last)
	if p := freezeErr.Load(); p == nil || *p != nil {
		t.Fatalf("the power did not go during the replay (freeze: %v)", p)
	}
	if err == nil || moved == 0 || moved >= n {
		t.Fatalf("Replay = %d, %v; want it cut short after its first transaction", moved, err)
	}
	armed.Store(false)
	q.Close()
	if _, err := d.Cut(false); err != nil {
		t.Fatal(err)
	}

	q, err = queue.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if st, err := q.Stats(); err != nil || st.Count != n || st.Archived != 0 {
		t.Errorf("after the power came back: %d taps to send and %d still archived (%v); want all %d sent again",
			st.Count, st.Archived, err, n)
	}
	if err := q.Check(); err != nil {
		t.Error(err)
	}
}
