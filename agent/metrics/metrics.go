// Package metrics is a small Prometheus text-format exposition (version
// 0.0.4) for the validator and the settlement server: counters with labels,
// gauges read at scrape time, and histograms. It exists so that the device
// binary does not carry the full Prometheus client and its dependencies.
//
// All metrics are safe for concurrent use and for 32-bit ARM (64-bit
// atomics use the aligned sync/atomic types).
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metrics and writes them in the text format.
type Registry struct {
	mu      sync.Mutex
	metrics []writer
	names   map[string]bool
}

type writer interface{ write(w *bufio.Writer) }

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{names: map[string]bool{}} }

func (r *Registry) add(name string, m writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names[name] {
		panic("metrics: duplicate metric " + name)
	}
	r.names[name] = true
	r.metrics = append(r.metrics, m)
}

// WriteTo writes every metric in the Prometheus text format. It stops at
// the first metric after a write failed (a client gone): a scrape nobody
// reads is not formatted to its end.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	ms := slices.Clone(r.metrics)
	r.mu.Unlock()
	cw := &countWriter{w: w}
	bw := bufio.NewWriter(cw)
	for _, m := range ms {
		if cw.err != nil {
			break
		}
		m.write(bw)
	}
	err := bw.Flush()
	return cw.n, err
}

// ServeHTTP serves the metrics (for /metrics), streamed through a small
// buffer: a scrape holds no copy of the whole exposition, and no metric
// holds a lock while it is written (a client that reads slowly stalls
// only its own scrape).
func (r *Registry) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	r.WriteTo(w)
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error // the first write's error
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.err == nil {
		c.err = err
	}
	return n, err
}

func header(w *bufio.Writer, name, help, typ string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, strings.ReplaceAll(help, "\n", " "), name, typ)
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// labelEscaper escapes a label value. Made once: a Replacer of single
// bytes sets up a 256-entry table, and one made for each value was most of
// a scrape's cost (the server's /metrics, which anyone reaching the API
// may ask for, took 200 ms of CPU and some 150 MB of garbage a scrape for
// 2,000 validators).
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func labelPairs(names, values []string) string {
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(values[i]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// Counter is a monotonically increasing count.
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value returns the count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// CounterVec is a counter family with labels.
type CounterVec struct {
	name, help string
	labels     []string
	mu         sync.Mutex
	children   map[string]*Counter
	values     map[string][]string
}

// Counter registers a counter family with the given label names.
func (r *Registry) Counter(name, help string, labels ...string) *CounterVec {
	v := &CounterVec{name: name, help: help, labels: labels, children: map[string]*Counter{}, values: map[string][]string{}}
	r.add(name, v)
	return v
}

// With returns the counter for the label values (one per label name).
func (v *CounterVec) With(values ...string) *Counter {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %s wants %d label values, got %d", v.name, len(v.labels), len(values)))
	}
	key := strings.Join(values, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.children[key]
	if !ok {
		c = &Counter{}
		v.children[key] = c
		v.values[key] = slices.Clone(values)
	}
	return c
}

// write copies the family's children under its lock and writes them after:
// the writer may be a client's socket, and With, which every counted event
// takes, must not wait for it.
func (v *CounterVec) write(w *bufio.Writer) {
	type child struct {
		key    string
		values []string
		c      *Counter
	}
	v.mu.Lock()
	cs := make([]child, 0, len(v.children))
	for k, c := range v.children {
		cs = append(cs, child{k, v.values[k], c})
	}
	v.mu.Unlock()
	slices.SortFunc(cs, func(a, b child) int { return strings.Compare(a.key, b.key) })
	header(w, v.name, v.help, "counter")
	for _, c := range cs {
		if _, err := fmt.Fprintf(w, "%s%s %d\n", v.name, labelPairs(v.labels, c.values), c.c.Value()); err != nil {
			return // the client is gone
		}
	}
}

type gaugeFunc struct {
	name, help string
	fn         func() float64
}

// GaugeFunc registers a gauge whose value is read from fn at scrape time.
func (r *Registry) GaugeFunc(name, help string, fn func() float64) {
	r.add(name, &gaugeFunc{name: name, help: help, fn: fn})
}

func (g *gaugeFunc) write(w *bufio.Writer) {
	header(w, g.name, g.help, "gauge")
	fmt.Fprintf(w, "%s %s\n", g.name, formatFloat(g.fn()))
}

// Histogram counts observations into cumulative buckets.
type Histogram struct {
	name, help string
	bounds     []float64
	counts     []atomic.Uint64 // one per bound, plus +Inf
	count      atomic.Uint64
	sumBits    atomic.Uint64
}

// Histogram registers a histogram with the given upper bounds (ascending).
func (r *Registry) Histogram(name, help string, bounds []float64) *Histogram {
	if !slices.IsSorted(bounds) {
		panic("metrics: histogram bounds must be ascending: " + name)
	}
	h := &Histogram{name: name, help: help, bounds: slices.Clone(bounds), counts: make([]atomic.Uint64, len(bounds)+1)}
	r.add(name, h)
	return h
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	i, _ := slices.BinarySearch(h.bounds, v)
	h.counts[i].Add(1)
	h.count.Add(1)
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.count.Load() }

func (h *Histogram) write(w *bufio.Writer) {
	header(w, h.name, h.help, "histogram")
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", h.name, formatFloat(b), cum)
	}
	cum += h.counts[len(h.bounds)].Load()
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n", h.name, cum)
	fmt.Fprintf(w, "%s_sum %s\n%s_count %d\n", h.name, formatFloat(math.Float64frombits(h.sumBits.Load())), h.name, cum)
}

// LatencyBuckets are histogram bounds in seconds from 100 µs to 10 s.
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}
