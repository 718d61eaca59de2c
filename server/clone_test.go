package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/sync/ingest"
)

// lockedBuffer is a log sink safe for the store's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestClonedCardTapsSaidSo: an SD card cloned onto a spare bus, both
// running with one identity, numbers two riders' taps alike. The first
// to arrive is charged, the other kept aside (tap_id_conflict), never
// charged twice nor dropped as a duplicate; the same batch sent again
// (its ack lost) changes nothing. The log named only a queue file
// restored from a backup, which the validator's numbering from the clock
// rules out: the operator looked for a restore, not for a second bus. It
// now names the clone and what to do. On SQLite and PostgreSQL.
func TestClonedCardTapsSaidSo(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			testClonedCardTapsSaidSo(t, dsn)
		})
	}
}

func testClonedCardTapsSaidSo(t *testing.T, dsn string) {
	ctx := context.Background()
	l, _ := shiftedLedger(t, dsn)
	now := time.Now()
	st, acct, issuer, rider := riderFixture(t, l, now)
	var logs lockedBuffer
	st.log = slog.New(slog.NewTextHandler(&logs, nil))
	other, err := l.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TopUp(ctx, other.ID, 10_000, "test-clone"); err != nil {
		t.Fatal(err)
	}
	rider2 := issuer.Rider(t, other.ID, now)
	if _, err := l.IssueCredentialSerial(ctx, other.ID, now.Add(24*time.Hour), rider2.Key.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	batch := func(code string, at time.Time) *ingest.Batch {
		c, err := paycode.ParseText(code)
		if err != nil {
			t.Fatal(err)
		}
		rec := &record.Tap{DeviceID: "bus-1", Epoch: "e", Seq: 7, Time: at, Route: "1", Account: c.Account,
			Serial: c.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 1, Code: c.Bytes()}
		raw, err := rec.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return &ingest.Batch{DeviceID: "bus-1", Epoch: "e", Taps: []ingest.Tap{{Seq: 7, ID: rec.ID(), Record: raw,
			Tap: rec, Code: c, CodeHash: paycode.ShortHash(paycode.EncodeText(rec.Code))}}}
	}
	busA := batch(rider.Code(t, now.Add(-time.Minute)), now.Add(-time.Minute))
	busB := batch(rider2.Code(t, now.Add(-time.Minute+5*time.Millisecond)), now.Add(-time.Minute+5*time.Millisecond))
	for _, b := range []*ingest.Batch{busA, busB, busB, busA} { // each sent twice: its ack lost
		if err := st.CommitBatches(ctx, []*ingest.Batch{b}); err != nil {
			t.Fatal(err)
		}
	}
	if a, err := l.Account(ctx, acct.ID); err != nil || a.Balance != 10_000-250 {
		t.Errorf("bus A's rider: balance %d, %v; want one fare", a.Balance, err)
	}
	if a, err := l.Account(ctx, other.ID); err != nil || a.Balance != 10_000 {
		t.Errorf("bus B's rider: balance %d, %v; want nothing charged (kept aside)", a.Balance, err)
	}
	if n, err := l.QuarantineCount(ctx); err != nil || n != 1 {
		t.Errorf("%d records quarantined, %v; want bus B's tap, once", n, err)
	}
	if err := l.CheckInvariants(ctx); err != nil {
		t.Errorf("verify: %v", err)
	}
	log := logs.String()
	if !strings.Contains(log, "another payment code") || !strings.Contains(log, "two validators running with this device's identity") ||
		!strings.Contains(log, "farego-provision device --id") || !strings.Contains(log, "tap=bus-1/e/7") {
		t.Errorf("the log does not name the clone and what to do:\n%s", log)
	}
}
