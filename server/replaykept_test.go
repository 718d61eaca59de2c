package server

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/wire"
)

// A kept replay request claimed on a device's online status and not sent
// (the ingest had no broker link) is not counted as one of its
// ledger.KeptReplaySends: the device's next status claims it again.
// Before, the claim was spent, and an instance that could not send it
// three times had the request never reach the device. On SQLite and, with
// FAREGO_TEST_POSTGRES, PostgreSQL.
func TestKeptReplayNotSentNotCounted(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			testKeptReplayNotSent(t, dsn)
		})
	}
}

func testKeptReplayNotSent(t *testing.T, dsn string) {
	ctx := context.Background()
	l, err := ledger.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	kd, err := keys.Init(filepath.Join(t.TempDir(), "keys"), keys.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := l.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "bus-1", PublicKey: pub, MQTTHash: "h"}); err != nil {
		t.Fatal(err)
	}
	s := &Server{ledger: l, log: slog.New(slog.DiscardHandler)}
	// Never run: not connected to any broker.
	if s.ingest, err = ingest.New(ingest.Config{MQTTConfig: ingest.MQTTConfig{Brokers: []string{"tcp://127.0.0.1:1"}},
		SharedGroup: "g", FleetKey: kd.FleetKey(), Keyring: kd.Keyring, Logger: s.log}, (*store)(s)); err != nil {
		t.Fatal(err)
	}
	const rid = 1_796_000_000_000
	if err := l.KeepReplay(ctx, rid, nil); err != nil {
		t.Fatal(err)
	}
	s.readKeptReplays(ctx)
	if err := (*store)(s).Status(ctx, &wire.Status{DeviceID: "bus-1", Online: true, Epoch: "e1", Time: time.Now(), Software: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	s.kept.sending.Wait()
	if id, err := l.TakeKeptReplay(ctx, "bus-1"); err != nil || id != rid {
		t.Fatalf("claim after a send that failed (no broker link): %d, %v; want %d (the failed send not counted)", id, err, rid)
	}
}
