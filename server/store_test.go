package server

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/wire"
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

// A coalesced set larger than one ledger call takes (here 11 devices'
// batches of 1,000 records: 11,000 taps, the ledger takes 10,000) is
// settled in calls of at most ledger.MaxCommitTaps, not handed to the
// ledger whole, refused, and settled batch by batch.
func TestCoalescedSetOverLedgerLimit(t *testing.T) {
	ctx := context.Background()
	l, err := ledger.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	now := time.Now()
	tbl, err := fare.Parse([]byte(`{"version":1,"currency":"EUR","timezone":"UTC","service_day_start":"04:00",
		"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.PutFareTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	_, fleet, _ := ed25519.GenerateKey(nil)
	pub, err := ingest.NewPublisher(ingest.PublisherConfig{MQTTConfig: ingest.MQTTConfig{Brokers: []string{"tcp://127.0.0.1:1"}},
		FleetKey: fleet, Source: func(context.Context, string) (uint64, []byte, error) { return 0, nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	st := (*store)(&Server{ledger: l, log: slog.New(slog.DiscardHandler), pub: pub,
		cfg: Config{AfterCommit: func() { calls++ }}})
	// Account 999,999 does not exist: every tap is stored, flagged
	// unknown_account, charged nothing (one code serves them all).
	rider := paycodetest.NewIssuer(t, 1, now).Rider(t, 999_999, now)
	code, err := paycode.ParseText(rider.Code(t, now))
	if err != nil {
		t.Fatal(err)
	}
	var bs []*ingest.Batch
	for d := range 11 {
		b := &ingest.Batch{DeviceID: fmt.Sprintf("bus-%d", d), Epoch: "e"}
		for seq := uint64(1); seq <= wire.MaxBatchRecords; seq++ {
			rec := &record.Tap{DeviceID: b.DeviceID, Epoch: "e", Seq: seq, Time: now, Route: "42", Account: code.Account,
				Serial: code.Serial, Fare: 250, Currency: "EUR", FareVersion: 1}
			b.Taps = append(b.Taps, ingest.Tap{Seq: seq, ID: rec.ID(), Record: []byte("record"), Tap: rec, Code: code,
				CodeHash: "0123456789ab"})
		}
		bs = append(bs, b)
	}
	if err := st.CommitBatches(ctx, bs); err != nil {
		t.Fatal(err)
	}
	if n, err := l.TapCount(ctx); err != nil || n != 11*wire.MaxBatchRecords {
		t.Fatalf("%d taps stored, %v; want %d", n, err, 11*wire.MaxBatchRecords)
	}
	if calls != 2 {
		t.Errorf("%d ledger commits for 11,000 taps; want 2 (10 batches, then 1)", calls)
	}
}
