package ingest

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/farego/farego/sync/wire"
)

// TestAsideBudget: a device is refused once the records kept aside reach
// its budget, is taken again as the budget refills (a device's batches
// are never refused for good: it sends them again), overdraws by at most
// what one commit kept aside and pays that back before it is taken again;
// devices are counted apart, and with many devices the full buckets are
// forgotten, not the others.
func TestAsideBudget(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a := newAsideBudget(100, func() time.Time { return now })
	if a.over("bus-1") {
		t.Fatal("a device never charged is over its budget")
	}
	a.charge("bus-1", 99)
	if a.over("bus-1") {
		t.Error("over after 99 of 100")
	}
	a.charge("bus-1", 31) // one commit: 30 past the budget
	if !a.over("bus-1") || a.over("bus-2") {
		t.Errorf("bus-1 over %v, bus-2 over %v; want only bus-1", a.over("bus-1"), a.over("bus-2"))
	}
	now = now.Add(17 * time.Minute) // 28 records back: still 2 in debt
	if !a.over("bus-1") {
		t.Error("taken again before its overdraft was paid back")
	}
	now = now.Add(2 * time.Minute)
	if a.over("bus-1") {
		t.Error("not taken again once the budget refilled")
	}
	now = now.Add(10 * time.Hour)
	a.charge("bus-1", 100)
	if !a.over("bus-1") {
		t.Error("the bucket grew past its capacity in 10 hours")
	}

	for i := range maxAsideDevices + 10 {
		a.charge(fmt.Sprint("dev-", i), 1)
	}
	now = now.Add(time.Hour) // every one of them full again
	a.charge("bus-1", 100)
	a.charge("late", 1)
	if len(a.devs) > 3 || !a.over("bus-1") {
		t.Errorf("%d devices tracked after the full ones were forgotten; bus-1 over %v", len(a.devs), a.over("bus-1"))
	}

	if none := newAsideBudget(-1, time.Now); func() bool { none.charge("x", 1<<30); return none.over("x") }() {
		t.Error("a negative budget (none) refuses")
	}
}

// TestVerifyBudget: a device's records are checked (each a payment code's
// signatures) up to its verify budget, then its batches are refused
// before they are checked, unacked, until the budget refills. A stolen
// validator sending one batch of a thousand records again and again —
// a few kilobytes compressed, inside the broker's budget, and charged
// nothing aside once its records were stored — had the server verify
// 20,000 codes a second, most of a core, for as long as it liked (an
// attack review). Through a real broker, with the same signed batch sent
// ten times.
func TestVerifyBudget(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	now := time.Now()
	cfg.Now = func() time.Time { return now } // no refill during the test
	cfg.VerifyBudget = 30
	in := w.start(cfg)
	d := w.newDevice(true)
	other := w.newDevice(true)
	msg := d.validBatch(1, 10)
	const sends = 10
	for i := range sends {
		d.publish(d.topic(wire.KindTaps), msg)
		waitFor(t, "the batch taken or refused", func() bool {
			st := in.Stats()
			return st.Batches+st.Rejects["verify_budget"] == uint64(i+1)
		})
	}
	st := in.Stats()
	if st.Taps > uint64(cfg.VerifyBudget+10) || st.Rejects["verify_budget"] == 0 {
		t.Errorf("%d records checked of %d sent, %d batches refused for the verify budget; want at most the budget (%d) and one batch",
			st.Taps, sends*10, st.Rejects["verify_budget"], cfg.VerifyBudget)
	}
	// Another device has a budget of its own.
	other.publish(other.topic(wire.KindTaps), other.validBatch(1, 5))
	other.nextAck()
	other.noAck()
}

// TestInflationCharged: a stolen validator's message of a few kilobytes
// that inflates to wire.MaxPayloadSize. As a batch (refused as malformed)
// it cost the device nothing, and as a status the server inflated it
// whole before finding it over its 8 KiB: an attack review sent 40 a
// second through the real broker (3.2 GB inflated in 20 s, a third of a
// core). A batch's inflated bytes are now charged to the verify budget as
// the records they could hold, and a status is inflated no further than
// its bound. Through a real broker; another device is not held back.
func TestInflationCharged(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	now := time.Now()
	cfg.Now = func() time.Time { return now } // no refill during the test
	cfg.VerifyBudget = 3000                   // about one and a half bombs
	in := w.start(cfg)
	d := w.newDevice(true)
	other := w.newDevice(true)
	bomb := func(typ wire.Type) []byte {
		msg, err := wire.Seal(typ, make([]byte, wire.MaxPayloadSize-100), true, d.key)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	taps, status := bomb(wire.TypeBatch), bomb(wire.TypeStatus)
	const sends = 10
	for i := range sends {
		d.publish(d.topic(wire.KindTaps), taps)
		waitFor(t, "the batch refused", func() bool {
			st := in.Stats()
			return st.Rejects["malformed"]+st.Rejects["verify_budget"] == uint64(i+1)
		})
	}
	st := in.Stats()
	t.Logf("%d bombs of %d bytes on the taps topic: %d inflated (malformed), %d refused for the verify budget",
		sends, len(taps), st.Rejects["malformed"], st.Rejects["verify_budget"])
	if st.Rejects["malformed"] > 2 || st.Rejects["verify_budget"] < sends-2 {
		t.Errorf("%d of %d batches inflated to %d bytes each with a verify budget of %d records; want at most 2",
			st.Rejects["malformed"], sends, wire.MaxPayloadSize-100, cfg.VerifyBudget)
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range sends {
		d.publish(d.topic(wire.KindStatus), status)
		waitFor(t, "the status refused", func() bool {
			return in.Stats().Rejects["malformed"] == st.Rejects["malformed"]+uint64(i+1)
		})
	}
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d status bombs of %d bytes: %d KiB allocated", sends, len(status), alloc>>10)
	if alloc > 16<<20 {
		t.Errorf("%d statuses over their %d bytes had %d MiB allocated: inflated past their bound", sends, wire.MaxStatusSize, alloc>>20)
	}

	// Another device has a budget of its own.
	other.publish(other.topic(wire.KindTaps), other.validBatch(1, 5))
	other.nextAck()
	other.noAck()
}
