package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	taps := r.Counter("farego_taps_total", "Taps by outcome.", "outcome", "reason")
	taps.With("accepted", "").Inc()
	taps.With("rejected", "code_expired").Add(2)
	r.GaugeFunc("farego_queue_depth", "Records waiting.", func() float64 { return 7 })
	h := r.Histogram("farego_decision_seconds", "Decision latency.", []float64{0.001, 0.01})
	h.Observe(0.0005)
	h.Observe(0.005)
	h.Observe(5)
	var b strings.Builder
	r.WriteTo(&b)
	want := `# HELP farego_taps_total Taps by outcome.
# TYPE farego_taps_total counter
farego_taps_total{outcome="accepted",reason=""} 1
farego_taps_total{outcome="rejected",reason="code_expired"} 2
# HELP farego_queue_depth Records waiting.
# TYPE farego_queue_depth gauge
farego_queue_depth 7
# HELP farego_decision_seconds Decision latency.
# TYPE farego_decision_seconds histogram
farego_decision_seconds_bucket{le="0.001"} 1
farego_decision_seconds_bucket{le="0.01"} 2
farego_decision_seconds_bucket{le="+Inf"} 3
farego_decision_seconds_sum 5.0055
farego_decision_seconds_count 3
`
	if got := b.String(); got != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
	}
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestConcurrentUse(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("c", "c", "l")
	h := r.Histogram("h", "h", LatencyBuckets)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.With([]string{"a", "b"}[i%2]).Inc()
				h.Observe(0.001)
			}
		}()
	}
	wg.Wait()
	if got := c.With("a").Value() + c.With("b").Value(); got != 8000 {
		t.Errorf("counter = %d, want 8000", got)
	}
	if h.Count() != 8000 {
		t.Errorf("histogram count = %d, want 8000", h.Count())
	}
}

func TestDuplicateNamePanics(t *testing.T) {
	r := NewRegistry()
	r.Counter("x", "x")
	defer func() {
		if recover() == nil {
			t.Error("registering x twice did not panic")
		}
	}()
	r.GaugeFunc("x", "x", func() float64 { return 0 })
}

func TestCounterFuncsAndRuntime(t *testing.T) {
	r := NewRegistry()
	r.CounterFunc("frames_total", "Frames.", func() float64 { return 3 })
	r.CounterVecFunc("dropped_total", "Dropped.", []string{"reason"}, func(emit func(float64, ...string)) {
		emit(2, "overlong")
		emit(1, "a", "b") // wrong label count: dropped
	})
	RegisterRuntime(r)
	var b strings.Builder
	r.WriteTo(&b)
	got := b.String()
	for _, want := range []string{
		"# TYPE frames_total counter\nframes_total 3\n",
		"# TYPE dropped_total counter\ndropped_total{reason=\"overlong\"} 2\n# HELP",
		"# TYPE go_gc_cycles_total counter\n", "# TYPE process_cpu_seconds_total counter\n",
		"\ngo_goroutines ", "\nprocess_resident_memory_bytes ", "\ngo_info{version=\"go",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("exposition lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "NaN") {
		t.Errorf("a runtime or process figure is NaN on Linux:\n%s", got)
	}
}

// blockingWriter is a client that does not read: every Write waits until
// released.
type blockingWriter struct {
	h       http.Header
	release chan struct{}
}

func (b *blockingWriter) Header() http.Header         { return b.h }
func (b *blockingWriter) WriteHeader(int)             {}
func (b *blockingWriter) Write(p []byte) (int, error) { <-b.release; return len(p), nil }

// TestSlowScrapeHoldsNoLock: a /metrics client that reads slowly (or not
// at all) must not hold a counter's lock: the HTTP request counters are
// taken by every request. Before, the exposition was written to the client
// under the vector's lock, and with more than a buffer's worth of series a
// stalled client stalled every With.
func TestSlowScrapeHoldsNoLock(t *testing.T) {
	r := NewRegistry()
	v := r.Counter("farego_http_requests_total", "Requests.", "route", "status")
	for i := range 300 { // well over bufio's 4 KiB
		v.With(fmt.Sprintf("GET /v1/route/%03d/%s", i, strings.Repeat("x", 20)), "2xx").Inc()
	}
	w := &blockingWriter{h: http.Header{}, release: make(chan struct{})}
	served := make(chan struct{})
	go func() { r.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil)); close(served) }()
	done := make(chan struct{})
	go func() {
		time.Sleep(50 * time.Millisecond) // let the scrape reach its write
		v.With("GET /healthz", "2xx").Inc()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("a counter's With waited for a client that does not read /metrics")
	}
	close(w.release)
	<-served
	<-done
}
