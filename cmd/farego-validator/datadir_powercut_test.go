package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
)

// TestPowerCutKeepsADataDirBelowAFreshDirectory: several validators on one
// machine (README: Technician's guide) take data directories below one
// the system made for them — the unit's StateDirectory=farego makes
// /var/lib/farego at its first start (systemd syncs no directory), the
// validator makes /var/lib/farego/front. It fsynced /var/lib/farego (the
// parent of the directory it made) and not /var/lib, whose entry for
// farego was not durable yet: a power cut soon after the first start took
// back /var/lib/farego with front, the queue file and every green tap in
// it.
func TestPowerCutKeepsADataDirBelowAFreshDirectory(t *testing.T) {
	disk := powercut.Mount(t, nil)
	// What systemd's StateDirectory= does: a mkdir, nothing synced.
	must(t, os.Mkdir(disk.Path("farego"), 0o700))
	d := newDevice(t, `passback_window = "-1s"`+"\nrisk_cap = -1", "")
	b, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(b), `data_dir = "data"`, `data_dir = "`+disk.Path("farego", "front")+`"`, 1)), 0o644))

	d.start()
	const taps = 3
	for i := range taps {
		code := d.issuer.Rider(t, uint64(5100+i), time.Now()).Code(t, time.Now())
		expectLine(t, d.scan(code), "ACCEPTED")
	}
	// The ignition goes off: the validator dies with the power.
	d.kill()
	if _, err := disk.Cut(false); err != nil {
		t.Fatal(err)
	}

	file := disk.Path("farego", "front", queueFile)
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("after the power cut the queue file is gone, with %d green taps: %v", taps, err)
	}
	q, err := queue.Open(file, &queue.Options{NoCreate: true})
	must(t, err)
	defer q.Close()
	st, err := q.Stats()
	must(t, err)
	if st.Count != taps {
		t.Errorf("after the power cut the queue holds %d taps, want the %d green ones", st.Count, taps)
	}
}
