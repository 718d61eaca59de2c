package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"
)

// A device's update report is stored with its status, read back by Device
// and Devices, noted in its history when a new failure arrives, and a bad
// report (a hostile device) is refused whole, changing nothing.
func TestDeviceUpdateStatus(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-1", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		at := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
		failed := DeviceUpdate{Failed: "1.4.0", FailedReason: "version 1.4.0 did not report healthy within 2m0s", FailedAt: at}
		st := DeviceStatus{Online: true, LastSeen: time.Now(), Software: "1.3.0", Update: failed}
		if err := s.UpdateDeviceStatus(ctx, "bus-1", st); err != nil {
			t.Fatal(err)
		}
		d, err := s.Device(ctx, "bus-1")
		if err != nil {
			t.Fatal(err)
		}
		if u := d.Status.Update; u.Failed != "1.4.0" || u.FailedReason != failed.FailedReason || !u.FailedAt.Equal(at) || u.Pending != "" {
			t.Errorf("update read back %+v", u)
		}
		if !d.UpdateFailed() {
			t.Error("a failed 1.4.0 on a device running 1.3.0 is not reported as failed")
		}
		ds, err := s.Devices(ctx)
		if err != nil || len(ds) != 1 || ds[0].Status.Update != d.Status.Update {
			t.Fatalf("Devices = %+v, %v", ds, err)
		}
		h, err := s.DeviceHistory(ctx, "bus-1")
		if err != nil || len(h) == 0 || h[0].Event != EventOnline {
			t.Fatalf("history %+v, %v", h, err)
		}
		// The same failure again: no new event. A later failure: one.
		if err := s.UpdateDeviceStatus(ctx, "bus-1", st); err != nil {
			t.Fatal(err)
		}
		st.Update = DeviceUpdate{Failed: "1.4.1", FailedReason: "manifest refused", FailedAt: at.Add(time.Hour)}
		if err := s.UpdateDeviceStatus(ctx, "bus-1", st); err != nil {
			t.Fatal(err)
		}
		h2, err := s.DeviceHistory(ctx, "bus-1")
		if err != nil || len(h2) != len(h)+1 || h2[0].Event != EventUpdateFailed {
			t.Fatalf("history after a new failure %+v, %v", h2, err)
		}

		// Refused reports change nothing.
		bad := []DeviceUpdate{
			{Pending: "1.5.0; DROP TABLE devices"},
			{Failed: strings.Repeat("1", 65)},
			{Failed: "1.5.0\n"},
			{Failed: "latest"}, // a version's characters, not a release version (wire.ValidVersion)
			{Pending: "1.5.x"},
			{Failed: "dev"}, // a development build is never rolled out
			{FailedReason: "a reason without a version"},
			{FailedAt: at},
			{Failed: "1.5.0", FailedReason: strings.Repeat("x", MaxUpdateReason+1)},
			{Failed: "1.5.0", FailedReason: "line\nbreak"},
			{Failed: "1.5.0", FailedReason: "bad \xff utf-8"},
			{Failed: "1.5.0", FailedAt: time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)},
			{Failed: "1.5.0", FailedAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)},
		}
		// (Each is the stored status but for the field: a zero LastSeen
		// would be refused for itself.)
		for _, u := range bad {
			b := st
			b.Update = u
			wantErr(t, s.UpdateDeviceStatus(ctx, "bus-1", b), ErrInvalid)
		}
		// A software version is a release or development build's
		// (wire.ValidSoftwareVersion).
		for _, sw := range []string{"1.3.0 beta", "<b>1.3.0</b>", "-dev", strings.Repeat("1", 65), "dev\n"} {
			b := st
			b.Software = sw
			wantErr(t, s.UpdateDeviceStatus(ctx, "bus-1", b), ErrInvalid)
		}
		d2, err := s.Device(ctx, "bus-1")
		if err != nil || d2.Status.Update != st.Update || d2.Status.Software != st.Software {
			t.Fatalf("after refused reports: %+v, %v (want %+v)", d2.Status.Update, err, st.Update)
		}

		// Running the failed version or a newer one: the failure is history.
		for sw, want := range map[string]bool{"1.4.1": false, "v1.5.0": false, "1.4.0": true, "dev": true} {
			st.Software = sw
			if err := s.UpdateDeviceStatus(ctx, "bus-1", st); err != nil {
				t.Fatal(err)
			}
			if d, err := s.Device(ctx, "bus-1"); err != nil || d.UpdateFailed() != want {
				t.Errorf("running %s with 1.4.1 failed: UpdateFailed = %v, want %v (%v)", sw, d.UpdateFailed(), want, err)
			}
		}
		// Pending only, then nothing to report: stored as such.
		st.Update = DeviceUpdate{Pending: "1.5.0"}
		if err := s.UpdateDeviceStatus(ctx, "bus-1", st); err != nil {
			t.Fatal(err)
		}
		if d, err := s.Device(ctx, "bus-1"); err != nil || d.Status.Update != st.Update || d.UpdateFailed() {
			t.Errorf("pending: %+v, %v", d.Status.Update, err)
		}
		st.Update = DeviceUpdate{}
		if err := s.UpdateDeviceStatus(ctx, "bus-1", st); err != nil {
			t.Fatal(err)
		}
		if d, err := s.Device(ctx, "bus-1"); err != nil || d.Status.Update != (DeviceUpdate{}) {
			t.Errorf("cleared: %+v, %v", d.Status.Update, err)
		}
	})
}
