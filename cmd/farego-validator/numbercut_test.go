package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
)

// TestNumberingAfterPowerCuts: a validator whose queue file was made while
// its clock ran ahead (a year: its numbers keep that lead, seqLead) loses
// its power while it boots and takes taps, before each of the syncs of
// that start in turn (opening the file, the group commits of the taps;
// every other cut tearing the last page written). After each cut it boots
// on what survived (the file as it was, or salvaged), its clock set right:
// the first tap's number is above every number an append returned before
// the cut — every number the uplink may have sent the server — whatever
// the epoch, with its clock set or not yet. And a file whose newest page
// of taps is lost besides (salvaged) numbers on above it too.
func TestNumberingAfterPowerCuts(t *testing.T) {
	disk := powercut.Mount(t, nil)
	dataDir := disk.Path("data")
	if err := durable.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{DataDir: dataDir, DeviceID: "bus-0042"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	minClock := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	noWait := func(context.Context) error { return nil }
	ctx := context.Background()
	ahead := func() time.Time { return time.Now().AddDate(1, 0, 0) }

	var handedOut uint64 // the highest number an append returned
	tap := func(qf *queueFiles, i int) error {
		seq, err := qf.q.Append(ctx, fmt.Appendf(nil, "tap %d", i))
		if err == nil {
			handedOut = max(handedOut, seq)
		}
		return err
	}
	qf, err := openQueue(ctx, cfg, log, minClock, ahead, noWait)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := tap(qf, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := qf.q.Close(); err != nil {
		t.Fatal(err)
	}
	cuts, torn, epochs := 0, 0, map[string]bool{}
	for n := int64(0); ; n++ {
		if n > 200 {
			t.Fatal("a start and 20 taps still sync after 200 syncs")
		}
		if err := disk.FreezeAfterSyncs(n); err != nil {
			t.Fatal(err)
		}
		// A start with the clock set right, 20 taps, the power going at
		// sync n.
		if qf, err := openQueue(ctx, cfg, log, minClock, time.Now, noWait); err == nil {
			for i := range 20 {
				if tap(qf, i) != nil {
					break
				}
			}
			qf.q.Close()
		}
		st, err := disk.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if !st.Frozen {
			t.Logf("%d power cuts while a validator numbering a year ahead of its clock booted and took taps (%d tearing a page; %d epochs); highest number %d",
				cuts, torn, len(epochs), handedOut)
			if err := disk.FreezeAfterSyncs(-1); err != nil {
				t.Fatal(err)
			}
			break
		}
		tear := n%2 == 1
		if _, err := disk.Cut(tear); err != nil {
			t.Fatalf("cut before sync %d: %v", n, err)
		}
		cuts++
		if tear {
			torn++
		}
		// The clock set right, or (every third cut) not set yet: the
		// RTC lost with the power; the file's own count numbers on.
		clock := time.Now
		if n%3 == 2 {
			clock = func() time.Time { return time.Unix(0, 0) }
		}
		qf, err := openQueue(ctx, cfg, log, minClock, clock, noWait)
		if err != nil {
			t.Fatalf("start after the cut before sync %d: %v", n, err)
		}
		epochs[qf.q.Epoch()] = true
		seq, err := qf.q.Append(ctx, []byte("after the cut"))
		if err != nil {
			t.Fatalf("tap after the cut before sync %d: %v", n, err)
		}
		if seq <= handedOut {
			t.Fatalf("cut before sync %d (tear %v): the first tap after the start is numbered %d, not above %d, a number handed out before the cut (epoch %s)",
				n, tear, seq, handedOut, qf.q.Epoch())
		}
		handedOut = seq
		if err := qf.q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Beyond what the disk's model lets a cut do (bbolt's commits
	// survive it whole): the newest page of taps lost (a flash fault
	// under the last commit). The file is salvaged into a new one, a new
	// epoch, numbered on above what the damaged file handed out.
	file := disk.Path("data", queueFile)
	for _, bucket := range []string{queue.PendingBucket} {
		ids, pageSize, err := queue.LeafPages(file, bucket)
		if err != nil || len(ids) < 2 {
			t.Fatalf("LeafPages = %v, %v", ids, err)
		}
		f, err := os.OpenFile(file, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(make([]byte, pageSize), int64(ids[len(ids)-1])*int64(pageSize)); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		qf, err := openQueue(ctx, cfg, log, minClock, time.Now, noWait)
		if err != nil {
			t.Fatalf("start on a file whose newest %s page is lost: %v", bucket, err)
		}
		seq, err := qf.q.Append(ctx, []byte("after the salvage"))
		if err != nil {
			t.Fatal(err)
		}
		if seq <= handedOut {
			t.Errorf("a file whose newest %s page was lost, salvaged: the first tap is numbered %d, not above %d, a number handed out before (epoch %s, %d before)",
				bucket, seq, handedOut, qf.q.Epoch(), len(epochs))
		}
		handedOut = max(handedOut, seq)
		epochs[qf.q.Epoch()] = true
		if err := qf.q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d epochs", len(epochs))
}
