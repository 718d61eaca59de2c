package ingest

import (
	"crypto/ed25519"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/sync/uplink"
	"github.com/farego/farego/sync/wire"
)

// BenchmarkIngest measures taps ingested per second through an in-process
// broker → ingest (signature check, batch and record decoding, payment-code
// re-verification) → in-memory store → fleet-signed ack back to the
// devices, for FAREGO_BENCH_TAPS taps (default 20,000) in batches of 100
// from 8 devices, 64 riders (so the credential cache hits, as in real
// life, and each tap costs one Ed25519 verification of its code). Each
// iteration sends every batch once and waits for every ack; each device
// keeps at most uplink.DefaultMaxInFlight batches unacked, as a validator
// does (the ingest drops what a device sends beyond its queue, and a
// validator sends it again; this publisher would not).
//
// In the same run it measures the floor: raw Ed25519 verifications per
// second on one core and on all cores. Metrics: taps/s, verify/s (one
// core), verify_all/s (all cores), ratio (taps/s ÷ verify_all/s: 1 would
// mean the pipeline costs nothing but one verification per tap).
func BenchmarkIngest(b *testing.B) {
	n := 20_000
	if s := os.Getenv("FAREGO_BENCH_TAPS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 100 {
			b.Fatalf("FAREGO_BENCH_TAPS=%q", s)
		}
		n = v
	}
	const devices, perBatch, maxInFlight = 8, 100, uplink.DefaultMaxInFlight
	w := newWorld(b, "")
	cfg := w.config()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	w.start(cfg)

	// Devices and their sealed batches.
	type dev struct {
		d       *device
		batches [][]byte
		// unacked counts the device's records published and not yet
		// acked; the publisher waits on more while it is
		// maxInFlight batches.
		mu      sync.Mutex
		more    *sync.Cond
		unacked int
	}
	var devs []*dev
	for range devices {
		d := &device{w: w, id: uniqueName("bus-"), key: newKey(b), epoch: "e1"}
		for i := range 64 / devices {
			d.riders = append(d.riders, w.issuer.Rider(b, uint64(7000+len(devs)*100+i), w.now))
		}
		w.store.addDevice(d.id, pubOf(d.key))
		dv := &dev{d: d}
		dv.more = sync.NewCond(&dv.mu)
		devs = append(devs, dv)
	}
	byAckTopic := map[string]*dev{}
	for _, dv := range devs {
		byAckTopic[dv.d.topic(wire.KindAck)] = dv
	}
	for i, seq := 0, uint64(1); i < n; seq += perBatch {
		for _, dv := range devs {
			if i >= n {
				break
			}
			k := min(perBatch, n-i)
			var recs []wire.Record
			for s := seq; s < seq+uint64(k); s++ {
				recs = append(recs, wire.Record{Seq: s, Data: dv.d.validTap(s)})
			}
			dv.batches = append(dv.batches, dv.d.batch(nil, recs...))
			i += k
		}
	}

	// One client publishes for every device and counts the acked records.
	var acked atomic.Int64
	done := make(chan struct{}, 1)
	var target atomic.Int64
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(w.url).SetClientID(uniqueName("bench-")).
		SetOrderMatters(false).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(250) })
	fleet := pubOf(w.fleet)
	tok := c.Subscribe(wire.Topics{Prefix: w.prefix}.AllDevices(wire.KindAck), 1, func(_ mqtt.Client, m mqtt.Message) {
		p, err := wire.Open(m.Payload(), wire.TypeAck, fleet)
		if err != nil {
			b.Errorf("ack: %v", err)
			return
		}
		a, err := wire.ParseAck(p)
		if err != nil {
			b.Errorf("ack: %v", err)
			return
		}
		if dv := byAckTopic[m.Topic()]; dv != nil {
			dv.mu.Lock()
			dv.unacked -= int(a.Seqs())
			dv.more.Broadcast()
			dv.mu.Unlock()
		}
		if acked.Add(int64(a.Seqs())) == target.Load() {
			done <- struct{}{}
		}
	})
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}

	var elapsed time.Duration
	for b.Loop() {
		acked.Store(0)
		target.Store(int64(n))
		start := time.Now()
		var wg sync.WaitGroup
		for _, dv := range devs {
			dv.mu.Lock()
			dv.unacked = 0 // a short last batch was counted whole
			dv.mu.Unlock()
			wg.Go(func() {
				topic := dv.d.topic(wire.KindTaps)
				for _, msg := range dv.batches {
					dv.mu.Lock()
					for dv.unacked >= maxInFlight*perBatch {
						dv.more.Wait()
					}
					dv.unacked += perBatch
					dv.mu.Unlock()
					if tok := c.Publish(topic, 1, false, msg); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
						b.Errorf("publish: %v", tok.Error())
						return
					}
				}
			})
		}
		wg.Wait()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			b.Fatalf("acked %d of %d taps", acked.Load(), n)
		}
		elapsed += time.Since(start)
	}
	b.StopTimer()
	taps := float64(n) * float64(b.N) / elapsed.Seconds()

	// The floor: raw Ed25519 verifications, one core and all cores, with
	// the verification paycode uses.
	key := newKey(b)
	msg := []byte("farego-code-v1 a message of about the size of a code's signed part, 144 bytes ........................................")
	sig := ed25519.Sign(key, msg)
	pub := pubOf(key)
	const verifies = 4000
	start := time.Now()
	for range verifies {
		if !paycode.VerifySignature(pub, msg, sig) {
			b.Fatal("verify")
		}
	}
	one := verifies / time.Since(start).Seconds()
	procs := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	start = time.Now()
	for range procs {
		wg.Go(func() {
			for range verifies {
				paycode.VerifySignature(pub, msg, sig)
			}
		})
	}
	wg.Wait()
	all := float64(verifies*procs) / time.Since(start).Seconds()

	b.ReportMetric(taps, "taps/s")
	b.ReportMetric(one, "verify/s")
	b.ReportMetric(all, "verify_all/s")
	b.ReportMetric(taps/all, "ratio")
	if s := w.store; s.tapCount() != n {
		b.Errorf("store has %d taps, want %d", s.tapCount(), n)
	}
}
