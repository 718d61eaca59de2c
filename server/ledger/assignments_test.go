package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"slices"
	"testing"
	"time"
)

func TestDeviceAssignments(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-7", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		_, err := s.AssignDevice(ctx, "bus-9", "42", "", "op")
		wantErr(t, err, ErrNotFound)
		for _, bad := range [][2]string{{"", "v"}, {"4\n2", ""}, {string(bytes.Repeat([]byte{'x'}, 65)), ""}, {"42", "\x00"},
			// the signed command and the validator refuse these: the ledger
			// must not record an assignment that can never be sent
			{" 42", ""}, {"42", "bus\u0085"},
			// a route that reads as another (the fare table's rule too)
			{"\u202e\u2615 42", ""}, {"4\u200b2", ""}, {"42", "bus\u2066-7"}} {
			_, err := s.AssignDevice(ctx, "bus-7", bad[0], bad[1], "op")
			wantErr(t, err, ErrInvalid)
		}
		if as, err := s.DeviceAssignments(ctx, "bus-7"); err != nil || len(as) != 0 {
			t.Fatalf("assignments after refused ones = %v, %v; want none", as, err)
		}
		a1, err := s.AssignDevice(ctx, "bus-7", "42", "BUS-7", "op")
		if err != nil || a1.Version != 1 {
			t.Fatalf("first assignment = %+v, %v; want version 1", a1, err)
		}
		a2, err := s.AssignDevice(ctx, "bus-7", "X1", "BUS-7", "op")
		if err != nil || a2.Version != 2 || a2.At.Before(a1.At) {
			t.Fatalf("second assignment = %+v, %v; want version 2", a2, err)
		}
		hist, err := s.DeviceAssignments(ctx, "bus-7")
		if err != nil || len(hist) != 2 || hist[0].Version != 2 || hist[1].Route != "42" || hist[0].By != "op" {
			t.Fatalf("history = %+v, %v; want versions 2, 1", hist, err)
		}
		k9 := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-9", PublicKey: k9, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AssignDevice(ctx, "bus-9", "7", "", "op"); err != nil {
			t.Fatal(err)
		}
		// An id given twice (two batches of one device in a coalesced
		// commit) is read once.
		both, err := s.DevicesAssignments(ctx, []string{"bus-7", "bus-9", "bus-none", "bus-7"})
		if err != nil || !slices.EqualFunc(both["bus-7"].Assignments, hist, func(a, b Assignment) bool { return a.Version == b.Version && a.Route == b.Route }) ||
			len(both["bus-9"].Assignments) != 1 || both["bus-9"].Assignments[0].Route != "7" || len(both["bus-none"].Assignments) != 0 {
			t.Fatalf("assignments of three devices in one read = %+v, %v", both, err)
		}
		if _, ok := AssignmentAt(hist, a1.At.Add(-time.Second)); ok {
			t.Error("an assignment in force before the first one")
		}
		if a, ok := AssignmentAt(hist, a2.At); !ok || a.Version != 2 {
			t.Errorf("assignment at the second's time = %+v, want version 2", a)
		}
		// With the device's clock offset (its last status): a device
		// clock a minute fast reads the second's time a minute later.
		if err := s.UpdateDeviceStatus(ctx, "bus-7", DeviceStatus{Online: true, LastSeen: time.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		both, err = s.DevicesAssignments(ctx, []string{"bus-7"})
		h := both["bus-7"]
		if err != nil || (h.ClockOffset-time.Minute).Abs() > 5*time.Second || len(h.Assignments) != 2 {
			t.Fatalf("history with the clock offset = %+v, %v; want 2 assignments, offset 1m", h, err)
		}
		if a, ok := h.At(a2.At); ok && a.Version == 2 {
			t.Errorf("assignment at the device time of the second's = %+v, want the first (the device is a minute fast)", a)
		}
		if a, ok := h.At(a2.At.Add(h.ClockOffset)); !ok || a.Version != 2 {
			t.Errorf("assignment at the second's time on the device's clock = %+v, want version 2", a)
		}

		// The caller's note is stored with the tap (and not on a flagged
		// one's), and does not change the charge.
		acct := newAccount(t, s, 1000)
		tp := mkTap("bus-7", 1, acct, at(10), "42")
		tp.Notes = []string{NoteRouteMismatch}
		res := commit(t, s, tp)
		if res[0].Flag != "" || !slices.Contains(res[0].Notes, NoteRouteMismatch) || res[0].Charge != 250 {
			t.Errorf("result = %+v, want charged 250 with note route_mismatch", res[0])
		}
		bad := mkTap("bus-7", 2, acct, at(20), "42")
		bad.Notes = []string{"a,b"}
		if _, err := s.CommitTaps(ctx, []Tap{bad}); err == nil {
			t.Error("a note with a comma was stored")
		}
	})
}
