package powercut_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
)

// TestAckDuringAFailedSyncDoesNotKeepTheRefusedTap: the uplink's ack (or
// the agent's state update) arrives while an append's commit is syncing,
// and waits on bbolt's writer lock; the sync fails with EIO (the power
// stays on). bbolt's rollback let the waiting ack begin at once, on the
// failed commit's meta page still read from the cache, before the queue
// took that commit back: the ack committed it for good, the queue found it
// could not be taken back (ErrStorageFailing, out of service), and after
// the restart the tap the rider was told was refused was sent and charged.
// Each of an append's syncs fails in turn; the ack is begun from inside
// the append's transaction (its build), so that it waits while the commit
// syncs. The refused tap is never in the file nor handed out, before or
// after a reopen; the ack is done; the queue still takes taps.
func TestAckDuringAFailedSyncDoesNotKeepTheRefusedTap(t *testing.T) {
	d := powercut.Mount(t, nil)
	ctx := context.Background()
	refused := []byte("refused tap")
	failed := 0
	for n := int64(0); ; n++ {
		if n > 20 {
			t.Fatal("an append still syncs after 20 syncs")
		}
		dir := d.Path(fmt.Sprintf("ack-%d", n))
		if err := durable.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "validator.db")
		q, err := queue.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for i := range 3 {
			seq, err := q.Append(ctx, []byte(fmt.Sprintf("green tap %d", i)))
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, seq)
		}
		before, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.FailSyncAfter(n, 1); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		var acks sync.WaitGroup
		var ackErr error
		_, appendErr := q.AppendFunc(ctx, func(*queue.State, uint64) ([]byte, error) {
			once.Do(func() {
				acks.Add(1)
				go func() {
					defer acks.Done()
					_, ackErr = q.Ack(seqs[0])
				}()
			})
			return refused, nil
		})
		acks.Wait()
		after, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.FailSyncAfter(-1, 0); err != nil {
			t.Fatal(err)
		}
		if after.FailedSyncs == before.FailedSyncs {
			if appendErr != nil || ackErr != nil {
				t.Fatalf("sync %d: no sync failed, yet the append (%v) or the ack (%v) did", n, appendErr, ackErr)
			}
			q.Close()
			break
		}
		if appendErr == nil {
			// The ack's own commit took the failed sync.
			q.Close()
			continue
		}
		failed++
		t.Logf("sync %d failed: append: %v; ack: %v", n, appendErr, ackErr)
		if errors.Is(appendErr, queue.ErrStorageFailing) || errors.Is(ackErr, queue.ErrStorageFailing) {
			t.Errorf("sync %d: the queue is out of service after one failed sync: append: %v; ack: %v", n, appendErr, ackErr)
		}
		check := func(q *queue.Queue, when string) {
			t.Helper()
			if err := q.Walk(func(_ *queue.State, r queue.Record, _ bool) error {
				if bytes.Equal(r.Data, refused) {
					t.Errorf("sync %d, %s: the tap refused (its Append failed: the rider saw red) is in the queue (seq %d)", n, when, r.Seq)
				}
				return nil
			}); err != nil {
				t.Fatalf("sync %d, %s: walk: %v", n, when, err)
			}
			recs, err := q.Peek(1000, 1<<20)
			if err != nil {
				t.Fatalf("sync %d, %s: peek: %v", n, when, err)
			}
			for _, r := range recs {
				if bytes.Equal(r.Data, refused) {
					t.Errorf("sync %d, %s: the refused tap (seq %d) is handed to the uplink: it would be charged", n, when, r.Seq)
				}
			}
		}
		check(q, "after the failed sync")
		if _, err := q.Append(ctx, []byte("next tap")); err != nil {
			t.Errorf("sync %d: the queue takes no tap after one failed sync: %v", n, err)
		}
		q.Close()
		if q, err = queue.Open(path, nil); err != nil {
			t.Fatalf("sync %d: reopen: %v", n, err)
		}
		check(q, "reopened")
		if err := q.Check(); err != nil {
			t.Errorf("sync %d: check: %v", n, err)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if failed < 2 {
		t.Fatalf("only %d of an append's syncs failed; want its data's and its meta page's", failed)
	}
}

// TestFailedSyncTakenBackAfterTheOpenContextEnds: the queue was opened
// with OpenContext under the validator's run context, which ends when it
// is told to stop (SIGTERM) while taps in flight are still recorded. A
// commit whose sync failed then was taken back on the file, but opening
// the file again gave up at once on the ended context: the queue refused
// every tap as if the flash were failing (ErrStorageFailing). Each of an
// append's syncs fails in turn: the append fails, the queue takes the
// next tap, the refused one is not in it.
func TestFailedSyncTakenBackAfterTheOpenContextEnds(t *testing.T) {
	d := powercut.Mount(t, nil)
	failed := 0
	for n := int64(0); ; n++ {
		if n > 20 {
			t.Fatal("an append still syncs after 20 syncs")
		}
		dir := d.Path(fmt.Sprintf("ctx-%d", n))
		if err := durable.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(context.Background())
		q, err := queue.OpenContext(runCtx, filepath.Join(dir, "validator.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		stop()
		if _, err := q.Append(context.Background(), []byte("green tap")); err != nil {
			t.Fatal(err)
		}
		before, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.FailSyncAfter(n, 1); err != nil {
			t.Fatal(err)
		}
		_, appendErr := q.Append(context.Background(), []byte("refused tap"))
		after, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.FailSyncAfter(-1, 0); err != nil {
			t.Fatal(err)
		}
		if after.FailedSyncs == before.FailedSyncs {
			q.Close()
			break
		}
		failed++
		if appendErr == nil {
			t.Fatalf("sync %d failed with EIO, yet the append returned no error", n)
		}
		if errors.Is(appendErr, queue.ErrStorageFailing) {
			t.Errorf("sync %d: one failed sync after the open context ended put the queue out of service: %v", n, appendErr)
		}
		if _, err := q.Append(context.Background(), []byte("next tap")); err != nil {
			t.Errorf("sync %d: the queue takes no tap after one failed sync: %v", n, err)
		}
		if err := q.Walk(func(_ *queue.State, r queue.Record, _ bool) error {
			if string(r.Data) == "refused tap" {
				t.Errorf("sync %d: the refused tap is in the queue (seq %d)", n, r.Seq)
			}
			return nil
		}); err != nil {
			t.Errorf("sync %d: walk: %v", n, err)
		}
		q.Close()
	}
	if failed < 2 {
		t.Fatalf("only %d of an append's syncs failed; want its data's and its meta page's", failed)
	}
}
