package queue

import (
	"testing"
	"time"
)

// TestArchiveSurvivesAckOnAClockBehind: a validator without a battery-backed
// clock comes back from a power cut at the date its image was built (two
// months behind), and its uplink delivers the taps it held before NTP sets
// the clock: they are acked, on that clock, two months before they were
// taken. Once the clock is right, the next prune took that ack time for
// the record's and dropped them from the archive at once, not a week
// after: a ledger restored from last night's backup got them back from no
// replay (the riders rode free). A record is kept ArchiveMaxAge after its
// ack, and never acked before it was appended.
func TestArchiveSurvivesAckOnAClockBehind(t *testing.T) {
	for _, behind := range []time.Duration{60 * 24 * time.Hour, 56 * 365 * 24 * time.Hour} { // the build date; 1970
		clk := newClock()
		opts := &Options{Now: clk.Now, ArchiveMaxAge: 7 * 24 * time.Hour}
		path := tempPath(t)
		q := openTest(t, path, opts)
		for i := 1; i <= 3; i++ {
			mustAppend(t, q, data(0, i))
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		clk.Advance(-behind) // the power cut: the clock restarts behind
		q = openTest(t, path, opts)
		if _, err := q.AckThrough(3); err != nil {
			t.Fatal(err)
		}
		clk.Advance(behind + time.Hour) // NTP sets it right, an hour after the cut
		seq := mustAppend(t, q, data(0, 4))
		if _, err := q.Ack(seq); err != nil { // prunes
			t.Fatal(err)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		q = openTest(t, path, opts) // prunes too
		if got := archived(t, q); len(got) != 4 {
			t.Errorf("clock %s behind at the ack: %d records archived an hour later, want 4 (limit 7 days)", behind, len(got))
		}
		clk.Advance(8 * 24 * time.Hour) // a week on, taps again: the age limit applies
		seq = mustAppend(t, q, data(0, 5))
		if _, err := q.Ack(seq); err != nil {
			t.Fatal(err)
		}
		got := archived(t, q)
		for s := uint64(1); s <= 4; s++ {
			if _, ok := got[s]; ok {
				t.Errorf("clock %s behind at the ack: record %d still archived 8 days on (limit 7 days)", behind, s)
			}
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
