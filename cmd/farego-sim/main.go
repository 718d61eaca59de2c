// Command farego-sim runs a simulated fleet against a settlement server:
// N validators, each with its own identity, bbolt queue, agent and MQTT
// session, and M riders tapping at a given rate, with an outage pattern
// (each validator offline for a while every so often, staggered). It shows
// progress and reports the rate the ledger settled taps at while riders
// tapped and while it caught up afterwards, the end-to-end lag from tap to
// the server's ack (percentiles), and a reconciliation of every accepted
// tap with the ledger.
//
// By default it starts its own settlement server in-process (embedded
// broker, SQLite in a temporary directory, or --db); --server, --broker,
// --token and --fleet-pub point it at a running one instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/cmd/internal/fleet"
	"github.com/farego/farego/sync/keyfile"
)

type options struct {
	validators, riders int
	rate               float64 // taps per second per validator
	duration, drain    time.Duration
	outageEvery        time.Duration
	outageFor          time.Duration
	connectTimeout     time.Duration
	progress           time.Duration
	server, broker     string
	token, fleetPub    string
	brokerCA, metrics  string
	db                 string
	onRegistered       string
	idPrefix           string
	logFile            string
	dir                string
	keep               bool
}

// topUp is every simulated rider's balance (minor units): enough never to
// run out.
const topUp = 1_000_000

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
	fs.DurationVar(&o.outageEvery, "outage-every", 20*time.Second, "while riders tap, each validator loses its link once per this period (0: never)")
	fs.DurationVar(&o.outageFor, "outage-for", 5*time.Second, "for this long (less than --outage-every)")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", time.Minute, "how long to wait for every validator to connect before riders tap")
	fs.DurationVar(&o.progress, "progress", 0, "progress every this often, a duration like 10s (0: every second on a terminal, every 5 s otherwise; -1s: none)")
	fs.StringVar(&o.server, "server", "", "settlement server URL (default: start one in-process)")
	fs.StringVar(&o.broker, "broker", "", "MQTT broker URL of that server")
	fs.StringVar(&o.token, "token", "", "operator token or @FILE of that server")
	fs.StringVar(&o.fleetPub, "fleet-pub", "", "that server's fleet public key (PEM)")
	fs.StringVar(&o.metrics, "metrics", "", "that server's /metrics base URL when it serves it on an address of its own (run --metrics), e.g. http://10.0.0.5:9464 (default: --server)")
	fs.StringVar(&o.brokerCA, "broker-ca", "", "CA (PEM) of that broker, for an ssl:// URL (default: the system's)")
	fs.StringVar(&o.db, "db", "", "ledger DSN of the in-process server (default: SQLite in --dir; postgres://… for PostgreSQL)")
	fs.StringVar(&o.onRegistered, "on-registered", "", "shell command to run once every validator is registered, before they connect (e.g. write Mosquitto's password file with farego-settlement mqtt-passwd and reload it)")
	fs.StringVar(&o.idPrefix, "id-prefix", "sim", "the validators' ids are PREFIX-0000, PREFIX-0001, …: give two simulators driving one server prefixes of their own (each would register the other's devices again, with new keys)")
	fs.StringVar(&o.logFile, "log", "", "write the validators' and the in-process server's logs (debug level) to this file")
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
	switch {
	case o.validators < 1:
		return cli.Usagef(stderr, "farego-sim", "--validators must be at least 1")
	case o.riders < 1:
		return cli.Usagef(stderr, "farego-sim", "--riders must be at least 1")
	case !(o.rate > 0) || math.IsInf(o.rate, 0):
		return cli.Usagef(stderr, "farego-sim", "--rate must be positive")
	case o.duration <= 0:
		return cli.Usagef(stderr, "farego-sim", "--duration must be positive")
	case o.outageEvery < 0 || (o.outageEvery > 0 && (o.outageFor <= 0 || o.outageFor >= o.outageEvery)):
		return cli.Usagef(stderr, "farego-sim", "--outage-for must be positive and less than --outage-every")
	case o.server != "" && (o.broker == "" || o.token == "" || o.fleetPub == ""):
		return cli.Usagef(stderr, "farego-sim", "--server needs --broker, --token and --fleet-pub")
	case o.server == "" && o.metrics != "":
		return cli.Usagef(stderr, "farego-sim", "--metrics is for --server's /metrics; the in-process server's is read directly")
	case o.server == "" && o.brokerCA != "":
		return cli.Usagef(stderr, "farego-sim", "--broker-ca is for --server's broker; the in-process one is plain MQTT")
	case o.server != "" && o.db != "":
		return cli.Usagef(stderr, "farego-sim", "--db is for the in-process server, not with --server")
	}
	if err := record.ValidDeviceID(fleet.ValidatorID(o.idPrefix, o.validators-1)); err != nil {
		return cli.Usagef(stderr, "farego-sim", "--id-prefix %q does not make device ids: %v", o.idPrefix, err)
	}
	if record.ReservedDeviceID(fleet.ValidatorID(o.idPrefix, 0)) {
		return cli.Usagef(stderr, "farego-sim", "--id-prefix %q makes ids the server reserves (farego…)", o.idPrefix)
	}
	if o.progress == 0 {
		o.progress = 5 * time.Second
		if cli.IsTerminal(stdout) {
			o.progress = time.Second
		}
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
	s := &sim{o: o, out: stdout, errOut: stderr, tty: cli.IsTerminal(stdout), log: slog.New(slog.DiscardHandler)}
	if o.logFile != "" {
		lf, err := os.OpenFile(o.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer lf.Close()
		s.log = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	err := s.run(ctx)
	if err != nil && ctx.Err() != nil && !errors.Is(err, cli.ErrInterrupted) {
		// Cut short before the fleet existed: nothing to report.
		return cli.ErrInterrupted
	}
	return err
}

type sim struct {
	o           options
	out, errOut io.Writer
	tty         bool
	log         *slog.Logger
	srv         fleet.Server
	count       fleet.Counter // taps in the ledger
	where       string        // the server, for the report
	f           *fleet.Fleet
	base        int64 // taps in the ledger before the fleet tapped
	t0          time.Time
}

func (s *sim) run(ctx context.Context) (err error) {
	o := s.o
	s.t0 = time.Now()
	if o.server == "" {
		stop, err := s.startServer(ctx)
		if err != nil {
			return err
		}
		defer stop()
	} else if err := s.external(); err != nil {
		return err
	}
	outages := "no outages"
	if o.outageEvery > 0 {
		outages = fmt.Sprintf("each validator offline %v every %v", o.outageFor, o.outageEvery)
	}
	fmt.Fprintf(s.out, "farego-sim: %d validators, %d riders, %.2f taps/s each (%.0f taps/s in all) for %v; %s\n",
		o.validators, o.riders, o.rate, o.rate*float64(o.validators), o.duration, outages)
	// Read first, so that a server whose figures cannot be read is told
	// before any rider or validator is made in its ledger.
	if s.base, err = s.count(ctx); err != nil {
		if errors.Is(err, fleet.ErrNoMetrics) && o.metrics == "" {
			return fmt.Errorf("taps in the ledger: %w: give that address as --metrics http://ADDR", err)
		}
		return fmt.Errorf("taps in the ledger: %w", err)
	}
	f, err := fleet.New(ctx, fleet.Config{Server: s.srv, Dir: o.dir, BrokerCA: o.brokerCA, Logger: s.log})
	if err != nil {
		return err
	}
	s.f = f
	runCtx, cancel := context.WithCancel(ctx)
	var links sync.WaitGroup
	defer func() {
		cancel()
		links.Wait()
		f.Close()
	}()
	// Registered after the fleet's clean-up, so it runs before it (and
	// before the in-process server stops): Ctrl-C ends the run with what
	// it has done so far.
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = s.interrupted(ctx)
		}
	}()
	if err := f.AddRiders(ctx, o.riders, topUp); err != nil {
		return err
	}
	s.say("%d riders ready", o.riders)
	err = f.AddValidators(ctx, o.validators, o.idPrefix)
	if err != nil {
		return err
	}
	s.say("%d validators registered", o.validators)
	if o.onRegistered != "" {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", o.onRegistered)
		cmd.Stdout, cmd.Stderr = s.errOut, s.errOut
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("--on-registered: %w", err)
		}
	}

	// Links up; outages start with the tapping and end with it.
	tapping, calm := make(chan struct{}), make(chan struct{})
	for i, v := range f.Validators() {
		links.Go(func() { s.linkLoop(runCtx, i, v, tapping, calm) })
	}
	if err := s.connect(ctx); err != nil {
		return err
	}

	// Tap.
	tapCtx, tapStop := context.WithTimeout(runCtx, o.duration)
	defer tapStop()
	var tappers sync.WaitGroup
	close(tapping)
	tapStart := time.Now()
	for i, v := range f.Validators() {
		tappers.Go(func() { s.tapLoop(tapCtx, i, v) })
	}
	tapsDone := make(chan struct{})
	go func() { tappers.Wait(); close(tapsDone) }()
	s.every(ctx, tapsDone, "tapping")
	tapEnd := time.Now()
	close(calm)
	settledAtEnd, err := s.settled(ctx)
	if err != nil {
		return err
	}

	// Catch up: every link is up again.
	dctx, dcancel := context.WithTimeout(ctx, o.drain)
	defer dcancel()
	drained := make(chan struct{})
	var drainedAt time.Time
	var drainErr error
	go func() { drainedAt, drainErr = f.WaitDrained(dctx); close(drained) }()
	s.every(ctx, drained, "catch-up")
	<-drained // at once if ctx ended the wait
	if drainErr != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if drainErr == nil {
		// The ledger's figure may lag a second behind the acks (a server
		// refreshes it once a second).
		s.waitLedger(ctx)
	}
	s.progressLine("done")
	if s.tty {
		fmt.Fprintln(s.out)
	}
	rec, recErr := f.Reconcile(ctx)
	if recErr != nil {
		return recErr
	}
	return s.report(tapStart, tapEnd, settledAtEnd, drainedAt, drainErr, rec)
}

// interrupted reports a run that Ctrl-C or SIGTERM cut short: what was
// tapped, what the ledger settled, what the validators still hold (not
// lost: a real validator would send it when it next connects), from the
// ledger as it stands.
func (s *sim) interrupted(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if s.tty {
		fmt.Fprintln(s.out)
	}
	tapped, accepted, refused := s.f.Counts()
	settled := "an unknown number of them"
	if n, err := s.settled(ctx); err == nil {
		settled = fmt.Sprint(n)
	}
	queued, _, err := s.f.Queued()
	still := fmt.Sprintf("%d still queued on the validators", queued)
	if err != nil {
		still = "the validators' queues unread: " + err.Error()
	}
	fmt.Fprintf(s.out, "interrupted after %v: %d taps (%d accepted, %d refused), %s settled, %s; no catch-up or reconciliation\n",
		time.Since(s.t0).Round(time.Millisecond), tapped, accepted, refused, settled, still)
	return cli.ErrInterrupted
}

// external points the simulator at a running server.
func (s *sim) external() error {
	o := s.o
	tok, err := cli.Token("--token", o.token)
	if err != nil {
		return err
	}
	k, err := keyfile.ReadPublic(o.fleetPub)
	if err != nil {
		return err
	}
	s.srv = fleet.Server{API: strings.TrimRight(o.server, "/"), Broker: o.broker, Token: tok, FleetKey: k}
	metrics := s.srv.API
	if o.metrics != "" {
		metrics = o.metrics
	}
	s.count = fleet.MetricsCounter(metrics)
	s.where = "server " + s.srv.API + ", broker " + o.broker
	return nil
}

// startServer runs a settlement server in-process on loopback ports.
func (s *sim) startServer(ctx context.Context) (func(), error) {
	p, err := fleet.StartServer(ctx, filepath.Join(s.o.dir, "server"), s.o.db, "", s.log.With("part", "server"))
	if err != nil {
		return nil, err
	}
	s.srv, s.count = p.Server, p.Count
	backend := p.Srv.Ledger().Backend()
	s.where = "in-process server " + s.srv.API + ", broker " + s.srv.Broker + ", ledger " + backend
	fmt.Fprintf(s.out, "  settlement server in-process: %s, broker %s, ledger %s\n", s.srv.API, s.srv.Broker, backend)
	return p.Stop, nil
}

// say writes a line of the set-up, with the time since the start.
func (s *sim) say(format string, a ...any) {
	fmt.Fprintf(s.out, "  "+format+" (%v)\n", append(a, time.Since(s.t0).Round(time.Millisecond))...)
}

// connect waits until every validator is connected.
func (s *sim) connect(ctx context.Context) error {
	n := len(s.f.Validators())
	deadline := time.Now().Add(s.o.connectTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for s.f.Connected() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d validators connected after %v (is the broker reachable, and does it know their passwords? see --on-registered)",
				s.f.Connected(), n, s.o.connectTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	s.say("%d validators connected", n)
	return nil
}

// every writes a progress line every --progress until done is closed.
func (s *sim) every(ctx context.Context, done <-chan struct{}, phase string) {
	var tick <-chan time.Time
	if s.o.progress > 0 {
		t := time.NewTicker(s.o.progress)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-tick:
			s.progressLine(phase)
		}
	}
}

// settled returns the taps the ledger settled since the fleet started.
func (s *sim) settled(ctx context.Context) (int64, error) {
	n, err := s.count(ctx)
	if err != nil {
		return 0, fmt.Errorf("taps in the ledger: %w", err)
	}
	return n - s.base, nil
}

// waitLedger waits up to 5 s for the ledger's figure to show every
// accepted tap.
func (s *sim) waitLedger(ctx context.Context) {
	_, accepted, _ := s.f.Counts()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if n, err := s.settled(ctx); err == nil && n >= accepted {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *sim) progressLine(phase string) {
	if s.o.progress < 0 {
		return
	}
	tapped, accepted, _ := s.f.Counts()
	settled := "?"
	if n, err := s.settled(context.Background()); err == nil {
		settled = fmt.Sprint(n)
	}
	queued, most, _ := s.f.Queued()
	line := fmt.Sprintf("  %-8s %5.0fs  taps %7d  accepted %7d  settled %7s  queued %6d (max per validator %4d)  connected %d/%d",
		phase, time.Since(s.t0).Seconds(), tapped, accepted, settled, queued, most, s.f.Connected(), len(s.f.Validators()))
	if s.tty {
		fmt.Fprintf(s.out, "\r%s   ", line)
	} else {
		fmt.Fprintln(s.out, line)
	}
}

func (s *sim) report(tapStart, tapEnd time.Time, settledAtEnd int64, drainedAt time.Time, drainErr error, rec fleet.Reconciliation) error {
	lags := s.f.Lags()
	pct := func(p float64) time.Duration {
		if len(lags) == 0 {
			return 0
		}
		return lags[int(math.Ceil(p/100*float64(len(lags))))-1].Round(time.Millisecond)
	}
	tapped, accepted, refused := s.f.Counts()
	tapFor := tapEnd.Sub(tapStart)
	backlog := accepted - settledAtEnd
	catchUp := "not done"
	switch {
	case drainErr == nil && backlog <= 0:
		catchUp = "0 taps waited when riders stopped"
	case drainErr == nil:
		d := drainedAt.Sub(tapEnd)
		catchUp = fmt.Sprintf("%d taps waited when riders stopped; settled in %v: %.0f taps/s", backlog, d.Round(time.Millisecond), float64(backlog)/d.Seconds())
	}
	queued, _, _ := s.f.Queued()
	statuses := s.f.StatusesSent()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(s.out, `results (%s):
  validators         %d
  taps               %d (%d accepted, %d refused) in %v: %.0f taps/s offered
  while tapping      %d settled: %.0f taps/s sustained
  catch-up           %s
  ledger             %d of %d accepted taps, %d lost, %d doubled, %d unexpected; %d balances wrong; %d.%02d charged
  end-to-end lag     p50 %v  p90 %v  p99 %v  max %v  (tap → the server's ack deleted it from the validator's queue)
  left in queues     %d
  device statuses    %d sent: %.2f a tap
  this process       %d goroutines, Go heap %d MiB, peak RSS %s
`, s.where, len(s.f.Validators()), tapped, accepted, refused, tapFor.Round(time.Millisecond), float64(accepted)/tapFor.Seconds(),
		settledAtEnd, float64(settledAtEnd)/tapFor.Seconds(), catchUp,
		rec.InLedger, rec.Accepted, rec.Lost, rec.Doubled, rec.Unexpected, rec.BadBalances, rec.Charged/100, rec.Charged%100,
		pct(50), pct(90), pct(99), pct(100), queued, statuses, float64(statuses)/float64(max(accepted, 1)), runtime.NumGoroutine(), ms.HeapAlloc>>20, peakRSS())
	for _, p := range rec.Problems {
		fmt.Fprintf(s.out, "  problem            %s\n", p)
	}
	switch {
	case drainErr != nil:
		return fmt.Errorf("%d taps still queued after --drain %v", queued, s.o.drain)
	case !rec.OK():
		return fmt.Errorf("the ledger does not match the accepted taps: %d lost, %d doubled, %d unexpected, %d balances wrong",
			rec.Lost, rec.Doubled, rec.Unexpected, rec.BadBalances)
	}
	return nil
}

// peakRSS returns this process's peak resident set (VmHWM), or "n/a".
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "n/a"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return fmt.Sprintf("%d MiB", kb>>10)
				}
			}
		}
	}
	return "n/a"
}

// linkLoop keeps a validator's link up. While riders tap (from tapping
// until calm) it takes the link down for --outage-for once every
// --outage-every, each validator at its own phase; afterwards the link
// stays up.
func (s *sim) linkLoop(ctx context.Context, i int, v *fleet.Validator, tapping, calm <-chan struct{}) {
	every, down := s.o.outageEvery, s.o.outageFor
	first := true
	for {
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); v.Run(lctx) }()
		stop := func() { cancel(); <-done }
		if every <= 0 {
			<-ctx.Done()
			stop()
			return
		}
		up := every - down
		if first {
			// The first outage comes at a point of the period that
			// staggers the fleet, once riders tap.
			select {
			case <-ctx.Done():
				stop()
				return
			case <-tapping:
			}
			up, first = max(time.Duration(int64(every)*int64(i)/int64(len(s.f.Validators()))), time.Second), false
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-calm:
			<-ctx.Done()
			stop()
			return
		case <-time.After(up):
		}
		stop()
		select {
		case <-ctx.Done():
			return
		case <-calm:
		case <-time.After(down):
		}
	}
}

// tapLoop taps at the configured rate (exponential gaps) until ctx ends.
func (s *sim) tapLoop(ctx context.Context, i int, v *fleet.Validator) {
	rnd := mrand.New(mrand.NewPCG(uint64(i), 99))
	riders := s.f.Riders()
	for {
		gap := time.Duration(rnd.ExpFloat64() / s.o.rate * float64(time.Second))
		select {
		case <-ctx.Done():
			return
		case <-time.After(gap):
		}
		v.Tap(riders[rnd.IntN(len(riders))], time.Now())
	}
}
