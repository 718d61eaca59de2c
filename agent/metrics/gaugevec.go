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
	g.fn(func(v float64, values ...string) {
		if len(values) != len(g.labels) {
			return
		}
		fmt.Fprintf(w, "%s%s %s\n", g.name, labelPairs(g.labels, values), formatFloat(v))
	})
}
