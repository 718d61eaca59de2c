package uplink

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/wire"
)

// serverFor connects a test server for f's device to f's broker.
func serverFor(f *fixture) *testServer {
	f.tb.Helper()
	return newTestServer(f.tb, serverOptions{url: f.broker.URL()}, f.prefix, f.fleet,
		map[string]ed25519.PublicKey{f.id: pubOf(f.dev)})
}

func TestDrain(t *testing.T) {
	f := newFixture(t, nil)
	srv := serverFor(f)
	appendTaps(t, f.q, f.taps, 450)
	u := f.start()

	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	// More taps while connected, announced with Notify.
	appendTaps(t, f.q, f.taps, 50)
	u.Notify()
	waitFor(t, "the new taps to drain", func() bool { return queueCount(t, f.q) == 0 })
	srv.check(t, f.id, 500)
	waitFor(t, "SyncSucceeded", func() bool { return f.state.syncCount() > 0 })
	// The counters follow the queue's commit.
	waitFor(t, "the acks to be counted", func() bool { return u.Stats().RecordsAcked == 500 })

	st := u.Stats()
	if !st.Connected || st.Connects != 1 || st.RecordsAcked != 500 || st.InFlight != 0 {
		t.Errorf("Stats = %+v, want connected once, 500 records acked, none in flight", st)
	}
	if st.MessagesRefused != 0 || st.DownlinksRefused != 0 {
		t.Errorf("Stats = %+v, want nothing refused", st)
	}
	qs, err := f.q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if qs.Archived != 500 {
		t.Errorf("queue archive holds %d records, want the 500 acked", qs.Archived)
	}
}

func TestBrokerDownAndBack(t *testing.T) {
	f := newFixture(t, nil)
	srv := serverFor(f)
	appendTaps(t, f.q, f.taps, 200)
	u := f.start()
	waitFor(t, "some taps to be delivered", func() bool { return srv.unique() > 0 })

	f.broker.Stop()
	waitFor(t, "the uplink to notice", func() bool { return !u.Connected() })
	// Taps go on while the broker is down.
	appendTaps(t, f.q, f.taps, 300)
	waitFor(t, "failed connection attempts", func() bool { return u.Stats().ConnectFailures >= 3 })
	if n := queueCount(t, f.q); n == 0 {
		t.Fatal("queue drained while the broker was down")
	}

	f.broker.Restart()
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	srv.check(t, f.id, 500)
	if st := u.Stats(); st.Connects < 2 || st.LastError == "" {
		t.Errorf("Stats = %+v, want at least 2 connects and the last error", st)
	}
	if !f.logs.contains("uplink connected after") {
		t.Error(`no "uplink connected after N failed attempts" in the log`)
	}
}

func TestAckLostResends(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.AckTimeout = 300 * time.Millisecond
	srv := serverFor(f)
	srv.setDropAcks(3)
	appendTaps(t, f.q, f.taps, 300)
	u := f.start()

	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	srv.check(t, f.id, 300)
	if st := u.Stats(); st.AckTimeouts == 0 {
		t.Errorf("Stats = %+v, want ack timeouts", st)
	}
	if got := srv.totalReceived(); got <= 300 {
		t.Errorf("server received %d records, want duplicates beyond the 300 taps", got)
	}
}

// TestAckTimeoutsInRow: a server that takes none of the device's batches
// (a device key that is not the one registered: it answers nothing) leaves
// the device connected and resending; AckTimeoutsInRow counts the run of
// timeouts for ctl status to say so, and is 0 again once an ack comes.
func TestAckTimeoutsInRow(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.AckTimeout = 100 * time.Millisecond
	srv := serverFor(f)
	srv.setDropAcks(1 << 30)
	appendTaps(t, f.q, f.taps, 10)
	u := f.start()
	waitFor(t, "three ack timeouts in a row", func() bool { return u.Stats().AckTimeoutsInRow >= 3 })
	srv.setDropAcks(0)
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	if st := u.Stats(); st.AckTimeoutsInRow != 0 || !st.Connected {
		t.Errorf("after an ack: AckTimeoutsInRow %d, connected %v; want 0, true", st.AckTimeoutsInRow, st.Connected)
	}
}

// TestBusyServerNoResend: a server working through a backlog acks a
// device's window batch by batch, the last ones later than the ack timeout
// after they were sent but each within it of the ack before. The window
// is not sent again: the timer runs from the last ack that took records
// out. Timed from the send, the fourth batch of the first window timed out
// while the acks were coming in, and the whole window was sent twice.
func TestBusyServerNoResend(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.AckTimeout = 1500 * time.Millisecond
	f.cfg.MaxInFlight = 4
	f.cfg.BatchRecords = 10
	srv := serverFor(f)
	srv.setBusy(400 * time.Millisecond) // the window of 4: acked at 0.4, 0.8, 1.2 and 1.6 s
	appendTaps(t, f.q, f.taps, 80)
	u := f.start()

	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	srv.check(t, f.id, 80)
	if st := u.Stats(); st.AckTimeouts != 0 {
		t.Errorf("Stats = %+v, want no ack timeout", st)
	}
	if got := srv.totalReceived(); got != 80 {
		t.Errorf("server received %d records, want the 80 taps once each", got)
	}
}

// TestAckCommitFailureBacksOff: acks that fail to commit (the device's
// disk is full) leave the records queued and are tried again, spaced by a
// growing wait. The window used to be resent at once, acked, failed again:
// a hundred log lines a second, and the broker shut the device out for
// flooding.
func TestAckCommitFailureBacksOff(t *testing.T) {
	f := newFixture(t, nil)
	srv := serverFor(f)
	appendTaps(t, f.q, f.taps, 5)
	logs := &lockedLog{}
	f.cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	u, err := New(f.cfg, f.q, f.state)
	if err != nil {
		t.Fatal(err)
	}
	var full atomic.Bool
	full.Store(true)
	u.acks.fault = func() error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}
	runUplink(t, u)
	waitFor(t, "the first batch", func() bool { return srv.totalReceived() >= 5 })
	time.Sleep(3 * time.Second)
	if got := srv.totalReceived(); got > 5*4 {
		t.Errorf("%d records received in 3 s of failing acks; want a few resends (1 s, 2 s apart), not a loop", got)
	}
	if n := strings.Count(logs.String(), "queue error"); n != 1 {
		t.Errorf("%d queue-error lines; want one for the run of them:\n%s", n, logs.String())
	}
	if n := queueCount(t, f.q); n != 5 {
		t.Errorf("%d records queued; want the 5, unacked", n)
	}
	full.Store(false) // space freed: the next resend's ack commits
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	srv.check(t, f.id, 5)
}

// lockedLog is a log sink safe for the uplink's goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestNoAckNothingDeleted(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.AckTimeout = 200 * time.Millisecond
	srv := serverFor(f)
	srv.setMute(true)
	appendTaps(t, f.q, f.taps, 120)
	u := f.start()

	waitFor(t, "every tap to be sent twice", func() bool {
		for seq := 1; seq <= 120; seq++ {
			if srv.times(tapKey(f.id, uint64(seq))) < 2 {
				return false
			}
		}
		return true
	})
	if n := queueCount(t, f.q); n != 120 {
		t.Fatalf("queue has %d records without any ack, want 120", n)
	}
	if st := u.Stats(); st.RecordsAcked != 0 || st.AckTimeouts == 0 {
		t.Errorf("Stats = %+v, want nothing acked and ack timeouts", st)
	}
	if f.state.syncCount() != 0 {
		t.Error("SyncSucceeded called without acks")
	}

	// The server comes back: everything goes.
	srv.setMute(false)
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	srv.check(t, f.id, 120)
}

func TestDownlinks(t *testing.T) {
	f := newFixture(t, nil)
	u := f.start()
	waitFor(t, "connection", u.Connected)
	forger := newKey(t)
	keyring := f.fleetTopic(record.DocKeyring)
	publish := func(topic string, msg []byte) {
		t.Helper()
		if err := f.broker.Publish(topic, msg, true, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Each step publishes one message and waits for its outcome.
	for i, step := range []struct {
		name   string
		topic  string
		msg    []byte
		faulty bool // Apply fails
		want   func(Stats) bool
	}{
		{"good", keyring, signedDownlink(t, f.fleet, record.DocKeyring, 5, `{"v":5}`), false,
			func(s Stats) bool { return s.DownlinksApplied == 1 }},
		{"forged", keyring, signedDownlink(t, forger, record.DocKeyring, 6, `{"v":6}`), false,
			func(s Stats) bool { return s.DownlinksRefused == 1 }},
		{"older", keyring, signedDownlink(t, f.fleet, record.DocKeyring, 4, `{"v":4}`), false,
			func(s Stats) bool { return s.DownlinksRefused == 2 }},
		{"same again", keyring, signedDownlink(t, f.fleet, record.DocKeyring, 5, `{"v":5}`), false,
			func(s Stats) bool { return s.DownlinksUnchanged >= 1 }},
		{"malformed", keyring, []byte("FGW1 this is not a downlink at all, but long enough to look like one........................"), false,
			func(s Stats) bool { return s.DownlinksRefused == 3 }},
		{"kind not the topic's", keyring, signedDownlink(t, f.fleet, record.DocDenyList, 9, `{}`), false,
			func(s Stats) bool { return s.DownlinksRefused == 4 }},
		{"an ack on a fleet topic", keyring, seal(t, wire.TypeAck, &wire.Ack{DeviceID: f.id, Epoch: f.q.Epoch(), Ranges: []wire.Range{{From: 1, To: 1}}}, f.fleet), false,
			func(s Stats) bool { return s.DownlinksRefused == 5 }},
		{"Apply fails", keyring, signedDownlink(t, f.fleet, record.DocKeyring, 7, `{"v":7}`), true,
			func(s Stats) bool { return s.DownlinksRefused == 6 }},
		{"fares", f.fleetTopic(record.DocFares), signedDownlink(t, f.fleet, record.DocFares, 2, `{"v":2}`), false,
			func(s Stats) bool { return s.DownlinksApplied == 2 }},
	} {
		f.state.mu.Lock()
		f.state.applyErr = nil
		if step.faulty {
			f.state.applyErr = errors.New("fault injected")
		}
		f.state.mu.Unlock()
		publish(step.topic, step.msg)
		waitFor(t, fmt.Sprintf("step %d (%s)", i, step.name), func() bool { return step.want(u.Stats()) })
	}
	if got, want := f.state.appliedList(), []string{"keyring/5", "fares/2"}; !slices.Equal(got, want) {
		t.Errorf("applied %v, want %v", got, want)
	}
	// The applied versions reach the retained status.
	waitFor(t, "the status to show the versions", func() bool {
		msg, ok := f.broker.Retained(f.topic(wire.KindStatus))
		if !ok {
			return false
		}
		st, err := openStatus(msg, pubOf(f.dev))
		return err == nil && st.Versions[record.DocKeyring] == 5 && st.Versions[record.DocFares] == 2
	})

	// Reconnecting sees the retained downlinks again: not applied twice.
	publish(keyring, signedDownlink(t, f.fleet, record.DocKeyring, 5, `{"v":5}`))
	waitFor(t, "the keyring seen again", func() bool { return u.Stats().DownlinksUnchanged >= 2 })
	before := u.Stats()
	f.broker.Restart()
	waitFor(t, "reconnection", func() bool { s := u.Stats(); return s.Connected && s.Connects > before.Connects })
	publish(f.fleetTopic(record.DocDenyList), signedDownlink(t, f.fleet, record.DocDenyList, 1, `{}`))
	waitFor(t, "the deny list", func() bool { return u.Stats().DownlinksApplied == 3 })
	if got, want := f.state.appliedList(), []string{"keyring/5", "fares/2", "denylist/1"}; !slices.Equal(got, want) {
		t.Errorf("applied %v, want %v", got, want)
	}
}

func TestAcksAndCommandsChecked(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.AckTimeout = time.Hour // the window stays as it is
	appendTaps(t, f.q, f.taps, 10)
	u := f.start()
	waitFor(t, "the batch to be in flight", func() bool { return u.Stats().InFlight == 1 })
	forger := newKey(t)
	all := []wire.Range{{From: 1, To: 10}}
	for i, step := range []struct {
		name  string
		topic string
		msg   []byte
	}{
		{"forged ack", wire.KindAck, seal(t, wire.TypeAck, &wire.Ack{DeviceID: f.id, Epoch: f.q.Epoch(), Ranges: all}, forger)},
		{"ack signed by the device", wire.KindAck, seal(t, wire.TypeAck, &wire.Ack{DeviceID: f.id, Epoch: f.q.Epoch(), Ranges: all}, f.dev)},
		{"ack for another device", wire.KindAck, seal(t, wire.TypeAck, &wire.Ack{DeviceID: "other", Epoch: f.q.Epoch(), Ranges: all}, f.fleet)},
		{"ack for another epoch", wire.KindAck, seal(t, wire.TypeAck, &wire.Ack{DeviceID: f.id, Epoch: "0123", Ranges: all}, f.fleet)},
		{"garbage ack", wire.KindAck, []byte("garbage")},
		{"downlink on the ack topic", wire.KindAck, signedDownlink(t, f.fleet, record.DocKeyring, 1, `{}`)},
		{"forged replay", wire.KindCmd, seal(t, wire.TypeReplay, &wire.Replay{DeviceID: f.id, Epoch: f.q.Epoch(), From: 1, To: 5, ID: 1}, forger)},
		{"replay for another epoch", wire.KindCmd, seal(t, wire.TypeReplay, &wire.Replay{DeviceID: f.id, Epoch: "x", From: 1, To: 5, ID: 1}, f.fleet)},
		{"ack on the command topic", wire.KindCmd, seal(t, wire.TypeAck, &wire.Ack{DeviceID: f.id, Epoch: f.q.Epoch(), Ranges: all}, f.fleet)},
	} {
		if err := f.broker.Publish(f.topic(step.topic), step.msg, false, 1); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("step %d (%s) refused", i, step.name), func() bool { return u.Stats().MessagesRefused == uint64(i+1) })
	}
	if n := queueCount(t, f.q); n != 10 {
		t.Fatalf("queue has %d records after refused acks, want 10", n)
	}
	// A good ack for part of the batch deletes exactly that part.
	good := seal(t, wire.TypeAck, &wire.Ack{DeviceID: f.id, Epoch: f.q.Epoch(), Ranges: []wire.Range{{From: 2, To: 4}, {From: 9, To: 12}}}, f.fleet)
	if err := f.broker.Publish(f.topic(wire.KindAck), good, false, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the partial ack", func() bool { return u.Stats().RecordsAcked == 5 })
	recs, err := f.q.Peek(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var left []uint64
	for _, r := range recs {
		left = append(left, r.Seq)
	}
	if want := []uint64{1, 5, 6, 7, 8}; !slices.Equal(left, want) {
		t.Errorf("records left %v, want %v", left, want)
	}
}

func TestReplay(t *testing.T) {
	f := newFixture(t, nil)
	srv := serverFor(f)
	appendTaps(t, f.q, f.taps, 60)
	u := f.start()
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	before := srv.totalReceived()

	replay := seal(t, wire.TypeReplay, &wire.Replay{DeviceID: f.id, Epoch: f.q.Epoch(), From: 10, To: 29, ID: 1000}, f.fleet)
	if err := f.broker.Publish(f.topic(wire.KindCmd), replay, false, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replay", func() bool { return u.Stats().Replays == 1 })
	waitFor(t, "the replayed records to be acked again", func() bool {
		return srv.totalReceived() >= before+20 && queueCount(t, f.q) == 0
	})
	for seq := 10; seq <= 29; seq++ {
		if n := srv.times(tapKey(f.id, uint64(seq))); n < 2 {
			t.Errorf("tap %d received %d times, want again after the replay", seq, n)
		}
	}
	srv.check(t, f.id, 60)

	// A request without an id (the copy a server sends for validators
	// from before ids, or one from an older server) is ignored; the same
	// signed request sent again (kept by whoever could read the device's
	// commands) and an older one are refused: nothing is sent again.
	before = srv.totalReceived()
	older := seal(t, wire.TypeReplay, &wire.Replay{DeviceID: f.id, Epoch: f.q.Epoch(), From: 1, To: 60, ID: 999}, f.fleet)
	v1 := seal(t, wire.TypeReplay, replayV1{f.id, f.q.Epoch(), 1, 60}, f.fleet)
	if err := f.broker.Publish(f.topic(wire.KindCmd), v1, false, 1); err != nil {
		t.Fatal(err)
	}
	refused := u.Stats().MessagesRefused
	for i, msg := range [][]byte{replay, older} {
		if err := f.broker.Publish(f.topic(wire.KindCmd), msg, false, 1); err != nil {
			t.Fatal(err)
		}
		// Commands are handled in order: the copy without an id was
		// handled before these refusals.
		waitFor(t, fmt.Sprintf("request %d refused", i), func() bool { return u.Stats().MessagesRefused == refused+uint64(i+1) })
	}
	if st := u.Stats(); st.Replays != 1 || queueCount(t, f.q) != 0 || srv.totalReceived() != before {
		t.Errorf("after the copies: %d replays, %d queued, %d records received again; want 1, 0, 0",
			st.Replays, queueCount(t, f.q), srv.totalReceived()-before)
	}

	// A new request is carried out.
	again := seal(t, wire.TypeReplay, &wire.Replay{DeviceID: f.id, Epoch: f.q.Epoch(), From: 50, To: 60, ID: 1001}, f.fleet)
	if err := f.broker.Publish(f.topic(wire.KindCmd), again, false, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second replay", func() bool { return u.Stats().Replays == 2 })
	waitFor(t, "its records to be acked again", func() bool {
		return srv.totalReceived() >= before+11 && queueCount(t, f.q) == 0
	})
	srv.check(t, f.id, 60)
}

// replayV1 is a replay request as a server before request ids sent it.
type replayV1 struct {
	id, epoch string
	from, to  uint64
}

func (r replayV1) MarshalBinary() ([]byte, error) {
	e := record.Encoder{}
	e.U8(1)
	e.Str(r.id)
	e.Str(r.epoch)
	e.U64(r.from)
	e.U64(r.to)
	return e.B, nil
}

func TestStatusAndLastWill(t *testing.T) {
	f := newFixture(t, nil)
	statusTopic := f.topic(wire.KindStatus)
	w := watchStatus(t, f.broker.URL(), statusTopic, pubOf(f.dev))
	appendTaps(t, f.q, f.taps, 7)
	f.state.Apply(record.DocFares, 3, nil)
	u := f.start()

	st := w.next(t, "online", func(s *wire.Status) bool { return s.Online })
	if st.DeviceID != f.id || st.QueueDepth != 7 || st.LastSeq != 7 || st.Epoch != f.q.Epoch() ||
		st.Software != "1.0.0-test" || st.Versions[record.DocFares] != 3 || st.Time.IsZero() {
		t.Errorf("online status = %+v, want device %s, 7 queued, last seq 7, epoch, software, fares 3", st, f.id)
	}

	// The connection dies without a DISCONNECT and the device cannot come
	// back: the last will (offline) is published and stays retained.
	f.broker.Refuse(DefaultClientIDPrefix+f.id, true)
	waitFor(t, "the device's connection to be killed", func() bool { return f.broker.KillClient(DefaultClientIDPrefix + f.id) })
	st = w.next(t, "offline (last will)", func(s *wire.Status) bool { return !s.Online })
	if st.QueueDepth != 7 {
		t.Errorf("last will = %+v, want the queue depth at connect time (7)", st)
	}
	msg, ok := f.broker.Retained(statusTopic)
	if !ok {
		t.Fatal("no retained status")
	}
	if st, err := openStatus(msg, pubOf(f.dev)); err != nil || st.Online {
		t.Fatalf("retained status = %+v, %v; want offline", st, err)
	}
	if !strings.Contains(string(msg), `"online":false`) {
		t.Errorf("status JSON not readable in the message %q", msg)
	}
	waitFor(t, "refused reconnections", func() bool { return u.Stats().ConnectFailures >= 2 })

	// Back again: online; then a clean stop leaves an offline status.
	f.broker.Refuse(DefaultClientIDPrefix+f.id, false)
	w.next(t, "online again", func(s *wire.Status) bool { return s.Online })
	if err := u.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	msg, _ = f.broker.Retained(statusTopic)
	if st, err := openStatus(msg, pubOf(f.dev)); err != nil || st.Online {
		t.Fatalf("retained status after stop = %+v, %v; want offline", st, err)
	}
}

// A status that would fail the server's check (a badly built binary's
// software version, a reason carrying an escape sequence) is sent
// sanitized, not left for the server to refuse unseen: the server's
// ParseStatus takes every one sent, the fields that passed are kept, and
// the device logs the problem once (not at every heartbeat) and counts it.
func TestStatusSanitizedBeforeSending(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.Heartbeat = 20 * time.Millisecond
	f.cfg.Software = "1.4.0 beta"
	f.cfg.Status = func(st *wire.Status) {
		st.OutOfService = "clock_unset:\x1b[2J before 2026"
		st.Assignment = &wire.StatusAssignment{Route: "42", Source: wire.AssignSourceConfig}
	}
	w := watchStatus(t, f.broker.URL(), f.topic(wire.KindStatus), pubOf(f.dev))
	u := f.start()
	var last time.Time
	for i := range 3 {
		st := w.next(t, fmt.Sprintf("status %d", i), func(s *wire.Status) bool { return s.Online && s.Time.After(last) })
		last = st.Time
		if st.Software != "" || st.OutOfService != "clock_unset: [2J before 2026" || st.Assignment == nil ||
			st.Assignment.Route != "42" || st.Epoch != f.q.Epoch() {
			t.Fatalf("status sent = %+v, want it sanitized with its good fields", st)
		}
	}
	s := u.Stats()
	if s.StatusSanitized < 3 || !strings.Contains(s.StatusProblem, "out-of-service reason has control characters") {
		t.Errorf("StatusSanitized %d, StatusProblem %q; want 3 or more, the reason", s.StatusSanitized, s.StatusProblem)
	}
	if n := f.logs.count("status fails the server's check"); n != 1 {
		t.Errorf("the problem logged %d times, want once", n)
	}
}

func TestHeartbeat(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.Heartbeat = 20 * time.Millisecond
	w := watchStatus(t, f.broker.URL(), f.topic(wire.KindStatus), pubOf(f.dev))
	u := f.start()
	// Three distinct online statuses (a broker may deliver one twice, live
	// and as the retained message, around a subscription).
	var last time.Time
	for i := range 3 {
		st := w.next(t, fmt.Sprintf("heartbeat %d", i), func(s *wire.Status) bool { return s.Online && s.Time.After(last) })
		last = st.Time
	}
	if n := u.Stats().StatusSent; n < 3 {
		t.Errorf("StatusSent = %d, want at least 3", n)
	}
}

// Routine changes publish a status at most once every StatusMinInterval:
// an online bus empties its queue at almost every tap, and each emptying
// was a status the server recorded (1.5 a tap in a fleet's simulation).
// What changed within the interval goes out in one status once it has
// passed; StatusChanged is not held.
func TestStatusChangesHeldToMinInterval(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.Heartbeat = time.Hour
	f.cfg.StatusMinInterval = time.Hour
	srv := serverFor(f)
	u := f.start()
	waitFor(t, "the status on connecting", func() bool { return u.Stats().StatusSent == 1 })
	for i := range 20 {
		appendTaps(t, f.q, f.taps, 1)
		u.Notify()
		waitFor(t, fmt.Sprintf("tap %d acked", i), func() bool {
			return u.Stats().RecordsAcked == uint64(i+1) && queueCount(t, f.q) == 0
		})
	}
	srv.check(t, f.id, 20)
	if n := u.Stats().StatusSent; n != 1 {
		t.Errorf("%d statuses for 20 emptyings of the queue within StatusMinInterval, want only the one on connecting", n)
	}
	// A change an operator waits to see (out of service, say) is not held.
	u.StatusChanged()
	waitFor(t, "the status StatusChanged asks for", func() bool { return u.Stats().StatusSent == 2 })
	if err := u.stop(); err != nil {
		t.Fatal(err)
	}

	// Held, not lost: with a short interval the change goes out.
	f.cfg.StatusMinInterval = 300 * time.Millisecond
	w := watchStatus(t, f.broker.URL(), f.topic(wire.KindStatus), pubOf(f.dev))
	u = f.start()
	w.next(t, "online", func(s *wire.Status) bool { return s.Online })
	appendTaps(t, f.q, f.taps, 5)
	u.Notify()
	w.next(t, "the queue's emptying", func(s *wire.Status) bool { return s.Online && s.LastSeq == 25 && s.QueueDepth == 0 })
}

func TestUsernamePassword(t *testing.T) {
	b := brokertest.Start(t, &brokertest.Options{Users: map[string]string{"bus": "s3cret"}})
	t.Run("right", func(t *testing.T) {
		f := newFixture(t, b)
		f.cfg.Username, f.cfg.Password = "bus", "s3cret"
		u := f.start()
		waitFor(t, "connection", u.Connected)
	})
	t.Run("wrong", func(t *testing.T) {
		f := newFixture(t, b)
		f.cfg.Username, f.cfg.Password = "bus", "guess"
		u := f.start()
		waitFor(t, "refusals", func() bool { return u.Stats().ConnectFailures >= 2 })
		if st := u.Stats(); st.Connects != 0 || !strings.Contains(st.LastError, "connect") {
			t.Errorf("Stats = %+v, want no connection and a connect error", st)
		}
	})
}

func TestRunTwice(t *testing.T) {
	f := newFixture(t, nil)
	u := f.start()
	waitFor(t, "connection", u.Connected)
	if err := u.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	if err := u.stop(); err != nil {
		t.Fatal(err)
	}
	// Run again after it returned: works.
	r := runUplink(t, u.Uplink)
	waitFor(t, "connection again", r.Connected)
}

func TestQueueClosed(t *testing.T) {
	f := newFixture(t, nil)
	u, err := New(f.cfg, f.q, f.state)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	waitFor(t, "connection", u.Connected)
	f.q.Close()
	select {
	case err := <-done:
		if !errors.Is(err, queue.ErrClosed) {
			t.Errorf("Run = %v, want queue.ErrClosed", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run went on with a closed queue")
	}
}

func TestStopWhileUnreachable(t *testing.T) {
	f := newFixture(t, nil)
	// A broker address that accepts TCP but never answers MQTT: the
	// connection attempt hangs until Run's context ends it.
	l := blackhole(t)
	f.cfg.Brokers = []string{"tcp://" + l.addr}
	f.cfg.ConnectTimeout = time.Hour
	u := f.start()
	select {
	case <-l.accepted:
	case <-time.After(waitTimeout):
		t.Fatal("no connection attempt")
	}
	if err := u.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestSyncSucceededAtMostOncePerInterval(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.SyncInterval = time.Hour
	srv := serverFor(f)
	appendTaps(t, f.q, f.taps, 30)
	u := f.start()
	waitFor(t, "the first drain and sync", func() bool { return queueCount(t, f.q) == 0 && f.state.syncCount() == 1 })
	appendTaps(t, f.q, f.taps, 30)
	u.Notify()
	waitFor(t, "the second drain", func() bool { return queueCount(t, f.q) == 0 && u.Stats().RecordsAcked == 60 })
	srv.check(t, f.id, 60)
	if n := f.state.syncCount(); n != 1 {
		t.Errorf("SyncSucceeded called %d times within SyncInterval, want 1", n)
	}
}

func TestUnsendableRecordStays(t *testing.T) {
	f := newFixture(t, nil)
	srv := serverFor(f)
	appendTaps(t, f.q, f.taps, 5)
	big := make([]byte, record.MaxSize+1)
	if _, err := f.q.Append(context.Background(), big); err != nil {
		t.Fatal(err)
	}
	appendTaps(t, f.q, f.taps, 5) // seqs 7..11
	u := f.start()
	waitFor(t, "the sendable records to drain", func() bool { return queueCount(t, f.q) == 1 })
	recs, err := f.q.Peek(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Seq != 6 {
		t.Errorf("left in the queue: %d records (first seq %d), want only seq 6", len(recs), recs[0].Seq)
	}
	waitFor(t, "the acks to be counted", func() bool { return u.Stats().RecordsAcked == 10 })
	if st := u.Stats(); st.Unsendable != 1 {
		t.Errorf("Stats = %+v, want 1 unsendable and 10 acked", st)
	}
	if !f.logs.contains("record too large to send") {
		t.Error("unsendable record not logged")
	}
	if f.state.syncCount() != 0 {
		t.Error("SyncSucceeded called with a record still queued")
	}
	if got := srv.unique(); got != 10 {
		t.Errorf("server has %d taps, want 10", got)
	}
}

// OnAcked reports exactly the records the server acknowledged, once each.
func TestOnAcked(t *testing.T) {
	f := newFixture(t, nil)
	srv := serverFor(f)
	var mu sync.Mutex
	seen := map[uint64]int{}
	f.cfg.OnAcked = func(seqs []uint64) {
		mu.Lock()
		for _, s := range seqs {
			seen[s]++
		}
		mu.Unlock()
	}
	appendTaps(t, f.q, f.taps, 120)
	f.start()
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	srv.check(t, f.id, 120)
	waitFor(t, "OnAcked to report every record", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 120 })
	mu.Lock()
	defer mu.Unlock()
	for s, n := range seen {
		if n != 1 {
			t.Errorf("seq %d reported %d times", s, n)
		}
	}
}

// TestAdoptedRecordsDelivered: records salvaged from an earlier queue file
// and adopted by this one go out under their own epoch and sequence
// numbers, beside the file's own, and leave only on an ack of that epoch.
func TestAdoptedRecordsDelivered(t *testing.T) {
	f := newFixture(t, nil)
	srv := serverFor(f)
	appendTaps(t, f.q, f.taps, 20)
	const old = "0123456789abcdef0123456789abcdef"
	var recs []queue.Record
	for seq := uint64(5000); seq < 5150; seq++ {
		b, err := f.taps.record(old, seq)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, queue.Record{Seq: seq, Time: time.Now(), Data: b})
	}
	if n, err := f.q.Adopt(old, recs); err != nil || n != len(recs) {
		t.Fatalf("Adopt = %d, %v", n, err)
	}
	if n, err := f.q.Adopt(old, recs[:10]); err != nil || n != 0 {
		t.Fatalf("Adopt again = %d, %v, want 0 (idempotent)", n, err)
	}
	u := f.start()
	waitFor(t, "own and adopted records to drain", func() bool {
		st, err := f.q.Stats()
		return err == nil && st.Count == 0 && st.Adopted == 0
	})
	for seq := uint64(5000); seq < 5150; seq++ {
		if n := srv.timesIn(f.id, old, seq); n == 0 {
			t.Fatalf("adopted record %d of epoch %s never received", seq, old)
		}
	}
	for seq := uint64(1); seq <= 20; seq++ {
		if n := srv.timesIn(f.id, f.q.Epoch(), seq); n == 0 {
			t.Fatalf("own record %d never received", seq)
		}
	}
	if eps, err := f.q.AdoptedEpochs(); err != nil || len(eps) != 0 {
		t.Errorf("AdoptedEpochs = %v, %v, want none left", eps, err)
	}
	waitFor(t, "SyncSucceeded once everything is acked", func() bool { return f.state.syncCount() > 0 })
	// An ack for an epoch that is neither the queue's nor in flight is refused.
	before := u.Stats().MessagesRefused
	stray := seal(t, wire.TypeAck, &wire.Ack{DeviceID: f.id, Epoch: "ffffffffffffffffffffffffffffffff", Ranges: []wire.Range{{From: 1, To: 9}}}, f.fleet)
	if err := f.broker.Publish(f.topic(wire.KindAck), stray, false, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stray ack to be refused", func() bool { return u.Stats().MessagesRefused > before })
}

// TestClockOffsetFromAcks: a device whose clock is 90 minutes ahead learns
// it from the server's timed acks, reports it in its status and to
// OnClock.
func TestClockOffsetFromAcks(t *testing.T) {
	f := newFixture(t, nil)
	serverFor(f)
	const ahead = 90 * time.Minute
	f.cfg.Now = func() time.Time { return time.Now().Add(ahead) }
	samples := make(chan ClockSample, 100)
	f.cfg.OnClock = func(s ClockSample) {
		select {
		case samples <- s:
		default:
		}
	}
	w := watchStatus(t, f.broker.URL(), f.topic(wire.KindStatus), pubOf(f.dev))
	appendTaps(t, f.q, f.taps, 5)
	u := f.start()
	var smp ClockSample
	select {
	case smp = <-samples:
	case <-time.After(waitTimeout):
		t.Fatal("no clock sample")
	}
	if d := smp.Offset - ahead; d < -smp.Uncertainty-time.Second || d > smp.Uncertainty+time.Second {
		t.Errorf("offset %v ± %v, want %v", smp.Offset, smp.Uncertainty, ahead)
	}
	if smp.RTT <= 0 || smp.Uncertainty != smp.RTT/2+time.Millisecond {
		t.Errorf("round trip %v with uncertainty %v, want the ack latency it is half of", smp.RTT, smp.Uncertainty)
	}
	if c, ok := u.Clock(); !ok || c.Offset != smp.Offset {
		t.Errorf("Clock() = %+v, %t", c, ok)
	}
	st := w.next(t, "a status with the clock offset", func(s *wire.Status) bool { return s.ClockOffsetMS != nil })
	if d := time.Duration(*st.ClockOffsetMS)*time.Millisecond - ahead; d.Abs() > smp.Uncertainty+time.Second {
		t.Errorf("status clock offset %d ms, want about %v", *st.ClockOffsetMS, ahead)
	}
}

// TestLostOldestBatchSentAgainWhileLaterAcked: the window's oldest batch
// is lost (here its ack; in the field, a batch sent after a broker restart
// before the server had subscribed again) while the taps after it are
// sent and acked one by one, as on a bus in service. The lost batch is
// sent again after the ack timeout. The acks of the later batches
// restarted the timer, and it stayed queued as long as riders kept
// tapping (farego-sim, 300 validators, Mosquitto restarted: 700 taps
// stuck until the riders stopped).
func TestLostOldestBatchSentAgainWhileLaterAcked(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.AckTimeout = time.Second
	srv := serverFor(f)
	srv.setDropAcks(1) // the first batch's ack
	appendTaps(t, f.q, f.taps, 1)
	u := f.start()
	waitFor(t, "the first batch", func() bool { return srv.totalReceived() >= 1 })
	firstQueued := func() bool {
		recs, err := f.q.Peek(1, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return len(recs) > 0 && recs[0].Seq == 1
	}
	// A rider every 100 ms, each tap acked before the next: the acks never
	// pause for the ack timeout. Bounded: 40 taps, 4 ack timeouts.
	n := 1
	for ; n < 41 && firstQueued(); n++ {
		appendTaps(t, f.q, f.taps, 1)
		u.Notify()
		waitFor(t, "the new tap's ack", func() bool { return srv.totalReceived() >= n+1 && queueCount(t, f.q) <= 1 })
		time.Sleep(100 * time.Millisecond) // the next rider
	}
	if firstQueued() {
		t.Fatalf("after %d later taps acked over about %d ack timeouts, the first is still queued: its lost batch was never sent again",
			n-1, (n-1)/10)
	}
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	if st := u.Stats(); st.AckTimeouts == 0 {
		t.Errorf("Stats = %+v, want an ack timeout", st)
	}
	srv.check(t, f.id, n)
}

// TestRefusedOldestBatchBacksOff: the server keeps refusing the window's
// oldest batch (not acked: a device over its aside budget; a server whose
// commit of that batch keeps failing) while it takes and acks the taps
// after it, as on a bus in service. The oldest is sent again after each
// ack timeout, and the timeout doubles, as while no ack comes at all; one
// warning is logged. The acks of the later taps reset the backoff: it was
// sent again, with the window, every AckTimeout (10 s) for as long as
// riders tapped, with a warning and an "acks resumed" each time.
func TestRefusedOldestBatchBacksOff(t *testing.T) {
	f := newFixture(t, nil)
	f.cfg.AckTimeout = 300 * time.Millisecond
	f.cfg.BatchRecords = 1 // each tap a batch of its own: only the first is refused
	srv := serverFor(f)
	srv.setWithhold(1)
	appendTaps(t, f.q, f.taps, 1)
	u := f.start()
	waitFor(t, "the first batch", func() bool { return srv.totalReceived() >= 1 })
	// A rider every 50 ms, each tap acked before the next, until the
	// oldest has timed out three times. Bounded: 200 taps, past the three
	// timeouts' 0.3 + 0.6 + 1.2 s.
	n := 1
	for ; n < 201 && u.Stats().AckTimeouts < 3; n++ {
		appendTaps(t, f.q, f.taps, 1)
		u.Notify()
		waitFor(t, "the new tap's ack", func() bool { return srv.totalReceived() >= n+1 && queueCount(t, f.q) <= 1 })
		time.Sleep(50 * time.Millisecond) // the next rider
	}
	st := u.Stats()
	if st.AckTimeouts < 3 {
		t.Fatalf("after %d later taps, %d ack timeouts: want the refused oldest sent again 3 times", n-1, st.AckTimeouts)
	}
	// One more tap, acked: the server takes the device's batches.
	appendTaps(t, f.q, f.taps, 1)
	u.Notify()
	n++
	waitFor(t, "the last tap's ack", func() bool { return srv.totalReceived() >= n && queueCount(t, f.q) <= 1 })
	if w := f.logs.count("no ack from the server in time"); w != 1 {
		t.Errorf("%d warnings 'no ack from the server in time' for %d timeouts of one refused batch, want 1 (the backoff reset by later acks)",
			w, u.Stats().AckTimeouts)
	}
	if f.logs.contains("acks from the server resumed") {
		t.Error("'acks from the server resumed' logged: the refused batch was never acked")
	}
	if st := u.Stats(); st.AckTimeoutsInRow != 0 {
		t.Errorf("AckTimeoutsInRow %d after an ack, want 0: the server takes the device's batches", st.AckTimeoutsInRow)
	}
	srv.setWithhold(0)
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	if !f.logs.contains("acks from the server resumed") {
		t.Error("the refused batch acked at last: 'acks from the server resumed' not logged")
	}
	srv.check(t, f.id, n)
}
