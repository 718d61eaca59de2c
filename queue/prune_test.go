package queue

import (
	"context"
	"testing"
	"time"
)

// A validator that stood longer than ArchiveMaxAge (a bus parked for a
// week) prunes its whole archive in the first ack after it starts again.
// The ack holds the write lock, and every tap waits behind it: the
// pruning must be linear in the records pruned. It was quadratic (a fresh
// cursor's First per record skipped every leaf emptied so far in the
// transaction): 20 s on x86-64 for 100,000 records, a validator giving
// no feedback for that long.
func TestPruneWholeArchiveInOneWalk(t *testing.T) {
	if testing.Short() {
		t.Skip("fills an archive of 100,000 records")
	}
	clk := newClock()
	q := openTest(t, tempPath(t), &Options{Now: clk.Now})
	const n = DefaultArchiveMaxRecords
	data := make([]byte, 200)
	// The archive a week of taps leaves, written at once.
	_, err := q.update(func(w *wtx) (int, error) {
		acked := clk.Now()
		for seq := uint64(1); seq <= n; seq++ {
			if err := w.b.archive.Put(seqKey(seq), archiveValue(pendingValue(acked, data), acked)); err != nil {
				return 0, err
			}
			w.c.archiveN++
			w.c.archiveBytes += uint64(len(data))
		}
		w.c.lastSeq = n
		return n, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := q.Stats(); st.Archived != n {
		t.Fatalf("archive holds %d records, want %d", st.Archived, n)
	}

	clk.Advance(DefaultArchiveMaxAge + 24*time.Hour)
	seq, err := q.Append(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	before := q.db.Stats().TxStats
	cursors := before.GetCursorCount()
	start := time.Now()
	if _, err := q.Ack(seq); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	after := q.db.Stats().TxStats
	cursors = after.GetCursorCount() - cursors
	st, _ := q.Stats()
	if st.Archived != 1 {
		t.Errorf("archive holds %d records after the pruning ack, want 1 (the record just acked)", st.Archived)
	}
	if err := q.Check(); err != nil {
		t.Error(err)
	}
	// Linear: one walk of the archive finds the records, each deleted by
	// key (bbolt's Delete seeks with a cursor of its own): one cursor a
	// record and a few more, 0.2 s here. A fresh cursor's First to find
	// each record made two, and was quadratic: 5 to 20 s here. Counted,
	// not timed.
	if cursors > n+100 {
		t.Errorf("the ack pruning %d archived records opened %d cursors, want at most one a record and a few more (one walk of the archive)", n, cursors)
	}
	t.Logf("the ack pruning %d archived records took %v, %d cursors", n, took, cursors)
}
