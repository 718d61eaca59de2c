package powercut_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
)

// TestClockBackAfterPowerCutsKeepsTheTaps: a bus whose real-time clock
// lost two hours at a power cut (no battery, or a flat one) boots with
// taps queued, and the power goes again while it recovers (a brown-out):
// before each sync of the boot and of what follows in turn — the queue
// opened, the provisioning documents seeded, taps tried while the clock
// is behind, the uplink sending and acking a batch (its ack measuring the
// clock), the clock put right (NTP) and a burst of taps. Each time, on
// what survived, booted with the clock behind again: every tap the rider
// was shown green is queued or in the ledger; no tap is green while the
// clock is behind (it is out of service, blaming the clock, not the
// rider); once the clock is right it is back in service by itself and a
// code shown green before is refused. Finally every green tap is charged
// exactly once, and no refused one.
func TestClockBackAfterPowerCutsKeepsTheTaps(t *testing.T) {
	d := powercut.Mount(t, nil)
	w := newWorld(t, d)
	ctx := context.Background()
	const dev, lost = "rtc", 2 * time.Hour
	if err := durable.MkdirAll(d.Path(dev), 0o700); err != nil {
		t.Fatal(err)
	}
	var behind atomic.Int64 // how far the device clock is behind
	open := func() (*queue.Queue, *agent.Agent, error) {
		q, err := queue.Open(filepath.Join(d.Path(dev), "validator.db"), w.queueOptions())
		if err != nil {
			return nil, nil, err
		}
		cfg := w.agentConfig(dev)
		cfg.Now = func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }
		a, err := agent.New(q, feedback.Multi{}, cfg)
		if err == nil {
			err = errors.Join(a.Seed(record.DocKeyring, mustJSON(t, w.issuer.Keyring)), a.Seed(record.DocFares, fares(1)))
		}
		if err != nil {
			q.Close()
			return nil, nil, err
		}
		return q, a, nil
	}
	rider := 0
	tap := func(q *queue.Queue, a *agent.Agent) (agent.Outcome, string) {
		rider++
		text := w.riders[rider%len(w.riders)].Code(t, time.Now())
		out := a.Tap(ctx, scanner.Frame{Scanner: "door-0", Text: text, Time: time.Now()})
		h := paycode.ShortHash(text)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.n.taps++
		if out.Accepted {
			w.green[h], w.codes[h] = tapRef{dev, q.Epoch(), out.Seq}, text
		} else if out.Reason == record.ReasonInternal {
			w.cutOff[h] = true // the power is going: the disk answers EIO
		}
		return out, text
	}
	uplink := func(q *queue.Queue, a *agent.Agent, max int) error {
		recs, err := q.Peek(max, 0)
		if err != nil || len(recs) == 0 {
			return err
		}
		for _, r := range recs {
			w.settle(dev, q.Epoch(), r.Seq, r.Data)
		}
		if _, err := q.Ack(seqs(recs)...); err != nil {
			return err
		}
		a.ClockMeasured(-time.Duration(behind.Load()), 20*time.Millisecond)
		return nil
	}

	// The bus ran with its clock right: taps queued, a few sent.
	q, a, err := open()
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if out, _ := tap(q, a); !out.Accepted {
			t.Fatalf("tap refused: %s", out.Reason)
		}
	}
	if err := uplink(q, a, 3); err != nil {
		t.Fatal(err)
	}
	var shown string // a code shown green before the cuts
	for h, c := range w.codes {
		if w.green[h].dev == dev {
			shown = c
			break
		}
	}
	q.Close()
	if _, err := d.Cut(false); err != nil {
		t.Fatal(err)
	}

	cuts, bootCuts, refusedBehind, backInService := 0, 0, 0, 0
	for n := int64(0); ; n++ {
		if n > 300 {
			t.Fatal("a boot and its taps still sync after 300 syncs")
		}
		behind.Store(int64(lost)) // the clock lost at the cut
		if err := d.FreezeAfterSyncs(n); err != nil {
			t.Fatal(err)
		}
		q, a, err := open()
		if err != nil {
			bootCuts++ // the power went again while it booted
		} else {
			for range 3 {
				out, _ := tap(q, a)
				if out.Accepted {
					t.Errorf("sync %d: a tap was green with the clock %s behind", n, lost)
				}
				if why := a.OutOfService(); !strings.Contains(why, string(record.ReasonClockOffset)) && out.Reason != record.ReasonInternal {
					t.Errorf("sync %d: the clock %s behind, yet out of service for %q (tap: %s)", n, lost, why, out.Reason)
				}
				refusedBehind++
			}
			up := uplink(q, a, 4)
			behind.Store(0) // NTP sets the clock
			if up == nil {
				if why := a.OutOfService(); why != "" {
					t.Errorf("sync %d: the clock set right, yet out of service: %s", n, why)
				} else {
					backInService++
				}
			}
			for range 4 {
				tap(q, a)
			}
			if out := a.Tap(ctx, scanner.Frame{Scanner: "door-0", Text: shown, Time: time.Now()}); out.Accepted {
				t.Errorf("sync %d: a code shown green before the cuts was green again (seq %d)", n, out.Seq)
			}
			q.Close()
		}
		st, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if !st.Frozen {
			if err := d.FreezeAfterSyncs(-1); err != nil {
				t.Fatal(err)
			}
			break
		}
		if _, err := d.Cut(n%2 == 1); err != nil {
			t.Fatal(err)
		}
		cuts++
		// The next boot, the clock behind again: what survived holds
		// every green tap.
		behind.Store(int64(lost))
		q, a, err = open()
		if err != nil {
			t.Fatalf("boot after the cut before sync %d: %v", n, err)
		}
		w.check(dev, q, a)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	behind.Store(0)
	w.drain()
	if bootCuts == 0 || backInService == 0 {
		t.Errorf("the cuts missed a case: %d during a boot, %d back in service", bootCuts, backInService)
	}
	t.Logf("%d power cuts while a validator whose clock lost %s recovered (%d during its boot); %d taps, %d refused while the clock was behind, "+
		"back in service by itself %d times; %d green taps, each settled once; %d cut off by the power",
		cuts, lost, bootCuts, w.n.taps, refusedBehind, backInService, len(w.green), len(w.cutOff))
}
