package powercut_test

import (
	"context"
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

// TestStateUpdateFailedSyncThenPowerCutKeepsTheTaps: a deny list arrives
// over MQTT (or the uplink acks a batch) while the flash fails a sync with
// EIO, the power on (Disk.FailSyncAfter: Linux keeps the pages in its
// cache, marked clean, never written). The update fails, and the
// validator goes on taking taps: its commits build on what the file reads.
// Then the power is cut. The queue file must open on the same file (not
// set aside as damaged), pass bbolt's check and hold every tap the rider
// was shown green; the tap burst after the failure must be charged once
// each. Each of the update's syncs fails in turn, for a deny-list update,
// an ack and a prune of the codes seen.
func TestStateUpdateFailedSyncThenPowerCutKeepsTheTaps(t *testing.T) {
	d := powercut.Mount(t, nil)
	w := newWorld(t, d)
	ctx := context.Background()
	rider := 0
	newCode := func() string {
		rider++
		return w.riders[rider%len(w.riders)].Code(t, time.Now())
	}
	type op struct {
		name string
		do   func(q *queue.Queue, a *agent.Agent) error
	}
	deny, curDev := uint64(0), ""
	ops := []op{
		{"deny-list update", func(_ *queue.Queue, a *agent.Agent) error {
			deny++
			v := a.Versions()[record.DocDenyList] + 1
			return a.Apply(record.DocDenyList, v, mustJSON(t, record.DenyList{Version: v, Entries: []record.DenyEntry{{Account: 9000 + deny}}}))
		}},
		{"ack", func(q *queue.Queue, _ *agent.Agent) error {
			recs, err := q.Peek(2, 0)
			if err != nil {
				return err
			}
			for _, r := range recs {
				w.settle(curDev, q.Epoch(), r.Seq, r.Data)
			}
			_, err = q.Ack(seqs(recs)...)
			return err
		}},
		{"fare-table update", func(_ *queue.Queue, a *agent.Agent) error {
			v := a.Versions()[record.DocFares] + 1
			return a.Apply(record.DocFares, v, fares(v))
		}},
	}
	failures, cuts, greenAfter := 0, 0, 0
	for _, o := range ops {
		for n := int64(0); ; n++ {
			if n > 20 {
				t.Fatalf("a %s still syncs after 20 syncs", o.name)
			}
			dev := fmt.Sprintf("%s-%d", strings.Fields(o.name)[0], n)
			curDev = dev
			if err := durable.MkdirAll(d.Path(dev), 0o700); err != nil {
				t.Fatal(err)
			}
			q, a, err := w.open(dev)
			if err != nil {
				t.Fatal(err)
			}
			epoch := q.Epoch()
			tap := func(a *agent.Agent, text string) agent.Outcome {
				out := a.Tap(ctx, scanner.Frame{Scanner: "door-0", Text: text, Time: time.Now()})
				if out.Accepted {
					w.mu.Lock()
					w.green[paycode.ShortHash(text)] = tapRef{dev, q.Epoch(), out.Seq}
					w.codes[paycode.ShortHash(text)] = text
					w.mu.Unlock()
				}
				return out
			}
			for range 4 {
				if out := tap(a, newCode()); !out.Accepted {
					t.Fatalf("%s: tap refused before any fault: %s", dev, out.Reason)
				}
			}
			before, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if err := d.FailSyncAfter(n, 1); err != nil {
				t.Fatal(err)
			}
			opErr := o.do(q, a)
			after, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if err := d.FailSyncAfter(-1, 0); err != nil {
				t.Fatal(err)
			}
			if after.FailedSyncs == before.FailedSyncs {
				if opErr != nil {
					t.Fatalf("%s: no sync failed, yet the %s: %v", dev, o.name, opErr)
				}
				q.Close()
				break
			}
			failures++
			t.Logf("%s: sync %d of the %s failed: %v", dev, n, o.name, opErr)
			// The power stays on: a burst of taps, each green or refused.
			for range 12 {
				if out := tap(a, newCode()); out.Accepted {
					greenAfter++
				} else if why := a.OutOfService(); why == "" {
					t.Errorf("%s: a tap after the failed %s refused (%s), yet in service", dev, o.name, out.Reason)
				}
			}
			q.Close()
			if _, err := d.Cut(n%2 == 1); err != nil {
				t.Fatal(err)
			}
			cuts++
			q, a, err = w.open(dev)
			if err != nil {
				t.Fatalf("%s: boot after the cut: %v", dev, err)
			}
			if q.Epoch() != epoch {
				t.Errorf("%s: sync %d of the %s failed, then the power was cut: the queue file was set aside as damaged (epoch %s, was %s)",
					dev, n, o.name, q.Epoch(), epoch)
			}
			w.check(dev, q, a)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.drain()
	if failures < 2*len(ops) {
		t.Errorf("only %d failed syncs for %d kinds of update", failures, len(ops))
	}
	t.Logf("%d failed syncs of a deny-list update, an ack and a fare table, each followed by a tap burst and a power cut (%d cuts): "+
		"%d green taps in all (%d after the failures), each settled once", failures, cuts, len(w.green), greenAfter)
}
