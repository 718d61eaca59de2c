package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/sync/brokertest"
)

// A queue file holding another device's unsent taps (a card or data
// directory moved to a board provisioned with another id) is refused at
// start and left as it is: sent under this device's id, the server kept
// the taps aside as malformed records, uncharged, and acked them, so the
// device deleted green taps. The validator stays up out of service,
// answering scans so and saying why (it exited: systemd started it again
// every 2 s with no light for the riders, and a pending update counted
// each start as a failed one), and stops cleanly when told.
func TestQueueFileOfAnotherDeviceRefused(t *testing.T) {
	d := newDevice(t, "", "")
	d.start()
	for i := range 2 {
		code := d.issuer.Rider(t, uint64(5100+i), time.Now()).Code(t, time.Now())
		expectLine(t, d.scan(code), "ACCEPTED")
	}
	d.stop()

	defer d.setID("bus-9-rear")()
	d.start()
	waitFor(t, "the validator out of service", func() bool {
		return strings.Contains(d.logged(), "the queue file holds another device's taps")
	})
	for _, want := range []string{"2 unsent taps of device bus-7-front", "this validator is bus-9-rear"} {
		if !strings.Contains(d.logged(), want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	code := d.issuer.Rider(t, 5200, time.Now()).Code(t, time.Now())
	expectLine(t, d.scan(code), "OUT OF SERVICE")
	d.stop() // a clean exit
	if n := len(d.records()); n != 2 {
		t.Errorf("%d taps left in the file, want 2 (untouched)", n)
	}
}

// TestQueueFileOfAnotherDeviceTakenAway: once the technician takes the
// other device's file away (to run it with its own bundle), the validator
// waiting out of service opens a queue file of its own and takes taps,
// without a restart.
func TestQueueFileOfAnotherDeviceTakenAway(t *testing.T) {
	d := newDevice(t, "", "")
	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 5300, time.Now()).Code(t, time.Now())), "ACCEPTED")
	d.stop()
	defer d.setID("bus-9-rear")()
	defer func(was time.Duration) { ownRetry = was }(ownRetry)
	ownRetry = 50 * time.Millisecond

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb brokertest.SyncBuffer
	var code atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		code.Store(int32(run(ctx, []string{"run", "--config", d.cfgPath}, strings.NewReader(""), &out, &errb)))
	}()
	waitFor(t, "the validator out of service on bus-7-front's file", func() bool {
		return strings.Contains(errb.String(), "the queue file holds another device's taps")
	})
	// Looked at again only once the data directory changes: each open
	// of the file is a line in the log.
	time.Sleep(20 * ownRetry)
	if n := strings.Count(errb.String(), `msg="queue: opened"`); n != 1 {
		t.Errorf("the other device's file opened %d times while nothing changed, want once", n)
	}
	file := filepath.Join(d.dir, "data", queueFile)
	moved := filepath.Join(t.TempDir(), "bus-7-front.db")
	must(t, os.Rename(file, moved))
	waitFor(t, "a queue file of its own", func() bool {
		return strings.Contains(errb.String(), "the queue file is this device's: open")
	})
	_, err := d.master.Write([]byte(d.issuer.Rider(t, 5301, time.Now()).Code(t, time.Now()) + "\r\n"))
	must(t, err)
	waitFor(t, "the tap accepted", func() bool { return strings.Contains(out.String(), "ACCEPTED") })
	cancel()
	<-done
	if c := code.Load(); c != 0 {
		t.Errorf("exit %d, want 0:\n%s", c, errb.String())
	}
	if b, err := os.ReadFile(moved); err != nil || !bytes.Contains(b, []byte("bus-7-front")) {
		t.Errorf("bus-7-front's file taken away: %v", err)
	}
}

// waitFor waits up to a minute for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 600 {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no %s after a minute", what)
}

// setID makes d's config name device id (for the runs until the returned
// func puts it back).
func (d *device) setID(id string) (restore func()) {
	d.t.Helper()
	b, err := os.ReadFile(d.cfgPath)
	must(d.t, err)
	must(d.t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(b), `device_id = "bus-7-front"`, `device_id = "`+id+`"`, 1)), 0o644))
	return func() { must(d.t, os.WriteFile(d.cfgPath, b, 0o644)) }
}
