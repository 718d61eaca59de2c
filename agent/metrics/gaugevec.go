package metrics

import (
	"bufio"
	"fmt"
)

// gaugeVecFunc is a family of labelled gauges read at scrape time.
type gaugeVecFunc struct {
	name, help string
	labels     []string
	fn         func(emit func(v float64, values ...string))
}

// GaugeVecFunc registers a family of gauges with labels whose samples are
// read from fn at scrape time: fn calls emit once per sample, with one
// value per label. A sample with the wrong number of label values is
// dropped.
func (r *Registry) GaugeVecFunc(name, help string, labels []string, fn func(emit func(v float64, values ...string))) {
	r.add(name, &gaugeVecFunc{name: name, help: help, labels: labels, fn: fn})
}

func (g *gaugeVecFunc) write(w *bufio.Writer) {
	header(w, g.name, g.help, "gauge")
	failed := false // a write failed (the client is gone): format no more
	g.fn(func(v float64, values ...string) {
		if failed || len(values) != len(g.labels) {
			return
		}
		_, err := fmt.Fprintf(w, "%s%s %s\n", g.name, labelPairs(g.labels, values), formatFloat(v))
		failed = err != nil
	})
}

// counterFunc is a counter, or a family of labelled counters, read at
// scrape time from a count kept elsewhere.
type counterFunc struct {
	name, help string
	labels     []string
	fn         func(emit func(v float64, values ...string))
}

// CounterFunc registers a counter whose value is read from fn at scrape
// time (a count another part keeps, such as a reader's frames).
func (r *Registry) CounterFunc(name, help string, fn func() float64) {
	r.CounterVecFunc(name, help, nil, func(emit func(float64, ...string)) { emit(fn()) })
}

// CounterVecFunc registers a family of counters with labels read from fn
// at scrape time, as GaugeVecFunc does for gauges.
func (r *Registry) CounterVecFunc(name, help string, labels []string, fn func(emit func(v float64, values ...string))) {
	r.add(name, &counterFunc{name: name, help: help, labels: labels, fn: fn})
}

func (c *counterFunc) write(w *bufio.Writer) {
	header(w, c.name, c.help, "counter")
	failed := false
	c.fn(func(v float64, values ...string) {
		if failed || len(values) != len(c.labels) {
			return
		}
		_, err := fmt.Fprintf(w, "%s%s %s\n", c.name, labelPairs(c.labels, values), formatFloat(v))
		failed = err != nil
	})
}
