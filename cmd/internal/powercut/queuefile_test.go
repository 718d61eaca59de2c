package powercut_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
)

// TestQueueFileNamedDurablyAtEveryOpen: a validator's first start made
// its queue file (bbolt wrote and fsynced it, the queue's buckets
// committed) and stopped before the directory that names it was fsynced
// — killed there (the watchdog, the OOM killer, systemd's stop timeout),
// or the directory's fsync failed once. The next start finds the file and
// opens it: it did not make it, and synced nothing. Green taps were then
// committed, each fsynced, into a file whose name the disk did not hold:
// the next power cut took the whole file back, every tap and every code
// seen with it. Here the file is put in place as that start left it
// (its content fsynced, its directory not); the taps after the next Open
// must survive the power cut.
func TestQueueFileNamedDurablyAtEveryOpen(t *testing.T) {
	d := powercut.Mount(t, nil)
	dataDir := d.Path("var", "lib", "farego")
	if err := durable.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dataDir, "validator.db")

	// What the interrupted first start left: a whole queue file, made
	// elsewhere and written here with its data fsynced, no directory sync.
	made := filepath.Join(t.TempDir(), "validator.db")
	q, err := queue.Open(made, nil)
	if err != nil {
		t.Fatal(err)
	}
	epoch := q.Epoch()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(made)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// The next start: it opens the file and takes taps, each committed.
	q, err = queue.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Epoch() != epoch {
		t.Fatalf("the next start made a new queue file (epoch %s, want %s)", q.Epoch(), epoch)
	}
	const taps = 5
	for i := range taps {
		if _, err := q.Append(context.Background(), []byte(fmt.Sprintf("green tap %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	rep, err := d.Cut(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cut: %+v", rep)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("after the power cut the queue file is gone with its %d committed taps: %v", taps, err)
	}
	q, err = queue.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if q.Epoch() != epoch || st.Count != taps {
		t.Errorf("after the power cut: epoch %s with %d taps; want epoch %s with the %d committed", q.Epoch(), st.Count, epoch, taps)
	}
}
