package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// FuzzOpen feeds Open damaged queue files. Whatever the bytes, Open must not
// crash or hang the process: it returns a working queue that passes its own
// consistency check, or an error (for damage, a *CorruptError with the file
// moved aside).
func FuzzOpen(f *testing.F) {
	const pageSize = 1024 // small pages keep the inputs small
	opts := func() *Options {
		return &Options{InitialMmapSize: 32 << 10, LockTimeout: 1, pageSize: pageSize}
	}
	// Seed: a small valid queue file with unacked and archived records, cut
	// at its page high-water mark, and versions of it with a page cleared.
	addSeeds(f, pageSize, func(q *Queue) {
		appendBulk(f, q, 12, 40)
		if _, err := q.AckThrough(4); err != nil {
			f.Fatal(err)
		}
	})

	f.Fuzz(func(t *testing.T, file []byte) {
		path := filepath.Join(t.TempDir(), "q.db")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := Open(path, opts())
		if err != nil {
			var ce *CorruptError
			if errors.As(err, &ce) && ce.MovedTo == "" {
				t.Errorf("corrupt file not moved aside: %v", err)
			}
			return
		}
		defer q.Close()
		if err := q.Check(); err != nil {
			t.Errorf("Open accepted a file that fails Check: %v", err)
		}
		if _, err := q.Append(context.Background(), []byte("after")); err != nil {
			t.Errorf("Append on an accepted file: %v", err)
		}
		if _, err := q.Peek(0, 0); err != nil {
			t.Errorf("Peek on an accepted file: %v", err)
		}
	})
}

// FuzzSalvage feeds OpenSalvage damaged queue files: whatever the bytes,
// it must not crash or hang, and what it returns must be consistent.
func FuzzSalvage(f *testing.F) {
	addSeeds(f, 1024, func(q *Queue) {
		appendBulk(f, q, 40, 40)
		if _, err := q.AckThrough(10); err != nil {
			f.Fatal(err)
		}
		q.UpdateState(func(s *State) error { return s.Put("dev.state", []byte("chain"), []byte("head")) })
		q.Adopt("e-old", []Record{{Seq: 9, Data: []byte("old")}})
	})
	f.Fuzz(func(t *testing.T, file []byte) {
		path := filepath.Join(t.TempDir(), "q.db")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenSalvage(path)
		if err != nil {
			if !errors.Is(err, ErrUnsalvageable) {
				t.Errorf("OpenSalvage = %v", err)
			}
			return
		}
		defer s.Close()
		n := 0
		if err := s.Records(func(epoch string, r Record) error {
			if epoch == s.Epoch || s.Scanned && epoch == "" {
				n++
			}
			return nil
		}); err != nil {
			t.Errorf("Records = %v", err)
		}
		if (s.Scanned || s.Epoch != "e-old") && n != s.Pending {
			t.Errorf("Records gave %d of the file's own, Pending says %d", n, s.Pending)
		}
	})
}

// addSeeds adds to f's corpus a small queue file with small pages, filled
// by fill and cut at its page high-water mark, and versions of it with one
// page cleared each.
func addSeeds(f *testing.F, pageSize int, fill func(q *Queue)) {
	path := filepath.Join(f.TempDir(), "seed.db")
	q, err := Open(path, &Options{InitialMmapSize: 32 << 10, LockTimeout: 1, pageSize: pageSize})
	if err != nil {
		f.Fatal(err)
	}
	fill(q)
	var used int64
	q.db.View(func(tx *bbolt.Tx) error { used = tx.Size(); return nil })
	if err := q.Close(); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	seed = seed[:used]
	f.Add(seed)
	for off := 2 * pageSize; off+pageSize <= len(seed); off += pageSize {
		damaged := append([]byte(nil), seed...)
		clear(damaged[off+16 : off+pageSize])
		f.Add(damaged)
	}
}
