package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestReportedAssignmentMigrated: migration 30 on a ledger at version 29
// holding a device with a status; then the reported route through
// UpdateDeviceStatus, hostile values refused whole and changing nothing.
func TestReportedAssignmentMigrated(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-5", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateDeviceStatus(ctx, "bus-5", DeviceStatus{Online: true, LastSeen: time.Now(), Software: "1.0.0"}); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`ALTER TABLE devices DROP COLUMN reported_route`, `ALTER TABLE devices DROP COLUMN reported_vehicle`,
			`ALTER TABLE devices DROP COLUMN reported_server_version`, `ALTER TABLE devices DROP COLUMN cert_not_after_ns` /* 31 */, `ALTER TABLE devices DROP COLUMN replay_id`, `ALTER TABLE devices DROP COLUMN replay_until_ns`, `ALTER TABLE devices DROP COLUMN replay_sent_ns`, `ALTER TABLE devices DROP COLUMN replay_sends` /* 33 */, `DROP INDEX accounts_unused`, `ALTER TABLE accounts DROP COLUMN anonymous`, `ALTER TABLE accounts DROP COLUMN secret_replaced_ns` /* 34 */ /* 32 */, `DELETE FROM schema_migrations WHERE version >= 30`} {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		s = db.open(t, nil) // migrates
		migs, err := migrations(s.backend)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := s.SchemaVersion(ctx); err != nil || v != migs[len(migs)-1].version {
			t.Fatalf("version %d, %v; want %d", v, err, migs[len(migs)-1].version)
		}
		d, err := s.Device(ctx, "bus-5")
		if err != nil || d.Status.Route != "" || d.Status.Vehicle != "" || d.Status.Software != "1.0.0" {
			t.Fatalf("after migration: %+v, %v", d.Status, err)
		}
		ok := DeviceStatus{Online: true, LastSeen: time.Now(), Route: "42 Nord", Vehicle: "v-'1"}
		if err := s.UpdateDeviceStatus(ctx, "bus-5", ok); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []struct{ route, vehicle string }{
			{strings.Repeat("r", 65), ""}, {"4\x002", ""}, {"42\n", ""}, {" 42", ""}, {"", "v9"}, {"42", strings.Repeat("v", 65)},
			{"42", "v\x1b[31m"}, {"\xff", ""},
		} {
			st := DeviceStatus{Online: true, LastSeen: time.Now(), Route: bad.route, Vehicle: bad.vehicle}
			wantErr(t, s.UpdateDeviceStatus(ctx, "bus-5", st), ErrInvalid)
		}
		// A status without them keeps them.
		if err := s.UpdateDeviceStatus(ctx, "bus-5", DeviceStatus{Online: true, LastSeen: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if d, err := s.Device(ctx, "bus-5"); err != nil || d.Status.Route != ok.Route || d.Status.Vehicle != ok.Vehicle {
			t.Fatalf("%+v, %v; want %q %q", d.Status, err, ok.Route, ok.Vehicle)
		}
		fleet, err := s.Fleet(ctx)
		if err != nil || len(fleet) != 1 || fleet[0].Status.Route != ok.Route {
			t.Fatalf("fleet %+v, %v", fleet, err)
		}
	})
}

// TestDevicesLeftOutLocalRoute: a device whose route was set at the
// device after it applied the server's assignment records that route
// (agent.AssignFromServer refuses an assignment not newer than the one
// applied, a later local change stands): a fare table leaving that route
// out names it; one leaving out the assignment's route, no longer served,
// does not. An assignment the device has not applied yet (newer than the
// one its status reports) is the route it will record.
func TestDevicesLeftOutLocalRoute(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{6}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-6", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		a, err := s.AssignDevice(ctx, "bus-6", "42", "", "op")
		if err != nil {
			t.Fatal(err)
		}
		// Applied, then the driver set route X9 at the device.
		if err := s.UpdateDeviceStatus(ctx, "bus-6", DeviceStatus{Online: true, LastSeen: time.Now(), Route: "X9", ServerVersion: a.Version}); err != nil {
			t.Fatal(err)
		}
		left := func(routes string) string {
			t.Helper()
			tbl := mustTable(t, `{"version":9,"currency":"EUR","timezone":"UTC","routes":[`+routes+`],"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`)
			l, err := s.DevicesLeftOut(ctx, tbl)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprint(l)
		}
		if got := left(`"42"`); got != "[{bus-6 X9}]" {
			t.Errorf("a table serving 42 alone: %s; want bus-6 named on X9, the route it records", got)
		}
		if got := left(`"X9"`); got != "[]" {
			t.Errorf("a table serving X9 alone: %s; want none (bus-6 records X9)", got)
		}
		// A new assignment it has not applied yet: the route it will record.
		if _, err := s.AssignDevice(ctx, "bus-6", "7", "", "op"); err != nil {
			t.Fatal(err)
		}
		if got := left(`"X9"`); got != "[{bus-6 7}]" {
			t.Errorf("after a new assignment to 7: %s; want bus-6 named on 7", got)
		}
	})
}

// TestCertEndMigrated: migration 31 on a ledger at version 30 holding a
// device with a status; then the certificate end a device reports:
// recorded, kept by a status without it (a device of the release before,
// or rolled back to it), cleared when the device is registered again (a
// new certificate), refused whole out of range.
func TestCertEndMigrated(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)).Public().(ed25519.PublicKey)
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-7", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateDeviceStatus(ctx, "bus-7", DeviceStatus{Online: true, LastSeen: time.Now(), Software: "1.0.0"}); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`ALTER TABLE devices DROP COLUMN cert_not_after_ns`, `ALTER TABLE devices DROP COLUMN replay_id`, `ALTER TABLE devices DROP COLUMN replay_until_ns`, `ALTER TABLE devices DROP COLUMN replay_sent_ns`, `ALTER TABLE devices DROP COLUMN replay_sends` /* 33 */, `DROP INDEX accounts_unused`, `ALTER TABLE accounts DROP COLUMN anonymous`, `ALTER TABLE accounts DROP COLUMN secret_replaced_ns` /* 34 */ /* 32 */, `DELETE FROM schema_migrations WHERE version >= 31`} {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		s = db.open(t, nil) // migrates
		d, err := s.Device(ctx, "bus-7")
		if err != nil || !d.Status.CertNotAfter.IsZero() || d.Status.Software != "1.0.0" {
			t.Fatalf("after migration: %+v, %v", d.Status, err)
		}
		end := time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)
		if err := s.UpdateDeviceStatus(ctx, "bus-7", DeviceStatus{Online: true, LastSeen: time.Now(), CertNotAfter: end}); err != nil {
			t.Fatal(err)
		}
		got := func() time.Time {
			t.Helper()
			d, err := s.Device(ctx, "bus-7")
			if err != nil {
				t.Fatal(err)
			}
			return d.Status.CertNotAfter
		}
		if g := got(); !g.Equal(end) {
			t.Fatalf("recorded %v, want %v", g, end)
		}
		for _, bad := range []time.Time{time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC), time.Date(2200, 1, 2, 0, 0, 0, 0, time.UTC), time.Unix(-5, 0)} {
			wantErr(t, s.UpdateDeviceStatus(ctx, "bus-7", DeviceStatus{Online: true, LastSeen: time.Now(), CertNotAfter: bad, Software: "9.9.9"}), ErrInvalid)
		}
		if d, _ := s.Device(ctx, "bus-7"); !d.Status.CertNotAfter.Equal(end) || d.Status.Software != "" {
			t.Fatalf("a refused status changed the device: %+v", d.Status)
		}
		// A status without it (a validator of the release before) keeps it.
		if err := s.UpdateDeviceStatus(ctx, "bus-7", DeviceStatus{Online: true, LastSeen: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if g := got(); !g.Equal(end) {
			t.Fatalf("a status without it: %v, want %v kept", g, end)
		}
		fleet, err := s.Fleet(ctx)
		if err != nil || len(fleet) != 1 || !fleet[0].Status.CertNotAfter.Equal(end) {
			t.Fatalf("fleet %+v, %v", fleet, err)
		}
		// Registered again (provisioned anew: a new certificate): cleared
		// until the device reports its new one.
		if err := s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-7", PublicKey: k, MQTTHash: "h2"}); err != nil {
			t.Fatal(err)
		}
		if g := got(); !g.IsZero() {
			t.Fatalf("registered again: %v, want none", g)
		}
	})
}
