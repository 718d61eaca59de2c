package powercut_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
)

// TestQueueRefusalStaysTrueAfterAFailedSync: the flash fails one of an
// append's syncs with EIO and the power stays on (Disk.FailSyncAfter, as
// Linux does it: the pages stay in the cache, marked clean, never
// written). The Append fails, so the validator shows the rider red. bbolt
// had already written the commit's pages and meta page into the cache:
// after its rollback the mapped file still read the new meta, the refused
// tap was in the queue, Peek handed it to the uplink once the next tap's
// commit returned, and the server charged it; a power cut later left
// metas pointing at pages never written. Each of an append's syncs fails
// in turn. After the failed Append the refused tap is never in the file
// (Walk) nor handed out (Peek), nor after a reopen, nor after a power cut;
// every tap whose Append returned is there, before and after; the file
// passes bbolt's check.
func TestQueueRefusalStaysTrueAfterAFailedSync(t *testing.T) {
	d := powercut.Mount(t, nil)
	ctx := context.Background()
	tap := func(i int) []byte {
		return append([]byte(fmt.Sprintf("green tap %d ", i)), bytes.Repeat([]byte{byte(i)}, 300)...)
	}
	refused := []byte("refused tap")
	failed := 0
	for n := int64(0); ; n++ {
		if n > 20 {
			t.Fatal("an append still syncs after 20 syncs")
		}
		dir := d.Path(fmt.Sprintf("q-%d", n))
		if err := durable.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "validator.db")
		q, err := queue.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		green := map[string]bool{} // taps whose Append returned
		next := 0
		appendGreen := func(q *queue.Queue, k int) {
			t.Helper()
			for range k {
				if _, err := q.Append(ctx, tap(next)); err != nil {
					t.Fatalf("sync %d: tap %d after the failed sync: %v", n, next, err)
				}
				green[string(tap(next))] = true
				next++
			}
		}
		appendGreen(q, 3)

		before, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.FailSyncAfter(n, 1); err != nil {
			t.Fatal(err)
		}
		_, appendErr := q.Append(ctx, refused)
		after, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.FailSyncAfter(-1, 0); err != nil {
			t.Fatal(err)
		}
		if after.FailedSyncs == before.FailedSyncs {
			// The append made fewer than n+1 syncs: every one has failed.
			if appendErr != nil {
				t.Fatalf("sync %d: no sync failed, yet the append did: %v", n, appendErr)
			}
			q.Close()
			break
		}
		failed++
		if appendErr == nil {
			t.Fatalf("sync %d failed with EIO, yet the append returned no error: a tap shown green that may not be on the flash", n)
		}
		t.Logf("sync %d failed: %v", n, appendErr)

		// check says what the queue shows: every green tap there, the
		// refused one nowhere (neither in the file nor handed out).
		check := func(q *queue.Queue, when string) {
			t.Helper()
			held := map[string]bool{}
			if err := q.Walk(func(_ *queue.State, r queue.Record, _ bool) error {
				held[string(r.Data)] = true
				return nil
			}); err != nil {
				t.Fatalf("sync %d, %s: walk: %v", n, when, err)
			}
			if held[string(refused)] {
				t.Errorf("sync %d, %s: the tap refused (its Append failed: the rider saw red) is in the queue", n, when)
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
			for g := range green {
				if !held[g] {
					t.Errorf("sync %d, %s: a green tap is gone: %.14q", n, when, g)
				}
			}
			if err := q.Check(); err != nil {
				t.Errorf("sync %d, %s: check: %v", n, when, err)
			}
		}
		// The queue goes on taking taps (or is out of service; then it
		// says so, and a restart takes them).
		if _, err := q.Append(ctx, tap(next)); err == nil {
			green[string(tap(next))] = true
			next++
			appendGreen(q, 1)
		} else {
			t.Logf("sync %d: the queue after the failed sync: %v", n, err)
		}
		check(q, "after the failed sync")
		if err := q.Close(); err != nil {
			t.Logf("sync %d: close: %v", n, err)
		}
		q, err = queue.Open(path, nil)
		if err != nil {
			t.Fatalf("sync %d: reopen: %v", n, err)
		}
		check(q, "reopened")
		appendGreen(q, 2)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Cut(false); err != nil {
			t.Fatal(err)
		}
		q, err = queue.Open(path, nil)
		if err != nil {
			t.Fatalf("sync %d: after the power cut: %v", n, err)
		}
		check(q, "after a power cut")
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if failed < 2 {
		t.Fatalf("only %d of an append's syncs failed; want its data's and its meta page's", failed)
	}
	t.Logf("%d syncs of an append failed in turn", failed)
}
