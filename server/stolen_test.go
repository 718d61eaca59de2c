package server

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/wire"
)

// TestStolenDeviceOffsetHidesRouteMismatch: a stolen validator assigned
// route 2 half an hour ago (route 1 an hour ago) taps riders on route 1 with its clock
// right. Just before the batch it reports a clock offset of +2 h, so the
// ledger places its taps before any assignment (never noted), and just
// after it reports 0 again. The tap must still be noted route_mismatch,
// or at least the offset jump must be in the device's history.
func TestStolenDeviceOffsetHidesRouteMismatch(t *testing.T) {
	ctx := context.Background()
	l, shift := shiftedLedger(t, "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"))
	now := time.Now()
	st, _, _, rider := riderFixture(t, l, now)
	shift.Store(int64(-time.Hour))
	if _, err := l.AssignDevice(ctx, "bus-1", "1", "", "op"); err != nil {
		t.Fatal(err)
	}
	shift.Store(int64(-30 * time.Minute))
	if _, err := l.AssignDevice(ctx, "bus-1", "2", "", "op"); err != nil {
		t.Fatal(err)
	}
	shift.Store(0)
	status := func(ms int64) {
		if err := st.Status(ctx, &wire.Status{DeviceID: "bus-1", Online: true, Time: time.Now(), ClockOffsetMS: &ms}); err != nil {
			t.Fatal(err)
		}
	}
	status(0)
	status(int64(2 * time.Hour / time.Millisecond)) // the lie, just before the batch
	tapTime := time.Now()
	code, err := paycode.ParseText(rider.Code(t, tapTime))
	if err != nil {
		t.Fatal(err)
	}
	rec := &record.Tap{DeviceID: "bus-1", Epoch: "e", Seq: 1, Time: tapTime, Route: "1", Account: code.Account,
		Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 1}
	b := &ingest.Batch{DeviceID: "bus-1", Epoch: "e", Taps: []ingest.Tap{{Seq: 1, ID: rec.ID(), Record: []byte("record"), Tap: rec, Code: code,
		CodeHash: paycode.ShortHash(paycode.EncodeText(rec.Code))}}}
	if err := st.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	status(0) // and the truth again
	rows, err := l.DeviceTaps(ctx, "bus-1", 10)
	if err != nil || len(rows) != 1 {
		t.Fatalf("device taps %+v, %v; want 1", rows, err)
	}
	noted := slices.Contains(rows[0].Notes, ledger.NoteRouteMismatch)
	hist, err := l.DeviceHistory(ctx, "bus-1")
	if err != nil {
		t.Fatal(err)
	}
	var maxOff time.Duration
	for _, e := range hist {
		maxOff = max(maxOff, e.ClockOffset.Abs())
	}
	d, _ := l.Device(ctx, "bus-1")
	t.Logf("tap on route 1 while assigned route 2: notes %v; device clock offset now %v; largest offset in its %d history entries %v",
		rows[0].Notes, d.ClockOffset, len(hist), maxOff)
	if !noted {
		t.Errorf("tap on route 1 (assigned route 2 at the tap's time, clock right) not noted route_mismatch: a reported +2h offset moved it before every assignment")
	}
	if maxOff < time.Hour {
		t.Errorf("the device's history shows no 2 h clock offset (largest %v): the lie left no trace once the next status said 0", maxOff)
	}
}
