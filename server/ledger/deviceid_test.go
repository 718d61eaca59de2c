package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/farego/farego/agent/record"
)

// TestDeviceIDOneRule: the ledger takes the device ids the agent, the
// link, the broker's ACL and registration take (record.ValidDeviceID),
// and no others. It used to take an id starting with '_', '.' or '-' as
// well: a device registered under one could never connect (the broker
// refuses its login), and "-bus" reads as a flag to the CLI that revokes
// it.
func TestDeviceIDOneRule(t *testing.T) {
	ids := []string{"bus-7", "7", "A.b_c-1", strings.Repeat("x", 64),
		"-bus", "_bus", ".bus", "", "bus/7", "bus 7", "bus+", strings.Repeat("x", 65)}
	for _, id := range ids {
		want := record.ValidDeviceID(id) == nil
		if got := validDeviceID(id) == nil; got != want {
			t.Errorf("device id %q: the ledger takes it %v, record.ValidDeviceID %v", id, got, want)
		}
	}
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32)).Public().(ed25519.PublicKey)
		for _, id := range []string{"-bus", "_bus", ".bus"} {
			err := s.RegisterDevice(ctx, DeviceRegistration{ID: id, PublicKey: key, MQTTHash: "hash"})
			wantErr(t, err, ErrInvalid)
			if err != nil && !strings.Contains(err.Error(), "starting with a letter or digit") {
				t.Errorf("register %q: %v does not say what an id must start with", id, err)
			}
			wantErr(t, s.RevokeDevice(ctx, id), ErrInvalid)
		}
		if ds, err := s.Devices(ctx); err != nil || len(ds) != 0 {
			t.Errorf("devices after the refusals: %+v, %v", ds, err)
		}
	})
}
