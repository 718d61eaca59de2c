package rig

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/queue"
)

// A queue file holding unsent taps is damaged while the validator is off
// (a page of records and the rest intact). At the next start the validator
// salvages it: what can be read is sent under the old epoch and charged
// once, the codes it had accepted still count as paid, and the operator
// sees the salvage. Only the taps in the damaged page are lost.
func TestSalvagedTapsSettle(t *testing.T) {
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "salvage-1", fast...)
	const n = 60
	riders := make([]*APIRider, n)
	codes := make([]string, n)
	for i := range riders {
		var err error
		if riders[i], err = r.NewAPIRider(ctx, "adult", 10_000); err != nil {
			t.Fatal(err)
		}
	}
	d.Link.Cut() // the taps stay on the validator
	for i, rd := range riders {
		codes[i] = rd.Code(time.Now())
		if line, err := d.Scan(ctx, codes[i]); err != nil || !strings.Contains(line, "ACCEPTED") {
			t.Fatalf("tap %d: %q, %v", i, line, err)
		}
	}
	must(t, d.Stop(false))
	if ok, err := d.DamageQueue(queue.PendingBucket); err != nil || !ok {
		t.Fatalf("DamageQueue = %t, %v", ok, err)
	}
	d.Link.Restore()
	must(t, d.Start(ctx))
	for _, i := range []int{0, n / 2, n - 1} {
		// Remembered: green "Already paid" within the re-read window,
		// refused as used after it.
		if line, err := d.Scan(ctx, codes[i]); err != nil || !strings.Contains(line, "(code_used)") && !strings.Contains(line, "Already paid") {
			t.Errorf("code %d again after the salvage: %q, %v", i, line, err)
		}
	}
	// Every tap the salvage kept reaches the ledger once, under the old
	// epoch; the queue (adopted records included) drains.
	var st DeviceStatus
	err := WaitFor(ctx, 2*time.Minute, "the validator's queue to drain", func() bool {
		ds, err := r.Devices(ctx)
		if err != nil || len(ds) != 1 {
			return false
		}
		st = ds[0]
		return st.Online && st.QueueDepth == 0
	})
	must(t, err)
	settled := 0
	for i, rd := range riders {
		rides, err := r.Rides(ctx, rd.ID)
		must(t, err)
		switch len(rides) {
		case 0:
		case 1:
			settled++
			if rides[0].Charge != 250 || rides[0].CodeHash != paycode.ShortHash(codes[i]) {
				t.Errorf("rider %d: %+v", rd.ID, rides[0])
			}
		default:
			t.Errorf("rider %d charged %d times", rd.ID, len(rides))
		}
	}
	must(t, d.Stop(false))
	q, err := queue.Open(d.QueueFile(), nil)
	must(t, err)
	qs, _ := q.Stats()
	q.Close()
	salvaged, _ := filepath.Glob(d.QueueFile() + ".corrupt-*.salvaged")
	log, _ := os.ReadFile(filepath.Join(d.Dir, "validator.log"))
	t.Logf("%d of %d taps salvaged and settled; %d in the damaged page lost", settled, n, n-settled)
	if settled < n/2 || settled == n {
		t.Errorf("%d of %d taps settled, want all but the damaged page's", settled, n)
	}
	if qs.Adopted != 0 || qs.Count != 0 || len(salvaged) != 1 || !strings.Contains(string(log), fmt.Sprintf(`"records":%d`, settled)) {
		t.Errorf("queue %+v, salvaged files %v, or the log does not report %d salvaged records", qs, salvaged, settled)
	}
	if out, err := r.Verify(ctx); err != nil {
		t.Errorf("ledger verify: %v\n%s", err, out)
	}
}

// A validator's clock jumps two hours ahead. It knows its offset from the
// server's acks, so it goes out of service (clock_offset) instead of
// refusing riders' fresh codes as expired; the server shows it drifting.
// When the clock is set right it takes taps again, and a code accepted
// before the jump still counts as paid.
func TestClockJump(t *testing.T) {
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "clock-1", fast...)
	rd, err := r.NewAPIRider(ctx, "adult", 10_000)
	must(t, err)
	first := rd.Code(time.Now())
	if line, err := d.Scan(ctx, first); err != nil || !strings.Contains(line, "ACCEPTED") {
		t.Fatalf("first tap: %q, %v", line, err)
	}
	waitRides(t, ctx, r, []*APIRider{rd}, 1) // acked: the validator has measured its clock

	// The first code again is the probe: refused as used in service,
	// "out of service" out of it, never a charge.
	must(t, d.SetClockSkew(2*time.Hour))
	var line string
	err = WaitFor(ctx, time.Minute, "the validator out of service", func() bool {
		line, err = d.Scan(ctx, first)
		return err == nil && strings.Contains(line, "OUT OF SERVICE  Out of service: clock")
	})
	if err != nil {
		t.Fatalf("%v (last feedback %q)", err, line)
	}
	var st DeviceStatus
	err = WaitFor(ctx, time.Minute, "the server to show the device drifting", func() bool {
		ds, err := r.Devices(ctx)
		if err != nil || len(ds) != 1 {
			return false
		}
		st = ds[0]
		return st.Drifting && strings.HasPrefix(st.OutOfService, "clock_offset")
	})
	if err != nil {
		t.Fatalf("%v (last %+v)", err, st)
	}

	if line, err := d.Scan(ctx, rd.Code(time.Now())); err != nil || !strings.Contains(line, "Out of service: clock") {
		t.Errorf("a fresh code while the clock is off: %q, %v (want out of service, not a refusal blaming the rider)", line, err)
	}

	must(t, d.SetClockSkew(0))
	err = WaitFor(ctx, time.Minute, "the validator back in service", func() bool {
		line, err = d.Scan(ctx, first)
		return err == nil && strings.Contains(line, "(code_used)")
	})
	if err != nil {
		t.Fatalf("%v (last feedback %q)", err, line)
	}
	if line, err := d.Scan(ctx, rd.Code(time.Now())); err != nil || !strings.Contains(line, "ACCEPTED") {
		t.Errorf("a fresh code with the clock right: %q, %v", line, err)
	}
	waitRides(t, ctx, r, []*APIRider{rd}, 2)
	err = WaitFor(ctx, 2*time.Minute, "the server to show the clock right", func() bool {
		ds, err := r.Devices(ctx)
		return err == nil && len(ds) == 1 && !ds[0].Drifting && ds[0].OutOfService == ""
	})
	must(t, err)
	if out, err := r.Verify(ctx); err != nil {
		t.Errorf("ledger verify: %v\n%s", err, out)
	}
}

// A validator's queue file is put back from a backup (a technician restores
// an older image of its storage). It used to number its taps again from the
// backup's last one, under the same epoch: the taps made after the restore
// reused the ids of those made after the backup, with other riders' codes,
// and the server kept them aside (tap_id_conflict), never charged. The
// first tap after a start is now numbered at least the wall clock in ms
// (queue.Options.SeqFloor), so all six rides are charged once each; the
// queue drains and verify holds.
func TestQueueRestoredFromBackup(t *testing.T) {
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "restored-1", fast...)
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
	tapAll(t, ctx, d, riders[4:]) // the same sequence numbers as riders[2:4]'s taps
	waitRides(t, ctx, r, riders, 1)
	drained()
	for _, rd := range riders {
		if a, err := r.Account(ctx, rd.ID); err != nil || a.Balance != 10_000-250 {
			t.Errorf("rider %d: balance %d, %v; want one fare paid", rd.ID, a.Balance, err)
		}
	}
	out, err := r.Verify(ctx)
	if err != nil || !strings.Contains(out, " 6 taps (0 flagged)") {
		t.Fatalf("verify: %q, %v", out, err)
	}
}
