package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
)

// BenchmarkDecisionLatency measures a tap from frame to feedback, fsync
// included, beside the floor in the same run: one Ed25519 verification plus
// one fsync'd commit of a record of the same size (a bare state write to a
// second queue file: the same bbolt settings, no queue bookkeeping). Floor and tap
// alternate, so both see the same disk and CPU conditions. It reports
// p50/p99 of both and their ratio.
//
// "warm": riders seen before (credential signature cached); "cold": every
// rider new to the device (two signature checks).
func BenchmarkDecisionLatency(b *testing.B) {
	for _, mode := range []struct {
		name  string
		cache int
	}{{"warm", 0}, {"cold", -1}} {
		b.Run(mode.name, func(b *testing.B) { benchDecision(b, mode.cache) })
	}
}

func benchDecision(b *testing.B, cacheSize int) {
	dir := b.TempDir()
	now := time.Now()
	q, err := queue.Open(filepath.Join(dir, "validator.db"), &queue.Options{MaxRecords: 10_000_000, MaxFileSize: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	a, err := New(q, &feedback.Recorder{}, Config{DeviceID: "bench", Route: "42", PassbackWindow: -1, RiskCap: -1, CacheSize: cacheSize})
	if err != nil {
		b.Fatal(err)
	}
	is := paycodetest.NewIssuer(b, 7, now)
	if err := a.Seed("keyring", keyringDoc(b, is.Keyring)); err != nil {
		b.Fatal(err)
	}
	if err := a.Seed("fares", fareTable(b, 1)); err != nil {
		b.Fatal(err)
	}
	riders := make([]*paycodetest.Rider, 200)
	for i := range riders {
		riders[i] = is.Rider(b, uint64(10_000+i), now)
	}

	// The floor's own file, opened by the queue as the queue opens its own.
	fq, err := queue.Open(filepath.Join(dir, "floor.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer fq.Close()
	sample := riders[0].Code(b, now)
	c, _ := paycode.ParseText(sample)
	msg := append([]byte("farego-code-v1"), c.Bytes()[:130]...)
	sig := c.Bytes()[130:]
	recSize := 330

	floor := make([]time.Duration, 0, b.N)
	taps := make([]time.Duration, 0, b.N)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		text := riders[i%len(riders)].Code(b, time.Now())
		rec := make([]byte, recSize)
		binary.BigEndian.PutUint64(rec, uint64(i))
		b.StartTimer()

		start := time.Now()
		if !ed25519.Verify(c.RiderKey[:], msg, sig) {
			b.Fatal("floor verify failed")
		}
		if err := fq.UpdateState(func(s *queue.State) error { return s.Put("f", rec[:8], rec) }); err != nil {
			b.Fatal(err)
		}
		floor = append(floor, time.Since(start))

		start = time.Now()
		out := a.Tap(ctx, scanner.Frame{Scanner: "front", Text: text, Time: start})
		taps = append(taps, time.Since(start))
		if !out.Accepted {
			b.Fatalf("tap %d refused: %s", i, out.Reason)
		}
	}
	b.StopTimer()
	fp50, fp99 := percentile(floor, 50), percentile(floor, 99)
	tp50, tp99 := percentile(taps, 50), percentile(taps, 99)
	b.ReportMetric(float64(fp50.Microseconds()), "floor-p50-µs")
	b.ReportMetric(float64(fp99.Microseconds()), "floor-p99-µs")
	b.ReportMetric(float64(tp50.Microseconds()), "tap-p50-µs")
	b.ReportMetric(float64(tp99.Microseconds()), "tap-p99-µs")
	b.ReportMetric(float64(tp50)/float64(fp50), "p50-ratio")
	b.ReportMetric(float64(tp99)/float64(fp99), "p99-ratio")
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}
