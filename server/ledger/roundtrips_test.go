package ledger

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestCommitTapsRoundTrips counts the statements a PostgreSQL batch of new
// taps costs, each a round trip: BEGIN, the accounts locked with their
// credentials and the fare_version counter, the stored tap ids with the
// codes' current uses, the touched service days, the writes, COMMIT (8
// before the counter was read with the lock and the code uses with the tap
// ids). It checks on the way that what the two folded reads decide still
// holds: a code used again on another device is flagged, and a fare table
// stored by another instance between two batches rates the next one. The
// ledger's invariants are checked at the end (db.open).
func TestCommitTapsRoundTrips(t *testing.T) {
	db := newDB(t, "postgres")
	ctx := context.Background()
	s := db.open(t, nil)
	putTableAt(t, s, tableV1, tablesSince)
	bulkAccounts(t, s, 300, 1_000_000)
	g := &benchTaps{r: rand.New(rand.NewPCG(5, 6)), accounts: 300}
	if _, err := s.CommitTaps(ctx, g.next(5)); err != nil { // reads the fare tables once
		t.Fatal(err)
	}
	taps := g.next(100)
	trips := s.roundTrips.Load()
	res, err := s.CommitTaps(ctx, taps)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.roundTrips.Load() - trips; n != 6 {
		t.Errorf("a batch of 100 new taps sent %d statements; want 6", n)
	}
	for i, r := range res {
		if r.Duplicate || r.Conflict || r.Flag != "" {
			t.Fatalf("tap %d: %+v", i, r)
		}
	}

	// The code of the first tap, shown again a minute later on another
	// bus: its use was read with the tap ids.
	again := taps[0]
	again.DeviceID, again.Seq = "bus-other", 1
	again.ID = TapID(again.DeviceID, again.Epoch, again.Seq)
	again.Time = again.Time.Add(time.Minute)
	res, err = s.CommitTaps(ctx, append(g.next(20), again))
	if err != nil {
		t.Fatal(err)
	}
	if r := res[len(res)-1]; r.Flag != FlagDuplicateCode || r.Charge != 0 {
		t.Errorf("a code used again on another device: %+v; want flagged %s, not charged", r, FlagDuplicateCode)
	}

	// Another instance stores fare table 2; this one's catalogue is
	// cached: the counter read with the lock tells it.
	other := db.open(t, nil)
	putTableAt(t, other, tableV2, day0.Add(-time.Hour))
	next := g.next(10)
	for i := range next {
		next[i].FareVersion = 2
	}
	res, err = s.CommitTaps(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Flag != "" || r.RatedVersion != 2 || slices.Contains(r.Notes, NoteUnknownFareVersion) {
			t.Errorf("tap %d after fare table 2 was stored by another instance: %+v; want rated by version 2", i, r)
		}
	}
}
