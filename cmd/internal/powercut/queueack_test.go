package powercut_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
)

// TestQueueAcksSurvivePowerCutsAtEverySync: the uplink's own state on the
// validator's flash — taps appended, acked as the server acks their
// batches, moved to the archive, the archive pruned past 8 records on
// nearly every ack — with the power cut before each of the bbolt file's
// syncs in turn (Disk.FreezeAfterSyncs), every other cut tearing a page.
// After each cut the queue opens on the same file (not moved aside as
// damaged) and passes bbolt's check; every tap whose Append returned is
// there, unacked unless its ack returned; no ack that returned is undone
// (the tap would be sent again); the only tap there whose Append did not
// return is the one being committed, whole; the next tap's number is
// above every number handed out.
func TestQueueAcksSurvivePowerCutsAtEverySync(t *testing.T) {
	d := powercut.Mount(t, nil)
	ctx := context.Background()
	opts := &queue.Options{ArchiveMaxRecords: 8}
	data := func(seq uint64) []byte {
		return append([]byte(fmt.Sprintf("tap %d ", seq)), bytes.Repeat([]byte{byte(seq)}, 700)...)
	}
	cuts, torn, pages, entries, inflight := 0, 0, 0, 0, 0
	var cutOff int64
	for n := int64(0); ; n++ {
		if n > 400 {
			t.Fatal("the queue still syncs after 400 syncs")
		}
		dir := d.Path(fmt.Sprintf("q-%d", n))
		if err := durable.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "validator.db")
		q, err := queue.Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		epoch := q.Epoch()
		if err := d.FreezeAfterSyncs(n); err != nil {
			t.Fatal(err)
		}
		appended := map[uint64]bool{} // Append returned
		var acked, last uint64        // AckThrough returned for acked; the newest seq returned
		var acking uint64             // the ack the cut interrupted, whose outcome is unknown
	work:
		for range 6 {
			for range 5 {
				seq, err := q.AppendFunc(ctx, func(_ *queue.State, seq uint64) ([]byte, error) { return data(seq), nil })
				if err != nil {
					break work
				}
				appended[seq], last = true, seq
			}
			if _, err := q.AckThrough(last - 2); err != nil {
				acking = last - 2
				break
			}
			acked = last - 2
		}
		q.Close()
		st, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if !st.Frozen {
			if err := d.FreezeAfterSyncs(-1); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d syncs: 30 taps appended, 6 acks", n)
			break
		}
		tear := cuts%2 == 1
		rep, err := d.Cut(tear)
		if err != nil {
			t.Fatal(err)
		}
		cuts++
		if rep.Torn {
			torn++
		}
		pages += rep.PagesDiscarded
		cutOff += rep.BytesCutOff
		entries += rep.EntriesDiscarded
		what := fmt.Sprintf("cut before sync %d (tear %v; %d taps appended, acked through %d)", n, tear, len(appended), acked)

		q, err = queue.Open(path, opts)
		if err != nil {
			t.Fatalf("%s: the queue does not open: %v", what, err)
		}
		if q.Epoch() != epoch {
			q.Close()
			t.Fatalf("%s: the queue file was set aside (epoch %s, want %s): its taps are gone from the uplink", what, q.Epoch(), epoch)
		}
		if err := q.Check(); err != nil {
			q.Close()
			t.Fatalf("%s: bbolt check: %v", what, err)
		}
		pending := map[uint64][]byte{}
		err = q.Walk(func(_ *queue.State, r queue.Record, archived bool) error {
			if !archived {
				pending[r.Seq] = r.Data
			}
			return nil
		})
		if err != nil {
			q.Close()
			t.Fatal(err)
		}
		for seq := range appended {
			if seq <= acked {
				if _, ok := pending[seq]; ok {
					q.Close()
					t.Fatalf("%s: tap %d, whose ack returned, is unacked again", what, seq)
				}
				continue
			}
			if _, ok := pending[seq]; !ok && seq <= acking {
				continue // acked by the commit the cut interrupted
			}
			if !bytes.Equal(pending[seq], data(seq)) {
				q.Close()
				t.Fatalf("%s: tap %d, appended and not acked, is not in the queue whole", what, seq)
			}
		}
		// The tap whose commit the cut interrupted may be there (its
		// meta page reached the flash, its fsync did not return: a
		// commit whose outcome the caller never learns, as with any
		// disk), and then whole; no other.
		for seq, b := range pending {
			if !appended[seq] {
				if seq != last+1 || !bytes.Equal(b, data(seq)) {
					q.Close()
					t.Fatalf("%s: tap %d (%d bytes) is in the queue, never appended so", what, seq, len(b))
				}
				inflight++
				last = seq
			}
		}
		seq, err := q.Append(ctx, []byte("the next tap"))
		if err != nil {
			q.Close()
			t.Fatalf("%s: the next tap: %v", what, err)
		}
		if seq <= last {
			q.Close()
			t.Fatalf("%s: the next tap is numbered %d, not above %d handed out before the cut", what, seq, last)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d power cuts of the queue appending, acking and pruning its archive (%d tearing a page; %d unsynced pages put back, "+
		"%d unsynced bytes cut off, %d unsynced entries undone; %d taps whose Append failed there whole): each time the same file, "+
		"every returned tap and ack kept, no number reused", cuts, torn, pages, cutOff, entries, inflight)
}
