package powercut

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"
)

// TestFailedSyncLeavesPagesCleanNotWritten: a sync failed by
// FailSyncAfter returns EIO and the disk runs on; as on Linux, the pages
// it was to write are still read with their new bytes but marked clean:
// the next fsync succeeds without them, and after a cut they hold their
// old bytes (past the old size: zeros), while a page written again
// after the failure is written whole by the next fsync.
func TestFailedSyncLeavesPagesCleanNotWritten(t *testing.T) {
	d := Mount(t, nil)
	old := bytes.Repeat([]byte("a"), 3*pageSize)
	p := durableFile(t, d, "f", old)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at := func(b string, off int64) {
		t.Helper()
		if _, err := f.WriteAt([]byte(b), off); err != nil {
			t.Fatal(err)
		}
	}
	at("LOST", 0)             // page 0: its write-back fails
	at("AGAIN", 2*pageSize)   // page 2: fails, then written again
	at("TAIL", 3*pageSize+10) // past the durable size: fails
	if err := d.FailSyncAfter(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("the failed sync returned %v, want EIO", err)
	}
	if got := content(t, p); !bytes.HasPrefix(got, []byte("LOST")) || len(got) != 3*pageSize+14 {
		t.Fatalf("after the failed sync the file reads %.8q… (%d bytes): want the new bytes, still in the cache", got, len(got))
	}
	at("NEW", pageSize)  // page 1: written after the failure
	at("ag", 2*pageSize) // page 2 dirty again
	if err := f.Sync(); err != nil {
		t.Fatalf("the next sync: %v (want success: the failed pages are clean)", err)
	}
	f.Close()
	cut(t, d, false)
	want := bytes.Clone(old)
	copy(want[pageSize:], "NEW")
	copy(want[2*pageSize:], "agAIN") // the whole page written, the failed bytes with it
	want = append(want, make([]byte, 14)...)
	if got := content(t, p); !bytes.Equal(got, want) {
		t.Errorf("after the cut: page 0 %.6q, page 1 %.6q, page 2 %.6q, tail %q (%d bytes); want %.6q, %.6q, %.6q, zeros (%d bytes)",
			got[:6], got[pageSize:pageSize+6], got[2*pageSize:2*pageSize+6], got[3*pageSize:], len(got),
			want[:6], want[pageSize:pageSize+6], want[2*pageSize:2*pageSize+6], len(want))
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.FailedSyncs != 1 {
		t.Errorf("stats: %d failed syncs, want 1", st.FailedSyncs)
	}
}
