package uplink

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/wire"
)

// BenchmarkDrain measures how fast the uplink drains a backlog of realistic
// taps (FAREGO_BENCH_TAPS, default 20,000) through an in-process broker to
// a consumer that verifies and acks every batch, and, in the same run, the
// floor: the same sealed batches published by a bare paho client at QoS 1
// (no window, no acks, no queue) to the same broker and consumer.
//
// Metrics: uplink_rec/s (until the queue is empty), paho_rec/s (until the
// consumer has every record), ratio (uplink/paho), wire_B/rec (bytes per
// record on the wire, after compression). Sub-benchmarks vary MaxInFlight.
func BenchmarkDrain(b *testing.B) {
	for _, inflight := range []int{DefaultMaxInFlight, 16} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) { benchmarkDrain(b, inflight) })
	}
}

func benchmarkDrain(b *testing.B, inflight int) {
	n := 20_000
	if s := os.Getenv("FAREGO_BENCH_TAPS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("FAREGO_BENCH_TAPS=%q", s)
		}
		n = v
	}
	broker := brokertest.Start(b, nil)
	var uplinkDur, rawDur time.Duration
	var wireBytes, wireRecs uint64
	for b.Loop() {
		b.StopTimer()
		f := newFixture(b, broker)
		f.cfg = Config{
			Brokers: []string{broker.URL()}, DeviceID: f.id, DeviceKey: f.dev,
			FleetPublicKey: pubOf(f.fleet), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			MaxInFlight: inflight,
		}
		devices := map[string]ed25519.PublicKey{f.id: pubOf(f.dev)}
		appendTaps(b, f.q, f.taps, n)
		batches := sealedBatches(b, f)

		// The floor: the same batches, published by bare paho at QoS 1.
		srv := newTestServer(b, serverOptions{url: broker.URL()}, f.prefix, f.fleet, devices)
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID(uniqueName("raw-")).
			SetOrderMatters(false).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		topic := f.topic(wire.KindTaps)
		b.StartTimer()
		start := time.Now()
		toks := make([]mqtt.Token, 0, len(batches))
		for _, msg := range batches {
			toks = append(toks, c.Publish(topic, 1, false, msg))
		}
		for _, tok := range toks {
			if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
				b.Fatalf("raw publish: %v", tok.Error())
			}
		}
		waitFor(b, "the consumer to have the raw batches", func() bool { return srv.unique() == n })
		rawDur += time.Since(start)
		b.StopTimer()
		c.Disconnect(250)
		srv.check(b, f.id, n)
		srv.close()

		// The uplink, to a fresh consumer.
		srv = newTestServer(b, serverOptions{url: broker.URL()}, f.prefix, f.fleet, devices)
		b.StartTimer()
		start = time.Now()
		u := f.start()
		waitFor(b, "the queue to drain", func() bool { return queueCount(b, f.q) == 0 })
		uplinkDur += time.Since(start)
		b.StopTimer()
		st := u.Stats()
		wireBytes += st.BytesSent
		wireRecs += st.RecordsSent
		if err := u.stop(); err != nil {
			b.Fatal(err)
		}
		srv.check(b, f.id, n)
		srv.close()
		b.StartTimer()
	}
	if uplinkDur > 0 && rawDur > 0 {
		total := float64(n) * float64(b.N)
		b.ReportMetric(total/uplinkDur.Seconds(), "uplink_rec/s")
		b.ReportMetric(total/rawDur.Seconds(), "paho_rec/s")
		b.ReportMetric(rawDur.Seconds()/uplinkDur.Seconds(), "ratio")
		b.ReportMetric(float64(wireBytes)/float64(wireRecs), "wire_B/rec")
	}
}

// sealedBatches returns the batches the uplink would send for f's queue
// with the default batch size, sealed the same way.
func sealedBatches(tb testing.TB, f *fixture) [][]byte {
	tb.Helper()
	var out [][]byte
	var after uint64
	for {
		recs, err := f.q.PeekAfter(after, DefaultBatchRecords, DefaultBatchBytes)
		if err != nil {
			tb.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		bt := &wire.Batch{DeviceID: f.id, Epoch: f.q.Epoch(), SentAt: time.Now()}
		for _, r := range recs {
			bt.Records = append(bt.Records, wire.Record{Seq: r.Seq, Data: r.Data})
		}
		p, err := bt.MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		msg, err := wire.Seal(wire.TypeBatch, p, true, f.dev)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, msg)
		after = recs[len(recs)-1].Seq
	}
}
