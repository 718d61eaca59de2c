package queue

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// benchRecord is the size of a benchmark record: about a tap record (the
// 194-byte payment code plus device, time and fare fields).
const benchRecord = 256

// floorDB opens a bare bbolt file with the queue's settings, for the floor
// each benchmark compares against.
func floorDB(b *testing.B) *bbolt.DB {
	b.Helper()
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "floor.db"), 0o600, &bbolt.Options{
		NoFreelistSync: true, FreelistType: bbolt.FreelistMapType, InitialMmapSize: DefaultInitialMmapSize,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("r")); return err }); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// floorPut stores one record in a bare bbolt Update (one fsync): the least
// any durable append can cost.
func floorPut(db *bbolt.DB, seq *atomic.Uint64, rec []byte) error {
	return db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("r")).Put(seqKey(seq.Add(1)), pendingValue(time.Now(), rec))
	})
}

// timeFloor runs n floor puts from writers goroutines and returns the time
// per put.
func timeFloor(b *testing.B, writers, n int, put func() error) time.Duration {
	b.Helper()
	return timeRound(b, writers, n, put)
}

// timeRound runs n calls of op spread over writers goroutines and returns
// the time per call.
func timeRound(b *testing.B, writers, n int, op func() error) time.Duration {
	b.Helper()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start) / time.Duration(n)
}

// interleaved runs b.N queue appends and as many floor puts in alternating
// rounds, so that both see the same disk (fsync times on a shared machine
// drift by several times within a minute), and reports the queue's time
// per append as ns/op beside the floor's.
func interleaved(b *testing.B, writers int, appendOne, floorOne func() error) {
	// One writer alternates call by call; several need rounds long enough
	// for groups to form.
	round := 1
	if writers > 1 {
		round = 40
	}
	var tq, tf time.Duration
	for done := 0; done < b.N; {
		n := min(round, b.N-done)
		tq += timeRound(b, writers, n, appendOne) * time.Duration(n)
		tf += timeRound(b, writers, n, floorOne) * time.Duration(n)
		done += n
	}
	per, floor := tq/time.Duration(b.N), tf/time.Duration(b.N)
	b.ReportMetric(float64(per.Nanoseconds()), "ns/op")
	b.ReportMetric(float64(time.Second)/float64(per), "appends/s")
	b.ReportMetric(float64(floor.Nanoseconds()), "floor-ns/op")
	b.ReportMetric(float64(per)/float64(floor), "x-floor")
}

// BenchmarkAppend: one writer, one fsync per Append, beside a bare bbolt
// Update of the same bytes in the same run (the floor), in alternating
// rounds. ns/op is the queue's.
func BenchmarkAppend(b *testing.B) {
	q := openTest(b, filepath.Join(b.TempDir(), "q.db"), nil)
	db := floorDB(b)
	rec := make([]byte, benchRecord)
	var seq atomic.Uint64
	ctx := context.Background()
	interleaved(b, 1,
		func() error { _, err := q.Append(ctx, rec); return err },
		func() error { return floorPut(db, &seq, rec) })
}

// BenchmarkAppendParallel4: four writers (front and rear doors, twice)
// sharing fsyncs through the group commit, beside four writers doing bare
// bbolt Updates (one fsync each) in alternating rounds, and bbolt's own
// db.Batch (default 10 ms delay) after them. ns/op is the queue's, per
// record.
func BenchmarkAppendParallel4(b *testing.B) {
	const writers = 4
	q := openTest(b, filepath.Join(b.TempDir(), "q.db"), nil)
	db := floorDB(b)
	rec := make([]byte, benchRecord)
	ctx := context.Background()
	var seq atomic.Uint64
	commits := q.commits.Load()
	interleaved(b, writers,
		func() error { _, err := q.Append(ctx, rec); return err },
		func() error { return floorPut(db, &seq, rec) })
	commits = q.commits.Load() - commits
	b.StopTimer()
	batch := timeFloor(b, writers, min(b.N, 200), func() error {
		return db.Batch(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("r")).Put(seqKey(seq.Add(1)), pendingValue(time.Now(), rec))
		})
	})
	b.ReportMetric(float64(b.N)/float64(commits), "appends/commit")
	b.ReportMetric(float64(batch.Nanoseconds()), "dbbatch-ns/op")
}

// BenchmarkPeekAck: an uplink draining the queue, Peek 100 then AckThrough,
// with the archive on (the default). ns/op is per record.
func BenchmarkPeekAck(b *testing.B) {
	q := openTest(b, filepath.Join(b.TempDir(), "q.db"), nil)
	appendBulk(b, q, b.N, benchRecord)
	b.ResetTimer()
	n := 0
	for n < b.N {
		recs, err := q.Peek(100, 0)
		if err != nil || len(recs) == 0 {
			b.Fatalf("Peek = %d records, %v", len(recs), err)
		}
		k, err := q.AckThrough(recs[len(recs)-1].Seq)
		if err != nil || k != len(recs) {
			b.Fatalf("AckThrough = %d, %v; want %d", k, err, len(recs))
		}
		n += k
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAppendBacklog: how Append latency, file size, memory and Open
// time grow with the records waiting (rss-MB is the whole benchmark
// process). The 1,000,000 case (about 5 s to fill, 290 MB of disk) is
// skipped with -short. The benchmark raises MaxRecords and MaxBytes, since
// a million 256-byte records are more than the default 256 MiB.
func BenchmarkAppendBacklog(b *testing.B) {
	sizes := []int{0, 100_000, 1_000_000}
	if testing.Short() {
		sizes = sizes[:2]
	}
	path := filepath.Join(b.TempDir(), "q.db")
	opts := &Options{MaxRecords: 2_000_000, MaxBytes: 1 << 30, MaxFileSize: 1 << 30}
	q, err := Open(path, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		q.Close()
		checkFile(b, path)
	})
	rec := make([]byte, benchRecord)
	ctx := context.Background()
	for _, n := range sizes {
		st, err := q.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if more := n - st.Count; more > 0 {
			appendBulk(b, q, more, benchRecord)
		}
		b.Run(fmt.Sprintf("append/waiting=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := q.Append(ctx, rec); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// Keep the backlog at n for the next round of b.Loop.
			st, err := q.Stats()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := q.AckThrough(st.LastSeq - uint64(n)); err != nil {
				b.Fatal(err)
			}
			if st, err = q.Stats(); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(st.FileSize)/(1<<20), "file-MB")
			b.ReportMetric(float64(st.UsedSize)/(1<<20), "used-MB")
			b.ReportMetric(float64(rssBytes(b))/(1<<20), "rss-MB")
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
		})
		// Close and Open, with the full check (file in the page cache).
		b.Run(fmt.Sprintf("open/waiting=%d", n), func(b *testing.B) {
			for b.Loop() {
				if err := q.Close(); err != nil {
					b.Fatal(err)
				}
				if q, err = Open(path, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// rssBytes returns the process's resident set size (Linux), or 0.
func rssBytes(b *testing.B) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				b.Logf("parse VmRSS %q: %v", rest, err)
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
