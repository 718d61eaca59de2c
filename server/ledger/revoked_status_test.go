package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"testing"
	"time"
)

// TestRevocationDuringStatusTakesIt: a revocation that commits while a
// status of the device is being written (after the status read the row,
// before it wrote it) is not undone by it. On PostgreSQL the status's read
// of the row takes no lock: the revoked check on what it read
// (TestRevokedDeviceStatusTakenForNothing) passed, and the status set the
// revoked device online again and lifted the deny-list floor. SQLite's
// writer is one at a time: a revocation cannot come in between there.
func TestRevocationDuringStatusTakesIt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		if db.backend != "postgres" {
			t.Skip("SQLite writes one transaction at a time: nothing comes between a status's read and its write")
		}
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-5", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		a := newAccount(t, s, 1000)
		if err := s.Deny(ctx, a, 0, "fraud"); err != nil {
			t.Fatal(err)
		}
		before, err := s.DenyVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		reported := before + uint64(time.Hour/time.Millisecond)
		var revokeErr error
		revoked := false
		s.fault = func(p string) error {
			if p == "device-status" && !revoked {
				revoked = true
				// Another connection: the status's transaction holds
				// no lock on the row yet, so this commits at once.
				revokeErr = s.RevokeDevice(ctx, "bus-5")
			}
			return nil
		}
		err = s.UpdateDeviceStatus(ctx, "bus-5", DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now(),
			Versions: map[string]uint64{"denylist": reported}})
		s.fault = nil
		if !revoked || revokeErr != nil {
			t.Fatalf("revocation during the status: ran %v, %v", revoked, revokeErr)
		}
		if err != nil {
			t.Fatalf("status of a device revoked while it was written: %v, want it taken for nothing", err)
		}
		d, err := s.Device(ctx, "bus-5")
		if err != nil {
			t.Fatal(err)
		}
		if d.Revoked.IsZero() || d.Status.Online || d.Status.Epoch != "" {
			t.Errorf("device revoked while its status was written: revoked %v, online %v, epoch %q; want revoked, offline, the status not recorded",
				d.Revoked, d.Status.Online, d.Status.Epoch)
		}
		// Its report is no floor of the next deny-list version.
		if err := s.Deny(ctx, a, 0, "lost_phone"); err != nil {
			t.Fatal(err)
		}
		if v, err := s.DenyVersion(ctx); err != nil || v >= reported {
			t.Errorf("deny-list version after a change: %d, %v; want below the revoked device's report %d", v, err, reported)
		}
	})
}
