package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
)

var t0 = time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// syncBuffer is a log sink safe for the agent's workers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// last formats the recorder's last event for comparison.
func last(r *feedback.Recorder) string {
	ev := r.Events()
	if len(ev) == 0 {
		return ""
	}
	e := ev[len(ev)-1]
	switch e.Kind {
	case feedback.KindAccepted:
		return fmt.Sprintf("accepted %d %s", e.Accept.Fare, e.Accept.Message)
	case feedback.KindRejected:
		return "rejected " + e.Reject.Reason
	}
	return "out of service: " + e.Message
}

type harness struct {
	t      testing.TB
	path   string
	qopts  *queue.Options
	cfg    Config
	clock  *clock
	issuer *paycodetest.Issuer
	fb     *feedback.Recorder
	q      *queue.Queue
	a      *Agent
}

func fareTable(tb testing.TB, version uint64) []byte {
	tb.Helper()
	t := map[string]any{
		"version": version, "currency": "EUR",
		"fares": map[string]any{"*": map[string]int64{"adult": 250, "child": 120, "senior": 120, "student": 180}, "42": map[string]int64{"adult": 300}},
	}
	b, _ := json.Marshal(t)
	return b
}

func keyringDoc(tb testing.TB, kr *paycode.Keyring) []byte {
	tb.Helper()
	b, err := kr.MarshalJSON()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func newHarness(tb testing.TB, mod func(*Config, *queue.Options)) *harness {
	tb.Helper()
	h := &harness{t: tb, path: filepath.Join(tb.TempDir(), "validator.db"), clock: &clock{t: t0}, fb: &feedback.Recorder{}, qopts: &queue.Options{}}
	h.issuer = paycodetest.NewIssuer(tb, 7, t0)
	h.cfg = Config{DeviceID: "bus-17-front", Route: "42", Vehicle: "bus-17", Now: h.clock.Now}
	if mod != nil {
		mod(&h.cfg, h.qopts)
	}
	h.open()
	if err := h.a.Seed(record.DocKeyring, keyringDoc(tb, h.issuer.Keyring)); err != nil {
		tb.Fatal(err)
	}
	if err := h.a.Seed(record.DocFares, fareTable(tb, 1)); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := h.q.Check(); err != nil {
			tb.Errorf("queue check: %v", err)
		}
		h.q.Close()
	})
	return h
}

func (h *harness) open() {
	h.t.Helper()
	q, err := queue.Open(h.path, h.qopts)
	if err != nil {
		h.t.Fatal(err)
	}
	a, err := New(q, h.fb, h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.q, h.a = q, a
}

// restart closes and reopens the queue and agent, as a reboot does.
func (h *harness) restart() {
	h.t.Helper()
	if err := h.q.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

func (h *harness) tap(text string) Outcome {
	return h.a.Tap(context.Background(), scanner.Frame{Scanner: "front", Text: text, Time: h.clock.Now()})
}

func (h *harness) records() []*record.Tap {
	h.t.Helper()
	recs, err := h.q.Peek(1000, 1<<30)
	if err != nil {
		h.t.Fatal(err)
	}
	out := make([]*record.Tap, len(recs))
	for i, r := range recs {
		tp, err := record.ParseTap(r.Data)
		if err != nil {
			h.t.Fatal(err)
		}
		if tp.Seq != r.Seq {
			h.t.Fatalf("record seq %d holds tap seq %d", r.Seq, tp.Seq)
		}
		out[i] = tp
	}
	return out
}

func TestAcceptedTapIsRecorded(t *testing.T) {
	h := newHarness(t, nil)
	r := h.issuer.Rider(t, 4242, t0)
	text := r.Code(t, t0.Add(-10*time.Second))
	out := h.tap(text)
	if !out.Accepted || out.Fare != 300 || out.Currency != "EUR" || out.Seq == 0 || out.Account != 4242 {
		t.Fatalf("outcome = %+v, want accepted, fare 300 EUR", out)
	}
	if got := last(h.fb); got != "accepted 300 Paid" {
		t.Errorf("feedback = %q", got)
	}
	recs := h.records()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	tp := recs[0]
	code, _ := paycode.ParseText(text)
	if tp.DeviceID != "bus-17-front" || tp.Route != "42" || tp.Vehicle != "bus-17" || tp.Scanner != "front" ||
		tp.Account != 4242 || tp.Serial != 1 || tp.Fare != 300 || tp.Currency != "EUR" || tp.FareVersion != 1 ||
		tp.KeyringVersion != 1 || tp.Software != Version || !tp.Time.Equal(t0) || tp.Epoch != h.q.Epoch() ||
		paycode.EncodeText(tp.Code) != text || string(tp.Code) != string(code.Bytes()) {
		t.Errorf("record = %+v", tp)
	}
	if tp.PrevHash != [32]byte{} {
		t.Errorf("first record's previous hash = %x, want zero", tp.PrevHash)
	}
}

func TestHashChain(t *testing.T) {
	h := newHarness(t, nil)
	for i := range 5 {
		r := h.issuer.Rider(t, uint64(1000+i), t0)
		if out := h.tap(r.Code(t, t0)); !out.Accepted {
			t.Fatalf("tap %d: %+v", i, out)
		}
		if i == 2 {
			h.restart() // the chain survives a restart
		}
	}
	recs, _ := h.q.Peek(100, 1<<20)
	var prev [32]byte
	for i, r := range recs {
		tp, _ := record.ParseTap(r.Data)
		if tp.PrevHash != prev {
			t.Fatalf("record %d: previous hash %x, want %x", i, tp.PrevHash, prev)
		}
		prev = record.Hash(r.Data)
	}
}

func TestRejectReasons(t *testing.T) {
	h := newHarness(t, nil)
	r := h.issuer.Rider(t, 4242, t0)
	other := paycodetest.NewIssuer(t, 7, t0).Rider(t, 4243, t0)
	expired := h.issuer.RiderWith(t, paycode.Credential{Account: 4244, Serial: 1,
		NotBefore: uint32(t0.Add(-48 * time.Hour).Unix()), NotAfter: uint32(t0.Add(-time.Hour).Unix())})
	for _, tc := range []struct {
		name, text string
		want       record.Reason
		feedback   string
	}{
		{"malformed", "FG1:HELLO", "malformed", "rejected malformed"},
		{"empty", "", "malformed", "rejected malformed"},
		{"other version", "FG2:HELLO", "unsupported_version", "rejected unsupported_version"},
		{"forged issuer", other.Code(t, t0), "bad_credential_signature", "rejected bad_credential_signature"},
		{"expired credential", expired.Code(t, t0), "credential_expired", "rejected credential_expired"},
		{"expired code", r.Code(t, t0.Add(-121*time.Second)), "code_expired", "rejected code_expired"},
		{"code from future", r.Code(t, t0.Add(31*time.Second)), "code_from_future", "rejected code_from_future"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := h.tap(tc.text)
			if out.Accepted || out.Reason != tc.want || out.Message != RiderMessage(tc.want) {
				t.Errorf("outcome = %+v, want reason %q", out, tc.want)
			}
			if got := last(h.fb); got != tc.feedback {
				t.Errorf("feedback = %q, want %q", got, tc.feedback)
			}
		})
	}
	if n := len(h.records()); n != 0 {
		t.Errorf("%d records after only refusals, want 0", n)
	}
}

func TestDenyList(t *testing.T) {
	h := newHarness(t, nil)
	whole := h.issuer.Rider(t, 5001, t0)
	one := h.issuer.RiderWith(t, paycode.Credential{Account: 5002, Serial: 3, NotBefore: uint32(t0.Add(-time.Hour).Unix()), NotAfter: uint32(t0.Add(time.Hour).Unix())})
	fine := h.issuer.RiderWith(t, paycode.Credential{Account: 5002, Serial: 4, NotBefore: uint32(t0.Add(-time.Hour).Unix()), NotAfter: uint32(t0.Add(time.Hour).Unix())})
	dl, _ := json.Marshal(record.DenyList{Version: 1, Entries: []record.DenyEntry{{Account: 5001, Reason: "negative_balance"}, {Account: 5002, Serial: 3, Reason: "code_reused"}}})
	if err := h.a.Apply(record.DocDenyList, 1, dl); err != nil {
		t.Fatal(err)
	}
	if out := h.tap(whole.Code(t, t0)); out.Reason != record.ReasonDenied {
		t.Errorf("denied account: %+v", out)
	}
	if out := h.tap(one.Code(t, t0)); out.Reason != record.ReasonDenied {
		t.Errorf("denied credential: %+v", out)
	}
	if out := h.tap(fine.Code(t, t0)); !out.Accepted {
		t.Errorf("other credential of the account: %+v", out)
	}
	// A newer list without the account lets it ride again.
	dl2, _ := json.Marshal(record.DenyList{Version: 2})
	if err := h.a.Apply(record.DocDenyList, 2, dl2); err != nil {
		t.Fatal(err)
	}
	if out := h.tap(whole.Code(t, t0)); !out.Accepted {
		t.Errorf("after removal: %+v", out)
	}
}

// TestOneCodeOneDoor: a code held to the scanner twice within the re-read
// window is let through once charged and once "Already paid"; the same
// code handed to the next rider at the same door is refused (code_used,
// red), however often. It used to be green for the code's whole life: one
// code let a queue of riders through one door, one charged, the server
// never told of the others.
func TestOneCodeOneDoor(t *testing.T) {
	h := newHarness(t, nil)
	text := h.issuer.Rider(t, 4242, t0).Code(t, t0)
	if out := h.tap(text); !out.Accepted {
		t.Fatal(out)
	}
	h.clock.Add(ReReadWindow / 2)
	if out := h.tap(text); !out.AlreadyPaid() {
		t.Errorf("a re-read: %+v, want already paid", out)
	}
	for i := range 4 {
		h.clock.Add(time.Second + ReReadWindow/2)
		out := h.tap(text)
		if out.Accepted || out.AlreadyPaid() || out.Reason != record.ReasonCodeUsed || out.Message != "Code used - show a new one" {
			t.Errorf("the code shown again by rider %d: %+v, want code_used", i+2, out)
		}
		if got := last(h.fb); !strings.HasPrefix(got, "rejected") {
			t.Errorf("feedback for rider %d: %q, want red", i+2, got)
		}
	}
	if n := len(h.records()); n != 1 {
		t.Errorf("%d records, want 1", n)
	}
}

// TestOneCodeTwoDoors: a code accepted at one door and read at the other
// door's scanner, however soon, is refused (code_used): no scanner can read
// a phone held up at another. It was green "Already paid" within the
// re-read window, and a code shown at the two doors in turn let a rider
// through each, one charged. The accepting door's own re-reads stay green.
func TestOneCodeTwoDoors(t *testing.T) {
	h := newHarness(t, nil)
	tapAt := func(door, text string) Outcome {
		return h.a.Tap(context.Background(), scanner.Frame{Scanner: door, Text: text, Time: h.clock.Now()})
	}
	text := h.issuer.Rider(t, 4242, t0).Code(t, t0)
	if out := tapAt("front", text); !out.Accepted {
		t.Fatal(out)
	}
	for i := range 4 {
		h.clock.Add(300 * time.Millisecond)
		if out := tapAt("rear", text); out.Accepted || out.AlreadyPaid() || out.Reason != record.ReasonCodeUsed {
			t.Errorf("the code at the other door, %d: %+v, want code_used", i, out)
		}
		h.clock.Add(300 * time.Millisecond)
		if out := tapAt("front", text); !out.AlreadyPaid() {
			t.Errorf("the accepting door's re-read %d: %+v, want already paid", i, out)
		}
	}
	if n := len(h.records()); n != 1 {
		t.Errorf("%d records, want 1", n)
	}
}

// TestPhoneHeldUp: a scanner re-reads a phone held up to it every half
// second. The rider keeps the green for as long as they hold it, up to
// ReReadMax (it used to turn red 2 s after the acceptance, while the
// rider was still holding the phone that had just shown green); a read
// after a gap of ReReadWindow is the phone handed on (red), and so is one
// after ReReadMax. The last re-read is not on disk: after a restart the
// window counts from the acceptance.
func TestPhoneHeldUp(t *testing.T) {
	h := newHarness(t, nil)
	rider := h.issuer.Rider(t, 4242, t0)
	text := rider.Code(t, t0)
	if out := h.tap(text); !out.Accepted {
		t.Fatal(out)
	}
	held := time.Duration(0)
	for ; held+500*time.Millisecond < ReReadMax; held += 500 * time.Millisecond {
		h.clock.Add(500 * time.Millisecond)
		if out := h.tap(text); !out.AlreadyPaid() {
			t.Fatalf("re-read %v after the acceptance: %+v, want already paid", held+500*time.Millisecond, out)
		}
	}
	h.clock.Add(ReReadMax - held) // still held, but ReReadMax after the acceptance
	if out := h.tap(text); out.Reason != record.ReasonCodeUsed {
		t.Errorf("a read %v after the acceptance: %+v, want code_used", ReReadMax, out)
	}

	// A gap: held up, put away, shown again.
	text2 := rider.Code(t, t0.Add(time.Minute))
	h.clock.Set(t0.Add(time.Minute))
	if out := h.tap(text2); !out.Accepted {
		t.Fatal(out)
	}
	h.clock.Add(ReReadWindow - time.Millisecond)
	if out := h.tap(text2); !out.AlreadyPaid() {
		t.Errorf("a re-read just inside the window: %+v", out)
	}
	h.clock.Add(ReReadWindow)
	if out := h.tap(text2); out.Reason != record.ReasonCodeUsed {
		t.Errorf("a read after a gap of %v: %+v, want code_used", ReReadWindow, out)
	}

	// A restart forgets the last re-read: 2 s from the acceptance.
	text3 := rider.Code(t, t0.Add(2*time.Minute))
	h.clock.Set(t0.Add(2 * time.Minute))
	if out := h.tap(text3); !out.Accepted {
		t.Fatal(out)
	}
	h.clock.Add(1500 * time.Millisecond)
	if out := h.tap(text3); !out.AlreadyPaid() {
		t.Errorf("a re-read before the restart: %+v", out)
	}
	h.restart()
	h.clock.Add(time.Second) // 2.5 s after the acceptance, 1 s after the last read
	if out := h.tap(text3); out.Reason != record.ReasonCodeUsed {
		t.Errorf("a read 2.5 s after the acceptance, after a restart: %+v, want code_used", out)
	}
	if n := len(h.records()); n != 3 {
		t.Errorf("%d records, want the 3 acceptances", n)
	}
}

// TestPhoneHeldUpTwoDoors: two riders hold their phones up at the two
// doors of one validator at once, each re-read every half second: each
// keeps the green (the validator remembered one last re-read for all its
// scanners, and each rider turned red 2 s after the acceptance).
func TestPhoneHeldUpTwoDoors(t *testing.T) {
	h := newHarness(t, nil)
	tapAt := func(door, text string) Outcome {
		return h.a.Tap(context.Background(), scanner.Frame{Scanner: door, Text: text, Time: h.clock.Now()})
	}
	a := h.issuer.Rider(t, 4242, t0).Code(t, t0)
	b := h.issuer.Rider(t, 4343, t0).Code(t, t0)
	if out := tapAt("front", a); !out.Accepted {
		t.Fatal(out)
	}
	h.clock.Add(100 * time.Millisecond)
	if out := tapAt("rear", b); !out.Accepted {
		t.Fatal(out)
	}
	for i := 1; i <= 10; i++ {
		h.clock.Add(400 * time.Millisecond)
		if out := tapAt("front", a); !out.AlreadyPaid() {
			t.Fatalf("rider A's phone held up, re-read %d (%v after acceptance): %s, want already paid",
				i, time.Duration(i)*500*time.Millisecond, out.Reason)
		}
		h.clock.Add(100 * time.Millisecond)
		if out := tapAt("rear", b); !out.AlreadyPaid() {
			t.Fatalf("rider B's phone held up, re-read %d: %s, want already paid", i, out.Reason)
		}
	}
}

func TestDuplicateSurvivesRestart(t *testing.T) {
	reg := metrics.NewRegistry()
	var logs syncBuffer
	h := newHarness(t, func(c *Config, _ *queue.Options) {
		c.Metrics = reg
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	r := h.issuer.Rider(t, 4242, t0)
	text := r.Code(t, t0)
	first := h.tap(text)
	if !first.Accepted {
		t.Fatal(first)
	}
	h.clock.Add(time.Second) // the scanner reads the phone again
	out := h.tap(text)
	if out.Accepted || !out.AlreadyPaid() || out.Reason != record.ReasonDuplicate || out.Message != "Already paid" || out.Seq != first.Seq {
		t.Errorf("same code again: %+v, want already paid by seq %d", out, first.Seq)
	}
	// Green, charged nothing; counted and logged as already paid, never
	// as a refusal.
	if got := last(h.fb); got != "accepted 0 Already paid" {
		t.Errorf("duplicate feedback = %q, want a no-charge 'Already paid'", got)
	}
	var m strings.Builder
	reg.WriteTo(&m)
	if !strings.Contains(m.String(), `farego_taps_total{outcome="already_paid",reason="duplicate"} 1`) ||
		strings.Contains(m.String(), `outcome="rejected",reason="duplicate"`) {
		t.Errorf("metrics do not count it as already paid:\n%s", m.String())
	}
	if l := logs.String(); !strings.Contains(l, `msg="tap already paid"`) || strings.Contains(l, "tap refused") ||
		!strings.Contains(l, fmt.Sprintf("paid_seq=%d", first.Seq)) {
		t.Errorf("log does not say already paid (with the paying tap's seq):\n%s", l)
	}
	h.cfg.Metrics = nil // the restarted agent registers its own
	h.restart()
	if out := h.tap(text); out.Reason != record.ReasonDuplicate {
		t.Errorf("same code after restart, within the re-read window: %+v", out)
	}
	h.clock.Add(10 * time.Second)
	if out := h.tap(text); out.Accepted || out.Reason != record.ReasonCodeUsed {
		t.Errorf("same code after restart, 11 s on: %+v; want code_used", out)
	}
	if n := len(h.records()); n != 1 {
		t.Errorf("%d records, want 1", n)
	}
}

func TestPassback(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.PassbackWindow = 5 * time.Second })
	r := h.issuer.Rider(t, 4242, t0)
	if out := h.tap(r.Code(t, t0)); !out.Accepted {
		t.Fatal(out)
	}
	h.clock.Add(4 * time.Second)
	if out := h.tap(r.Code(t, h.clock.Now())); out.Reason != record.ReasonPassback {
		t.Errorf("new code within the window: %+v", out)
	}
	h.restart()
	if out := h.tap(r.Code(t, h.clock.Now())); out.Reason != record.ReasonPassback {
		t.Errorf("within the window after restart: %+v", out)
	}
	h.clock.Add(time.Second)
	if out := h.tap(r.Code(t, h.clock.Now())); !out.Accepted {
		t.Errorf("at the end of the window: %+v", out)
	}
}

func TestRiskCap(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.RiskCap = 2; c.PassbackWindow = -1 })
	r := h.issuer.Rider(t, 4242, t0)
	for i := range 2 {
		if out := h.tap(r.Code(t, t0)); !out.Accepted {
			t.Fatalf("tap %d: %+v", i, out)
		}
	}
	if out := h.tap(r.Code(t, t0)); out.Reason != record.ReasonRiskCap {
		t.Errorf("third tap: %+v", out)
	}
	h.restart()
	if out := h.tap(r.Code(t, t0)); out.Reason != record.ReasonRiskCap {
		t.Errorf("after restart: %+v", out)
	}
	if other := h.issuer.Rider(t, 4243, t0); !h.tap(other.Code(t, t0)).Accepted {
		t.Errorf("another account is not capped")
	}
	h.ackAll()
	if err := h.a.SyncSucceeded(); err != nil {
		t.Fatal(err)
	}
	if out := h.tap(r.Code(t, t0)); !out.Accepted {
		t.Errorf("after a successful sync: %+v", out)
	}
}

// ackAll acks every record in the queue, as the uplink does when the
// server has them.
func (h *harness) ackAll() {
	h.t.Helper()
	st, err := h.q.Stats()
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.q.AckThrough(st.LastSeq); err != nil {
		h.t.Fatal(err)
	}
}

// TestSyncSucceededKeepsCountsOfUnackedTaps: the uplink saw the queue
// empty, then a tap was accepted, then SyncSucceeded ran. The reset must
// not wipe the new tap's count: the check and the reset are one
// transaction in the real bbolt file, whatever the caller saw before.
func TestSyncSucceededKeepsCountsOfUnackedTaps(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.RiskCap = 2; c.PassbackWindow = -1 })
	r := h.issuer.Rider(t, 4242, t0)
	if out := h.tap(r.Code(t, t0)); !out.Accepted {
		t.Fatal(out)
	}
	h.ackAll() // the uplink sees the queue empty here…
	if out := h.tap(r.Code(t, t0)); !out.Accepted {
		t.Fatal(out) // …and a tap comes in before it calls SyncSucceeded
	}
	if err := h.a.SyncSucceeded(); err != nil {
		t.Fatal(err)
	}
	if out := h.tap(r.Code(t, t0)); out.Reason != record.ReasonRiskCap {
		t.Errorf("third tap with an unacked one after the sync = %+v, want risk_cap (the count was reset under an unacked tap)", out)
	}
	h.ackAll()
	if err := h.a.SyncSucceeded(); err != nil {
		t.Fatal(err)
	}
	if out := h.tap(r.Code(t, t0)); !out.Accepted {
		t.Errorf("after everything is acked and synced: %+v", out)
	}
}

func TestQueueFullIsOutOfService(t *testing.T) {
	h := newHarness(t, func(_ *Config, o *queue.Options) { o.MaxRecords = 2 })
	for i := range 2 {
		if out := h.tap(h.issuer.Rider(t, uint64(100+i), t0).Code(t, t0)); !out.Accepted {
			t.Fatal(out)
		}
	}
	out := h.tap(h.issuer.Rider(t, 200, t0).Code(t, t0))
	if out.Accepted || out.Reason != record.ReasonQueueFull {
		t.Errorf("third tap into a full queue: %+v", out)
	}
	if got := last(h.fb); got != "out of service: Out of service" {
		t.Errorf("feedback = %q", got)
	}
	// Draining the queue puts the validator back in service.
	if _, err := h.q.AckThrough(2); err != nil {
		t.Fatal(err)
	}
	if out := h.tap(h.issuer.Rider(t, 201, t0).Code(t, t0)); !out.Accepted {
		t.Errorf("after the uplink drained the queue: %+v", out)
	}
}

func TestClockUnsetIsOutOfService(t *testing.T) {
	h := newHarness(t, nil)
	r := h.issuer.Rider(t, 4242, t0)
	text := r.Code(t, t0)
	h.clock.t = time.Date(1970, 1, 1, 0, 0, 10, 0, time.UTC)
	out := h.tap(text)
	if out.Reason != record.ReasonClock || last(h.fb) != "out of service: Out of service: clock" {
		t.Errorf("tap with the clock at 1970: %+v, feedback %q", out, last(h.fb))
	}
}

func TestNotProvisioned(t *testing.T) {
	q, err := queue.Open(filepath.Join(t.TempDir(), "v.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	fb := &feedback.Recorder{}
	a, err := New(q, fb, Config{DeviceID: "d1", Route: "1", Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Ready(); !errors.Is(err, ErrNotProvisioned) {
		t.Errorf("Ready = %v, want ErrNotProvisioned", err)
	}
	if out := a.Tap(context.Background(), scanner.Frame{Text: "FG1:X"}); out.Reason != record.ReasonNoFare {
		t.Errorf("unprovisioned tap: %+v", out)
	}
}

func TestApply(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.a.Apply(record.DocFares, 1, fareTable(t, 1)); !errors.Is(err, ErrStaleVersion) {
		t.Errorf("same version again: %v, want ErrStaleVersion", err)
	}
	if err := h.a.Apply(record.DocFares, 3, fareTable(t, 2)); !errors.Is(err, ErrInvalidDocument) {
		t.Errorf("document version differs from the downlink's: %v", err)
	}
	if err := h.a.Apply(record.DocFares, 2, []byte(`{"version":2}`)); !errors.Is(err, ErrInvalidDocument) {
		t.Errorf("invalid table: %v", err)
	}
	if err := h.a.Apply("firmware", 2, nil); !errors.Is(err, ErrInvalidDocument) {
		t.Errorf("unknown kind: %v", err)
	}
	if got := h.a.Versions()[record.DocFares]; got != 1 {
		t.Errorf("refused documents changed the version to %d", got)
	}
	if err := h.a.Apply(record.DocFares, 2, fareTable(t, 2)); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if got := h.a.Versions(); got[record.DocFares] != 2 || got[record.DocKeyring] != 1 {
		t.Errorf("versions after restart = %v", got)
	}
	// Seeding from an older bundle keeps the device's newer state.
	if err := h.a.Seed(record.DocFares, fareTable(t, 1)); err != nil {
		t.Errorf("Seed older: %v", err)
	}
	if got := h.a.Versions()[record.DocFares]; got != 2 {
		t.Errorf("version after seeding an older bundle = %d, want 2", got)
	}
	out := h.tap(h.issuer.Rider(t, 77, t0).Code(t, t0))
	if recs := h.records(); !out.Accepted || recs[len(recs)-1].FareVersion != 2 {
		t.Errorf("tap after update: %+v", out)
	}
}

// Two doors tapping at once: every tap recorded once, sequence numbers
// distinct, the hash chain unbroken.
func TestConcurrentScanners(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.Workers = 4 })
	frames := make(chan scanner.Frame)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.a.Run(ctx, frames) }()
	const n = 40
	for i := range n {
		r := h.issuer.Rider(t, uint64(3000+i), t0)
		frames <- scanner.Frame{Scanner: []string{"front", "rear"}[i%2], Text: r.Code(t, t0), Time: t0}
	}
	close(frames)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cancel()
	recs := h.records()
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	raw, _ := h.q.Peek(n, 1<<30)
	var prev [32]byte
	accounts := map[uint64]bool{}
	for i, r := range raw {
		tp, _ := record.ParseTap(r.Data)
		if tp.PrevHash != prev {
			t.Fatalf("chain broken at record %d", i)
		}
		prev = record.Hash(r.Data)
		accounts[tp.Account] = true
	}
	if len(accounts) != n {
		t.Errorf("%d distinct accounts, want %d", len(accounts), n)
	}
}

func TestPrune(t *testing.T) {
	h := newHarness(t, nil)
	r := h.issuer.Rider(t, 4242, t0)
	text := r.Code(t, t0)
	h.tap(text)
	if n, err := h.a.Prune(); err != nil || n != 0 {
		t.Errorf("Prune right away = %d, %v, want 0", n, err)
	}
	h.clock.Add(4 * time.Minute)
	if n, err := h.a.Prune(); err != nil || n != 0 {
		t.Errorf("Prune after 4 minutes without a newer code = %d, %v, want 0 (it may be a clock jump)", n, err)
	}
	// A code accepted at the new time shows that time has passed.
	if out := h.tap(h.issuer.Rider(t, 4243, t0).Code(t, h.clock.Now())); !out.Accepted {
		t.Fatal(out)
	}
	if n, err := h.a.Prune(); err != nil || n != 1 {
		t.Errorf("Prune after 4 minutes and a newer code = %d, %v, want 1", n, err)
	}
	// A pruned code is too old to pass verification anyway.
	if out := h.tap(text); out.Reason != paycode.ReasonCodeExpired {
		t.Errorf("pruned code: %+v", out)
	}
}

// TestPruneSurvivesClockJump: the system clock jumps two hours ahead and
// comes back. Pruning in between must not forget the codes accepted before
// the jump, or the same code would be charged twice when the clock is back.
func TestPruneSurvivesClockJump(t *testing.T) {
	h := newHarness(t, nil)
	r := h.issuer.Rider(t, 4242, t0)
	text := r.Code(t, t0)
	if out := h.tap(text); !out.Accepted {
		t.Fatal(out)
	}
	h.clock.Add(2 * time.Hour) // the jump
	if out := h.tap(h.issuer.Rider(t, 4243, t0).Code(t, t0.Add(10*time.Second))); out.Accepted {
		t.Fatalf("a fresh code accepted on a clock two hours ahead: %+v", out)
	}
	if n, err := h.a.Prune(); err != nil || n != 0 {
		t.Errorf("Prune after a forward jump = %d, %v, want 0", n, err)
	}
	h.clock.Add(-2*time.Hour + 10*time.Second) // corrected
	if out := h.tap(text); out.Accepted || out.Reason != record.ReasonCodeUsed {
		t.Errorf("the same code after the clock came back = %+v, want code_used (remembered)", out)
	}
	if n := len(h.records()); n != 1 {
		t.Errorf("%d records, want 1", n)
	}
}

// TestClockOffset: a clock measured two hours ahead of the server's puts
// the validator out of service with a clear reason instead of refusing
// every rider's fresh code; a correction of the system clock is seen at
// once (against the monotonic clock), and so is a later jump.
func TestClockOffset(t *testing.T) {
	reg := metrics.NewRegistry()
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.Metrics = reg })
	gauge := func(name string) string {
		var b strings.Builder
		reg.WriteTo(&b)
		for _, l := range strings.Split(b.String(), "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				return v
			}
		}
		return ""
	}
	if g := gauge("farego_clock_offset_seconds"); g != "NaN" {
		t.Errorf("offset gauge before any measurement = %q, want NaN", g)
	}
	h.a.ClockMeasured(2*time.Hour, 40*time.Millisecond)
	out := h.tap(h.issuer.Rider(t, 4242, t0).Code(t, t0))
	if out.Accepted || out.Reason != record.ReasonClockOffset || !record.OutOfService(out.Reason) {
		t.Fatalf("tap with the clock 2 h ahead: %+v, want out of service (clock_offset)", out)
	}
	if got := last(h.fb); got != "out of service: Out of service: clock" {
		t.Errorf("feedback %q", got)
	}
	if n := len(h.fb.Events()); n != 1 {
		t.Errorf("%d feedback events for one tap", n)
	}
	if s := h.a.OutOfService(); !strings.HasPrefix(s, "clock_offset: clock ") || !strings.HasSuffix(s, " from the server's (bound 30s)") {
		t.Errorf("OutOfService() = %q", s)
	}
	if g := gauge("farego_clock_offset_exceeded"); g != "1" {
		t.Errorf("exceeded gauge = %q, want 1", g)
	}

	h.clock.Add(-2 * time.Hour) // the operator (or NTP) sets the clock right
	if off, _, _ := h.a.ClockOffset(); off.Abs() > time.Second {
		t.Errorf("offset after the correction = %v, want about 0", off)
	}
	if out := h.tap(h.issuer.Rider(t, 4243, h.clock.Now()).Code(t, h.clock.Now())); !out.Accepted {
		t.Errorf("after the correction: %+v", out)
	}
	if s := h.a.OutOfService(); s != "" {
		t.Errorf("OutOfService() after the correction = %q", s)
	}

	h.clock.Add(time.Hour) // and then it jumps, with no ack in between
	if out := h.tap(h.issuer.Rider(t, 4244, h.clock.Now()).Code(t, h.clock.Now())); out.Reason != record.ReasonClockOffset {
		t.Errorf("after a jump of an hour: %+v, want clock_offset", out)
	}

	// Within the bound (and its uncertainty), or with the check disabled: in service.
	h.a.ClockMeasured(25*time.Second, time.Second)
	if out := h.tap(h.issuer.Rider(t, 4245, h.clock.Now()).Code(t, h.clock.Now())); !out.Accepted {
		t.Errorf("25 s off: %+v", out)
	}
}

// codeForgotten gives h a boot clock that runs with its wall clock, has
// the clock measured right within unc, accepts a code of rider and, four
// minutes later, one of rider+1, and prunes the first, which it returns.
func codeForgotten(t *testing.T, h *harness, unc time.Duration, rider uint64) string {
	t.Helper()
	var boot atomic.Int64 // the boot clock: the time elapsed, whatever the wall clock does
	h.a.sinceBoot = func() time.Duration { return time.Duration(boot.Load()) }
	h.a.ClockMeasured(0, unc)
	code := h.issuer.Rider(t, rider, t0).Code(t, t0)
	if out := h.tap(code); !out.Accepted {
		t.Fatalf("first tap: %+v", out)
	}
	h.clock.Add(4 * time.Minute)
	boot.Add(int64(4 * time.Minute))
	now := h.clock.Now()
	if out := h.tap(h.issuer.Rider(t, rider+1, now).Code(t, now)); !out.Accepted {
		t.Fatalf("four minutes later: %+v", out)
	}
	if n, err := h.a.Prune(); err != nil || n != 1 {
		t.Fatalf("Prune() = %d, %v; want the first code forgotten", n, err)
	}
	return code
}

// TestImpreciseClockSampleKeepsThePrecise: a clock sample with a wide
// uncertainty (an ack that came back minutes after its batch) that agrees
// with the measurement held does not replace it. It did, and a clock set
// back by two and a half minutes then stayed within the bound and its
// uncertainty: in service, it took a code Prune had forgotten a second
// time. One that disagrees beyond both uncertainties is still taken.
func TestImpreciseClockSampleKeepsThePrecise(t *testing.T) {
	h := newHarness(t, nil)
	code := codeForgotten(t, h, 10*time.Millisecond, 4270)
	h.a.ClockMeasured(0, 2*time.Minute) // a slow ack's sample
	if _, unc, _ := h.a.ClockOffset(); unc != 10*time.Millisecond {
		t.Errorf("uncertainty after a less precise sample = %v, want the precise one's", unc)
	}
	h.clock.Add(-150 * time.Second) // the wall clock set back, the boot clock runs on
	if out := h.tap(code); out.Accepted || out.Reason != record.ReasonClockOffset {
		t.Errorf("the first code again on the clock set back: %+v, want clock_offset", out)
	}
	// A sample that disagrees beyond both uncertainties is taken.
	h.a.ClockMeasured(0, time.Second)
	if off, unc, _ := h.a.ClockOffset(); off != 0 || unc != time.Second {
		t.Errorf("after a disagreeing sample: %v ± %v, want 0 ± 1s", off, unc)
	}
}

// TestClockOffsetThroughSuspend: a board suspended while the bus is parked
// (its ignition off) comes back with its wall clock right, the time asleep
// on the kernel's boot clock and not on Go's monotonic one. The offset
// measured before is still the offset: it went out of service, ahead by
// the suspend's length, and with no tap to send had no ack to learn
// better. A jump of the wall clock alone is still one (TestClockOffset).
func TestClockOffsetThroughSuspend(t *testing.T) {
	h := newHarness(t, nil)
	var asleep atomic.Int64
	h.a.sinceBoot = func() time.Duration { return bootClock() + time.Duration(asleep.Load()) }
	h.a.ClockMeasured(0, 10*time.Millisecond)
	asleep.Add(int64(3 * time.Hour)) // suspended for three hours
	h.clock.Add(3 * time.Hour)
	if off, _, _ := h.a.ClockOffset(); off.Abs() > time.Second {
		t.Errorf("offset after a suspend of 3 h = %v, want about 0", off)
	}
	if out := h.tap(h.issuer.Rider(t, 4246, h.clock.Now()).Code(t, h.clock.Now())); !out.Accepted {
		t.Errorf("after the suspend: %+v, want accepted", out)
	}
}

// TestClockBehindTheNewestCode: a board without a battery-backed clock
// restarts after a power cut with its clock at the last time saved (here
// an hour behind): in service, it refused every rider's fresh code as from
// the future, blaming the rider, for as long as it stayed offline
// (power-cut review). The newest code it accepted bounds the clock: out
// of service (clock_offset) until the clock is stepped past the bound or
// measured against the server's.
func TestClockBehindTheNewestCode(t *testing.T) {
	h := newHarness(t, nil)
	if out := h.tap(h.issuer.Rider(t, 4250, t0).Code(t, t0)); !out.Accepted {
		t.Fatalf("first tap: %+v", out)
	}
	// Behind by less than skew and bound (60 s): nothing is known.
	h.clock.Add(-50 * time.Second)
	h.restart()
	if s := h.a.OutOfService(); s != "" {
		t.Errorf("50 s behind the newest code: OutOfService() = %q", s)
	}
	h.clock.Add(-time.Hour)
	h.restart()
	s := h.a.OutOfService()
	if !strings.HasPrefix(s, "clock_offset: clock behind by at least 59m50s: ") || !strings.Contains(s, "2026-") || !strings.Contains(s, "set the clock (NTP)") {
		t.Errorf("an hour behind the newest code: OutOfService() = %q", s)
	}
	now := h.clock.Now()
	if out := h.tap(h.issuer.Rider(t, 4251, now).Code(t, now)); out.Reason != record.ReasonClockOffset {
		t.Errorf("tap an hour behind: %+v, want clock_offset", out)
	}
	if off, _, ok := h.a.ClockOffset(); ok {
		t.Errorf("the bound is reported as a measured offset %v (the server takes that as measured)", off)
	}
	// The clock runs on (the bound with it): still behind.
	h.clock.Add(10 * time.Minute)
	if out := h.tap(h.issuer.Rider(t, 4252, h.clock.Now()).Code(t, h.clock.Now())); out.Reason != record.ReasonClockOffset {
		t.Errorf("ten minutes later, not corrected: %+v, want clock_offset", out)
	}
	// NTP steps it right: in service.
	h.clock.Add(time.Hour)
	if out := h.tap(h.issuer.Rider(t, 4253, h.clock.Now()).Code(t, h.clock.Now())); !out.Accepted {
		t.Errorf("after the step: %+v, want accepted", out)
	}

	// Measured against the server's: the measurement says, not the bound.
	h.clock.Add(-2 * time.Hour)
	h.restart()
	if out := h.tap(h.issuer.Rider(t, 4254, h.clock.Now()).Code(t, h.clock.Now())); out.Reason != record.ReasonClockOffset {
		t.Fatalf("restarted two hours behind: %+v, want clock_offset", out)
	}
	h.a.ClockMeasured(-2*time.Hour, 50*time.Millisecond)
	if s := h.a.OutOfService(); !strings.HasSuffix(s, "from the server's (bound 30s)") {
		t.Errorf("measured: OutOfService() = %q", s)
	}
	h.a.ClockMeasured(0, 50*time.Millisecond) // the server's time taken (say, the operator's measured clock is right after all)
	if s := h.a.OutOfService(); s != "" {
		t.Errorf("measured within bounds: OutOfService() = %q", s)
	}
}

// TestCodeOncePastAClockSetBack: a clock set back while the validator
// runs (no restart, never measured against the server's: offline, no
// time_url) is held to the newest code accepted, as one found behind it
// at the start is. The clock set back an hour made the codes of an hour
// before fresh again, and Prune had forgotten them: the same code paid
// twice (a second rider through on a shared picture of it).
func TestCodeOncePastAClockSetBack(t *testing.T) {
	h := newHarness(t, nil)
	code := h.issuer.Rider(t, 4260, t0).Code(t, t0)
	if out := h.tap(code); !out.Accepted {
		t.Fatalf("first tap: %+v", out)
	}
	h.clock.Add(time.Hour)
	now := h.clock.Now()
	if out := h.tap(h.issuer.Rider(t, 4261, now).Code(t, now)); !out.Accepted {
		t.Fatalf("an hour later: %+v", out)
	}
	if n, err := h.a.Prune(); err != nil || n != 1 {
		t.Fatalf("Prune() = %d, %v; want the first code forgotten", n, err)
	}
	// Set back by an hour (less 30 s: out of the passback window).
	h.clock.Add(-time.Hour + 30*time.Second)
	if out := h.tap(code); out.Accepted || out.Reason != record.ReasonClockOffset {
		t.Errorf("the first code again on the clock set back: %+v, want clock_offset", out)
	}
	if s := h.a.OutOfService(); !strings.HasPrefix(s, "clock_offset: clock behind by at least 58m30s: ") {
		t.Errorf("OutOfService() = %q", s)
	}
	// Set right again: in service, and the code is expired.
	h.clock.Add(time.Hour)
	if s := h.a.OutOfService(); s != "" {
		t.Errorf("clock right again: OutOfService() = %q", s)
	}
	if out := h.tap(code); out.Reason != paycode.ReasonCodeExpired {
		t.Errorf("the first code on the right clock: %+v, want code_expired", out)
	}
}

// TestPruneKeepsCodesForAWideClockBound: with a MaxClockOffset above 30 s
// a clock may be further behind the newest code and still in service;
// Prune keeps the codes such a clock could take again.
func TestPruneKeepsCodesForAWideClockBound(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.MaxClockOffset = 2 * time.Minute })
	code := h.issuer.Rider(t, 4262, t0).Code(t, t0)
	if out := h.tap(code); !out.Accepted {
		t.Fatalf("first tap: %+v", out)
	}
	h.clock.Add(5 * time.Minute)
	now := h.clock.Now()
	if out := h.tap(h.issuer.Rider(t, 4263, now).Code(t, now)); !out.Accepted {
		t.Fatalf("five minutes later: %+v", out)
	}
	if _, err := h.a.Prune(); err != nil {
		t.Fatal(err)
	}
	// Set back 4m20s: behind the newest code by less than skew and twice
	// the bound (4m30s): in service, and the first code is fresh again by
	// this clock.
	h.clock.Add(-5*time.Minute + 40*time.Second)
	if s := h.a.OutOfService(); s != "" {
		t.Fatalf("OutOfService() = %q", s)
	}
	if out := h.tap(code); out.Accepted {
		t.Errorf("the first code again on the clock set back: %+v, want refused", out)
	}
}

// TestPropertyCodeOnceUnderClockSteps: whatever the clock does before it
// is measured (ahead, back, an hour, a day), with restarts and Prune in
// between, no code is accepted twice. Riders show new codes and codes
// shown before; the device clock is the true time plus an offset that
// changes now and then.
func TestPropertyCodeOnceUnderClockSteps(t *testing.T) {
	offsets := []time.Duration{0, 0, 0, time.Hour, -time.Hour, 25 * time.Second, -25 * time.Second,
		100 * time.Second, 10 * time.Minute, 24 * time.Hour, -20 * time.Minute}
	for seed := int64(1); seed <= 8; seed++ {
		r := rand.New(rand.NewSource(seed))
		h := newHarness(t, nil)
		now, off := t0, time.Duration(0)
		var riders []*paycodetest.Rider
		for i := range 6 {
			riders = append(riders, h.issuer.Rider(t, uint64(5000+i), t0))
		}
		var shown []string
		accepted := map[string]int{}
		tap := func(step int, text string) {
			h.clock.Set(now.Add(off))
			if out := h.tap(text); out.Accepted {
				if accepted[text]++; accepted[text] > 1 {
					t.Fatalf("seed %d, step %d: a code accepted %d times (clock off by %s)", seed, step, accepted[text], off)
				}
			}
		}
		for step := range 300 {
			switch k := r.Intn(20); {
			case k == 0:
				off = offsets[r.Intn(len(offsets))]
			case k == 1:
				h.restart()
			case k == 2:
				if _, err := h.a.Prune(); err != nil {
					t.Fatal(err)
				}
			case k < 6:
				now = now.Add(time.Duration(r.Intn(300)) * time.Second)
			case k < 12 && len(shown) > 0:
				tap(step, shown[r.Intn(len(shown))])
			default:
				text := riders[r.Intn(len(riders))].Code(t, now.Add(-time.Duration(r.Intn(60))*time.Second))
				shown = append(shown, text)
				tap(step, text)
			}
			now = now.Add(time.Duration(1+r.Intn(10)) * time.Second)
		}
	}
}

func TestClockOffsetDisabled(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.MaxClockOffset = -1 })
	h.a.ClockMeasured(time.Hour, 0)
	if out := h.tap(h.issuer.Rider(t, 4242, t0).Code(t, t0)); !out.Accepted {
		t.Errorf("with the check disabled: %+v", out)
	}
}

func TestHold(t *testing.T) {
	h := newHarness(t, nil)
	h.a.Hold(record.ReasonQueueDamaged, "run farego-validator reset-queue")
	if out := h.tap(h.issuer.Rider(t, 4242, t0).Code(t, t0)); out.Reason != record.ReasonQueueDamaged {
		t.Errorf("held: %+v", out)
	}
	if s := h.a.OutOfService(); s != "queue_damaged: run farego-validator reset-queue" {
		t.Errorf("OutOfService() = %q", s)
	}
	h.a.Hold("", "")
	if out := h.tap(h.issuer.Rider(t, 4242, t0).Code(t, t0)); !out.Accepted {
		t.Errorf("released: %+v", out)
	}
}

// shardBody encodes the shard of account from entries.
func shardBody(tb testing.TB, account uint64, entries []record.DenyEntry) []byte {
	tb.Helper()
	s := record.DenyShards(entries, t0)[record.DenyShardOf(account)]
	b, err := s.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestDenyShards: shards apply one by one with their own versions, survive
// a restart (stored in the queue file), refuse an older version, a whole
// list replaces only the shards older than it, and entries expire by the
// validator's clock.
func TestDenyShards(t *testing.T) {
	h := newHarness(t, nil)
	r := h.issuer.Rider(t, 6001, t0)
	short := h.issuer.Rider(t, 6002, t0)
	entries := []record.DenyEntry{{Account: 6001, Reason: "fraud"},
		{Account: 6002, Serial: short.Serial, Reason: "code_reused", Expires: t0.Add(10 * time.Minute).Unix()}}
	for _, acct := range []uint64{6001, 6002} {
		if err := h.a.Apply(record.DocDenyShard, 100, shardBody(t, acct, entries)); err != nil && !errors.Is(err, ErrStaleVersion) {
			t.Fatal(err)
		}
	}
	if out := h.tap(r.Code(t, t0)); out.Reason != record.ReasonDenied {
		t.Errorf("account in a shard: %+v", out)
	}
	if v := h.a.Versions(); v[record.DenyShardKey(record.DenyShardOf(6001))] != 100 || v[record.DocDenyList] != 100 {
		t.Errorf("versions %v", v)
	}
	if err := h.a.Apply(record.DocDenyShard, 99, shardBody(t, 6001, nil)); !errors.Is(err, ErrStaleVersion) {
		t.Errorf("older shard: %v", err)
	}
	if err := h.a.Apply(record.DocDenyShard, 0, shardBody(t, 6001, nil)); !errors.Is(err, ErrInvalidDocument) {
		t.Errorf("shard without a version: %v", err)
	}
	h.restart()
	if n := h.a.DenyEntries(); n != 2 {
		t.Errorf("%d entries after a restart, want 2", n)
	}
	if out := h.tap(r.Code(t, t0)); out.Reason != record.ReasonDenied {
		t.Errorf("after a restart: %+v", out)
	}
	// A whole list at version 50 changes nothing (every shard is newer
	// or empty and older: only those take it).
	other := h.issuer.Rider(t, 6003, t0)
	dl, _ := json.Marshal(record.DenyList{Version: 50, Entries: []record.DenyEntry{{Account: 6003}}})
	if err := h.a.Apply(record.DocDenyList, 50, dl); err != nil {
		t.Fatal(err)
	}
	if out := h.tap(r.Code(t, t0)); out.Reason != record.ReasonDenied {
		t.Errorf("a whole older list undid a newer shard: %+v", out)
	}
	if record.DenyShardOf(6003) != record.DenyShardOf(6001) {
		if out := h.tap(other.Code(t, t0)); out.Reason != record.ReasonDenied {
			t.Errorf("a whole list did not fill an older shard: %+v", out)
		}
	}
	// The code_reused entry expires with its credential, by the clock.
	h.clock.Add(5 * time.Minute)
	if out := h.tap(short.Code(t, h.clock.Now())); out.Reason != record.ReasonDenied {
		t.Errorf("before expiry: %+v", out)
	}
	h.clock.Add(6 * time.Minute)
	if n := h.a.pruneDeny(); n != 0 {
		t.Errorf("pruneDeny dropped %d before the clock was measured, want 0", n)
	}
	h.a.ClockMeasured(0, 0) // the server's clock agrees
	if n := h.a.pruneDeny(); n != 1 {
		t.Errorf("pruneDeny dropped %d, want 1", n)
	}
	if out := h.tap(short.Code(t, h.clock.Now())); out.Reason == record.ReasonDenied {
		t.Errorf("after expiry: %+v", out)
	}
}

// TestDenyListStoredWholeIsConverted: a deny list stored whole by older
// software is read into shards, and replaced by them at the next apply.
func TestDenyListStoredWholeIsConverted(t *testing.T) {
	h := newHarness(t, nil)
	dl, _ := json.Marshal(record.DenyList{Version: 7, Entries: []record.DenyEntry{{Account: 6101}}})
	err := h.q.UpdateState(func(st *queue.State) error {
		return st.Put(bucketState, []byte(record.DocDenyList), append(binary.BigEndian.AppendUint64(nil, 7), dl...))
	})
	if err != nil {
		t.Fatal(err)
	}
	h.restart()
	if out := h.tap(h.issuer.Rider(t, 6101, t0).Code(t, t0)); out.Reason != record.ReasonDenied {
		t.Errorf("account of the stored whole list: %+v", out)
	}
	if err := h.a.Apply(record.DocDenyShard, 8, shardBody(t, 6102, []record.DenyEntry{{Account: 6102}})); err != nil {
		t.Fatal(err)
	}
	h.q.ViewState(func(st *queue.State) error {
		if st.Get(bucketState, []byte(record.DocDenyList)) != nil {
			t.Error("the whole list is still stored")
		}
		return nil
	})
	h.restart()
	if out := h.tap(h.issuer.Rider(t, 6101, t0).Code(t, t0)); out.Reason != record.ReasonDenied {
		t.Errorf("after the conversion: %+v", out)
	}
}

// TestDenyEntriesSurviveClockJump: the system clock jumps a day ahead
// (the server measured it right just before) and comes back. While it is
// ahead, the entries of a pass denied until an hour after it expires look
// expired: dropping them then — from memory, and from the shard the
// server sends again meanwhile (its clock still holds the entry), stored
// so — let the pass through again once the clock is back, for the rest of
// its life and after a restart, as Prune does not for the codes it keeps
// (TestPruneSurvivesClockJump).
func TestDenyEntriesSurviveClockJump(t *testing.T) {
	h := newHarness(t, nil)
	denied := h.issuer.Rider(t, 6002, t0) // valid until t0 + 24 h
	other := h.issuer.Rider(t, 6003, t0)
	entries := []record.DenyEntry{{Account: 6002, Serial: denied.Serial, Reason: "code_reused",
		Expires: t0.Add(25 * time.Hour).Unix()}}
	if err := h.a.Apply(record.DocDenyShard, 100, shardBody(t, 6002, entries)); err != nil {
		t.Fatal(err)
	}
	h.a.ClockMeasured(0, 10*time.Millisecond)
	if out := h.tap(denied.Code(t, t0)); out.Reason != record.ReasonDenied {
		t.Fatalf("before the jump: %+v", out)
	}

	h.clock.Add(26 * time.Hour) // the jump
	if out := h.tap(other.Code(t, t0)); out.Reason != record.ReasonClockOffset {
		t.Fatalf("a tap on a clock a day ahead: %+v, want clock_offset", out)
	}
	h.a.pruneDeny() // Run's tick
	// The server's next version of the shard, which still holds the entry.
	more := append(entries, record.DenyEntry{Account: 6002 + record.DenyShardCount, Reason: "fraud"})
	if record.DenyShardOf(6002+record.DenyShardCount) != record.DenyShardOf(6002) {
		for a := uint64(6003); ; a++ {
			if record.DenyShardOf(a) == record.DenyShardOf(6002) {
				more = append(entries, record.DenyEntry{Account: a, Reason: "fraud"})
				break
			}
		}
	}
	if err := h.a.Apply(record.DocDenyShard, 101, shardBody(t, 6002, more)); err != nil {
		t.Fatal(err)
	}

	h.clock.Add(-26 * time.Hour) // corrected
	if out := h.tap(denied.Code(t, h.clock.Now())); out.Reason != record.ReasonDenied {
		t.Errorf("the denied pass after the clock came back: %+v, want denied", out)
	}
	h.restart()
	h.clock.Add(10 * time.Second) // past the passback window of an accepted tap
	if out := h.tap(denied.Code(t, h.clock.Now())); out.Reason != record.ReasonDenied {
		t.Errorf("the denied pass after a restart: %+v, want denied", out)
	}
}

// TestNoValidKeyIsOutOfService: a keyring none of whose keys is valid now
// (an old bundle's, or a device offline past a key rotation) refused every
// rider as unknown_issuer_key ("Code not valid here") while the validator
// said it was in service (field review). It is out of service, saying
// why; a code of an unknown issuer under a valid keyring stays the code's
// fault.
func TestNoValidKeyIsOutOfService(t *testing.T) {
	h := newHarness(t, nil)
	later := t0.AddDate(2, 0, 0) // the harness's key ends a year after t0
	h.clock.t = later
	text := h.issuer.Rider(t, 4242, later).Code(t, later)
	out := h.tap(text)
	if out.Reason != record.ReasonNoValidKey || !record.OutOfService(out.Reason) {
		t.Errorf("tap with no key valid: %+v, want %s", out, record.ReasonNoValidKey)
	}
	if oos := h.a.OutOfService(); !strings.HasPrefix(oos, string(record.ReasonNoValidKey)+": ") ||
		!strings.Contains(oos, "none of its 1 keys, the first valid from "+t0.AddDate(-1, 0, 0).UTC().Format(time.RFC3339)+
			", the last until "+t0.AddDate(1, 0, 0).UTC().Format(time.RFC3339)+", is valid at "+later.UTC().Format(time.RFC3339)) {
		t.Errorf("OutOfService = %q, want %s with why", oos, record.ReasonNoValidKey)
	}

	// A route the fare table does not serve as well: the status gives the
	// reason the taps get (the route is checked first).
	if err := h.a.Apply(record.DocFares, 3, faresForOnly42(t)); err != nil {
		t.Fatal(err)
	}
	if err := h.a.AssignLocal("99", "bus-17"); err != nil {
		t.Fatal(err)
	}
	if out, oos := h.tap(text), h.a.OutOfService(); out.Reason != record.ReasonRouteNotInFares || !strings.HasPrefix(oos, string(out.Reason)+": ") {
		t.Errorf("route and keyring both bad: tap %s, status %q; want both %s", out.Reason, oos, record.ReasonRouteNotInFares)
	}
	if err := h.a.AssignLocal("42", "bus-17"); err != nil {
		t.Fatal(err)
	}

	h.clock.t = t0
	if oos := h.a.OutOfService(); oos != "" {
		t.Errorf("OutOfService with a valid key = %q", oos)
	}
	other := paycodetest.NewIssuer(t, 99, t0)
	if out := h.tap(other.Rider(t, 4243, t0).Code(t, t0)); out.Reason != paycode.ReasonUnknownIssuerKey {
		t.Errorf("code of an unknown issuer: %+v, want %s", out, paycode.ReasonUnknownIssuerKey)
	}
}

// TestGarbageRefusalsLogBounded: frames that are no code (a scanner fed
// noise) are counted each, but logged one a second per scanner and
// reason; refusals of codes are logged each (a field review: 10 s of
// random bytes wrote 27,684 lines).
func TestGarbageRefusalsLogBounded(t *testing.T) {
	reg := metrics.NewRegistry()
	var logs syncBuffer
	h := newHarness(t, func(c *Config, _ *queue.Options) {
		c.Metrics = reg
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	var boot atomic.Int64 // the time since boot the limiter reads
	h.a.sinceBoot = func() time.Duration { return time.Duration(boot.Load()) }
	for range 200 {
		h.tap("FG1:not a code")
		h.tap("FG7:another version")
	}
	other := h.a.Tap(context.Background(), scanner.Frame{Scanner: "rear", Text: "garbage", Time: h.clock.Now()})
	if other.Reason != paycode.ReasonMalformed {
		t.Fatalf("garbage: %+v", other)
	}
	r := h.issuer.Rider(t, 4242, t0)
	code := r.Code(t, t0)
	h.clock.t = t0.Add(10 * time.Minute) // the code has expired
	for range 3 {
		h.tap(code)
	}
	lines := strings.Count(logs.String(), `msg="tap refused"`)
	if want := 1 + 1 + 1 + 3; lines != want { // malformed and unsupported at front, malformed at rear, 3 expired codes
		t.Errorf("%d refusal lines, want %d:\n%s", lines, want, logs.String())
	}
	// A second later, the next says how many were held back.
	boot.Add(int64(time.Second))
	h.tap("FG1:not a code")
	if !strings.Contains(logs.String(), `reason=malformed scanner=front account=0 code_hash=b1489cc58bb3 suppressed=199`) {
		t.Errorf("the line a second later does not say 199 were held back:\n%s", logs.String())
	}
	var m strings.Builder
	reg.WriteTo(&m)
	if !strings.Contains(m.String(), `farego_taps_total{outcome="rejected",reason="malformed"} 202`) {
		t.Errorf("the metrics do not count every malformed frame:\n%s", m.String())
	}

	// A screen of refused codes held to the scanner (an attack review:
	// 5,000 forged codes in 0.4 s, a line each) is logged refusedPerSecond
	// a second; the next second says how many were held back.
	before := strings.Count(logs.String(), `msg="tap refused"`)
	for range 50 {
		h.tap(code)
	}
	if lines := strings.Count(logs.String(), `msg="tap refused"`) - before; lines != refusedPerSecond {
		t.Errorf("%d lines of 50 expired codes in a second, want %d:\n%s", lines, refusedPerSecond, logs.String())
	}
	boot.Add(int64(time.Second))
	h.tap(code)
	if !strings.Contains(logs.String(), `reason=code_expired scanner=front account=4242`) || !strings.Contains(logs.String(), `suppressed=40`) {
		t.Errorf("the line a second later does not say 40 were held back:\n%s", logs.String())
	}
}

// TestImpreciseOnlySampleCodeOnce: a clock whose only measurement is an
// imprecise one (the first ack after a backlog came back minutes after
// its batch) is held to the newest code accepted as an unmeasured one is:
// set back by two and a half minutes it stayed within the bound and its
// uncertainty, in service, and took a code Prune had forgotten a second
// time.
func TestImpreciseOnlySampleCodeOnce(t *testing.T) {
	h := newHarness(t, nil)
	code := codeForgotten(t, h, 2*time.Minute, 4280) // a slow ack's sample, the only one
	h.clock.Add(-150 * time.Second)                  // the wall clock set back, the boot clock runs on
	if out := h.tap(code); out.Accepted {
		t.Errorf("the first code again on the clock set back: %+v, want refused", out)
	}
}
