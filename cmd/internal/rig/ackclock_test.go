package rig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReplayAfterAckOnAClockBehind: a validator without a battery-backed
// clock comes back from a power cut two months behind (the date its image
// was built) and delivers the taps it took before the cut, which the
// server acks, before NTP sets its clock. Its archive dated their ack two
// months back, and once the clock was right the validator's first prune
// (at its next start) dropped them at once, not a week on: the ledger,
// restored from the backup taken before those taps, got them back from no
// replay, and the riders rode free. The replay brings them back; every
// balance is what it was before the restore, and verify is clean.
func TestReplayAfterAckOnAClockBehind(t *testing.T) {
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "bus-6-front", fast...)
	riders := newRiders(t, ctx, r, 3, 10_000)

	// The backup: the ledger before the taps.
	must(t, r.StopServer(false))
	backup := filepath.Join(t.TempDir(), "backup")
	copyFiles(t, r.serverDir(), "ledger.db", backup)

	// Taps while the server is down, then the power cut: the validator
	// starts again with its clock 60 days behind and delivers them.
	tapAll(t, ctx, d, riders)
	must(t, d.Stop(false))
	must(t, d.SetClockSkew(-60*24*time.Hour))
	must(t, r.StartServer(ctx))
	must(t, d.Start(ctx))
	waitRides(t, ctx, r, riders, 1)
	balances := map[uint64]int64{}
	for _, rd := range riders {
		a, err := r.Account(ctx, rd.ID)
		must(t, err)
		balances[rd.ID] = a.Balance
	}
	// NTP sets the clock right; the validator is restarted (its queue
	// is pruned at the open).
	must(t, d.SetClockSkew(0))
	time.Sleep(1100 * time.Millisecond) // the validator reads its clock file once a second
	must(t, d.Stop(false))
	must(t, d.Start(ctx))

	// The restore from the backup, and the replay.
	must(t, r.StopServer(false))
	matches, _ := filepath.Glob(filepath.Join(r.serverDir(), "ledger.db*"))
	for _, m := range matches {
		os.Remove(m)
	}
	copyFiles(t, backup, "ledger.db", r.serverDir())
	if out, err := r.command(ctx, "farego-settlement", "restored", "--data", r.serverDir()); err != nil {
		t.Fatalf("restored: %q, %v", out, err)
	}
	must(t, r.StartServer(ctx))
	var resp struct {
		Asked []string `json:"asked"`
	}
	err := WaitFor(ctx, 90*time.Second, "the device online again", func() bool {
		return r.API(ctx, "POST", "/v1/devices/replay", nil, &resp) == nil && len(resp.Asked) == 1
	})
	must(t, err)
	waitRides(t, ctx, r, riders, 1)
	for _, rd := range riders {
		if a, err := r.Account(ctx, rd.ID); err != nil || a.Balance != balances[rd.ID] {
			t.Errorf("rider %d after restore and replay: balance %d, %v; before the restore %d", rd.ID, a.Balance, err, balances[rd.ID])
		}
	}
	after, err := r.Verify(ctx)
	if err != nil || !strings.Contains(after, " 3 taps (0 flagged)") {
		t.Fatalf("verify after the replay: %q, %v", after, err)
	}
	t.Logf("after restore and replay: %s", strings.TrimSpace(after))
}
