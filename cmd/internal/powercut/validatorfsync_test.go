package powercut_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
)

// TestValidatorRefusalStaysTrueAfterAFailedSync drives the validator's
// tap path (agent decision, queue append with the codes seen and the hash
// chain, the rider's answer) on flash that fails a sync with EIO, the
// power on (Disk.FailSyncAfter): each of a tap's syncs in turn, once (the
// queue takes the commit back) and twice (taking it back fails too: the
// validator goes out of service, saying the flash is failing, until it is
// restarted). A tap refused for it is never charged: not in the queue,
// not sent, not in the ledger after the power is cut and everything
// drained; its code shown again is taken as new (the file does not hold
// it as paid) and charged once; every green tap is charged once.
func TestValidatorRefusalStaysTrueAfterAFailedSync(t *testing.T) {
	d := powercut.Mount(t, nil)
	w := newWorld(t, d)
	ctx := context.Background()
	rider := 0
	newCode := func() string {
		rider++
		return w.riders[rider%len(w.riders)].Code(t, time.Now())
	}
	failedOnce, outOfService := 0, 0
	for _, count := range []int64{1, 2} {
		for n := int64(0); ; n++ {
			if n > 20 {
				t.Fatal("a tap still syncs after 20 syncs")
			}
			dev := fmt.Sprintf("v%d-%d", count, n)
			if err := durable.MkdirAll(d.Path(dev), 0o700); err != nil {
				t.Fatal(err)
			}
			q, a, err := w.open(dev)
			if err != nil {
				t.Fatal(err)
			}
			tap := func(a *agent.Agent, text string) agent.Outcome {
				out := a.Tap(ctx, scanner.Frame{Scanner: "door-0", Text: text, Time: time.Now()})
				if out.Accepted {
					w.mu.Lock()
					w.green[paycode.ShortHash(text)] = tapRef{dev, q.Epoch(), out.Seq}
					w.mu.Unlock()
				}
				return out
			}
			for range 3 {
				if out := tap(a, newCode()); !out.Accepted {
					t.Fatalf("%s: tap refused before any fault: %s", dev, out.Reason)
				}
			}
			before, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if err := d.FailSyncAfter(n, count); err != nil {
				t.Fatal(err)
			}
			refused := newCode()
			out := tap(a, refused)
			after, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if after.FailedSyncs == before.FailedSyncs {
				if err := d.FailSyncAfter(-1, 0); err != nil {
					t.Fatal(err)
				}
				if !out.Accepted {
					t.Fatalf("%s: no sync failed, yet the tap was refused: %s", dev, out.Reason)
				}
				q.Close()
				break
			}
			if out.Accepted {
				t.Fatalf("%s: sync %d failed with EIO, yet the tap was green", dev, n)
			}
			if out.Reason != record.ReasonInternal {
				t.Errorf("%s: the tap whose sync failed was refused as %s, want %s", dev, out.Reason, record.ReasonInternal)
			}
			// The next taps: green, or refused while a second failure is
			// used up, or out of service (taking the commit back failed).
			down := false
			for range 2 {
				o := tap(a, newCode())
				if o.Accepted {
					break
				}
				if why := a.OutOfService(); strings.Contains(why, "flash is failing") {
					down = true
					t.Logf("%s: out of service: %s", dev, why)
					break
				}
			}
			if err := d.FailSyncAfter(-1, 0); err != nil {
				t.Fatal(err)
			}
			if count == 1 && down {
				t.Errorf("%s: one failed sync took the validator out of service", dev)
			}
			if down {
				outOfService++
				if o := tap(a, newCode()); o.Accepted || !strings.Contains(a.OutOfService(), "flash is failing") ||
					!strings.Contains(a.OutOfService(), "restart the validator") {
					t.Errorf("%s: out of service, yet the next tap: accepted %t, %q", dev, o.Accepted, a.OutOfService())
				}
				// Nothing more is committed: bbolt's free pages may be wrong.
				if recs, err := q.Peek(1, 0); err != nil || len(recs) == 0 {
					t.Errorf("%s: out of service, the queue reads %d records (%v): want the green ones", dev, len(recs), err)
				} else if _, err := q.Ack(recs[0].Seq); !errors.Is(err, queue.ErrStorageFailing) {
					t.Errorf("%s: out of service, yet an ack: %v", dev, err)
				}
				// A restart takes taps again.
				if err := q.Close(); err != nil {
					t.Logf("%s: close: %v", dev, err)
				}
				if q, a, err = w.open(dev); err != nil {
					t.Fatalf("%s: restart: %v", dev, err)
				}
			} else {
				failedOnce++
			}
			recs, err := q.Peek(1000, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if tp, err := record.ParseTap(r.Data); err == nil && paycode.ShortHash(paycode.EncodeText(tp.Code)) == paycode.ShortHash(refused) {
					t.Errorf("%s: sync %d: the tap refused (red) is handed to the uplink as seq %d: it would be charged", dev, n, r.Seq)
				}
			}
			// The rider, told no, shows the same code again.
			if o := tap(a, refused); !o.Accepted {
				t.Errorf("%s: sync %d: the refused code shown again: %s (the file holds a tap the rider was refused)", dev, n, o.Reason)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := d.Cut(false); err != nil {
		t.Fatal(err)
	}
	w.drain()
	if failedOnce < 2 || outOfService < 1 {
		t.Errorf("failed syncs taken back: %d (want the data's and the meta page's); out of service: %d (want 1 or more)", failedOnce, outOfService)
	}
	t.Logf("taken back %d times, out of service %d times; %d green taps, each settled once", failedOnce, outOfService, len(w.green))
}
