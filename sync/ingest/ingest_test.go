package ingest

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

func TestBatchCommittedAndAcked(t *testing.T) {
	w := newWorld(t, "")
	in := w.start(w.config())
	d := w.newDevice(true)

	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 10))
	a := d.nextAck()
	if got, want := seqsOf(a.Ranges), []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(got, want) {
		t.Errorf("ack covers %v, want %v", got, want)
	}
	if a.Epoch != d.epoch {
		t.Errorf("ack epoch %q, want %q", a.Epoch, d.epoch)
	}
	w.store.checkTaps(t, d.id, 10)
	tp, _ := w.store.tap(tapKey(d.id, 3))
	if tp.Tap == nil || tp.Code == nil || tp.Tap.Seq != 3 || tp.CodeHash != paycode.ShortHash(tp.CodeText) ||
		!strings.HasPrefix(tp.CodeText, paycode.TextPrefix) || len(tp.Record) == 0 {
		t.Errorf("committed tap = %+v", tp)
	}

	// The same batch again (a lost ack): committed again, acked again.
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 10))
	d.nextAck()
	w.store.checkTaps(t, d.id, 10)
	// The ack is counted once the broker took it, maybe after the device got it.
	waitFor(t, "the second ack counted", func() bool { return in.Stats().Acks == 2 })
	st := in.Stats()
	if st.Batches != 2 || st.Taps != 20 || st.Acks != 2 || st.Verdicts[""] != 20 {
		t.Errorf("Stats = %+v, want 2 batches, 20 valid taps, 2 acks", st)
	}
	d.noAck()
}

func TestRefusedWithoutAck(t *testing.T) {
	w := newWorld(t, "")
	in := w.start(w.config())
	good := w.newDevice(true)
	for _, tc := range []struct {
		name   string
		reason string
		send   func(d *device)
	}{
		{"unknown device", RejectUnknownDevice, func(d *device) {
			d.publish(d.topic(wire.KindTaps), d.validBatch(1, 3))
		}},
		{"bad signature", RejectBadSignature, func(d *device) {
			w.store.addDevice(d.id, pubOf(d.key))
			d.publish(d.topic(wire.KindTaps), d.batch(newKey(t), wire.Record{Seq: 1, Data: d.validTap(1)}))
		}},
		{"not an envelope", RejectMalformed, func(d *device) {
			w.store.addDevice(d.id, pubOf(d.key))
			d.publish(d.topic(wire.KindTaps), []byte("hello"))
		}},
		{"a status on the taps topic", RejectMalformed, func(d *device) {
			w.store.addDevice(d.id, pubOf(d.key))
			p, _ := (&wire.Status{DeviceID: d.id}).MarshalBinary()
			msg, _ := wire.Seal(wire.TypeStatus, p, false, d.key)
			d.publish(d.topic(wire.KindTaps), msg)
		}},
		{"batch of another device", RejectDeviceMismatch, func(d *device) {
			// good's batch, signed with good's key, on d's topic with d's key registered as good's.
			w.store.addDevice(d.id, pubOf(good.key))
			d.publish(d.topic(wire.KindTaps), good.validBatch(1, 2))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := w.newDevice(false)
			before := in.Stats().Rejects[tc.reason]
			tc.send(d)
			waitFor(t, "the reject", func() bool { return in.Stats().Rejects[tc.reason] == before+1 })
			if _, ok := w.store.tap(tapKey(d.id, 1)); ok {
				t.Error("a refused batch was committed")
			}
			// The refusal is counted before anything could be acked: an
			// ack would have to be waiting already.
			d.noAck()
		})
	}
	if st := in.Stats(); st.Batches != 0 || st.Acks != 0 {
		t.Errorf("Stats = %+v, want no batch and no ack", st)
	}
	good.noAck()
}

func TestMalformedRecordStillAcked(t *testing.T) {
	w := newWorld(t, "")
	in := w.start(w.config())
	d := w.newDevice(true)
	other := w.newDevice(true)
	wrongSeq := d.validTap(7) // a record of seq 7 sent as seq 3
	d.publish(d.topic(wire.KindTaps), d.batch(nil,
		wire.Record{Seq: 1, Data: d.validTap(1)},
		wire.Record{Seq: 2, Data: []byte("not a tap record")},
		wire.Record{Seq: 3, Data: wrongSeq},
		wire.Record{Seq: 4, Data: other.validTap(4)}, // another device's record
		wire.Record{Seq: 9, Data: d.validTap(9)},
	))
	a := d.nextAck()
	if got, want := seqsOf(a.Ranges), []uint64{1, 2, 3, 4, 9}; !slices.Equal(got, want) {
		t.Errorf("ack covers %v, want %v", got, want)
	}
	for seq, want := range map[uint64]paycode.Reason{1: "", 2: VerdictMalformedRecord, 3: VerdictMalformedRecord, 4: VerdictMalformedRecord, 9: ""} {
		tp, ok := w.store.tap(tapKey(d.id, seq))
		if !ok {
			t.Errorf("tap %d not committed", seq)
			continue
		}
		if tp.Verdict != want {
			t.Errorf("tap %d verdict %q, want %q", seq, tp.Verdict, want)
		}
		if (tp.Tap == nil) != (want == VerdictMalformedRecord) || len(tp.Record) == 0 {
			t.Errorf("tap %d: Tap %v, Record %d bytes", seq, tp.Tap, len(tp.Record))
		}
	}
	if st := in.Stats(); st.Verdicts[string(VerdictMalformedRecord)] != 3 {
		t.Errorf("verdicts %v, want 3 malformed", st.Verdicts)
	}
}

// TestVerdicts re-verifies codes through the whole path: the verdicts reach
// the store, and the batch is acked whatever they are.
func TestVerdicts(t *testing.T) {
	w := newWorld(t, "")
	w.start(w.config())
	d := w.newDevice(true)
	at := w.now.Add(-time.Hour)
	r := d.riders[0]
	tampered := func() []byte {
		code, err := paycode.MakeCode(r.Credential, r.Key, at, 99)
		if err != nil {
			t.Fatal(err)
		}
		code[len(code)-1] ^= 1
		return code
	}()
	stranger := paycodetest.NewIssuer(t, 7, w.now).Rider(t, 5000, w.now) // same key id, another issuer's key
	strangerCode, err := paycode.MakeCode(stranger.Credential, stranger.Key, at, 1)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		rec  []byte
		want paycode.Reason
	}{
		{"valid at its tap time, an hour ago", d.tap(1, at.Add(-30*time.Second), at), ""},
		{"bad rider signature", d.record(2, tampered, r, at), paycode.ReasonBadCodeSignature},
		{"expired at its tap time", d.tap(3, at.Add(-10*time.Minute), at), paycode.ReasonCodeExpired},
		{"from the future at its tap time", d.tap(4, at.Add(10*time.Minute), at), paycode.ReasonCodeFromFuture},
		{"issuer key not in the server's keyring", d.record(5, strangerCode, stranger, at), paycode.ReasonBadCredentialSignature},
	}
	var recs []wire.Record
	for i, tc := range cases {
		recs = append(recs, wire.Record{Seq: uint64(i + 1), Data: tc.rec})
	}
	d.publish(d.topic(wire.KindTaps), d.batch(nil, recs...))
	if got := seqsOf(d.nextAck().Ranges); len(got) != len(cases) {
		t.Errorf("ack covers %v, want all %d records", got, len(cases))
	}
	for i, tc := range cases {
		tp, ok := w.store.tap(tapKey(d.id, uint64(i+1)))
		if !ok {
			t.Errorf("%s: not committed", tc.name)
			continue
		}
		if tp.Verdict != tc.want {
			t.Errorf("%s: verdict %q, want %q", tc.name, tp.Verdict, tc.want)
		}
	}
}

// TestVerdictTable checks the re-verification of single records, without a
// broker.
func TestVerdictTable(t *testing.T) {
	w := newWorld(t, "nobroker")
	in, err := New(w.config(), w.store)
	if err != nil {
		t.Fatal(err)
	}
	d := &device{w: w, id: "bus-1", key: newKey(t), epoch: "e1"}
	d.riders = append(d.riders, w.issuer.Rider(t, 4242, w.now))
	at := w.now
	for _, tc := range []struct {
		name    string
		rec     []byte
		epoch   string
		keyring *paycode.Keyring
		want    paycode.Reason
	}{
		{"valid", d.tap(1, at.Add(-time.Minute), at), "e1", w.issuer.Keyring, ""},
		{"code 121 s old", d.tap(1, at.Add(-121*time.Second), at), "e1", w.issuer.Keyring, paycode.ReasonCodeExpired},
		{"no keyring", d.tap(1, at, at), "e1", nil, paycode.ReasonUnknownIssuerKey},
		{"another epoch", d.tap(1, at, at), "e2", w.issuer.Keyring, VerdictMalformedRecord},
		{"truncated", d.tap(1, at, at)[:50], "e1", w.issuer.Keyring, VerdictMalformedRecord},
		{"empty", nil, "e1", w.issuer.Keyring, VerdictMalformedRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := in.check(d.id, tc.epoch, wire.Record{Seq: 1, Data: tc.rec}, tc.keyring)
			if got.Verdict != tc.want {
				t.Errorf("verdict %q, want %q", got.Verdict, tc.want)
			}
			if got.ID != record.TapID("bus-1", tc.epoch, 1) || (got.Tap == nil) != (tc.want == VerdictMalformedRecord) {
				t.Errorf("tap = %+v", got)
			}
		})
	}
}

func TestCommitFailureNotAcked(t *testing.T) {
	w := newWorld(t, "")
	w.store.failFirst = 1
	in := w.start(w.config())
	d := w.newDevice(true)

	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 5))
	waitFor(t, "the failed commit", func() bool { return in.Stats().Rejects[RejectCommitFailed] == 1 })
	d.noAck()
	if n := w.store.tapCount(); n != 0 {
		t.Errorf("store has %d taps after a failed commit", n)
	}

	// The device sends the batch again: now it is committed and acked.
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 5))
	a := d.nextAck()
	if got := seqsOf(a.Ranges); len(got) != 5 {
		t.Errorf("ack covers %v, want 1-5", got)
	}
	w.store.checkTaps(t, d.id, 5)
	d.noAck()
}

func TestStoreErrorNotAcked(t *testing.T) {
	w := newWorld(t, "")
	in := w.start(w.config())
	d := w.newDevice(true)
	w.store.mu.Lock()
	w.store.keyErr = errors.New("database is down")
	w.store.mu.Unlock()
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 2))
	waitFor(t, "the store error", func() bool { return in.Stats().Rejects[RejectStoreError] == 1 })
	d.noAck()
}

func TestStatusRecorded(t *testing.T) {
	w := newWorld(t, "")
	in := w.start(w.config())
	d := w.newDevice(true)
	st := wire.Status{DeviceID: d.id, Online: true, Time: time.Now().UTC().Truncate(time.Second), QueueDepth: 12, LastSeq: 40}
	p, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := wire.Seal(wire.TypeStatus, p, true, d.key)
	if err != nil {
		t.Fatal(err)
	}
	d.publish(d.topic(wire.KindStatus), msg)
	waitFor(t, "the status", func() bool { return w.store.status(d.id) != nil })
	if got := w.store.status(d.id); got.QueueDepth != 12 || got.LastSeq != 40 || !got.Online {
		t.Errorf("status = %+v", got)
	}

	// Another device's status, or a forged one, is refused.
	forged, _ := wire.Seal(wire.TypeStatus, p, false, newKey(t))
	d.publish(d.topic(wire.KindStatus), forged)
	waitFor(t, "the forged status refused", func() bool { return in.Stats().Rejects[RejectBadSignature] == 1 })
	if n := in.Stats().Statuses; n != 1 {
		t.Errorf("%d statuses recorded, want 1", n)
	}

	// A status whose assignment, update report, reason, versions or
	// salvage report is malformed is refused and changes nothing, signed by
	// the device all the same.
	for i, edit := range []func(s *wire.Status){
		func(s *wire.Status) {
			s.Assignment = &wire.StatusAssignment{Route: "42\n", Source: wire.AssignSourceLocal}
		},
		func(s *wire.Status) {
			s.Assignment = &wire.StatusAssignment{Route: "42", Source: "operator"}
		},
		func(s *wire.Status) { s.Update = &wire.UpdateStatus{Pending: "<script>"} },
		func(s *wire.Status) { s.Software = "1.4.0 \x1b[31m" },
		func(s *wire.Status) { s.Update = &wire.UpdateStatus{FailedReason: "no version"} },
		func(s *wire.Status) { s.Epoch = strings.Repeat("e", 65) },
		func(s *wire.Status) { s.Versions = map[string]uint64{"fares\n": 1} },
		func(s *wire.Status) {
			s.Salvage = &wire.SalvageStatus{File: "../../queue.db", At: time.Now()}
		},
	} {
		bad := st
		bad.QueueDepth = 99
		edit(&bad)
		p, err := bad.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		msg, err := wire.Seal(wire.TypeStatus, p, false, d.key)
		if err != nil {
			t.Fatal(err)
		}
		d.publish(d.topic(wire.KindStatus), msg)
		waitFor(t, "the malformed status refused", func() bool { return in.Stats().Rejects[RejectMalformed] == uint64(i+1) })
	}
	if got := w.store.status(d.id); got.QueueDepth != 12 || in.Stats().Statuses != 1 {
		t.Errorf("after malformed statuses: status %+v, %d recorded; want the first", got, in.Stats().Statuses)
	}
}

func TestReplay(t *testing.T) {
	w := newWorld(t, "")
	in := w.start(w.config())
	d := w.newDevice(true)
	got := make(chan *wire.Replay, 1)
	tok := d.c.Subscribe(d.topic(wire.KindCmd), 1, func(_ mqtt.Client, m mqtt.Message) {
		p, err := wire.Open(m.Payload(), wire.TypeReplay, pubOf(w.fleet))
		if err != nil {
			t.Errorf("replay: %v", err)
			return
		}
		r, err := wire.ParseReplay(p)
		if err != nil {
			t.Errorf("replay: %v", err)
			return
		}
		got <- r
	})
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := in.Replay(ctx, d.id, d.epoch, 5, 90); err != nil {
		t.Fatal(err)
	}
	// The request with its id and its copy for validators from before
	// ids (version 1, id 0); a second request has a higher id.
	ids := func() (withID uint64, copies int) {
		t.Helper()
		for i := range 2 {
			select {
			case r := <-got:
				if r.DeviceID != d.id || r.Epoch != d.epoch || r.From != 5 || r.To != 90 {
					t.Errorf("replay message %d = %+v", i, r)
				}
				if r.ID == 0 {
					copies++
				} else {
					withID = r.ID
				}
			case <-time.After(waitTimeout):
				t.Fatalf("no replay message %d", i)
			}
		}
		return withID, copies
	}
	first, copies := ids()
	if first == 0 || copies != 1 {
		t.Errorf("a request: id %d and %d copies without one; want an id and one copy", first, copies)
	}
	if err := in.Replay(ctx, d.id, d.epoch, 5, 90); err != nil {
		t.Fatal(err)
	}
	if second, _ := ids(); second <= first {
		t.Errorf("second request's id %d, want above the first's %d", second, first)
	}
	if err := in.Replay(ctx, d.id, d.epoch, 9, 2); err == nil {
		t.Error("Replay with from > to succeeded")
	}
}

func TestReplayNotConnected(t *testing.T) {
	w := newWorld(t, "nobroker")
	in, err := New(w.config(), w.store)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Replay(context.Background(), "bus-1", "e", 1, 2); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Replay = %v, want ErrNotConnected", err)
	}
}

func TestQueueFullDrops(t *testing.T) {
	w := newWorld(t, "")
	cfg := w.config()
	cfg.Workers, cfg.QueueSize = 1, 1
	entered, release := w.store.holdCommits()
	in := w.start(cfg)
	d := w.newDevice(true)
	// One batch blocks the worker in Commit, one waits in the queue; the
	// rest are dropped.
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 1))
	<-entered
	for seq := uint64(2); seq <= 6; seq++ {
		d.publish(d.topic(wire.KindTaps), d.validBatch(seq, seq))
	}
	waitFor(t, "drops", func() bool { return in.Stats().Rejects[RejectQueueFull] >= 1 })
	release()
	waitFor(t, "every batch acked or dropped", func() bool {
		st := in.Stats()
		return st.Rejects[RejectQueueFull]+st.Acks == 6
	})
	if st := in.Stats(); st.Acks < 2 {
		t.Errorf("%d acks, want the blocked batch and the queued one at least", st.Acks)
	}
}

func TestConfig(t *testing.T) {
	base := Config{
		MQTTConfig: MQTTConfig{Brokers: []string{"tcp://127.0.0.1:1883"}},
		FleetKey:   newKey(t),
		Keyring:    func() *paycode.Keyring { return nil },
	}
	if _, err := New(base, newMemStore()); err != nil {
		t.Fatalf("New(minimal) = %v", err)
	}
	for _, tc := range []struct {
		name string
		set  func(*Config)
	}{
		{"no broker", func(c *Config) { c.Brokers = nil }},
		{"bad scheme", func(c *Config) { c.Brokers = []string{"http://127.0.0.1:1883"} }},
		{"no port", func(c *Config) { c.Brokers = []string{"tcp://127.0.0.1"} }},
		{"no fleet key", func(c *Config) { c.FleetKey = nil }},
		{"no keyring", func(c *Config) { c.Keyring = nil }},
		{"wildcard prefix", func(c *Config) { c.TopicPrefix = "a/#" }},
		{"group with a slash", func(c *Config) { c.SharedGroup = "a/b" }},
		{"password without user", func(c *Config) { c.Password = "x" }},
		{"too many workers", func(c *Config) { c.Workers = 100000 }},
		{"negative queue", func(c *Config) { c.QueueSize = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.set(&cfg)
			if _, err := New(cfg, newMemStore()); !errors.Is(err, ErrConfig) {
				t.Errorf("New = %v, want ErrConfig", err)
			}
		})
	}
	if _, err := New(base, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("New(nil store) = %v, want ErrConfig", err)
	}
	in, _ := New(base, newMemStore())
	if got := in.filters; !slices.Equal(got, []string{"$share/settlement/farego/dev/+/taps", "$share/settlement/farego/dev/+/status"}) {
		t.Errorf("filters %v", got)
	}
	base.NoSharedSubscription = true
	in, _ = New(base, newMemStore())
	if got := in.filters; !slices.Equal(got, []string{"farego/dev/+/taps", "farego/dev/+/status"}) {
		t.Errorf("filters without sharing %v", got)
	}
}

func TestRunTwice(t *testing.T) {
	w := newWorld(t, "")
	r := w.start(w.config())
	if err := r.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	// Stopped, it runs again (a fresh paho client) and works.
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	w.start(w.config())
	d := w.newDevice(true)
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 1))
	d.nextAck()
}

// TestBrokerRestart: the ingest reconnects by itself and subscribes again.
func TestBrokerRestart(t *testing.T) {
	w := newWorld(t, "")
	in := w.start(w.config())
	w.broker.Restart()
	waitFor(t, "the ingest to resubscribe", func() bool { return w.broker.Connected(in.cfg.ClientID) && in.Connected() })
	d := w.newDevice(true)
	// The resubscription may still be on its way: send until acked.
	deadline := time.Now().Add(waitTimeout)
	for {
		d.publish(d.topic(wire.KindTaps), d.validBatch(1, 1))
		select {
		case <-d.acks:
			return
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatal("no ack after the broker restarted")
		}
	}
}

// lineCounter is a log destination that counts lines containing a text.
type lineCounter struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func (l *lineCounter) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// TestConnectLogging: a broker that is down at start is logged once, and
// the recovery once.
func TestConnectLogging(t *testing.T) {
	w := newWorld(t, "")
	w.broker.Stop()
	logs := &lineCounter{}
	cfg := w.config()
	cfg.MaxReconnectInterval = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	in, err := New(cfg, w.store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, "the first warning", func() bool { return logs.count("cannot connect") >= 1 })
	w.broker.Restart()
	waitFor(t, "the connection", in.Connected)
	if n := logs.count("cannot connect"); n != 1 {
		t.Errorf("%d warnings about connecting, want 1", n)
	}
	if n := logs.count("ingest connected after"); n != 1 {
		t.Errorf("%d recovery lines, want 1: %q", n, logs.lines)
	}
}

// TestCommittingSaysCommitsFail: while the Store refuses every commit (a
// full disk, a read-only ledger, a database gone) the broker connection is
// fine, so the server's health said "ok" while no batch was acked.
// Committing says so, since when and why, and is nil again after the next
// commit succeeds.
func TestCommittingSaysCommitsFail(t *testing.T) {
	w := newWorld(t, "")
	w.store.failFirst = 2
	in := w.start(w.config())
	d := w.newDevice(true)
	if err := in.Committing(); err != nil {
		t.Fatalf("Committing before any commit: %v", err)
	}
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 5))
	waitFor(t, "the failed commit", func() bool { return in.Stats().Rejects[RejectCommitFailed] == 1 })
	err := in.Committing()
	if err == nil || !strings.Contains(err.Error(), "commits failing since") {
		t.Fatalf("Committing after a failed commit: %v; want an error", err)
	}
	d.noAck()
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 5))
	waitFor(t, "the second failed commit", func() bool { return in.Stats().Rejects[RejectCommitFailed] == 2 })
	if err := in.Committing(); err == nil || !strings.Contains(err.Error(), "2 failures") {
		t.Errorf("Committing after two failed commits: %v", err)
	}
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 5))
	d.nextAck()
	if err := in.Committing(); err != nil {
		t.Errorf("Committing after a commit succeeded: %v; want nil", err)
	}
}

// TestCommittingForgetsAStaleFailure: one commit failing in a quiet
// period (the last bus's batch at the depot, then nothing all night) held
// /healthz's "commits" at 503 until the next commit, hours later, with no
// commit failing all that time. While commits keep failing the devices
// send their batches again (within their ack timeout) and it stays
// failing; once none has been tried for CommitFailureStale it is nil.
func TestCommittingForgetsAStaleFailure(t *testing.T) {
	w := newWorld(t, "")
	w.store.failFirst = 1
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	cfg := w.config()
	cfg.Now = clock
	in := w.start(cfg)
	d := w.newDevice(true)
	d.publish(d.topic(wire.KindTaps), d.validBatch(1, 5))
	waitFor(t, "the failed commit", func() bool { return in.Stats().Rejects[RejectCommitFailed] == 1 })
	if err := in.Committing(); err == nil {
		t.Fatal("Committing right after a failed commit: nil; want an error")
	}
	advance(CommitFailureStale / 2)
	if err := in.Committing(); err == nil {
		t.Error("Committing a while after a failed commit: nil; want an error")
	}
	advance(CommitFailureStale)
	if err := in.Committing(); err != nil {
		t.Errorf("Committing with no commit tried for %v since one failed: %v; want nil", CommitFailureStale*3/2, err)
	}
}
