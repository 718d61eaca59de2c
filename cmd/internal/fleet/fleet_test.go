package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
)

func startServer(t *testing.T) *InProcess {
	t.Helper()
	p, err := StartServer(context.Background(), t.TempDir(), "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// waitFor polls cond every 50 ms for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A fleet taps while its links are down, then drains: the ledger's figure
// and the reconciliation see every tap once, and the reconciliation finds
// what does not add up: taps still queued, a ride the fleet never made, a
// top-up it did not make.
func TestFleetReconcilesWithTheLedger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := startServer(t)
	f, err := New(ctx, Config{Server: p.Server, Dir: t.TempDir(), AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.AddRiders(ctx, 4, 100_000); err != nil {
		t.Fatal(err)
	}
	if err := f.AddValidators(ctx, 3, "fleet-test"); err != nil {
		t.Fatal(err)
	}
	vs, rs := f.Validators(), f.Riders()
	const taps = 12
	for i := range taps {
		if !vs[i%len(vs)].Tap(rs[i%len(rs)], time.Now()) {
			t.Fatalf("tap %d refused", i)
		}
	}
	if q, _, err := f.Queued(); err != nil || q != taps {
		t.Fatalf("queued = %d, %v; want %d", q, err, taps)
	}
	rec, err := f.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rec.OK() || rec.Lost != taps || rec.Accepted != taps || rec.InLedger != 0 {
		t.Errorf("before the links come up: %+v, want %d lost", rec, taps)
	}

	runCtx, stop := context.WithCancel(ctx)
	var links sync.WaitGroup
	for _, v := range vs {
		links.Go(func() { v.Run(runCtx) })
	}
	defer func() { stop(); links.Wait() }()
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	defer dcancel()
	if _, err := f.WaitDrained(dctx); err != nil {
		t.Fatal(err)
	}
	// WaitDrained waited for the last acks' lags (the uplink's OnAcked
	// hook runs just after the acks are committed to the queue).
	if got := len(f.Lags()); got != taps {
		t.Errorf("%d lags right after the drain, want one per tap (%d)", got, taps)
	}
	if n, err := p.Count(ctx); err != nil || n != taps {
		t.Errorf("ledger holds %d taps (%v), want %d", n, err, taps)
	}
	metrics := MetricsCounter(p.API)
	waitFor(t, "/metrics to show the taps", func() bool { n, err := metrics(ctx); return err == nil && n == taps })
	if got := len(f.Lags()); got != taps {
		t.Errorf("%d lags, want one per tap (%d)", got, taps)
	}
	if u := f.Unacked(); u != 0 {
		t.Errorf("Unacked = %d after the drain", u)
	}
	rec, err = f.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.OK() || rec.InLedger != taps || rec.Charged <= 0 {
		t.Fatalf("after the drain: %+v", rec)
	}

	// A top-up the fleet did not make.
	if err := cli.CallJSON(ctx, "POST", fmt.Sprintf("%s/v1/accounts/%d/topups", p.API, rs[0].Account), p.Token,
		map[string]any{"amount": 100, "reference": "outside"}, nil); err != nil {
		t.Fatal(err)
	}
	// A ride the fleet does not know it made.
	rs[1].mu.Lock()
	forgotten := rs[1].taps[0]
	rs[1].taps = rs[1].taps[1:]
	rs[1].mu.Unlock()
	rec, err = f.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rec.OK() || rec.BadBalances != 1 || rec.Unexpected != 1 || rec.Lost != 0 || !strings.Contains(strings.Join(rec.Problems, "\n"), forgotten) {
		t.Errorf("with an outside top-up and a forgotten tap: %+v", rec)
	}
}

func TestMetricValue(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"# HELP farego_ledger_taps Taps.\n# TYPE farego_ledger_taps gauge\nfarego_ledger_taps 12345\n", 12345, false},
		{"farego_ledger_taps_other 1\nfarego_ledger_taps 7 1700000000\n", 7, false},
		{"farego_ledger_taps 1.2e+07\n", 12_000_000, false},
		{"farego_ledger_taps -1\n", 0, true},
		{"farego_ledger_taps NaN\n", 0, true},
		{"farego_ledger_taps +Inf\n", 0, true},
		{"farego_ledger_taps\n", 0, true},
		{"farego_ledger_taps{x=\"1\"} 5\n", 0, true},
		{"", 0, true},
	} {
		got, err := metricValue(strings.NewReader(c.in), TapsMetric)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("metricValue(%q) = %d, %v; want %d (error %v)", c.in, got, err, c.want, c.err)
		}
		if err != nil && !errors.Is(err, ErrServer) {
			t.Errorf("metricValue(%q): %v is not ErrServer", c.in, err)
		}
	}
}

func FuzzMetricValue(f *testing.F) {
	f.Add("farego_ledger_taps 12\n")
	f.Add("farego_ledger_taps 1e300\nfarego_ledger_taps 3\n")
	f.Fuzz(func(t *testing.T, in string) {
		v, err := metricValue(strings.NewReader(in), TapsMetric)
		if err == nil && v < 0 {
			t.Errorf("negative count %d without an error", v)
		}
	})
}

func TestNewChecksConfig(t *testing.T) {
	if _, err := New(context.Background(), Config{}); !errors.Is(err, ErrConfig) {
		t.Errorf("New(empty config) = %v, want ErrConfig", err)
	}
}
