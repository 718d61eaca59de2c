package server

import (
	"context"
	"crypto/ed25519"
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

// TestStolenDeviceVehicleClaimDeniesRider: a stolen validator, assigned
// vehicle v9, holds a code that bus-1 (vehicle v1) took — a thief
// photographed it at the door — and sends it once, 30 s later, claiming
// vehicle v1. A single reuse on another device within the reuse window is
// forgiven as a quick transfer unless both uses are on one vehicle (two
// doors of one bus): judged by the record's claim, the one code denied
// the rider's pass. A vehicle that is not the device's assignment is
// stored as unknown; and an honest validator moved to another bus whose
// assignment was not updated is not judged on its old bus (with the
// assignment's vehicle in place of the claim, a quick transfer to it from
// that bus would be denied).
func TestStolenDeviceVehicleClaimDeniesRider(t *testing.T) {
	ctx := context.Background()
	l, shift := shiftedLedger(t, "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"))
	now := time.Now()
	st, acct, _, rider := riderFixture(t, l, now)
	for _, id := range []string{"evil", "moved"} {
		pub, _, _ := ed25519.GenerateKey(nil)
		if err := l.RegisterDevice(ctx, ledger.DeviceRegistration{ID: id, PublicKey: pub, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
	}
	shift.Store(int64(-time.Hour))
	// moved: assigned v1 too, and since put on bus v2 without the
	// assignment being updated (its records say v2).
	for dev, vehicle := range map[string]string{"bus-1": "v1", "evil": "v9", "moved": "v1"} {
		if _, err := l.AssignDevice(ctx, dev, "1", vehicle, "op"); err != nil {
			t.Fatal(err)
		}
	}
	shift.Store(0)
	text := rider.Code(t, now)
	code, err := paycode.ParseText(text)
	if err != nil {
		t.Fatal(err)
	}
	tap := func(device string, at time.Time) *ingest.Batch {
		vehicle := "v1"
		if device == "moved" {
			vehicle = "v2"
		}
		rec := &record.Tap{DeviceID: device, Epoch: "e", Seq: 1, Time: at, Route: "1", Vehicle: vehicle, Account: code.Account,
			Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 1, Code: code.Bytes()}
		return &ingest.Batch{DeviceID: device, Epoch: "e", Taps: []ingest.Tap{{Seq: 1, ID: rec.ID(), Record: []byte("record " + device),
			Tap: rec, Code: code, CodeHash: paycode.ShortHash(text)}}}
	}
	if err := st.Commit(ctx, tap("bus-1", now)); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, tap("evil", now.Add(30*time.Second))); err != nil {
		t.Fatal(err)
	}
	dl, err := l.DenyList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range dl.Entries {
		if e.Account == acct.ID {
			t.Errorf("one code, sent once by a stolen validator (assigned vehicle v9) claiming the vehicle of the bus that took it, denied the rider: %+v", e)
		}
	}
	rows, err := l.DeviceTaps(ctx, "evil", 10)
	if err != nil || len(rows) != 1 {
		t.Fatalf("evil's taps %+v, %v", rows, err)
	}
	t.Logf("the stolen validator's tap: flag %q, notes %v, vehicle %q", rows[0].Flag, rows[0].Notes, rows[0].Vehicle)
	if !slices.Contains(rows[0].Notes, ledger.NoteCodeReuseWindow) || rows[0].Vehicle != "" {
		t.Errorf("the stolen validator's record %+v; want judged as a quick transfer between two vehicles (%s), its vehicle unknown",
			rows[0], ledger.NoteCodeReuseWindow)
	}

	// The honest moved validator: the rider's next code, taken on bus-1,
	// then again on the moved validator's bus 40 s later (a quick
	// transfer) is forgiven, not judged two doors of bus v1.
	text2 := rider.Code(t, now.Add(time.Minute))
	code, err = paycode.ParseText(text2)
	if err != nil {
		t.Fatal(err)
	}
	text = text2
	second := func(b *ingest.Batch) *ingest.Batch {
		b.Epoch, b.Taps[0].Tap.Epoch, b.Taps[0].Tap.Seq, b.Taps[0].Seq = "e2", "e2", 2, 2
		b.Taps[0].ID = b.Taps[0].Tap.ID()
		return b
	}
	if err := st.Commit(ctx, second(tap("bus-1", now.Add(time.Minute)))); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, tap("moved", now.Add(time.Minute+40*time.Second))); err != nil {
		t.Fatal(err)
	}
	if dl, err = l.DenyList(ctx); err != nil {
		t.Fatal(err)
	}
	for _, e := range dl.Entries {
		if e.Account == acct.ID {
			t.Errorf("a quick transfer to a validator moved to another bus (its assignment not updated) denied the rider: %+v", e)
		}
	}
}
