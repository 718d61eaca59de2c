package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/uplink"
)

// Defaults of Config's zero fields.
const (
	// DefaultRoute is the route every validator serves.
	DefaultRoute = "42"
	// DefaultMinBackoff and DefaultMaxBackoff bound the validators' wait
	// between connection attempts (shorter than a real validator's, so a
	// simulated outage ends when the link comes back, not a minute later).
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
	// DefaultParallel is the number of API requests made at once while
	// setting up and reconciling.
	DefaultParallel = 16
)

// Server is the settlement server a fleet works against.
type Server struct {
	API      string            // base URL of its HTTP API: http://host:port
	Broker   string            // the validators' MQTT broker URL: tcp://host:port or ssl://…
	Token    string            // an operator token
	FleetKey ed25519.PublicKey // its fleet public key, which signs acks and downlinks
}

// Config configures a Fleet. Zero fields mean the defaults above.
type Config struct {
	Server
	// Dir holds the validators' queue files. Required.
	Dir string
	// Route is the route every validator serves (default DefaultRoute).
	Route                  string
	MinBackoff, MaxBackoff time.Duration
	// BrokerCA, if set, is the CA (PEM) of a TLS broker (default: the
	// system roots).
	BrokerCA string
	// AckTimeout is how long a validator waits for the server's ack before
	// sending a batch again (0: the uplink's default).
	AckTimeout time.Duration
	Parallel   int
	// Logger receives the validators' logs; nil discards them.
	Logger *slog.Logger
}

// Fleet is a set of simulated validators and riders. Its methods are safe
// for concurrent use once the riders and validators are added.
type Fleet struct {
	cfg            Config
	keyring, fares []byte
	riders         []*Rider
	validators     []*Validator

	tapped, accepted, refused atomic.Int64
	lagMu                     sync.Mutex
	lags                      []time.Duration // one per accepted tap acked so far
}

// New checks cfg and fetches the server's keyring and fare table, which
// every validator starts with.
func New(ctx context.Context, cfg Config) (*Fleet, error) {
	if cfg.API == "" || cfg.Broker == "" || cfg.Token == "" || len(cfg.FleetKey) != ed25519.PublicKeySize || cfg.Dir == "" {
		return nil, fmt.Errorf("%w: API, Broker, Token, FleetKey and Dir are required", ErrConfig)
	}
	cfg.API = strings.TrimRight(cfg.API, "/")
	if cfg.Route == "" {
		cfg.Route = DefaultRoute
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg}
	var kr, fares json.RawMessage
	if err := f.call(ctx, "GET", "/v1/keyring", "", nil, &kr); err != nil {
		return nil, fmt.Errorf("fleet: keyring: %w", err)
	}
	if err := f.call(ctx, "GET", "/v1/fares", "", nil, &fares); err != nil {
		return nil, fmt.Errorf("fleet: fare table: %w", err)
	}
	f.keyring, f.fares = kr, fares
	return f, nil
}

// Server returns the server the fleet works against.
func (f *Fleet) Server() Server { return f.cfg.Server }

func (f *Fleet) call(ctx context.Context, method, path, token string, body, out any) error {
	return cli.CallJSON(ctx, method, f.cfg.API+path, token, body, out)
}

// Rider is a rider with a funded account and a credential, making payment
// codes in-process.
type Rider struct {
	Account uint64
	TopUp   int64 // what the account was topped up with (its only top-up)
	cred    []byte
	key     ed25519.PrivateKey
	ctr     atomic.Uint32

	mu   sync.Mutex
	taps []string // ids of the taps validators accepted
}

// Code returns the rider's next payment code at t, in text form.
func (r *Rider) Code(t time.Time) string {
	b, err := paycode.MakeCode(r.cred, r.key, t, uint16(r.ctr.Add(1)))
	if err != nil {
		panic(err) // only with a malformed credential, which AddRiders does not keep
	}
	return paycode.EncodeText(b)
}

// AddRiders registers n riders through the API (anonymous accounts of the
// adult profile), tops each up with topUp minor units and fetches a
// credential for each.
func (f *Fleet) AddRiders(ctx context.Context, n int, topUp int64) error {
	rs := make([]*Rider, n)
	err := f.parallel(ctx, n, func(i int) error {
		var acct struct {
			Account struct {
				ID uint64 `json:"id"`
			} `json:"account"`
			Secret string `json:"secret"`
		}
		// With the operator's token: the server's limit on anonymous
		// sign-ups (6 a minute from one address) is for riders, not for a
		// fleet of simulated ones.
		if err := f.call(ctx, "POST", "/v1/accounts", f.cfg.Token, map[string]string{"profile": "adult"}, &acct); err != nil {
			return fmt.Errorf("fleet: new account: %w", err)
		}
		id := acct.Account.ID
		if err := f.call(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/topups", id), f.cfg.Token,
			map[string]any{"amount": topUp, "reference": fmt.Sprintf("sim-%d", id)}, nil); err != nil {
			return fmt.Errorf("fleet: top-up of account %d: %w", id, err)
		}
		var c struct {
			Credential string `json:"credential"`
			TokenSeed  string `json:"token_seed"`
		}
		if err := f.call(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/credentials", id), acct.Secret, map[string]string{}, &c); err != nil {
			return fmt.Errorf("fleet: credential of account %d: %w", id, err)
		}
		cred, err1 := hex.DecodeString(c.Credential)
		seed, err2 := hex.DecodeString(c.TokenSeed)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%w: credential of account %d is not hex", ErrServer, id)
		}
		if _, err := paycode.ParseCredential(cred); err != nil {
			return fmt.Errorf("%w: credential of account %d: %w", ErrServer, id, err)
		}
		k, err := paycode.RiderKey(seed)
		if err != nil {
			return fmt.Errorf("%w: token seed of account %d: %w", ErrServer, id, err)
		}
		rs[i] = &Rider{Account: id, TopUp: topUp, cred: cred, key: k}
		return nil
	})
	if err != nil {
		return err
	}
	f.riders = append(f.riders, rs...)
	return nil
}

// Riders returns the riders added so far.
func (f *Fleet) Riders() []*Rider { return f.riders }

// Validator is one simulated validator: identity, queue, agent and uplink.
type Validator struct {
	ID string
	f  *Fleet
	q  *queue.Queue
	a  *agent.Agent
	up *uplink.Uplink

	mu      sync.Mutex
	tapTime map[uint64]time.Time // seq → tap time, until acked
	early   map[uint64]time.Time // seq → ack time of an ack that came before Tap returned
	lastSeq uint64               // the newest seq Tap has returned
}

// ValidatorID is the id of the simulated validator number i (from 0) of
// prefix: PREFIX-0000, PREFIX-0001, …
func ValidatorID(prefix string, i int) string { return fmt.Sprintf("%s-%04d", prefix, i) }

// AddValidators registers n validators, ValidatorID(prefix, 0), …, with
// new keys (replacing registrations of the same ids), and gives each a
// queue in Dir, an agent with the server's keyring and fare table, and an
// uplink with the broker password its registration returned. Their links
// are down until Run.
func (f *Fleet) AddValidators(ctx context.Context, n int, prefix string) error {
	vs := make([]*Validator, n)
	err := f.parallel(ctx, n, func(i int) error {
		v, err := f.newValidator(ctx, ValidatorID(prefix, len(f.validators)+i))
		vs[i] = v
		return err
	})
	for _, v := range vs {
		if v != nil {
			f.validators = append(f.validators, v)
		}
	}
	return err
}

func (f *Fleet) newValidator(ctx context.Context, id string) (*Validator, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var reg struct {
		User string `json:"mqtt_username"`
		Pass string `json:"mqtt_password"`
	}
	if err := f.call(ctx, "POST", "/v1/devices", f.cfg.Token,
		map[string]any{"id": id, "public_key": hex.EncodeToString(pub), "replace": true}, &reg); err != nil {
		return nil, fmt.Errorf("fleet: register %s: %w", id, err)
	}
	log := f.cfg.Logger.With("device", id)
	q, err := queue.Open(filepath.Join(f.cfg.Dir, id+".db"), &queue.Options{InitialMmapSize: 1 << 20, FirstSeq: 1, Logger: log})
	if err != nil {
		return nil, err
	}
	v := &Validator{ID: id, f: f, q: q, tapTime: map[uint64]time.Time{}, early: map[uint64]time.Time{}}
	ok := false
	defer func() {
		if !ok {
			q.Close()
		}
	}()
	// Any rider may tap again at once, whatever the validator last saw of
	// the balance: the simulation is about settlement, not the offline
	// risk rules.
	v.a, err = agent.New(q, nopFeedback{}, agent.Config{DeviceID: id, Route: f.cfg.Route, PassbackWindow: -1, RiskCap: -1,
		Logger: log, Accepted: func() {
			if v.up != nil {
				v.up.Notify()
			}
		}})
	if err != nil {
		return nil, err
	}
	if err := v.a.Seed(record.DocKeyring, f.keyring); err != nil {
		return nil, err
	}
	if err := v.a.Seed(record.DocFares, f.fares); err != nil {
		return nil, err
	}
	v.up, err = uplink.New(uplink.Config{Brokers: []string{f.cfg.Broker}, DeviceID: id, DeviceKey: priv, FleetPublicKey: f.cfg.FleetKey,
		Username: reg.User, Password: reg.Pass, Logger: log, MinBackoff: f.cfg.MinBackoff, MaxBackoff: f.cfg.MaxBackoff,
		CAFile: f.cfg.BrokerCA, AckTimeout: f.cfg.AckTimeout, OnAcked: v.onAcked}, q, v.a)
	if err != nil {
		return nil, err
	}
	ok = true
	return v, nil
}

// Validators returns the validators added so far.
func (f *Fleet) Validators() []*Validator { return f.validators }

// Tap shows the rider's next code to the validator at now, as a scanner
// would, and reports whether the validator accepted it (then it is on
// disk, queued for settlement).
func (v *Validator) Tap(r *Rider, now time.Time) bool {
	f := v.f
	out := v.a.Tap(context.Background(), scanner.Frame{Scanner: "sim", Text: r.Code(now), Time: now})
	f.tapped.Add(1)
	if !out.Accepted {
		f.refused.Add(1)
		return false
	}
	f.accepted.Add(1)
	r.mu.Lock()
	r.taps = append(r.taps, record.TapID(v.ID, v.q.Epoch(), out.Seq))
	r.mu.Unlock()
	v.mu.Lock()
	v.lastSeq = max(v.lastSeq, out.Seq)
	if acked, ok := v.early[out.Seq]; ok {
		// The server acked the tap before Tap returned.
		delete(v.early, out.Seq)
		v.mu.Unlock()
		f.addLags([]time.Duration{max(acked.Sub(now), 0)})
		return true
	}
	v.tapTime[out.Seq] = now
	v.mu.Unlock()
	return true
}

// onAcked is the uplink's hook: the acked taps' lags (tap → ack).
func (v *Validator) onAcked(seqs []uint64) {
	now := time.Now()
	var lags []time.Duration
	v.mu.Lock()
	for _, s := range seqs {
		if t, ok := v.tapTime[s]; ok {
			lags = append(lags, now.Sub(t))
			delete(v.tapTime, s)
		} else if s > v.lastSeq {
			v.early[s] = now // Tap has not returned it yet
		} // else an ack sent again for a tap acked before

	}
	v.mu.Unlock()
	v.f.addLags(lags)
}

func (f *Fleet) addLags(l []time.Duration) {
	f.lagMu.Lock()
	f.lags = append(f.lags, l...)
	f.lagMu.Unlock()
}

// Run keeps the validator's link up (connected to the broker, sending its
// queue) until ctx is done.
func (v *Validator) Run(ctx context.Context) error { return v.up.Run(ctx) }

// Connected reports whether the validator's link is up and subscribed.
func (v *Validator) Connected() bool { return v.up.Connected() }

// Queued returns the number of taps waiting in the validator's queue for
// the server's ack.
func (v *Validator) Queued() (int, error) {
	st, err := v.q.Stats()
	return st.Count, err
}

// Sent returns the tap records the validators' links have sent (a record
// sent again counts again) and how often a link's ack timeout ran out and
// it sent its window again.
func (f *Fleet) Sent() (records, ackTimeouts uint64) {
	for _, v := range f.validators {
		st := v.up.Stats()
		records += st.RecordsSent
		ackTimeouts += st.AckTimeouts
	}
	return records, ackTimeouts
}

// Counts returns the taps made, accepted and refused so far.
func (f *Fleet) Counts() (tapped, accepted, refused int64) {
	return f.tapped.Load(), f.accepted.Load(), f.refused.Load()
}

// Queued returns the taps waiting in all queues and in the fullest one.
func (f *Fleet) Queued() (total, most int, err error) {
	for _, v := range f.validators {
		n, err := v.Queued()
		if err != nil {
			return 0, 0, fmt.Errorf("fleet: queue of %s: %w", v.ID, err)
		}
		total += n
		most = max(most, n)
	}
	return total, most, nil
}

// StatusesSent returns the status messages the validators published.
func (f *Fleet) StatusesSent() uint64 {
	var n uint64
	for _, v := range f.validators {
		n += v.up.Stats().StatusSent
	}
	return n
}

// Connected returns how many validators are connected.
func (f *Fleet) Connected() int {
	n := 0
	for _, v := range f.validators {
		if v.Connected() {
			n++
		}
	}
	return n
}

// Unacked returns the accepted taps whose ack the validators have not
// seen yet: a cheap hint (no queue read) of what Queued counts.
func (f *Fleet) Unacked() int64 {
	f.lagMu.Lock()
	n := len(f.lags)
	f.lagMu.Unlock()
	return f.accepted.Load() - int64(n)
}

// WaitDrained waits until every queue is empty, or until ctx is done, and
// returns when they were found empty (and, at most 10 s, until the last acks'
// lags are in: see waitLags). It polls the Unacked hint every 20
// ms, and reads the queues themselves when the hint says zero (at most
// every 100 ms) and once a second whatever it says.
func (f *Fleet) WaitDrained(ctx context.Context) (time.Time, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastRead time.Time
	for {
		since := time.Since(lastRead)
		if (f.Unacked() <= 0 && since >= 100*time.Millisecond) || since >= time.Second {
			at := time.Now()
			n, _, err := f.Queued()
			if err != nil {
				return time.Time{}, err
			}
			if n == 0 {
				f.waitLags(ctx)
				return at, nil
			}
			lastRead = at
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// waitLags waits up to 10 s, or until ctx is done, for the lags of the
// last acks: the uplink calls its OnAcked hook just after it commits the
// acks to the queue, so the queues may be found empty a moment before, and
// a report read then would miss the last batch's lags.
func (f *Fleet) waitLags(ctx context.Context) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	limit := time.After(10 * time.Second)
	for f.Unacked() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-limit:
			return
		case <-tick.C:
		}
	}
}

// Lags returns, sorted, the time from each acked tap to its ack.
func (f *Fleet) Lags() []time.Duration {
	f.lagMu.Lock()
	l := slices.Clone(f.lags)
	f.lagMu.Unlock()
	slices.Sort(l)
	return l
}

// Close closes the validators' queues. Stop their Runs first.
func (f *Fleet) Close() error {
	var first error
	for _, v := range f.validators {
		if err := v.q.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// parallel runs fn(0..n-1), Parallel at a time; the first error cancels
// the rest and is returned.
func (f *Fleet) parallel(ctx context.Context, n int, fn func(i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.cfg.Parallel)
	for i := 0; i < n && gctx.Err() == nil; i++ {
		g.Go(func() error { return fn(i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

type nopFeedback struct{}

func (nopFeedback) Accepted(context.Context, feedback.Accept) error { return nil }
func (nopFeedback) Rejected(context.Context, feedback.Reject) error { return nil }
func (nopFeedback) OutOfService(context.Context, string) error      { return nil }
