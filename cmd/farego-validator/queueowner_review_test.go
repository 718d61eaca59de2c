package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/record/recordtest"
	"github.com/farego/farego/queue"
)

// A queue file whose own records were all sent but which still holds
// taps adopted from a damaged file of its device (a failing card: salvaged,
// then the board replaced) is another device's file all the same: its
// adopted taps, sent under this device's id, are kept aside uncharged.
func TestQueueOwnerAdoptedTaps(t *testing.T) {
	q, err := queue.Open(filepath.Join(t.TempDir(), "validator.db"), nil)
	must(t, err)
	defer q.Close()
	var recs []queue.Record
	for seq := uint64(1); seq <= 3; seq++ {
		tp := recordtest.Tap(t, seq) // of device bus-17-front
		b, err := tp.MarshalBinary()
		must(t, err)
		recs = append(recs, queue.Record{Seq: seq, Time: recordtest.Now, Data: b})
	}
	if _, err := q.Adopt(recordtest.Tap(t, 1).Epoch, recs); err != nil {
		t.Fatal(err)
	}
	err = checkQueueOwner(q, "bus-9-rear")
	if err == nil || !strings.Contains(err.Error(), "3 unsent taps of device bus-17-front") {
		t.Fatalf("checkQueueOwner on a file holding 3 adopted taps of bus-17-front: %v; want it refused", err)
	}
	if err := checkQueueOwner(q, "bus-17-front"); err != nil {
		t.Fatalf("its own device: %v", err)
	}
}

// A damaged queue file of another device was salvaged by this one: its
// taps, another device's, were left out as damaged and the file marked
// salvaged, never to be sent under their device. It is left pending and
// the start refused, as a sound file of another device is; started with
// its own device's id, the file is salvaged as before.
func TestDamagedQueueFileOfAnotherDeviceRefused(t *testing.T) {
	d := newDevice(t, `passback_window = "-1s"`+"\nrisk_cap = -1", "")
	d.start()
	for i := range 60 {
		expectLine(t, d.scan(d.issuer.Rider(t, uint64(5200+i), time.Now()).Code(t, time.Now())), "ACCEPTED")
	}
	d.stop()
	d.damageQueue()

	restore := d.setID("bus-9-rear")
	d.start()
	waitFor(t, "the validator out of service", func() bool {
		return strings.Contains(d.logged(), "the queue file holds another device's taps")
	})
	expectLine(t, d.scan(d.issuer.Rider(t, 5290, time.Now()).Code(t, time.Now())), "OUT OF SERVICE")
	d.stop()
	restore()
	salvaged, _ := filepath.Glob(filepath.Join(d.dir, "data", queueFile+".corrupt-*"+salvagedSuffix))
	if !strings.Contains(d.logged(), "taps of device bus-7-front") || len(salvaged) != 0 {
		t.Fatalf("bus-9-rear on bus-7-front's damaged file: %d files marked salvaged; want it refused and none", len(salvaged))
	}

	d.start()
	d.stop()
	salvaged, _ = filepath.Glob(filepath.Join(d.dir, "data", queueFile+".corrupt-*"+salvagedSuffix))
	if len(salvaged) != 1 || !strings.Contains(d.logged(), "damaged queue file salvaged") {
		t.Errorf("its own device did not salvage it: %v", salvaged)
	}
}
