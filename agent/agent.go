package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/agent/ridertext"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
)

// clockCheckInterval is how often Run looks whether the system clock moved
// out of (or back within) MaxClockOffset between taps.
const clockCheckInterval = 5 * time.Second

// Defaults for Config fields left zero.
const (
	DefaultPassbackWindow = 5 * time.Second
	DefaultRiskCap        = 10
	DefaultWorkers        = 4
	DefaultPruneInterval  = time.Minute

	DefaultHeartbeatInterval = time.Second
	DefaultTapStallAfter     = 10 * time.Second
)

// DefaultMinClock is the earliest wall-clock time the validator believes.
// A clock before it is obviously unset (an RTC without battery boots in 1970
// or 2000) and the validator goes out of service instead of guessing. Builds
// may move it forward with -ldflags "-X github.com/farego/farego/agent.BuildDate=2026-11-25".
var DefaultMinClock = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// BuildDate (YYYY-MM-DD), set at build time, overrides DefaultMinClock.
var BuildDate = ""

// MinClock returns the default earliest believable clock: BuildDate if set, else DefaultMinClock.
func MinClock() time.Time {
	if t, err := time.Parse(time.DateOnly, BuildDate); err == nil {
		return t
	}
	return DefaultMinClock
}

// Config configures an Agent. Zero fields mean the documented defaults.
type Config struct {
	DeviceID string // required; see record.ValidDeviceID
	Route    string // required: the route the vehicle is serving
	Vehicle  string

	Policy paycode.Policy // code max age and clock skew
	// PassbackWindow refuses the same account again on this device within
	// it; default 5 s, negative disables.
	PassbackWindow time.Duration
	// RiskCap is the most taps one account may make on this device between
	// successful syncs; default 10, negative disables.
	RiskCap int
	// MinClock: a clock before it puts the validator out of service; default
	// BuildDate or DefaultMinClock.
	MinClock time.Time
	// MaxClockOffset: a clock measured (ClockMeasured) further than this
	// from the server's puts the validator out of service; default
	// DefaultMaxClockOffset, negative disables.
	MaxClockOffset time.Duration
	// CacheSize of the credential-signature cache (paycode.NewVerifier).
	CacheSize int
	// Workers processing frames in Run; default 4 (so two doors' fsyncs
	// share group commits).
	Workers int
	// PruneInterval: how often Run forgets codes too old to be accepted again.
	PruneInterval time.Duration

	// Heartbeat, if set, is called by Run every HeartbeatInterval while
	// its loop runs and no tap has been under way for longer than
	// TapStallAfter (see Stalled): the systemd watchdog is pinged only
	// while it is. It must not block.
	Heartbeat func()
	// HeartbeatInterval: default DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// TapStallAfter: a tap under way for longer than this (by Now) means
	// the tap path is stuck (a hung disk, a hung output); default
	// DefaultTapStallAfter.
	TapStallAfter time.Duration

	// Language of the texts riders see (Outcome.Message and the feedback);
	// default English. Reasons stay the same in every language.
	Language ridertext.Language

	// Accepted, if set, is called after each accepted tap is on disk (the
	// uplink uses it to send at once instead of at its next poll). It must
	// not block.
	Accepted func()

	// ServiceChanged, if set, is called when the validator goes out of
	// service or back for a reason of its own state (the clock offset, a
	// Hold), so the status can say so at once. It must not block.
	ServiceChanged func()

	Logger  *slog.Logger
	Now     func() time.Time
	Metrics *metrics.Registry // where to register the agent's metrics; nil: a private registry
}

// Agent decides taps. It is safe for concurrent use.
type Agent struct {
	cfg      Config
	q        *queue.Queue
	fb       feedback.Feedback
	log      *slog.Logger
	verifier *paycode.Verifier
	now      func() time.Time
	// garbage holds back "tap refused" lines of frames that are no code
	// (malformed, another version): one a second per scanner and reason,
	// with how many it held back. A scanner fed noise makes thousands a
	// second (a field review: 27,684 lines in 10 s), and none names a
	// rider; the taps metric counts them all. Refused codes are logged up
	// to refusedPerSecond a second per scanner and reason (a screen of
	// forged codes held to a scanner: 5,000 lines in 0.4 s, which
	// journald's rate limit answers by dropping every program's lines).
	garbage garbageLog

	state   atomic.Pointer[snapshot]
	applyMu sync.Mutex

	clock    atomic.Pointer[clockRef] // the last clock measurement
	behind   atomic.Pointer[clockRef] // a bound from the newest code accepted here, until measured (seedBehind)
	clockOff atomic.Bool              // the clock was last seen beyond MaxClockOffset
	// newest is the code time (unix seconds) of the newest code accepted
	// here, kept up as codes are accepted: the bound behindBound takes on
	// a clock set back while the device runs (seedBehind's is taken at
	// the start).
	newest atomic.Int64
	// sinceBoot reads the time elapsed, suspends included (bootClock; a
	// test's to move).
	sinceBoot func() time.Duration
	hold      atomic.Pointer[hold] // out of service by Hold
	assign    atomic.Pointer[Assignment]

	taps    *metrics.CounterVec
	latency *metrics.Histogram

	busyMu sync.Mutex
	busy   map[*int]time.Time // taps under way, by when they started (Now)

	rereadMu sync.Mutex
	rereads  map[string]time.Time // seen key → its last re-read let through (memory only)

	recordFail atomic.Pointer[recordFailure] // the last tap could not be recorded
}

// recordFailure is a tap the queue could not record (a full or failing
// disk): the validator is out of service until a tap is recorded again.
// Taps are still tried: the first that is recorded (space freed) ends it.
// A queue whose storage failed (queue.ErrStorageFailing) records nothing
// until the validator is restarted: fatal says so.
type recordFailure struct {
	since time.Time
	err   string
	fatal bool
}

// New returns an agent deciding taps into q (whose bbolt file also keeps the
// device state) and giving feedback through fb.
func New(q *queue.Queue, fb feedback.Feedback, cfg Config) (*Agent, error) {
	if err := record.ValidDeviceID(cfg.DeviceID); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := CheckAssignment(cfg.Route, cfg.Vehicle); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.PassbackWindow == 0 {
		cfg.PassbackWindow = DefaultPassbackWindow
	}
	if cfg.RiskCap == 0 {
		cfg.RiskCap = DefaultRiskCap
	}
	if cfg.MinClock.IsZero() {
		cfg.MinClock = MinClock()
	}
	if cfg.MaxClockOffset == 0 {
		cfg.MaxClockOffset = DefaultMaxClockOffset
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.PruneInterval <= 0 {
		cfg.PruneInterval = DefaultPruneInterval
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.TapStallAfter <= 0 {
		cfg.TapStallAfter = DefaultTapStallAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewRegistry()
	}
	a := &Agent{
		cfg: cfg, q: q, fb: fb, log: cfg.Logger, now: cfg.Now,
		verifier: paycode.NewVerifier(cfg.CacheSize), sinceBoot: bootClock,
	}
	s, err := loadState(q, a.log)
	if err != nil {
		return nil, err
	}
	a.state.Store(s)
	as, err := loadAssignment(q, &cfg)
	if err != nil {
		return nil, err
	}
	a.assign.Store(as)
	if err := a.seedBehind(); err != nil {
		return nil, err
	}
	if as.Source != AssignConfig && (as.Route != cfg.Route || as.Vehicle != cfg.Vehicle) {
		a.log.Info("assignment from the device state (set at runtime; the config's route and vehicle are only the first)",
			"route", as.Route, "vehicle", as.Vehicle, "source", as.Source)
	}
	a.taps = cfg.Metrics.Counter("farego_taps_total", "Taps decided, by outcome and reason.", "outcome", "reason")
	a.latency = cfg.Metrics.Histogram("farego_decision_seconds",
		"Time from the frame's last byte to the rider's feedback, including the fsync.", metrics.LatencyBuckets)
	cfg.Metrics.GaugeFunc("farego_clock_offset_seconds",
		"The device clock minus the settlement server's, measured from its acks (NaN until measured).", a.clockOffsetSeconds)
	cfg.Metrics.GaugeFunc("farego_clock_offset_exceeded",
		"1 while the clock is further from the server's than max_clock_offset (out of service).", func() float64 {
			if beyond, _ := a.clockBeyond(); beyond {
				return 1
			}
			return 0
		})
	return a, nil
}

// Ready reports whether the device has what it needs to accept taps: a
// keyring and a fare table.
func (a *Agent) Ready() error {
	s := a.state.Load()
	if s.keyring == nil || s.fares == nil {
		return fmt.Errorf("%w: keyring version %d, fare table version %d", ErrNotProvisioned,
			s.versions[record.DocKeyring], s.versions[record.DocFares])
	}
	return nil
}

// Outcome is the decision on one tap.
type Outcome struct {
	Accepted bool
	Reason   record.Reason // empty when accepted
	Message  string        // what the rider was shown
	Scanner  string
	Account  uint64 // 0 when the code could not be read
	// Seq is the queue sequence number of the record: of this tap when
	// accepted, of the tap that paid with the same code when already paid.
	Seq      uint64
	Fare     int64
	Currency string
	CodeHash string // paycode.ShortHash of the text: safe to log
	Latency  time.Duration

	heldOn bool // code_used: the code was still being read again and again (heldPastMax)
}

// AlreadyPaid reports whether the code was accepted here before (reason
// duplicate): the rider is let through on a green light with "Already
// paid" and charged nothing. It is neither a new charge nor a refusal.
func (o Outcome) AlreadyPaid() bool { return o.Reason == record.ReasonDuplicate }

// Tap decides one scanned frame: verify, check, record durably, give
// feedback. It returns only once the rider has had feedback and, if
// accepted, the record is on disk. Cancelling ctx does not interrupt a
// decision under way: a tap is either wholly recorded or not at all.
func (a *Agent) Tap(ctx context.Context, f scanner.Frame) Outcome {
	ctx = context.WithoutCancel(ctx)
	defer a.underway()()
	out := a.decide(ctx, f)
	a.feedback(ctx, &out)
	if f.Time.IsZero() {
		f.Time = a.now()
	}
	out.Latency = a.now().Sub(f.Time)
	a.latency.Observe(out.Latency.Seconds())
	switch {
	case out.Accepted:
		if a.cfg.Accepted != nil {
			a.cfg.Accepted()
		}
		a.taps.With("accepted", "").Inc()
		a.log.Info("tap accepted", "scanner", out.Scanner, "account", out.Account, "seq", out.Seq,
			"fare", out.Fare, "code_hash", out.CodeHash, "latency", out.Latency.String())
	case out.AlreadyPaid():
		// Not a refusal: the rider paid with this very code here, goes
		// through on a green light and is charged nothing (again).
		a.taps.With("already_paid", string(out.Reason)).Inc()
		a.log.Info("tap already paid", "scanner", out.Scanner, "account", out.Account, "paid_seq", out.Seq,
			"code_hash", out.CodeHash)
	default:
		outcome := "rejected"
		if record.OutOfService(out.Reason) {
			outcome = "out_of_service"
		}
		a.taps.With(outcome, string(out.Reason)).Inc()
		limit := refusedPerSecond
		if out.Reason == paycode.ReasonMalformed || out.Reason == paycode.ReasonUnsupportedVersion {
			limit = 1
		}
		ok, held := a.garbage.allow(a.sinceBoot(), out.Scanner, out.Reason, limit)
		if !ok {
			break
		}
		args := []any{"reason", out.Reason, "scanner", out.Scanner, "account", out.Account, "code_hash", out.CodeHash}
		if held > 0 {
			args = append(args, "suppressed", held)
		}
		if out.Reason == paycode.ReasonMalformed {
			if hint := affixHint(f.Text); hint != "" {
				args = append(args, "hint", hint)
			}
		}
		if out.heldOn {
			args = append(args, "hint", continuousHint)
		}
		a.log.Info("tap refused", args...)
	}
	return out
}

func (a *Agent) feedback(ctx context.Context, out *Outcome) {
	var err error
	switch {
	case out.Accepted:
		err = a.fb.Accepted(ctx, feedback.Accept{Fare: out.Fare, Currency: out.Currency, Message: out.Message, Scanner: out.Scanner})
	case out.AlreadyPaid():
		// The rider has paid with this very code: let them through, charge nothing.
		err = a.fb.Accepted(ctx, feedback.Accept{Currency: out.Currency, Message: out.Message, Scanner: out.Scanner})
	case record.OutOfService(out.Reason):
		err = a.fb.OutOfService(ctx, out.Message)
	default:
		err = a.fb.Rejected(ctx, feedback.Reject{Reason: string(out.Reason), Message: out.Message, Scanner: out.Scanner})
	}
	if err != nil {
		a.log.Warn("feedback failed", "err", err)
	}
}

func (a *Agent) decide(ctx context.Context, f scanner.Frame) Outcome {
	out := Outcome{Scanner: f.Scanner, CodeHash: paycode.ShortHash(f.Text)}
	refuse := func(reason record.Reason) Outcome {
		out.Reason, out.Message = reason, a.RiderMessage(string(reason))
		return out
	}
	now := a.now()
	if h := a.hold.Load(); h != nil {
		return refuse(h.reason)
	}
	if now.Before(a.cfg.MinClock) {
		return refuse(record.ReasonClock)
	}
	if beyond, _ := a.clockBeyond(); beyond {
		a.checkClock()
		return refuse(record.ReasonClockOffset)
	}
	s := a.state.Load()
	if s.keyring == nil || s.fares == nil {
		return refuse(record.ReasonNoFare)
	}
	// One assignment for the whole tap: a change applies between taps.
	as := a.assign.Load()
	if !s.fares.Covers(as.Route) {
		return refuse(record.ReasonRouteNotInFares)
	}
	d := a.verifier.Verify(f.Text, now, s.keyring, a.cfg.Policy)
	if d.Code != nil {
		out.Account = d.Code.Account
	}
	if !d.Accepted {
		if d.Reason == paycode.ReasonUnknownIssuerKey && !s.keyring.ValidAt(now, a.cfg.Policy) {
			return refuse(record.ReasonNoValidKey) // the device's keyring, not the rider's code
		}
		return refuse(d.Reason)
	}
	c := d.Code
	if s.denied(c.Account, c.Serial, now) {
		return refuse(record.ReasonDenied)
	}
	amount, err := s.fares.Fare(as.Route, c.Profile)
	out.Currency = s.fares.Currency
	if err != nil {
		return refuse(record.ReasonNoFare)
	}
	tap := record.Tap{
		DeviceID: a.cfg.DeviceID, Epoch: a.q.Epoch(), Time: now, Route: as.Route, Vehicle: as.Vehicle,
		Scanner: truncate(f.Scanner, 32), Code: c.Bytes(), Account: c.Account, Serial: c.Serial, Profile: c.Profile,
		Fare: amount, Currency: s.fares.Currency, FareVersion: s.fares.Version, KeyringVersion: s.keyring.Version(),
		Software: truncate(Version, 64),
	}
	idKey := c.ID().Key()
	acctKey := binary.BigEndian.AppendUint64(nil, c.Account)
	seq, err := a.q.AppendFunc(ctx, func(st *queue.State, seq uint64) ([]byte, error) {
		return a.record(st, seq, &tap, c, idKey, acctKey, now)
	})
	var dup *duplicateError
	switch {
	case err == nil:
	case errors.As(err, &dup):
		out.Seq = dup.seq
		return refuse(record.ReasonDuplicate)
	case errors.Is(err, errCodeUsed):
		out.heldOn = errors.Is(err, errCodeHeldOn)
		return refuse(record.ReasonCodeUsed)
	case errors.Is(err, errPassback):
		return refuse(record.ReasonPassback)
	case errors.Is(err, errRiskCap):
		return refuse(record.ReasonRiskCap)
	case errors.Is(err, queue.ErrFull):
		a.log.Warn("queue full: refusing taps until the uplink drains it", "err", err)
		return refuse(record.ReasonQueueFull)
	default:
		// The outage began at the first failure: its time is kept (every
		// refused tap moved it to its own, so a validator out of service
		// since the morning said "since" the last rider's try), and the
		// error is logged when it begins or changes, not at every tap (on
		// a full disk at a busy stop, one error line a rider in the
		// journal).
		var prev *recordFailure
		for {
			prev = a.recordFail.Load()
			f := &recordFailure{since: now, err: err.Error(), fatal: errors.Is(err, queue.ErrStorageFailing)}
			if prev != nil {
				f.since = prev.since
			}
			if a.recordFail.CompareAndSwap(prev, f) {
				break
			}
		}
		if prev == nil || prev.err != err.Error() {
			a.log.Error("recording a tap failed", "err", err)
		} else {
			a.log.Debug("recording a tap failed again", "err", err, "since", prev.since)
		}
		if prev == nil {
			a.serviceChanged()
		}
		return refuse(record.ReasonInternal)
	}
	if a.recordFail.Load() != nil && a.recordFail.Swap(nil) != nil { // a read, not a write, on every tap
		a.log.Info("recording taps works again: in service")
		a.serviceChanged()
	}
	a.acceptedCode(c.Time)
	out.Accepted, out.Seq, out.Fare = true, seq, amount
	out.Message = a.RiderMessage(ridertext.KeyPaid)
	return out
}

// acceptedCode raises newest to the code time of a code just accepted.
func (a *Agent) acceptedCode(codeTime uint32) {
	for {
		n := a.newest.Load()
		if int64(codeTime) <= n || a.newest.CompareAndSwap(n, int64(codeTime)) {
			return
		}
	}
}

// ReReadWindow and ReReadMax tell a scanner reading the phone again from
// the phone handed on. A scanner re-reads a phone held up to it every
// fraction of a second for as long as it is held: the same code at the
// same validator within ReReadWindow of its acceptance or of the last
// such re-read is green "Already paid" (no charge), up to ReReadMax after
// the acceptance — a rider holding the phone up for a few seconds keeps
// the green. A read after a gap of ReReadWindow, or after ReReadMax, is the
// phone (or a picture of the code) shown again — several riders sharing
// one code at one door — and is refused (code_used).
const (
	ReReadWindow = 2 * time.Second
	ReReadMax    = 6 * time.Second
)

// reRead reports whether the code of seen key key, accepted at accepted,
// read again at now, is the scanner re-reading a phone still held up
// (ReReadWindow, ReReadMax), and remembers the read if it is. The last
// re-reads are kept in memory, one per code (two doors, two phones held up
// at once), for ReReadMax: after a restart the window counts from the
// acceptance, as the first re-read does.
func (a *Agent) reRead(key []byte, accepted, now time.Time) bool {
	if d := now.Sub(accepted); d >= ReReadMax || d < -ReReadWindow {
		return false
	}
	a.rereadMu.Lock()
	defer a.rereadMu.Unlock()
	last := accepted
	if at, ok := a.rereads[string(key)]; ok && at.After(last) {
		last = at
	}
	if d := now.Sub(last); d >= ReReadWindow || d < -ReReadWindow {
		return false
	}
	for k, at := range a.rereads {
		if d := now.Sub(at); d >= ReReadMax || d < -ReReadMax {
			delete(a.rereads, k) // its code is past ReReadMax
		}
	}
	if a.rereads == nil {
		a.rereads = map[string]time.Time{}
	}
	a.rereads[string(key)] = now
	return true
}

// continuousHint is the fix logged with a code_used refusal of a code
// still being read again and again past ReReadMax: a scanner in
// continuous (auto-sense) mode reads a phone left in front of it many
// times a second, and the rider, green for ReReadMax, then saw red "Code
// used" with nothing in the log but the reason.
const continuousHint = "the code was read again and again for longer than 6s: a scanner in continuous (auto-sense) mode? " +
	"set it to presentation mode with a same-code delay of a few seconds (its programming barcodes)"

// heldPastMax reports whether the code of seen key key, refused code_used
// at now, was re-read (let through as the phone still held up) less than
// ReReadWindow before: the scanner is still reading it. record asks it only
// of the accepting door's scanner past ReReadMax.
func (a *Agent) heldPastMax(key []byte, now time.Time) bool {
	a.rereadMu.Lock()
	defer a.rereadMu.Unlock()
	at, ok := a.rereads[string(key)]
	d := now.Sub(at)
	return ok && d >= 0 && d < ReReadWindow
}

// record runs inside the queue's write transaction: the duplicate, passback
// and risk-cap checks, the record with its hash chain, and the state that
// refuses this code again — all in one commit.
func (a *Agent) record(st *queue.State, seq uint64, tap *record.Tap, c *paycode.Code, idKey, acctKey []byte, now time.Time) ([]byte, error) {
	if v := st.Get(bucketSeen, idKey); v != nil {
		// The same code again: a scanner reading the phone again while it
		// is still held up is let through (green, no charge); a read
		// after a gap, the phone handed to someone else, or by another
		// scanner than the one that accepted it (a door's scanner cannot
		// read a phone held up at the other door), is refused. (Entries
		// written before the acceptance time was kept have none: refused;
		// before the scanner was kept, any scanner's re-read is taken.)
		if len(v) < 20 || (len(v) > 20 && string(v[20:]) != tap.Scanner) {
			return nil, errCodeUsed
		}
		if accepted := time.UnixMilli(int64(binary.BigEndian.Uint64(v[12:]))); !a.reRead(idKey, accepted, now) {
			// The accepting door's scanner still reading it past
			// ReReadMax (the same code at the other door is not: a
			// code handed across the bus, no scanner setting).
			if now.Sub(accepted) >= ReReadMax && a.heldPastMax(idKey, now) {
				return nil, errCodeHeldOn
			}
			return nil, errCodeUsed
		}
		return nil, &duplicateError{seq: binary.BigEndian.Uint64(v[4:])}
	}
	var count uint32
	if v := st.Get(bucketAccounts, acctKey); len(v) == 12 {
		last := time.UnixMilli(int64(binary.BigEndian.Uint64(v)))
		count = binary.BigEndian.Uint32(v[8:])
		if w := a.cfg.PassbackWindow; w > 0 {
			if d := now.Sub(last); d < w && d > -w {
				return nil, errPassback
			}
		}
		if a.cfg.RiskCap > 0 && count >= uint32(a.cfg.RiskCap) {
			return nil, errRiskCap
		}
	}
	t := *tap
	t.Seq = seq
	copy(t.PrevHash[:], st.Get(bucketState, keyChain))
	rec, err := t.MarshalBinary()
	if err != nil {
		return nil, err
	}
	h := record.Hash(rec)
	sv := binary.BigEndian.AppendUint32(make([]byte, 0, 20+len(tap.Scanner)), c.Time)
	sv = binary.BigEndian.AppendUint64(sv, seq)
	sv = binary.BigEndian.AppendUint64(sv, uint64(now.UnixMilli()))
	sv = append(sv, tap.Scanner...)
	av := binary.BigEndian.AppendUint64(make([]byte, 0, 12), uint64(now.UnixMilli()))
	av = binary.BigEndian.AppendUint32(av, count+1)
	if err := st.Put(bucketSeen, idKey, sv); err != nil {
		return nil, err
	}
	if err := st.Put(bucketAccounts, acctKey, av); err != nil {
		return nil, err
	}
	if err := st.Put(bucketState, keyChain, h[:]); err != nil {
		return nil, err
	}
	return rec, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// SyncSucceeded tells the agent that the server has acknowledged every
// queued tap: the per-account risk counters start again from zero, and
// accounts outside the passback window are forgotten. It checks, in the
// same transaction, that no record is waiting (the queue's own or adopted
// ones) and changes nothing if one is: a tap accepted after the caller saw
// the queue empty keeps its count until the server has it.
func (a *Agent) SyncSucceeded() error {
	cutoff := a.now().Add(-a.cfg.PassbackWindow)
	return a.q.UpdateState(func(st *queue.State) error {
		if n, err := st.Unacked(); err != nil || n > 0 {
			if n > 0 {
				a.log.Debug("risk counters kept: taps are still waiting for the server", "count", n)
			}
			return err
		}
		var del, reset [][]byte
		err := st.ForEach(bucketAccounts, func(k, v []byte) error {
			if len(v) != 12 || time.UnixMilli(int64(binary.BigEndian.Uint64(v))).Before(cutoff) {
				del = append(del, k)
			} else if binary.BigEndian.Uint32(v[8:]) != 0 {
				reset = append(reset, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range del {
			if err := st.Delete(bucketAccounts, k); err != nil {
				return err
			}
		}
		for _, k := range reset {
			v := append([]byte(nil), st.Get(bucketAccounts, k)...)
			binary.BigEndian.PutUint32(v[8:], 0)
			if err := st.Put(bucketAccounts, k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Prune forgets accepted codes too old to be accepted again: older than
// max age + skew, plus a minute (or twice MaxClockOffset, if more: see
// behindBound) and a second, by the validator's clock AND by the
// newest code accepted here. The second bound makes pruning safe against
// a clock that jumps forward: after a jump no code is accepted (every one
// looks expired), the newest accepted code stays where it was, and so do
// the codes it would otherwise forget; when the clock comes back they
// still refuse a second use. It returns how many it forgot.
func (a *Agent) Prune() (int, error) {
	maxAge, skew := a.cfg.Policy.MaxAge, a.cfg.Policy.Skew
	if maxAge <= 0 {
		maxAge = paycode.DefaultMaxAge
	}
	if skew <= 0 {
		skew = paycode.DefaultSkew
	}
	// A code is forgotten only once it could not be accepted again on a
	// clock in service: one set back to before the newest code accepted
	// less skew and twice MaxClockOffset is out of service (behindBound),
	// so a code older than that less max age is expired there too (a
	// second more: the times compared are whole seconds).
	keep := maxAge + skew + max(time.Minute, 2*a.cfg.MaxClockOffset) + time.Second
	cutoff := a.now().Add(-keep).Unix()
	n := 0
	err := a.q.UpdateState(func(st *queue.State) error {
		var newest int64
		err := st.ForEach(bucketSeen, func(_, v []byte) error {
			if len(v) >= 4 {
				newest = max(newest, int64(binary.BigEndian.Uint32(v)))
			}
			return nil
		})
		if err != nil {
			return err
		}
		cutoff := min(cutoff, newest-int64(keep/time.Second))
		var old [][]byte
		err = st.ForEach(bucketSeen, func(k, v []byte) error {
			if len(v) < 4 || int64(binary.BigEndian.Uint32(v)) < cutoff {
				old = append(old, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := st.Delete(bucketSeen, k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	return n, err
}

// underway notes a tap under way until the returned function is called.
func (a *Agent) underway() func() {
	k := new(int)
	a.busyMu.Lock()
	if a.busy == nil {
		a.busy = map[*int]time.Time{}
	}
	a.busy[k] = a.now()
	a.busyMu.Unlock()
	return func() {
		a.busyMu.Lock()
		delete(a.busy, k)
		a.busyMu.Unlock()
	}
}

// Stalled returns an error if a tap has been under way for longer than
// TapStallAfter: something on the tap path (the queue's disk, a feedback
// output) hangs, and a restart may help. Nil otherwise.
func (a *Agent) Stalled() error {
	now := a.now()
	a.busyMu.Lock()
	defer a.busyMu.Unlock()
	for _, since := range a.busy {
		if d := now.Sub(since); d > a.cfg.TapStallAfter {
			return fmt.Errorf("%w: a tap under way for %s", ErrStalled, d.Round(time.Second))
		}
	}
	return nil
}

// Run decides frames until ctx is done or frames is closed, with
// cfg.Workers taps in flight at most, and forgets old codes every
// PruneInterval. On return every tap it started has been decided.
func (a *Agent) Run(ctx context.Context, frames <-chan scanner.Frame) error {
	var wg sync.WaitGroup
	for range a.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case f, ok := <-frames:
					if !ok {
						return
					}
					a.Tap(ctx, f)
				}
			}
		}()
	}
	tick := time.NewTicker(a.cfg.PruneInterval)
	defer tick.Stop()
	clockTick := time.NewTicker(clockCheckInterval)
	defer clockTick.Stop()
	beat := time.NewTicker(a.cfg.HeartbeatInterval)
	defer beat.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return ctx.Err()
		case <-clockTick.C:
			a.checkClock() // a jump or a correction of the system clock
		case <-beat.C:
			if a.cfg.Heartbeat != nil && a.Stalled() == nil {
				a.cfg.Heartbeat()
			}
		case <-tick.C:
			if n, err := a.Prune(); err != nil {
				a.log.Warn("pruning seen codes failed", "err", err)
			} else if n > 0 {
				a.log.Debug("pruned seen codes", "count", n)
			}
			if n := a.pruneDeny(); n > 0 {
				a.log.Debug("dropped expired deny-list entries", "count", n)
			}
		}
	}
}

// refusedPerSecond is how many "tap refused" lines of codes one scanner
// logs a second for one reason: a rider shows a code a second at most, a
// queue of riders a few.
const refusedPerSecond = 10

// garbageLog lets limit "tap refused" lines through per scanner and reason
// a second, and counts the others. Its keys are the configured scanners'
// names times the refusal reasons.
type garbageLog struct {
	mu   sync.Mutex
	last map[[2]string]*garbageEntry
}

type garbageEntry struct {
	at   time.Duration // Agent.sinceBoot: the wall clock may be set back
	n    int           // lines let through since at
	held int
}

func (g *garbageLog) allow(now time.Duration, scanner string, reason record.Reason, limit int) (bool, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[[2]string]*garbageEntry{}
	}
	k := [2]string{scanner, string(reason)}
	e := g.last[k]
	if e == nil {
		g.last[k] = &garbageEntry{at: now, n: 1}
		return true, 0
	}
	if now-e.at < time.Second {
		if e.n < limit {
			e.n++
			return true, 0
		}
		e.held++
		return false, 0
	}
	held := e.held
	e.at, e.n, e.held = now, 1, 0
	return true, held
}
