// Command farego-sim runs a simulated fleet against a settlement server:
// N validators, each with its own identity, bbolt queue, agent and MQTT
// session, and M riders tapping at a given rate, with an outage pattern
// (each validator offline for a while every so often, staggered). It shows
// progress and reports the taps settled per second, the end-to-end lag from
// tap to the server's ack (percentiles) and the queue depths.
//
// By default it starts its own settlement server in-process (embedded broker,
// SQLite, in a temporary directory); --server, --broker, --token and
// --fleet-pub point it at a running one instead.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/sync/keyfile"
	"github.com/farego/farego/sync/uplink"
)

type options struct {
	validators, riders int
	rate               float64 // taps per second per validator
	duration, drain    time.Duration
	outageEvery        time.Duration
	outageFor          time.Duration
	server, broker     string
	token, fleetPub    string
	dir                string
	keep               bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.Exit("farego-sim", err, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-sim", flag.ContinueOnError)
	var o options
	fs.IntVar(&o.validators, "validators", 100, "simulated validators")
	fs.IntVar(&o.riders, "riders", 1000, "riders")
	fs.Float64Var(&o.rate, "rate", 0.5, "taps per second per validator")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long riders tap")
	fs.DurationVar(&o.drain, "drain", 2*time.Minute, "how long to wait afterwards for every queue to drain")
	fs.DurationVar(&o.outageEvery, "outage-every", 20*time.Second, "each validator loses its link once per this period (0: never)")
	fs.DurationVar(&o.outageFor, "outage-for", 5*time.Second, "for this long")
	fs.StringVar(&o.server, "server", "", "settlement server URL (default: start one in-process)")
	fs.StringVar(&o.broker, "broker", "", "MQTT broker URL of that server")
	fs.StringVar(&o.token, "token", "", "operator token or @FILE of that server")
	fs.StringVar(&o.fleetPub, "fleet-pub", "", "that server's fleet public key (PEM)")
	fs.StringVar(&o.dir, "dir", "", "where the validators' queues go (default: a temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep the files afterwards")
	version := fs.Bool("version", false, "print the version and exit")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *version {
		cli.PrintVersion(stdout, "farego-sim")
		return nil
	}
	if o.validators < 1 || o.riders < 1 || o.rate <= 0 || o.duration <= 0 {
		return cli.Usagef(stderr, "farego-sim", "--validators, --riders, --rate and --duration must be positive")
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "farego-sim-")
		if err != nil {
			return err
		}
		o.dir = d
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(stdout, "files kept in %s\n", o.dir)
		} else {
			os.RemoveAll(o.dir)
		}
	}()
	s := &sim{o: o, out: stdout}
	return s.run(ctx)
}

type sim struct {
	o        options
	out      io.Writer
	api      string
	token    string
	broker   string
	fleetPub ed25519.PublicKey
	keyring  []byte
	fares    []byte

	riders []*rider
	devs   []*device

	tapped, accepted, refused, acked atomic.Int64
	lagMu                            sync.Mutex
	lags                             []time.Duration
}

type rider struct {
	cred []byte
	key  ed25519.PrivateKey
	ctr  atomic.Uint32
}

func (r *rider) code(t time.Time) string {
	b, err := paycode.MakeCode(r.cred, r.key, t, uint16(r.ctr.Add(1)))
	if err != nil {
		panic(err)
	}
	return paycode.EncodeText(b)
}

type device struct {
	id      string
	q       *queue.Queue
	a       *agent.Agent
	up      *uplink.Uplink
	mu      sync.Mutex
	tapTime map[uint64]time.Time
}

func (s *sim) run(ctx context.Context) error {
	o := s.o
	if o.server == "" {
		stop, err := s.startServer(ctx)
		if err != nil {
			return err
		}
		defer stop()
	} else {
		if o.broker == "" || o.token == "" || o.fleetPub == "" {
			return fmt.Errorf("--server needs --broker, --token and --fleet-pub")
		}
		s.api, s.broker, s.token = strings.TrimRight(o.server, "/"), o.broker, o.token
		if strings.HasPrefix(s.token, "@") {
			b, err := os.ReadFile(s.token[1:])
			if err != nil {
				return err
			}
			s.token = strings.TrimSpace(string(b))
		}
		k, err := keyfile.ReadPublic(o.fleetPub)
		if err != nil {
			return err
		}
		s.fleetPub = k
	}
	start := time.Now()
	fmt.Fprintf(s.out, "farego-sim: %d validators, %d riders, %.2f taps/s each (%.0f taps/s in all) for %v; outage %v every %v\n",
		o.validators, o.riders, o.rate, o.rate*float64(o.validators), o.duration, o.outageFor, o.outageEvery)
	if err := s.fetchDocs(ctx); err != nil {
		return err
	}
	if err := s.makeRiders(ctx); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "  %d riders ready (%v)\n", len(s.riders), time.Since(start).Round(time.Millisecond))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var uplinks sync.WaitGroup
	if err := s.makeDevices(runCtx, &uplinks); err != nil {
		return err
	}
	defer func() {
		cancel()
		uplinks.Wait()
		for _, d := range s.devs {
			d.q.Close()
		}
	}()
	fmt.Fprintf(s.out, "  %d validators provisioned and connecting (%v)\n", len(s.devs), time.Since(start).Round(time.Millisecond))

	// Tap, with a progress line every second.
	tapCtx, tapStop := context.WithTimeout(runCtx, o.duration)
	defer tapStop()
	var tappers sync.WaitGroup
	for i, d := range s.devs {
		tappers.Add(1)
		go func() { defer tappers.Done(); s.tapLoop(tapCtx, i, d) }()
	}
	t0 := time.Now()
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	tapsDone := make(chan struct{})
	go func() { tappers.Wait(); close(tapsDone) }()
	loop := true
	for loop {
		select {
		case <-tapsDone:
			loop = false
		case <-progress.C:
			s.progress(t0, "tapping")
		}
	}
	tapEnd := time.Now()
	// Drain.
	drainDeadline := time.Now().Add(o.drain)
	for s.acked.Load() < s.accepted.Load() && time.Now().Before(drainDeadline) && ctx.Err() == nil {
		select {
		case <-progress.C:
			s.progress(t0, "draining")
		case <-ctx.Done():
		}
	}
	s.progress(t0, "done")
	fmt.Fprintln(s.out)
	return s.report(t0, tapEnd)
}

func (s *sim) progress(t0 time.Time, phase string) {
	depth, maxDepth := s.depths()
	fmt.Fprintf(s.out, "\r  %-8s %5.0fs  taps %7d  accepted %7d  settled %7d  queued %6d (max per validator %4d)  goroutines %d   ",
		phase, time.Since(t0).Seconds(), s.tapped.Load(), s.accepted.Load(), s.acked.Load(), depth, maxDepth, runtime.NumGoroutine())
}

func (s *sim) depths() (total, most int) {
	for _, d := range s.devs {
		st, err := d.q.Stats()
		if err != nil {
			continue
		}
		total += st.Count
		most = max(most, st.Count)
	}
	return total, most
}

func (s *sim) report(t0, tapEnd time.Time) error {
	s.lagMu.Lock()
	lags := slices.Clone(s.lags)
	s.lagMu.Unlock()
	slices.Sort(lags)
	pct := func(p float64) time.Duration {
		if len(lags) == 0 {
			return 0
		}
		return lags[int(math.Ceil(p/100*float64(len(lags))))-1]
	}
	elapsed := time.Since(t0)
	depth, _ := s.depths()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(s.out, `results:
  validators         %d
  taps               %d (%d accepted, %d refused)
  settled            %d (%.0f taps/s over %v; offered %.0f taps/s)
  end-to-end lag     p50 %v  p90 %v  p99 %v  max %v  (tap → server's ack deleted it from the queue)
  left in queues     %d
  process            %d goroutines, Go heap %d MiB
`, len(s.devs), s.tapped.Load(), s.accepted.Load(), s.refused.Load(), s.acked.Load(),
		float64(s.acked.Load())/elapsed.Seconds(), elapsed.Round(time.Second), float64(s.accepted.Load())/tapEnd.Sub(t0).Seconds(),
		pct(50).Round(time.Millisecond), pct(90).Round(time.Millisecond), pct(99).Round(time.Millisecond), pct(100).Round(time.Millisecond),
		depth, runtime.NumGoroutine(), ms.HeapAlloc>>20)
	if depth != 0 {
		return fmt.Errorf("%d taps still queued after the drain period", depth)
	}
	return nil
}

// startServer runs a settlement server in-process on loopback ports.
func (s *sim) startServer(ctx context.Context) (func(), error) {
	data := filepath.Join(s.o.dir, "server")
	kd, err := keys.Init(filepath.Join(data, "keys"), keys.InitOptions{})
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ready := make(chan server.Addrs, 1)
	// The simulated riders all come from this process, some with little
	// money: no account rate limit and no credential minimum.
	srv, err := server.New(ctx, server.Config{DataDir: data, HTTPListen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0",
		AccountsPerMinute: -1, CredentialMinimum: -1, Logger: log, Ready: func(a server.Addrs) { ready <- a }})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	a := <-ready
	tok, _ := os.ReadFile(filepath.Join(data, "keys", keys.TokenFile))
	s.api, s.broker, s.token, s.fleetPub = "http://"+a.HTTP, "tcp://"+a.MQTT, strings.TrimSpace(string(tok)), kd.FleetPublic()
	fares := `{"version":1,"currency":"EUR","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}},` +
		`"transfer":{"window":"30m","fare":0},"daily_cap":{"adult":700}}`
	if err := s.call(ctx, "PUT", "/v1/fares", s.token, rawJSON(fares), nil); err != nil {
		cancel()
		return nil, err
	}
	fmt.Fprintf(s.out, "  settlement server in-process: %s, broker %s, SQLite in %s\n", s.api, s.broker, data)
	return func() { cancel(); <-done }, nil
}

type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

func (s *sim) call(ctx context.Context, method, path, token string, body, out any) error {
	return cli.CallJSON(ctx, method, s.api+path, token, body, out)
}

func (s *sim) fetchDocs(ctx context.Context) error {
	var kr, fares rawBytes
	if err := s.call(ctx, "GET", "/v1/keyring", "", nil, &kr); err != nil {
		return err
	}
	if err := s.call(ctx, "GET", "/v1/fares", "", nil, &fares); err != nil {
		return err
	}
	s.keyring, s.fares = kr, fares
	return nil
}

type rawBytes []byte

func (r *rawBytes) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

// makeRiders registers the riders through the API, 16 at a time.
func (s *sim) makeRiders(ctx context.Context) error {
	s.riders = make([]*rider, s.o.riders)
	return parallel(ctx, s.o.riders, 16, func(i int) error {
		var acct struct {
			Account struct {
				ID uint64 `json:"id"`
			} `json:"account"`
			Secret string `json:"secret"`
		}
		if err := s.call(ctx, "POST", "/v1/accounts", "", map[string]string{"profile": "adult"}, &acct); err != nil {
			return err
		}
		id := acct.Account.ID
		if err := s.call(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/topups", id), s.token,
			map[string]any{"amount": 1_000_000, "reference": fmt.Sprintf("sim-%d", id)}, nil); err != nil {
			return err
		}
		var c struct{ Credential, TokenSeed string }
		if err := s.call(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/credentials", id), acct.Secret, map[string]string{}, &struct {
			Credential *string `json:"credential"`
			TokenSeed  *string `json:"token_seed"`
		}{&c.Credential, &c.TokenSeed}); err != nil {
			return err
		}
		cred, _ := hex.DecodeString(c.Credential)
		seed, _ := hex.DecodeString(c.TokenSeed)
		k, err := paycode.RiderKey(seed)
		if err != nil {
			return err
		}
		s.riders[i] = &rider{cred: cred, key: k}
		return nil
	})
}

// makeDevices provisions every validator (key, registration, queue, agent,
// uplink) and starts its uplink with the outage pattern.
func (s *sim) makeDevices(ctx context.Context, uplinks *sync.WaitGroup) error {
	s.devs = make([]*device, s.o.validators)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := parallel(ctx, s.o.validators, 16, func(i int) error {
		id := fmt.Sprintf("sim-%04d", i)
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		var reg struct {
			User string `json:"mqtt_username"`
			Pass string `json:"mqtt_password"`
		}
		if err := s.call(ctx, "POST", "/v1/devices", s.token, map[string]any{"id": id, "public_key": hex.EncodeToString(pub), "replace": true}, &reg); err != nil {
			return err
		}
		q, err := queue.Open(filepath.Join(s.o.dir, id+".db"), &queue.Options{InitialMmapSize: 1 << 20, FirstSeq: 1, Logger: quiet})
		if err != nil {
			return err
		}
		d := &device{id: id, q: q, tapTime: map[uint64]time.Time{}}
		d.a, err = agent.New(q, nopFeedback{}, agent.Config{DeviceID: id, Route: "42", PassbackWindow: -1, RiskCap: -1,
			Logger: quiet, Accepted: func() {
				if d.up != nil {
					d.up.Notify()
				}
			}})
		if err != nil {
			return err
		}
		if err := d.a.Seed("keyring", s.keyring); err != nil {
			return err
		}
		if err := d.a.Seed("fares", s.fares); err != nil {
			return err
		}
		d.up, err = uplink.New(uplink.Config{Brokers: []string{s.broker}, DeviceID: id, DeviceKey: priv, FleetPublicKey: s.fleetPub,
			Username: reg.User, Password: reg.Pass, Logger: quiet, MinBackoff: 500 * time.Millisecond, MaxBackoff: 5 * time.Second,
			OnAcked: func(seqs []uint64) { s.onAcked(d, seqs) }}, q, d.a)
		if err != nil {
			return err
		}
		s.devs[i] = d
		return nil
	})
	if err != nil {
		return err
	}
	for i, d := range s.devs {
		uplinks.Add(1)
		go func() { defer uplinks.Done(); s.linkLoop(ctx, i, d) }()
	}
	return nil
}

// linkLoop runs a validator's uplink, taking it down for outageFor once
// every outageEvery, each validator at its own phase.
func (s *sim) linkLoop(ctx context.Context, i int, d *device) {
	every, down := s.o.outageEvery, s.o.outageFor
	for ctx.Err() == nil {
		upFor := time.Duration(math.MaxInt64)
		if every > 0 {
			upFor = every - down
			if i >= 0 { // stagger the first outage across the fleet
				upFor = time.Duration(int64(every) * int64(i) / int64(len(s.devs)))
				i = -1
			}
		}
		lctx, cancel := context.WithTimeout(ctx, max(upFor, time.Second))
		d.up.Run(lctx)
		cancel()
		if every <= 0 {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(down):
		}
	}
}

func (s *sim) onAcked(d *device, seqs []uint64) {
	now := time.Now()
	var lags []time.Duration
	d.mu.Lock()
	for _, q := range seqs {
		if t, ok := d.tapTime[q]; ok {
			lags = append(lags, now.Sub(t))
			delete(d.tapTime, q)
		}
	}
	d.mu.Unlock()
	s.acked.Add(int64(len(lags)))
	s.lagMu.Lock()
	s.lags = append(s.lags, lags...)
	s.lagMu.Unlock()
}

// tapLoop taps at the configured rate (exponential gaps) until ctx ends.
func (s *sim) tapLoop(ctx context.Context, i int, d *device) {
	rnd := mrand.New(mrand.NewPCG(uint64(i), 99))
	for {
		gap := time.Duration(rnd.ExpFloat64() / s.o.rate * float64(time.Second))
		select {
		case <-ctx.Done():
			return
		case <-time.After(gap):
		}
		r := s.riders[rnd.IntN(len(s.riders))]
		now := time.Now()
		out := d.a.Tap(context.Background(), scanner.Frame{Scanner: "sim", Text: r.code(now), Time: now})
		s.tapped.Add(1)
		if !out.Accepted {
			s.refused.Add(1)
			continue
		}
		d.mu.Lock()
		d.tapTime[out.Seq] = now
		d.mu.Unlock()
		s.accepted.Add(1)
	}
}

type nopFeedback struct{}

func (nopFeedback) Accepted(context.Context, feedback.Accept) error { return nil }
func (nopFeedback) Rejected(context.Context, feedback.Reject) error { return nil }
func (nopFeedback) OutOfService(context.Context, string) error      { return nil }

// parallel runs f(0..n-1) with at most k at a time; the first error
// cancels the rest and is returned.
func parallel(ctx context.Context, n, k int, f func(i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(k)
	for i := 0; i < n && gctx.Err() == nil; i++ {
		g.Go(func() error { return f(i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
