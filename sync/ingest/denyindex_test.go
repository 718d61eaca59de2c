package ingest

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/uplink"
	"github.com/farego/farego/sync/wire"
)

// indexDevice is a validator (a real agent and queue file) whose uplink
// the test starts and stops: each connect is a reconnection with a clean
// session, as a bus on a cellular link makes dozens of times a day.
type indexDevice struct {
	w   *world
	id  string
	key []byte
	q   *queue.Queue
	a   *agent.Agent
}

func (w *world) newIndexDevice() *indexDevice {
	w.tb.Helper()
	d := &indexDevice{w: w, id: uniqueName("bus-")}
	k := newKey(w.tb)
	d.key = k
	q, err := queue.Open(filepath.Join(w.tb.TempDir(), "validator.db"), nil)
	if err != nil {
		w.tb.Fatal(err)
	}
	w.tb.Cleanup(func() { q.Close() })
	d.q = q
	if d.a, err = agent.New(q, &feedback.Recorder{}, agent.Config{DeviceID: d.id, Route: "42"}); err != nil {
		w.tb.Fatal(err)
	}
	kr, _ := w.issuer.Keyring.MarshalJSON()
	if err := d.a.Seed(record.DocKeyring, kr); err != nil {
		w.tb.Fatal(err)
	}
	if err := d.a.Seed(record.DocFares, []byte(`{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`)); err != nil {
		w.tb.Fatal(err)
	}
	if w.broker == nil { // an external broker keeps retained messages
		w.tb.Cleanup(func() { clearRetained(w.tb, w.url, wire.Topics{Prefix: w.prefix}.Device(d.id, wire.KindStatus)) })
	}
	return d
}

// connect runs a fresh uplink (fresh counters) for the device until stop
// or the end of the test; indexWait is its Config.DenyIndexWait (0: every
// shard, as before the index).
func (d *indexDevice) connect(indexWait time.Duration) (*uplink.Uplink, *brokertest.Running) {
	d.w.tb.Helper()
	u, err := uplink.New(uplink.Config{
		Brokers: []string{d.w.url}, DeviceID: d.id, ClientID: uniqueName("bus-"), DeviceKey: d.key, FleetPublicKey: pubOf(d.w.fleet),
		TopicPrefix: d.w.prefix, MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
		ConnectTimeout: 20 * time.Second, ShutdownTimeout: 20 * time.Second, Logger: testLogger(d.w.tb),
		DenyIndexWait: indexWait,
	}, d.q, d.a)
	if err != nil {
		d.w.tb.Fatal(err)
	}
	r := brokertest.Go(d.w.tb, waitTimeout, u.Run)
	waitFor(d.w.tb, "the uplink connected", func() bool { return u.Stats().Connected })
	return u, r
}

// shardsAt reports whether every shard the device holds is at version v.
func (d *indexDevice) shardsAt(v uint64) bool {
	have := d.a.Versions()
	for n := range record.DenyShardCount {
		if have[record.DenyShardKey(n)] != v {
			return false
		}
	}
	return true
}

// indexWait is the DenyIndexWait of devices that must take the index: far
// longer than a busy machine takes to deliver the retained index after
// the subscription, so that they never fall back to every shard; a device
// that gets no index at all still falls back within waitFor's bound.
const indexWait = time.Minute

// quiet waits a moment for messages that should not come.
func quiet() { time.Sleep(500 * time.Millisecond) }

// accountsOfShards returns an account (at least from) in each of the
// given shards.
func accountsOfShards(from uint64, shards ...int) []uint64 {
	var out []uint64
	for _, s := range shards {
		a := from
		for record.DenyShardOf(a) != s {
			a++
		}
		out = append(out, a)
	}
	return out
}

// denyIndexWorld starts a Publisher with deny-list shards of 3,000
// entries under the world w.
func denyIndexWorld(t *testing.T, w *world) (*shardSource, *Publisher) {
	entries := make([]record.DenyEntry, 0, 3000)
	for i := range 3000 {
		entries = append(entries, record.DenyEntry{Account: (uint64(i) + 100_000) * 0x9E3779B97F4A7C15 & (1<<40 - 1), Reason: "negative_balance"})
	}
	src := &shardSource{version: uint64(w.now.UnixMilli()), entries: entries, now: w.now}
	// The whole list too (it fits one downlink), as the server publishes
	// it for older validators.
	whole := func(_ context.Context, kind string) (uint64, []byte, error) {
		if kind != record.DocDenyList {
			return 0, nil, nil
		}
		src.mu.Lock()
		defer src.mu.Unlock()
		b, err := json.Marshal(record.DenyList{Version: src.version, Entries: src.entries})
		return src.version, b, err
	}
	cfg := w.publisherConfig(whole)
	cfg.DenyShards = src.source
	p := w.startPublisher(cfg)
	waitFor(t, "the shard index published", func() bool { return p.Stats().Indexes > 0 })
	if w.broker == nil {
		t.Cleanup(func() {
			topics := wire.Topics{Prefix: w.prefix}
			all := []string{topics.DenyIndex()}
			for n := range record.DenyShardCount {
				all = append(all, topics.DenyShard(n))
			}
			clearRetained(t, w.url, all...)
		})
	}
	return src, p
}

// change adds entries to the deny list at a new version and waits until
// the Publisher has published their shards and the index after them.
func change(t *testing.T, src *shardSource, p *Publisher, add ...record.DenyEntry) uint64 {
	t.Helper()
	before := p.Stats().Indexes
	src.mu.Lock()
	src.version++
	v := src.version
	src.entries = append(slices.Clone(src.entries), add...)
	src.mu.Unlock()
	p.Changed(record.DocDenyList)
	waitFor(t, "the changed shards and the index published", func() bool { return p.Stats().Indexes > before })
	return v
}

// TestDenyIndexReconnect: with the shard index, a validator that
// reconnects with its deny list up to date receives no shard at all (on
// the old path, all 256 again); one that is behind by a few shards
// receives just those; a change while it is connected reaches it at once.
// The real Publisher, uplink, agent and queue file, an in-process broker.
func TestDenyIndexReconnect(t *testing.T) { testDenyIndexReconnect(t, newWorld(t, "")) }

// TestDenyIndexReconnectMosquitto is TestDenyIndexReconnect through the
// Mosquitto named by FAREGO_TEST_MOSQUITTO.
func TestDenyIndexReconnectMosquitto(t *testing.T) {
	testDenyIndexReconnect(t, newWorld(t, brokertest.MosquittoURL(t)))
}

func testDenyIndexReconnect(t *testing.T, w *world) {
	src, p := denyIndexWorld(t, w)
	d := w.newIndexDevice()

	// First connection: the device has nothing, and takes all 256 shards
	// through the index, 16 subscriptions at a time.
	u, r := d.connect(indexWait)
	waitFor(t, "every shard applied", func() bool { return d.shardsAt(src.version) })
	st := u.Stats()
	t.Logf("first connection: %d shard messages, %d bytes", st.DenyShardMessages, st.DenyShardBytes)
	if st.DenyShardMessages != record.DenyShardCount || st.DenyShardSubscriptions != record.DenyShardCount || st.DenyIndexFallbacks != 0 {
		t.Errorf("first connection: %d shard messages, %d shard subscriptions, %d fallbacks; want 256, 256, 0",
			st.DenyShardMessages, st.DenyShardSubscriptions, st.DenyIndexFallbacks)
	}
	entries := d.a.DenyEntries()
	if err := r.Stop(waitTimeout); err != nil {
		t.Fatal(err)
	}

	// Up to date: a reconnection brings the index, and no shard.
	u, r = d.connect(indexWait)
	waitFor(t, "the index on reconnecting", func() bool { return u.Stats().DenyIndexes > 0 })
	quiet()
	st = u.Stats()
	t.Logf("reconnection, up to date, with the index: %d shard messages, %d bytes", st.DenyShardMessages, st.DenyShardBytes)
	if st.DenyShardMessages != 0 || st.DenyShardSubscriptions != 0 || st.DownlinksRefused != 0 || st.DownlinksUnchanged != 0 {
		t.Errorf("up to date: %d shard messages (%d bytes), %d subscriptions, %d refused, %d unchanged (the whole list); want none",
			st.DenyShardMessages, st.DenyShardBytes, st.DenyShardSubscriptions, st.DownlinksRefused, st.DownlinksUnchanged)
	}
	if err := r.Stop(waitTimeout); err != nil {
		t.Fatal(err)
	}

	// The old path (a device without the index): every shard again.
	u, r = d.connect(0)
	// Each shard is counted when it arrives and as unchanged once applied:
	// wait for both (under load the second lags the first).
	waitFor(t, "every shard again on the old path", func() bool {
		s := u.Stats()
		return s.DenyShardMessages >= record.DenyShardCount && s.DownlinksUnchanged >= record.DenyShardCount+1
	})
	quiet()
	st = u.Stats()
	t.Logf("reconnection, up to date, old path: %d shard messages, %d bytes", st.DenyShardMessages, st.DenyShardBytes)
	if st.DenyShardMessages != record.DenyShardCount || st.DownlinksUnchanged != record.DenyShardCount+1 {
		t.Errorf("old path: %d shard messages, %d unchanged; want 256, 257 (and the whole list)", st.DenyShardMessages, st.DownlinksUnchanged)
	}
	if err := r.Stop(waitTimeout); err != nil {
		t.Fatal(err)
	}

	// Behind by three shards (changed while the device was away): it
	// takes just those three.
	changed := []int{3, 77, 200}
	var add []record.DenyEntry
	for _, a := range accountsOfShards(1<<41, changed...) {
		add = append(add, record.DenyEntry{Account: a, Reason: "fraud"})
	}
	v2 := change(t, src, p, add...)
	u, r = d.connect(indexWait)
	waitFor(t, "the three changed shards applied", func() bool {
		have := d.a.Versions()
		for _, n := range changed {
			if have[record.DenyShardKey(n)] != v2 {
				return false
			}
		}
		return true
	})
	quiet()
	st = u.Stats()
	t.Logf("reconnection, 3 shards behind: %d shard messages, %d bytes", st.DenyShardMessages, st.DenyShardBytes)
	if st.DenyShardMessages != 3 || st.DenyShardSubscriptions != 3 {
		t.Errorf("3 shards behind: %d shard messages, %d subscriptions; want 3, 3", st.DenyShardMessages, st.DenyShardSubscriptions)
	}
	if got := d.a.DenyEntries(); got != entries+3 {
		t.Errorf("%d deny entries, want %d", got, entries+3)
	}

	// A change while connected reaches the device.
	const rider = 4242
	code := w.issuer.Rider(t, rider, time.Now()).Code(t, time.Now())
	if out := d.a.Tap(context.Background(), scanner.Frame{Scanner: "front", Text: code, Time: time.Now()}); out.Reason == record.ReasonDenied {
		t.Fatalf("rider denied before the change: %+v", out)
	}
	v3 := change(t, src, p, record.DenyEntry{Account: rider, Reason: "fraud"})
	waitFor(t, "the live change applied", func() bool {
		return d.a.Versions()[record.DenyShardKey(record.DenyShardOf(rider))] == v3
	})
	quiet()
	if st := u.Stats(); st.DenyShardMessages != 4 {
		t.Errorf("after a live change to one shard: %d shard messages, want 4", st.DenyShardMessages)
	}
	code = w.issuer.Rider(t, rider, time.Now()).Code(t, time.Now())
	if out := d.a.Tap(context.Background(), scanner.Frame{Scanner: "front", Text: code, Time: time.Now()}); out.Reason != record.ReasonDenied {
		t.Errorf("rider tapped after the live deny: %+v, want %s", out, record.ReasonDenied)
	}
	if err := r.Stop(waitTimeout); err != nil {
		t.Error(err)
	}
}

// publishRaw publishes a retained message as a client of its own.
func publishRaw(t *testing.T, url, topic string, msg []byte) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(uniqueName("raw-")).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(250)
	if tok := c.Publish(topic, 1, true, msg); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// sealed makes a downlink signed with key.
func sealed(t *testing.T, key []byte, kind string, version uint64, body []byte) []byte {
	t.Helper()
	p, err := (&wire.Downlink{Kind: kind, Version: version, IssuedAt: time.Now(), Body: body}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := wire.Seal(wire.TypeDownlink, p, true, key)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// TestDenyIndexForgedOrOlder: an index with a forged signature, or older
// than one the device accepted, is refused and changes nothing (no
// subscription, no shard); a newer signed index naming older shard
// versions (all 0) makes the device drop nothing.
func TestDenyIndexForgedOrOlder(t *testing.T) {
	w := newWorld(t, "")
	src, _ := denyIndexWorld(t, w)
	d := w.newIndexDevice()
	u, _ := d.connect(indexWait)
	waitFor(t, "every shard applied", func() bool { return d.shardsAt(src.version) })
	entries := d.a.DenyEntries()
	topic := wire.Topics{Prefix: w.prefix}.DenyIndex()

	var ahead record.DenyIndex
	for n := range ahead.Versions {
		ahead.Versions[n] = src.version + 100
	}
	body, _ := ahead.MarshalBinary()
	for name, msg := range map[string][]byte{
		"forged signature": sealed(t, newKey(t), record.DocDenyIndex, src.version+100, body),
		"older version":    sealed(t, w.fleet, record.DocDenyIndex, src.version-1, body),
		"a shard's kind":   sealed(t, w.fleet, record.DocDenyShard, src.version+100, body),
	} {
		before := u.Stats()
		publishRaw(t, w.url, topic, msg)
		waitFor(t, name+" refused", func() bool { return u.Stats().DownlinksRefused > before.DownlinksRefused })
		quiet()
		st := u.Stats()
		if st.DenyShardSubscriptions != before.DenyShardSubscriptions || st.DenyShardMessages != before.DenyShardMessages ||
			st.DenyIndexes != before.DenyIndexes {
			t.Errorf("%s: %d → %d subscriptions, %d → %d shard messages, %d → %d indexes; want no change", name,
				before.DenyShardSubscriptions, st.DenyShardSubscriptions, before.DenyShardMessages, st.DenyShardMessages,
				before.DenyIndexes, st.DenyIndexes)
		}
		if !d.shardsAt(src.version) || d.a.DenyEntries() != entries {
			t.Errorf("%s: the deny list changed", name)
		}
	}

	// A newer signed index that names every shard at 0: nothing to fetch,
	// nothing dropped.
	before := u.Stats()
	body, _ = (&record.DenyIndex{}).MarshalBinary()
	publishRaw(t, w.url, topic, sealed(t, w.fleet, record.DocDenyIndex, src.version+1, body))
	waitFor(t, "the zero index taken", func() bool { return u.Stats().DenyIndexes > before.DenyIndexes })
	quiet()
	if st := u.Stats(); st.DenyShardSubscriptions != before.DenyShardSubscriptions || !d.shardsAt(src.version) || d.a.DenyEntries() != entries {
		t.Errorf("an index of older shards changed the device: %d subscriptions (was %d), %d entries (was %d)",
			st.DenyShardSubscriptions, before.DenyShardSubscriptions, d.a.DenyEntries(), entries)
	}
}

// TestDenyIndexFallback: from a server that publishes shards but no index
// (an older one), a device waits DenyIndexWait, then takes every shard.
func TestDenyIndexFallback(t *testing.T) {
	w := newWorld(t, "")
	topics := wire.Topics{Prefix: w.prefix}
	const v = 7
	shards := record.DenyShards([]record.DenyEntry{{Account: 4242, Reason: "fraud"}, {Account: 99, Serial: 2, Reason: "lost_phone"}}, w.now)
	for _, a := range []uint64{4242, 99} {
		n := record.DenyShardOf(a)
		body, err := shards[n].MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		publishRaw(t, w.url, topics.DenyShard(n), sealed(t, w.fleet, record.DocDenyShard, v, body))
	}
	d := w.newIndexDevice()
	start := time.Now()
	u, _ := d.connect(300 * time.Millisecond)
	waitFor(t, "the shards applied after the fallback", func() bool { return d.a.DenyEntries() == 2 })
	if st := u.Stats(); st.DenyIndexFallbacks != 1 || st.DenyIndexes != 0 || st.DenyShardMessages != 2 {
		t.Errorf("fallback: %d fallbacks, %d indexes, %d shard messages; want 1, 0, 2", st.DenyIndexFallbacks, st.DenyIndexes, st.DenyShardMessages)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("shards after %v, before DenyIndexWait", waited)
	}
}

// TestDenyIndexFallbackWholeList: from a server that publishes the deny
// list whole only (no shards, no index), a device waits DenyIndexWait,
// then takes the whole list.
func TestDenyIndexFallbackWholeList(t *testing.T) {
	w := newWorld(t, "")
	entries := []record.DenyEntry{{Account: 4242, Reason: "fraud"}, {Account: 99, Serial: 2, Reason: "lost_phone"}}
	body, err := json.Marshal(record.DenyList{Version: 7, Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, w.url, wire.Topics{Prefix: w.prefix}.Fleet(record.DocDenyList), sealed(t, w.fleet, record.DocDenyList, 7, body))
	d := w.newIndexDevice()
	u, _ := d.connect(300 * time.Millisecond)
	waitFor(t, "the whole list applied after the fallback", func() bool { return d.a.DenyEntries() == 2 })
	if st := u.Stats(); st.DenyIndexFallbacks != 1 || st.DownlinksApplied != 1 {
		t.Errorf("fallback: %d fallbacks, %d applied; want 1, 1", st.DenyIndexFallbacks, st.DownlinksApplied)
	}
}
