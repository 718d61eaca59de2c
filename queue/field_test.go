package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// errSeen is what a caller's build returns when the state shows its key
// already written (the agent's "this code was already accepted here").
var errSeen = errors.New("already seen")

// TestBuildRefusalDecidedOnCommittedState: two appends of one group, the
// second of which refuses because of what the first wrote in the same,
// not yet committed, transaction (the agent: the same code read twice in a
// row, "already paid"). The second must not be answered before the first
// is committed: its answer (a green "Already paid" at the validator) is
// only true once the first tap is durable, and a power cut or a failing
// commit in between leaves a green light with no charge.
func TestBuildRefusalDecidedOnCommittedState(t *testing.T) {
	q := openTest(t, tempPath(t), &Options{Now: newClock().Now})
	ctx := context.Background()

	// Hold the writer in a first append so that A and B form one group.
	release := make(chan struct{})
	holding := make(chan struct{})
	go q.AppendFunc(ctx, func(*State, uint64) ([]byte, error) {
		close(holding)
		<-release
		return []byte("first"), nil
	})
	<-holding

	key := []byte("code")
	var aCalls atomic.Int32
	var bAnswered atomic.Bool
	bDone := make(chan error, 1)
	aDone := make(chan error, 1)
	answeredWhileACommitting := make(chan bool, 1)
	build := func(s *State, _ uint64) ([]byte, error) {
		if s.Get("seen", key) != nil {
			return nil, errSeen
		}
		return []byte("tap"), s.Put("seen", key, []byte{1})
	}
	go func() {
		_, err := q.AppendFunc(ctx, func(s *State, seq uint64) ([]byte, error) {
			if aCalls.Add(1) == 2 {
				// A built again, not yet committed: has B been answered?
				deadline := time.Now().Add(500 * time.Millisecond)
				for time.Now().Before(deadline) && !bAnswered.Load() {
					time.Sleep(5 * time.Millisecond)
				}
				answeredWhileACommitting <- bAnswered.Load()
			}
			return build(s, seq)
		})
		aDone <- err
	}()
	waitWaiting(t, q, 1)
	go func() {
		_, err := q.AppendFunc(ctx, build)
		bAnswered.Store(true)
		bDone <- err
	}()
	waitWaiting(t, q, 2)
	close(release)

	if err := <-aDone; err != nil {
		t.Fatalf("A: %v", err)
	}
	if err := <-bDone; !errors.Is(err, errSeen) {
		t.Fatalf("B: %v, want errSeen", err)
	}
	select {
	case early := <-answeredWhileACommitting:
		if early {
			t.Errorf("B was answered %q (refused because of A's write) before A's transaction committed: "+
				"a power cut or a failed commit now leaves B's answer true of nothing on disk", errSeen)
		}
	default:
	}
	var n int
	q.ViewState(func(s *State) error {
		if s.Get("seen", key) != nil {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Errorf("seen key committed %d times, want 1", n)
	}
}

// waitWaiting waits until n appends wait for the writer.
func waitWaiting(t *testing.T, q *Queue, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		q.mu.Lock()
		w := len(q.waiting)
		q.mu.Unlock()
		if w >= n {
			return
		}
	}
	t.Fatalf("%d appends never waited", n)
}
