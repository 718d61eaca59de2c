package rig

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/fleet"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/sync/keyfile"
)

// Sizes of BenchmarkCatchUp: FAREGO_BENCH_CATCHUP_VALIDATORS (default
// 500) validators queue FAREGO_BENCH_CATCHUP_BACKLOG (default 200) taps
// each, over catchUpRiders riders: an hour's outage of a 500-bus fleet at
// 200 taps a bus-hour, 100,000 taps. With 100 validators (20,000 taps, 2
// seconds of work) the figure was mostly the validators' reconnecting:
// they try again 0.1 to 1 s apart, so they came back over the first
// second, and the catch-up measured 0.49 to 0.66 of the ledger alone
// where 500 measured 0.77 to 0.90 (on 2 cores).
const (
	catchUpRiders = 1000 // of the validators; as many again tap in the ledger-alone run
	ledgerBatch   = 100  // taps per CommitTaps in the ledger-alone run: a validator's batch
)

// envInt returns the positive integer in the environment variable name, or
// def when it is not set.
func envInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// BenchmarkCatchUp measures a fleet catching up after a settlement outage,
// through the whole path, against the ledger alone, in the same run on the
// same database:
//
//  1. a settlement server (a real process, embedded broker) and 500
//     validators (in this process: queue, agent, uplink) connected to it,
//     1,000 riders tapping on them;
//  2. outage: the server stops; each validator queues 200 taps;
//  3. ledger alone: on the stopped server's ledger, as many taps made the
//     same way (by 1,000 other riders, fresh codes) are committed in
//     batches of 100 by one committer, as BenchmarkCommitTaps does;
//  4. restore: the server starts again, the validators reconnect and send
//     their backlogs; the clock runs from the server's start until every
//     queue is empty (broker → ingest → ledger → ack → queue).
//
// Metrics: catchup_taps/s (4), ledger_taps/s (3), x_ledger = catch-up /
// ledger alone (the goal is 0.6 or more), server_rss_MB (the server's peak
// resident set since its restart), server_cores and validators_cores (the
// CPU time the server process and this one used during the catch-up, per
// second of it), backlog_taps. Afterwards every accepted
// tap is reconciled with the ledger and `farego-settlement verify` runs.
// Run it with -benchtime=1x: each iteration is one outage.
func BenchmarkCatchUp(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) { benchCatchUp(b, backend) })
	}
}

func benchCatchUp(b *testing.B, backend string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := b.TempDir()
	r := New(dir, binDir, nil)
	r.LogLevel = "info"
	if backend == "postgres" {
		r.DB = ledgertest.PostgresSchema(b)
	}
	defer r.Close()
	defer func() {
		if b.Failed() {
			if log, err := os.ReadFile(filepath.Join(dir, "server.log")); err == nil {
				b.Logf("server.log (tail):\n%s", tail(string(log), 40))
			}
		}
	}()
	must(b, r.Init(ctx, fleet.DefaultFares))
	must(b, r.StartServer(ctx))
	fleetKey, err := keyfile.ReadPublic(r.FleetPub())
	must(b, err)
	f, err := fleet.New(ctx, fleet.Config{Server: fleet.Server{API: "http://" + r.HTTP, Broker: "tcp://" + r.MQTT, Token: r.Token,
		FleetKey: fleetKey}, Dir: filepath.Join(dir, "validators"), MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	must(b, err)
	defer f.Close()
	// Riders of the same kind for the ledger-alone run, in a fleet of
	// their own: f's reconciliation covers only the validators' riders.
	others, err := fleet.New(ctx, fleet.Config{Server: f.Server(), Dir: filepath.Join(dir, "others")})
	must(b, err)
	validators := envInt(b, "FAREGO_BENCH_CATCHUP_VALIDATORS", 500)
	perValidator := envInt(b, "FAREGO_BENCH_CATCHUP_BACKLOG", 200)
	must(b, f.AddRiders(ctx, catchUpRiders, 10_000_000))
	must(b, others.AddRiders(ctx, catchUpRiders, 10_000_000))
	must(b, f.AddValidators(ctx, validators, "cu"))
	tapping, alone := f.Riders(), others.Riders()
	linkCtx, stopLinks := context.WithCancel(ctx)
	var links sync.WaitGroup
	for _, v := range f.Validators() {
		links.Go(func() { v.Run(linkCtx) })
	}
	defer func() { stopLinks(); links.Wait() }()
	must(b, WaitFor(ctx, 2*time.Minute, "every validator connected", func() bool { return f.Connected() == validators }))

	var catchUp, alone1, rss, serverCPU, fleetCPU float64
	var seq atomic.Uint64
	iterations := 0
	for b.Loop() {
		// Outage: the validators queue their taps.
		must(b, r.StopServer(false))
		var tappers sync.WaitGroup
		var refused atomic.Int64
		for i, v := range f.Validators() {
			tappers.Go(func() {
				for n := range perValidator {
					if !v.Tap(tapping[(i*perValidator+n)%len(tapping)], time.Now()) {
						refused.Add(1)
					}
				}
			})
		}
		tappers.Wait()
		if n := refused.Load(); n > 0 {
			b.Fatalf("%d taps refused", n)
		}
		backlog, _, err := f.Queued()
		must(b, err)

		// The ledger alone, on the same database, the same amount of work.
		alone1 += ledgerAlone(b, r, alone, backlog, &seq)

		// Restore.
		if dir := os.Getenv("FAREGO_BENCH_CPUPROFILE"); dir != "" {
			// The restored server's CPU profile, written when it stops.
			r.ServerEnv = []string{"FAREGO_TEST_CPUPROFILE=" + filepath.Join(dir, "catchup-"+backend+".prof")}
		}
		sent0, timeouts0 := f.Sent()
		start := time.Now()
		self0 := selfCPU()
		must(b, r.StartServer(ctx))
		up := time.Since(start)
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Minute)
		drained, err := f.WaitDrained(dctx)
		dcancel()
		must(b, err)
		took := drained.Sub(start)
		catchUp += float64(backlog) / took.Seconds()
		peak, err := r.ServerPeakRSS()
		must(b, err)
		cpu, err := r.ServerCPU()
		must(b, err)
		rss = max(rss, float64(peak)/(1<<20))
		serverCPU += cpu.Seconds() / took.Seconds()
		fleetCPU += (selfCPU() - self0).Seconds() / took.Seconds()
		b.Logf("%s: %d taps caught up in %v (%.0f taps/s; the server was up after %v, %.0f taps/s from then); server: peak RSS %.0f MiB, CPU %v; validators' CPU %v",
			backend, backlog, took.Round(time.Millisecond), float64(backlog)/took.Seconds(), up.Round(time.Millisecond),
			float64(backlog)/(took-up).Seconds(), float64(peak)/(1<<20), cpu.Round(time.Millisecond), (selfCPU() - self0).Round(time.Millisecond))
		sent, timeouts := f.Sent()
		if m, err := scrapeRejects(ctx, r.HTTP); err == nil {
			b.Logf("%s: the server refused or dropped: %s", backend, m)
		}
		b.Logf("%s: the validators sent %d tap records (%.2f a tap), %d ack timeouts", backend, sent-sent0,
			float64(sent-sent0)/float64(backlog), timeouts-timeouts0)
		iterations++
	}
	b.StopTimer()
	catchUp, alone1 = catchUp/float64(iterations), alone1/float64(iterations)
	serverCPU, fleetCPU = serverCPU/float64(iterations), fleetCPU/float64(iterations)
	b.ReportMetric(catchUp, "catchup_taps/s")
	b.ReportMetric(alone1, "ledger_taps/s")
	b.ReportMetric(catchUp/alone1, "x_ledger")
	b.ReportMetric(rss, "server_rss_MB")
	b.ReportMetric(serverCPU, "server_cores")
	b.ReportMetric(fleetCPU, "validators_cores")
	b.ReportMetric(float64(validators*perValidator), "backlog_taps")
	b.ReportMetric(0, "ns/op")

	rec, err := f.Reconcile(ctx)
	must(b, err)
	if !rec.OK() {
		b.Fatalf("the ledger does not match the accepted taps: %+v", rec)
	}
	if out, err := r.Verify(ctx); err != nil {
		b.Fatalf("verify: %v\n%s", err, out)
	}
}

// scrapeRejects returns the server's farego_ingest_rejects_total lines.
func scrapeRejects(ctx context.Context, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var out []string
	for l := range strings.Lines(string(body)) {
		if strings.HasPrefix(l, "farego_ingest_rejects_total{") && !strings.HasSuffix(strings.TrimSpace(l), " 0") {
			out = append(out, strings.TrimSpace(strings.TrimPrefix(l, "farego_ingest_rejects_total")))
		}
	}
	return strings.Join(out, ", "), nil
}

// selfCPU returns the CPU time this process (the validators) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ledgerAlone commits n taps of the riders straight into the stopped
// server's ledger, ledgerBatch at a time, from one committer, and returns
// the taps committed per second. The taps are made as a validator makes
// them (a fresh code of the rider, its record) by a device of their own.
func ledgerAlone(b *testing.B, r *Rig, riders []*fleet.Rider, n int, seq *atomic.Uint64) float64 {
	b.Helper()
	ctx := context.Background()
	dsn := r.DB
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(r.DataDir(), "ledger.db")
	}
	st, err := ledger.Open(ctx, dsn, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	batches := make([][]ledger.Tap, 0, n/ledgerBatch+1)
	for i := 0; i < n; {
		batch := make([]ledger.Tap, 0, ledgerBatch)
		for ; i < n && len(batch) < ledgerBatch; i++ {
			batch = append(batch, benchTap(b, riders[i%len(riders)], seq.Add(1)))
		}
		batches = append(batches, batch)
	}
	start := time.Now()
	for _, batch := range batches {
		res, err := st.CommitTaps(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range res {
			if t.Duplicate || t.Flag != "" {
				b.Fatalf("ledger-alone tap %s: %+v", t.ID, t)
			}
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// benchTap is a tap of the rider's next code now, by device "ledger-alone".
func benchTap(b *testing.B, rd *fleet.Rider, seq uint64) ledger.Tap {
	b.Helper()
	now := time.Now()
	text := rd.Code(now)
	c, err := paycode.ParseText(text)
	if err != nil {
		b.Fatal(err)
	}
	const dev, epoch, fare = "ledger-alone", "e", 250
	rec := record.Tap{DeviceID: dev, Epoch: epoch, Seq: seq, Time: now.Truncate(time.Millisecond), Route: fleet.DefaultRoute,
		Vehicle: "v", Scanner: "sim", Code: c.Bytes(), Account: c.Account, Serial: c.Serial, Profile: c.Profile, Fare: fare,
		Currency: "EUR", FareVersion: 1, KeyringVersion: 1}
	raw, err := rec.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	return ledger.Tap{ID: ledger.TapID(dev, epoch, seq), DeviceID: dev, Seq: seq, Epoch: epoch, Time: rec.Time,
		Account: c.Account, Serial: c.Serial, RiderKey: c.RiderKey[:], CodeKey: c.ID().Key(), CodeHash: paycode.ShortHash(text),
		Profile: c.Profile, ClaimedProfile: c.Profile, BaseFare: fare, Currency: "EUR", FareVersion: 1, Route: fleet.DefaultRoute,
		Vehicle: "v", Record: raw}
}
