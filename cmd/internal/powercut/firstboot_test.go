package powercut_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/driver/scanner"
)

// TestFirstBootSurvivesPowerCutsAtEverySync: a validator's first boot
// after provisioning — its queue file made, the bundle's keyring and fare
// table seeded into it, its first taps — with the power cut before each
// of its syncs in turn (every other cut tearing a page), and again before
// each sync of the boot after that (a brown-out while it recovers). Each
// time the next boot, the power on, opens what survived by itself and
// takes taps; every tap shown green is queued, its code refused again.
func TestFirstBootSurvivesPowerCutsAtEverySync(t *testing.T) {
	d := powercut.Mount(t, nil)
	w := newWorld(t, d)
	ctx := context.Background()
	rider := 0
	cuts, second := 0, 0
	for n := int64(0); ; n++ {
		if n > 200 {
			t.Fatal("a first boot still syncs after 200 syncs")
		}
		dev := fmt.Sprintf("first-%d", n)
		if err := os.Mkdir(d.Path(dev), 0o700); err != nil {
			t.Fatal(err)
		}
		syncDirT(t, d.Dir()) // the data directory is made durably by its maker
		boot := func(freezeAt int64) bool {
			if err := d.FreezeAfterSyncs(freezeAt); err != nil {
				t.Fatal(err)
			}
			q, a, err := w.open(dev)
			if err == nil {
				if freezeAt < 0 {
					w.check(dev, q, a)
				}
				for range 3 {
					rider++
					text := w.riders[rider%len(w.riders)].Code(t, time.Now())
					out := a.Tap(ctx, scanner.Frame{Scanner: "door-0", Text: text, Time: time.Now()})
					h := paycode.ShortHash(text)
					w.mu.Lock()
					if out.Accepted {
						w.green[h], w.codes[h] = tapRef{dev, q.Epoch(), out.Seq}, text
					} else {
						w.cutOff[h] = true
					}
					w.mu.Unlock()
					if !out.Accepted && freezeAt < 0 {
						t.Errorf("%s: a tap after the cuts, the power on, refused: %s", dev, out.Reason)
					}
				}
				q.Close()
			} else if freezeAt < 0 {
				t.Fatalf("%s: the boot after the cuts fails: %v", dev, err)
			}
			st, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			return st.Frozen
		}
		if !boot(n) {
			if err := d.FreezeAfterSyncs(-1); err != nil {
				t.Fatal(err)
			}
			break
		}
		if _, err := d.Cut(n%2 == 1); err != nil {
			t.Fatal(err)
		}
		cuts++
		// A brown-out: the power goes again before the same sync of the
		// boot that recovers.
		if boot(n) {
			if _, err := d.Cut(n%2 == 0); err != nil {
				t.Fatal(err)
			}
			cuts++
			second++
		}
		boot(-1)
	}
	w.drain()
	t.Logf("%d power cuts of a first boot and its first taps (%d of them during the boot after a cut); %d green taps, each settled once; %d cut off by the power",
		cuts, second, len(w.green), len(w.cutOff))
}
