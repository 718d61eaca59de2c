package rig

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/queue"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// onBothLedgers runs test against a rig on SQLite and one on PostgreSQL
// (FAREGO_TEST_POSTGRES).
func onBothLedgers(t *testing.T, test func(t *testing.T, r *Rig, ctx context.Context)) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := ""
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			r, ctx := newRigDB(t, testFares, dsn)
			test(t, r, ctx)
		})
	}
}

// startAheadDevice provisions a validator whose queue file is made while
// its clock runs a day ahead (an RTC that came up wrong, a technician's
// typo), then starts it with the clock set right: the file numbers its
// taps from the day ahead, and keeps doing so.
func startAheadDevice(t *testing.T, ctx context.Context, r *Rig, id string) *Device {
	t.Helper()
	d, err := r.Provision(ctx, id, "42")
	must(t, err)
	for i := 0; i+1 < len(fast); i += 2 {
		must(t, d.SetPolicy(fast[i], fast[i+1]))
	}
	t.Cleanup(d.Close)
	must(t, d.SetClockSkew(24*time.Hour))
	must(t, d.Start(ctx))
	must(t, d.Stop(false))
	q, err := queue.Open(d.QueueFile(), nil)
	must(t, err)
	st, err := q.Stats()
	q.Close()
	must(t, err)
	if next := time.UnixMilli(int64(st.LastSeq + 1)); next.Before(time.Now().Add(12 * time.Hour)) {
		t.Fatalf("the queue file's numbers start at %v, want a day ahead", next)
	}
	must(t, d.SetClockSkew(0))
	must(t, d.Start(ctx))
	return d
}

// A validator's queue file made while its clock ran a day ahead numbers
// its taps from that clock: a day above the wall clock. Put back from an
// older backup, it handed out again the numbers used after the copy (the
// floor from the clock alone, queue.Options.SeqFloor, was below them):
// the last two riders' taps were kept aside (tap_id_conflict), never
// charged. The file's lead over the clock is now kept at every start, so
// all six rides are charged once each, nothing is kept aside, and verify
// holds, on SQLite and PostgreSQL.
func TestQueueRestoredFromBackupNumberedAhead(t *testing.T) {
	onBothLedgers(t, func(t *testing.T, r *Rig, ctx context.Context) {
		d := startAheadDevice(t, ctx, r, "ahead-1")
		riders := newRiders(t, ctx, r, 6, 10_000)
		drained := func() {
			t.Helper()
			must(t, WaitFor(ctx, time.Minute, "the validator's queue to drain", func() bool {
				ds, err := r.Devices(ctx)
				return err == nil && len(ds) == 1 && ds[0].Online && ds[0].QueueDepth == 0
			}))
		}
		tapAll(t, ctx, d, riders[:2])
		waitRides(t, ctx, r, riders[:2], 1)
		drained()
		must(t, d.Stop(false))
		backup := filepath.Join(t.TempDir(), "validator.db")
		copyFile(t, d.QueueFile(), backup)
		must(t, d.Start(ctx))
		tapAll(t, ctx, d, riders[2:4])
		waitRides(t, ctx, r, riders[2:4], 1)
		drained()
		must(t, d.Stop(false))
		copyFile(t, backup, d.QueueFile())
		must(t, d.Start(ctx))
		tapAll(t, ctx, d, riders[4:]) // numbered as riders[2:4]'s taps were, without the lead
		drained()
		waitRides(t, ctx, r, riders, 1)
		for _, rd := range riders {
			if a, err := r.Account(ctx, rd.ID); err != nil || a.Balance != 10_000-250 {
				t.Errorf("rider %d: balance %d, %v; want one fare paid", rd.ID, a.Balance, err)
			}
		}
		out, err := r.Verify(ctx)
		if err != nil || !strings.Contains(out, " 6 taps (0 flagged)") || !strings.Contains(out, " 0 quarantined") {
			t.Fatalf("verify: %q, %v", out, err)
		}
	})
}

// A validator's SD card is cloned onto a spare bus (data directory and
// identity included), and both run, their riders tapping alternately
// within milliseconds. Their queue file was made while the clock ran a day
// ahead: each numbered on from the file's last number alike, every tap of
// the second bus under an id of the first's. With the file's lead kept
// (seqLead) each numbers from its own first tap; taps of the two within a
// few milliseconds may still get one number. Whatever the timing, no rider
// is charged twice; every tap is charged once or kept aside
// (tap_id_conflict) and named in the log as a clone's; the broker says two
// devices share the identity; verify holds.
func TestClonedCardBothRun(t *testing.T) {
	onBothLedgers(t, func(t *testing.T, r *Rig, ctx context.Context) {
		a := startAheadDevice(t, ctx, r, "clone-1")
		riders := newRiders(t, ctx, r, 8, 10_000)
		tapAll(t, ctx, a, riders[:2])
		waitRides(t, ctx, r, riders[:2], 1)
		must(t, a.Stop(false))
		dir := filepath.Join(t.TempDir(), "clone-1")
		if out, err := exec.Command("cp", "-a", a.Dir, dir).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		b := &Device{ID: a.ID, Dir: dir, rig: r, Link: a.Link}
		t.Cleanup(func() {
			b.Stop(false)
			if t.Failed() {
				if l, err := os.ReadFile(filepath.Join(dir, "validator.log")); err == nil {
					t.Logf("clone validator.log (tail):\n%s", tail(string(l), 40))
				}
			}
		})
		must(t, a.Start(ctx))
		must(t, b.Start(ctx))
		for i := 2; i < len(riders); i += 2 {
			tapAll(t, ctx, a, riders[i:i+1])
			tapAll(t, ctx, b, riders[i+1:i+2])
		}
		serverSays := func(what string, want ...string) {
			t.Helper()
			must(t, WaitFor(ctx, time.Minute, what, func() bool {
				log, _ := os.ReadFile(filepath.Join(r.Dir, "server.log"))
				for _, l := range strings.Split(string(log), "\n") {
					found := true
					for _, w := range want {
						found = found && strings.Contains(l, w)
					}
					if found {
						return true
					}
				}
				return false
			}))
		}
		serverSays("the broker to say two devices share clone-1's identity", "two devices share this identity", "identity=clone-1")
		// The two knock each other off the broker every second or so, and
		// a tap may wait on its bus for minutes: each is then left alone
		// to send its own.
		drained := func() {
			t.Helper()
			must(t, WaitFor(ctx, 2*time.Minute, "the validator's queue to drain", func() bool {
				ds, err := r.Devices(ctx)
				return err == nil && len(ds) == 1 && ds[0].Online && ds[0].QueueDepth == 0
			}))
		}
		must(t, a.Stop(false))
		drained()
		must(t, b.Stop(false))
		must(t, a.Start(ctx))
		drained()
		charged := 0
		for _, rd := range riders {
			rides, err := r.Rides(ctx, rd.ID)
			must(t, err)
			acc, err := r.Account(ctx, rd.ID)
			must(t, err)
			switch {
			case len(rides) == 1 && acc.Balance == 10_000-250:
				charged++
			case len(rides) == 0 && acc.Balance == 10_000:
			default:
				t.Errorf("rider %d: %d rides, balance %d; want one fare or none (kept aside)", rd.ID, len(rides), acc.Balance)
			}
		}
		out, err := r.Verify(ctx)
		t.Logf("%d of %d riders charged; verify: %s", charged, len(riders), strings.TrimSpace(out))
		if err != nil || !strings.Contains(out, fmt.Sprintf(" %d taps (0 flagged)", charged)) ||
			!strings.Contains(out, fmt.Sprintf(" %d quarantined", len(riders)-charged)) {
			t.Errorf("verify: %q, %v; want %d taps, %d quarantined", out, err, charged, len(riders)-charged)
		}
		if charged < len(riders) {
			serverSays("the server to name the clone", "another payment code", "two validators running with this device's identity")
		}
	})
}
