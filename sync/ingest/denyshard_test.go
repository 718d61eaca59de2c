package ingest

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/uplink"
	"github.com/farego/farego/sync/wire"
)

// shardSource is a ShardSource over a deny list that the test changes.
type shardSource struct {
	mu      sync.Mutex
	version uint64
	entries []record.DenyEntry
	now     time.Time
	reads   int
}

func (s *shardSource) source(_ context.Context, since uint64) (uint64, []record.DenyShard, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if since != 0 && since == s.version {
		return since, nil, nil
	}
	s.reads++
	return s.version, record.DenyShards(s.entries, s.now), nil
}

// shardWatcher records the size of every deny-list shard downlink.
type shardWatcher struct {
	n       atomic.Int64
	maxSize atomic.Int64
	bad     atomic.Int64
}

func (w *world) watchShards() *shardWatcher {
	w.tb.Helper()
	sw := &shardWatcher{}
	topics := wire.Topics{Prefix: w.prefix}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(w.url).SetClientID(uniqueName("watch-")).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		w.tb.Fatalf("watcher: %v", tok.Error())
	}
	w.tb.Cleanup(func() { c.Disconnect(250) })
	tok := c.Subscribe(topics.DenyShards(), 1, func(_ mqtt.Client, m mqtt.Message) {
		if _, err := wire.Open(m.Payload(), wire.TypeDownlink, pubOf(w.fleet)); err != nil {
			sw.bad.Add(1)
		}
		sw.n.Add(1)
		for size := int64(len(m.Payload())); ; {
			old := sw.maxSize.Load()
			if size <= old || sw.maxSize.CompareAndSwap(old, size) {
				break
			}
		}
	})
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		w.tb.Fatalf("watcher: %v", tok.Error())
	}
	return sw
}

// TestDenyListMillionEndToEnd: a deny list of 1,000,000 entries reaches a
// validator through a real broker whose largest packet is 300 KiB, the
// real Publisher and the real uplink into a real agent and queue file, in
// 256 signed shards of at most wire.MaxDownlinkSize each. Expired entries
// are left out; a change resends only the shard it touched.
func TestDenyListMillionEndToEnd(t *testing.T) {
	now := time.Now()
	w := &world{tb: t, prefix: uniqueName("ft-"), fleet: newKey(t), issuer: paycodetest.NewIssuer(t, 7, now),
		store: newMemStore(), now: now}
	w.broker = brokertest.Start(t, &brokertest.Options{MaxPacketSize: 300 << 10})
	w.url = w.broker.URL()

	const total = 1_000_000
	later, expired := now.Add(20*time.Hour).Unix(), now.Add(-time.Minute).Unix()
	entries := make([]record.DenyEntry, 0, total)
	for i := range total - 3 {
		// Accounts spread over 40 bits, distinct (an odd multiplier is a
		// bijection modulo 2^40), as a real list's would be: no pattern
		// for the compression to exploit.
		acct := (uint64(i) + 10_000) * 0x9E3779B97F4A7C15 & (1<<40 - 1)
		e := record.DenyEntry{Account: acct, Reason: "negative_balance"}
		switch i % 4 {
		case 1:
			e.Serial, e.Reason, e.Expires = uint32(1+i%7), "code_reused", later
		case 2:
			e.Serial, e.Reason = uint32(1+i%5), "lost_phone"
		}
		entries = append(entries, e)
	}
	// Three accounts the test taps with: the whole account, one
	// credential (serial 1, the issuer's), and an entry already expired.
	entries = append(entries,
		record.DenyEntry{Account: 4242, Reason: "fraud"},
		record.DenyEntry{Account: 4243, Serial: 1, Reason: "lost_phone"},
		record.DenyEntry{Account: 4244, Serial: 1, Reason: "code_reused", Expires: expired})
	src := &shardSource{version: uint64(now.UnixMilli()), entries: entries, now: now}

	sw := w.watchShards()
	cfg := w.publisherConfig(newDocSource().source)
	cfg.DenyShards = src.source
	cfg.SourceTimeout = 2 * time.Minute
	p := w.startPublisher(cfg)

	// The validator: a real queue file and agent behind the real uplink.
	q, err := queue.Open(filepath.Join(t.TempDir(), "validator.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	fb := &feedback.Recorder{}
	a, err := agent.New(q, fb, agent.Config{DeviceID: "bus-1m", Route: "42"})
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := w.issuer.Keyring.MarshalJSON()
	if err := a.Seed(record.DocKeyring, kr); err != nil {
		t.Fatal(err)
	}
	if err := a.Seed(record.DocFares, []byte(`{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`)); err != nil {
		t.Fatal(err)
	}
	u, err := uplink.New(uplink.Config{
		Brokers: []string{w.url}, DeviceID: "bus-1m", DeviceKey: newKey(t), FleetPublicKey: pubOf(w.fleet),
		TopicPrefix: w.prefix, MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
		ConnectTimeout: 20 * time.Second, ShutdownTimeout: 20 * time.Second, Logger: testLogger(t),
	}, q, a)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- u.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("uplink Run = %v", err)
		}
	})

	want := total - 1 // the expired entry is left out
	brokertest.WaitFor(t, 5*time.Minute, "the whole deny list on the validator", func() bool {
		return a.DenyEntries() == want && a.Versions()[record.DocDenyList] == src.version
	})
	// The watcher is another subscriber: the broker may deliver the last
	// shard to the validator before it reaches the watcher.
	brokertest.WaitFor(t, time.Minute, "every shard seen by the watcher", func() bool {
		return sw.n.Load() >= record.DenyShardCount
	})
	time.Sleep(300 * time.Millisecond) // a shard sent twice would show now
	t.Logf("1,000,000 entries: %d shard downlinks, largest %d bytes, on the validator %v after the uplink started",
		sw.n.Load(), sw.maxSize.Load(), time.Since(start).Round(time.Millisecond))
	if n := sw.n.Load(); n != record.DenyShardCount || sw.bad.Load() != 0 {
		t.Errorf("%d shard downlinks (%d badly signed), want %d", n, sw.bad.Load(), record.DenyShardCount)
	}
	if m := sw.maxSize.Load(); m > wire.MaxDownlinkSize || m < 1<<10 {
		t.Errorf("largest shard downlink %d bytes, want at most %d", m, wire.MaxDownlinkSize)
	}
	for i := range record.DenyShardCount {
		if v := a.Versions()[record.DenyShardKey(i)]; v != src.version {
			t.Fatalf("shard %d at version %d, want %d", i, v, src.version)
		}
	}
	tap := func(acct uint64) agent.Outcome {
		code := w.issuer.Rider(t, acct, time.Now()).Code(t, time.Now())
		return a.Tap(context.Background(), scanner.Frame{Scanner: "front", Text: code, Time: time.Now()})
	}
	for acct, want := range map[uint64]record.Reason{4242: record.ReasonDenied, 4243: record.ReasonDenied, 4244: "", 4245: ""} {
		if out := tap(acct); out.Reason != want {
			t.Errorf("account %d: %+v, want reason %q", acct, out, want)
		}
	}

	// Lift the fraud entry: only its shard changes, and only it goes out.
	before := sw.n.Load()
	src.mu.Lock()
	src.entries = src.entries[:len(src.entries)-3]
	src.entries = append(src.entries, record.DenyEntry{Account: 4243, Serial: 1, Reason: "lost_phone"})
	src.version++
	src.mu.Unlock()
	p.Changed(record.DocDenyList)
	shard := record.DenyShardKey(record.DenyShardOf(4242))
	brokertest.WaitFor(t, time.Minute, "the changed shard applied", func() bool { return a.Versions()[shard] == src.version })
	if out := tap(4242); !out.Accepted {
		t.Errorf("account 4242 after it was lifted: %+v", out)
	}
	// The watcher and the Publisher's stats (updated once the index is out
	// too) may lag the validator.
	brokertest.WaitFor(t, time.Minute, "the publication done", func() bool {
		return sw.n.Load() > before && p.Stats().Versions["denylist/*"] == src.version
	})
	time.Sleep(300 * time.Millisecond)
	if n := sw.n.Load() - before; n != 1 {
		t.Errorf("%d shard downlinks for a change of one shard, want 1", n)
	}
}
