package server

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
)

// A revoked device's batch, alone or committed together with other
// batches, is kept aside whole and charges nothing.
func TestRevokedBatchKeptAside(t *testing.T) {
	ctx := context.Background()
	l, err := ledger.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := l.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "bus-1", PublicKey: pub, MQTTHash: "h"}); err != nil {
		t.Fatal(err)
	}
	st := (*store)(&Server{ledger: l, log: slog.New(slog.DiscardHandler)})
	batch := func(epoch string) *ingest.Batch {
		return &ingest.Batch{DeviceID: "bus-1", Epoch: epoch, Revoked: true, Taps: []ingest.Tap{
			{Seq: 1, Record: []byte("record one")}, {Seq: 2, Record: []byte("record two")}}}
	}
	if err := st.Commit(ctx, batch("e1")); err != nil {
		t.Fatal(err)
	}
	if err := st.CommitBatches(ctx, []*ingest.Batch{batch("e2"), batch("e3")}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.QuarantineCount(ctx); err != nil || n != 6 {
		t.Fatalf("records kept aside: %d, %v; want 6", n, err)
	}
	stats, err := l.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Taps != 0 {
		t.Errorf("stats %+v: a revoked device's records were stored as taps", stats)
	}
}
