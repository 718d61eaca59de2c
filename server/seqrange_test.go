package server

import (
	"context"
	"crypto/ed25519"
	"path/filepath"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/sync/ingest"
)

// TestHugeSeqDoesNotStopOthersSync: a stolen validator signs a batch
// whose record has a sequence number beyond the ledger's range (2^63:
// the wire carries 64 bits, the ledger's columns 63). The record is
// quarantined, as it must be; but its sequence number was also the
// device's "last synced" in the one transaction that notes every device
// of a coalesced commit, which the ledger refuses whole: the honest
// devices committed beside it (up to 32 in one call) were never noted as
// synced (last_seq, last sync on the console and the API), for as long as
// the thief kept sending one such record a batch. An attack review. On
// SQLite and, with FAREGO_TEST_POSTGRES, PostgreSQL.
func TestHugeSeqDoesNotStopOthersSync(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			testHugeSeqDoesNotStopOthersSync(t, dsn)
		})
	}
}

func testHugeSeqDoesNotStopOthersSync(t *testing.T, dsn string) {
	ctx := context.Background()
	l, _ := shiftedLedger(t, dsn)
	now := time.Now()
	st, acct, _, rider := riderFixture(t, l, now) // registers bus-1, the honest one
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := l.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "evil", PublicKey: pub, MQTTHash: "h"}); err != nil {
		t.Fatal(err)
	}
	batch := func(device string, seq uint64, at time.Time) *ingest.Batch {
		code, err := paycode.ParseText(rider.Code(t, at))
		if err != nil {
			t.Fatal(err)
		}
		rec := &record.Tap{DeviceID: device, Epoch: "e", Seq: seq, Time: at, Route: "1", Account: code.Account,
			Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 1, Code: code.Bytes()}
		return &ingest.Batch{DeviceID: device, Epoch: "e", Taps: []ingest.Tap{{Seq: seq, ID: rec.ID(), Record: []byte("record " + device),
			Tap: rec, Code: code, CodeHash: paycode.ShortHash(paycode.EncodeText(rec.Code))}}}
	}
	honest := batch("bus-1", 7, now.Add(-time.Minute))
	evil := batch("evil", 1<<63, now.Add(-2*time.Minute))
	if err := st.CommitBatches(ctx, []*ingest.Batch{honest, evil}); err != nil {
		t.Fatal(err)
	}
	dev, err := l.Device(ctx, "bus-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("honest device after a commit beside a record of seq 2^63: last seq %d, last sync %v", dev.LastSeq, dev.LastSync)
	if dev.LastSeq != 7 || dev.LastSync.IsZero() {
		t.Errorf("honest device bus-1 committed beside a stolen validator's record of seq 2^63: last seq %d, last sync %v; want 7, noted",
			dev.LastSeq, dev.LastSync)
	}
	// The honest tap is charged once, the stolen one's record kept aside.
	if a, err := l.Account(ctx, acct.ID); err != nil || a.Balance != 10_000-250 {
		t.Errorf("balance %d, %v; want %d", a.Balance, err, 10_000-250)
	}
	if n, err := l.QuarantineCount(ctx); err != nil || n != 1 {
		t.Errorf("%d records quarantined, %v; want the record of seq 2^63", n, err)
	}
	if err := l.CheckInvariants(ctx); err != nil {
		t.Errorf("verify: %v", err)
	}
}
