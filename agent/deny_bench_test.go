package agent

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/queue"
)

// BenchmarkDenyList1M applies a deny list of 1,000,000 entries, as the
// uplink does (256 shards, each stored in the real queue file with its own
// fsync), to a new validator, and reports the time to apply it all
// (apply-ms), the heap it holds on the device (heap-MB: heap in use with
// the list, minus before), the bytes of its 256 shard bodies (shards-MB,
// before compression on the wire) and the lookup time (lookup-ns).
func BenchmarkDenyList1M(b *testing.B) {
	const total = 1_000_000
	now := time.Now()
	entries := make([]record.DenyEntry, total)
	for i := range entries {
		e := record.DenyEntry{Account: (uint64(i) + 10_000) * 0x9E3779B97F4A7C15 & (1<<40 - 1)}
		switch i % 4 {
		case 1:
			e.Serial, e.Expires = uint32(1+i%7), now.Add(20*time.Hour).Unix()
		case 2:
			e.Serial = uint32(1 + i%5)
		}
		entries[i] = e
	}
	shards := record.DenyShards(entries, now)
	bodies := make([][]byte, len(shards))
	size := 0
	for i := range shards {
		var err error
		if bodies[i], err = shards[i].MarshalBinary(); err != nil {
			b.Fatal(err)
		}
		size += len(bodies[i])
	}
	probe := entries[total/2].Account
	entries, shards = nil, nil
	cfg := Config{DeviceID: "bench-1", Route: "42"}
	var applyNs, heap float64
	for i := 0; i < b.N; i++ {
		q, err := queue.Open(filepath.Join(b.TempDir(), "validator.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		a, err := New(q, &feedback.Recorder{}, cfg)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		for _, body := range bodies {
			if err := a.Apply(record.DocDenyShard, 1_800_000_000_000, body); err != nil {
				b.Fatal(err)
			}
		}
		applyNs += float64(time.Since(start))
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += float64(after.HeapInuse) - float64(before.HeapInuse)
		if n := a.DenyEntries(); n != total {
			b.Fatalf("%d entries applied, want %d", n, total)
		}
		if i == b.N-1 {
			s := a.state.Load()
			lookups := 1_000_000
			t := time.Now()
			for j := range lookups {
				if !s.denied(probe, uint32(j), now) && j == 0 {
					b.Fatal("probe account not denied")
				}
			}
			b.ReportMetric(float64(time.Since(t).Nanoseconds())/float64(lookups), "lookup-ns")
		}
		runtime.KeepAlive(a)
		q.Close()
	}
	b.ReportMetric(applyNs/float64(b.N)/1e6, "apply-ms")
	b.ReportMetric(heap/float64(b.N)/(1<<20), "heap-MB")
	b.ReportMetric(float64(size)/(1<<20), "shards-MB")
}
