package console

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/server/ledger"
)

// Server-rendered SVG charts: no script, sized by the page (viewBox, width
// 100%), a <title> on every bar and point for a tooltip, colours from the
// stylesheet's classes. Text is escaped; numbers are formatted here.

const (
	chartW, chartH = 960.0, 220.0
	padL, padR     = 64.0, 8.0
	padT, padB     = 10.0, 28.0
)

type svg struct{ b strings.Builder }

func newSVG(label string, h float64) *svg {
	s := &svg{}
	fmt.Fprintf(&s.b, `<svg class="chart" viewBox="0 0 %g %g" role="img" aria-label="%s" preserveAspectRatio="xMidYMid meet">`,
		chartW, h, template.HTMLEscapeString(label))
	return s
}

func (s *svg) add(format string, a ...any) { fmt.Fprintf(&s.b, format, a...) }

func (s *svg) text(x, y float64, anchor, class, t string) {
	s.add(`<text x="%.1f" y="%.1f" text-anchor="%s" class="%s">%s</text>`, x, y, anchor, class, template.HTMLEscapeString(t))
}

func (s *svg) html() template.HTML {
	s.b.WriteString(`</svg>`)
	return template.HTML(s.b.String()) // every string in it went through HTMLEscapeString
}

// moneyText formats chart labels in the currency's minor units.
func moneyText(currency string) func(int64) string {
	return func(v int64) string { return feedback.FormatNumber(v, currency) }
}

// niceMax rounds a maximum up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// yAxis draws horizontal grid lines from lo to hi, step apart, with labels.
func (s *svg) yAxis(lo, hi, step float64, y func(float64) float64, label func(float64) string) {
	for i := 0; ; i++ {
		v := lo + step*float64(i)
		if v > hi+step/2 {
			return
		}
		yy := y(v)
		s.add(`<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" class="grid"/>`, padL, chartW-padR, yy, yy)
		s.text(padL-6, yy+4, "end", "axis", label(v))
	}
}

// barScale is the vertical scale of bars from lo (≤ 0) to hi (≥ 0), at
// least minSpan tall (on the side that has values): a step of 1, 2 or 5
// times a power of ten, about a quarter of the span, and lo and hi moved
// out to multiples of it, so that zero is a grid line and the labels are
// round (a chart of refunds only was labelled 1.00, -49.25, -99.50).
func barScale(lo, hi, minSpan float64) (slo, shi, step float64) {
	if hi-lo < minSpan {
		if lo < 0 && hi == 0 {
			lo = -minSpan
		} else {
			hi = lo + minSpan
		}
	}
	step = niceMax((hi - lo) / 4)
	return math.Floor(lo/step) * step, math.Ceil(hi/step) * step, step
}

// series is one stacked part of a bar chart.
type series struct {
	Name, Class string
	Values      []int64
}

// stackedBars draws one bar per label, stacking the series (negative
// values below the zero line).
func stackedBars(label string, labels []string, ss []series, minTop int64, format func(int64) string) template.HTML {
	n := len(labels)
	if n == 0 {
		return ""
	}
	var hi, lo float64
	for i := range n {
		var pos, neg float64
		for _, sr := range ss {
			if v := float64(sr.Values[i]); v > 0 {
				pos += v
			} else {
				neg += v
			}
		}
		hi, lo = max(hi, pos), min(lo, neg)
	}
	lo, hi, step := barScale(lo, hi, float64(max(minTop, 1)))
	s := newSVG(label, chartH)
	plotH := chartH - padT - padB
	y := func(v float64) float64 { return padT + plotH*(hi-v)/(hi-lo) }
	s.yAxis(lo, hi, step, y, func(v float64) string { return format(int64(math.Round(v))) })
	slot := (chartW - padL - padR) / float64(n)
	bw := max(slot*0.7, 1)
	every := max(1, int(math.Ceil(float64(n)/12)))
	for i, l := range labels {
		x := padL + slot*float64(i) + (slot-bw)/2
		var up, down float64
		for _, sr := range ss {
			v := float64(sr.Values[i])
			if v == 0 {
				continue
			}
			var top, bottom float64
			if v > 0 {
				bottom, top = up, up+v
				up = top
			} else {
				top, bottom = down, down+v
				down = bottom
			}
			s.add(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="%s"><title>%s: %s</title></rect>`,
				x, y(top), bw, max(y(bottom)-y(top), 0.5), sr.Class, template.HTMLEscapeString(l), template.HTMLEscapeString(sr.Name+" "+format(sr.Values[i])))
		}
		if i%every == 0 {
			s.text(x+bw/2, chartH-padB+16, "middle", "axis", l)
		}
	}
	s.add(`<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" class="zero"/>`, padL, chartW-padR, y(0), y(0))
	return s.html()
}

// revenueChart: per service day, what riders paid (charged) with what
// transfers and the daily cap saved them on top (together: the base
// fares), and corrections below the line when they were refunds.
func revenueChart(days []ledger.DaySummary, currency string) template.HTML {
	labels := make([]string, len(days))
	charged, transfer, capped := make([]int64, len(days)), make([]int64, len(days)), make([]int64, len(days))
	for i, d := range days {
		labels[i] = d.Day[min(5, len(d.Day)):]
		charged[i], transfer[i], capped[i] = d.Charged, d.TransferSavings, d.CapSavings
	}
	return stackedBars("Revenue by service day ("+currency+")", labels, []series{
		{"charged", "c-charged", charged}, {"transfer savings", "c-transfer", transfer}, {"cap savings", "c-cap", capped},
	}, 100, moneyText(currency))
}

// correctionsChart: per service day, the revenue corrections made (after
// late taps re-rated the day).
func correctionsChart(days []ledger.DaySummary, currency string) template.HTML {
	labels := make([]string, len(days))
	v := make([]int64, len(days))
	any := false
	for i, d := range days {
		labels[i], v[i] = d.Day[min(5, len(d.Day)):], d.Corrections
		any = any || v[i] != 0
	}
	if !any {
		return ""
	}
	return stackedBars("Corrections by service day ("+currency+")", labels, []series{{"corrections", "c-corr", v}}, 100, moneyText(currency))
}

// routeChart: horizontal bars per route (the top 12 by revenue).
func routeChart(routes []ledger.DaySummary, currency string) template.HTML {
	if len(routes) > 12 {
		routes = routes[:12]
	}
	if len(routes) == 0 {
		return ""
	}
	rowH := 22.0
	h := padT + rowH*float64(len(routes)) + 20
	var hi float64
	for _, r := range routes {
		hi = max(hi, float64(r.BaseTotal))
	}
	hi = niceMax(max(hi, 100))
	s := newSVG("Revenue by route ("+currency+")", h)
	money := moneyText(currency)
	left := 110.0
	x := func(v float64) float64 { return left + (chartW-padR-left)*v/hi }
	for i := 0; i <= 4; i++ {
		v := hi * float64(i) / 4
		s.add(`<line x1="%.1f" x2="%.1f" y1="%g" y2="%.1f" class="grid"/>`, x(v), x(v), padT, h-20)
		anchor := "middle"
		if i == 4 {
			anchor = "end"
		}
		s.text(x(v), h-6, anchor, "axis", money(int64(v)))
	}
	for i, r := range routes {
		yy := padT + rowH*float64(i)
		s.text(left-6, yy+rowH*0.65, "end", "axis", shown(r.Route))
		at := 0.0
		for _, p := range []struct {
			name, class string
			v           int64
		}{{"charged", "c-charged", r.Charged}, {"transfer savings", "c-transfer", r.TransferSavings}, {"cap savings", "c-cap", r.CapSavings}} {
			if p.v <= 0 {
				continue
			}
			s.add(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="%s"><title>route %s: %s %s</title></rect>`,
				x(at), yy+3, max(x(at+float64(p.v))-x(at), 0.5), rowH-6, p.class, template.HTMLEscapeString(r.Route), p.name, money(p.v))
			at += float64(p.v)
		}
	}
	return s.html()
}

// hourLabels labels hours in loc ("15:04"). An hour of another offset
// than the newest's carries its zone's name: on the night clocks go back,
// two hours read 02:00 ("02:00 CEST", then "02:00"), which without it
// were drawn as one hour twice.
func hourLabels(hours []lagHour, loc *time.Location) []string {
	labels := make([]string, len(hours))
	if len(hours) == 0 {
		return labels
	}
	_, now := hours[len(hours)-1].Start.In(loc).Zone()
	for i, hr := range hours {
		t := hr.Start.In(loc)
		if _, off := t.Zone(); off != now {
			labels[i] = t.Format("15:04 MST")
		} else {
			labels[i] = t.Format("15:04")
		}
	}
	return labels
}

// lagChart: settlement lag percentiles per hour, on a log scale, the
// hours labelled in loc (the fleet's zone, as every time on the console).
func lagChart(hours []lagHour, loc *time.Location) template.HTML {
	if len(hours) == 0 {
		return ""
	}
	labels := hourLabels(hours, loc)
	lo, hi := math.Log10(0.1), math.Log10(7*24*3600)
	s := newSVG("Settlement lag per hour (p50, p90, p99)", chartH)
	plotH := chartH - padT - padB
	y := func(sec float64) float64 {
		l := math.Log10(max(sec, 0.1))
		return padT + plotH*(hi-min(l, hi))/(hi-lo)
	}
	for _, g := range []struct {
		sec   float64
		label string
	}{{0.1, "0.1s"}, {1, "1s"}, {10, "10s"}, {60, "1m"}, {600, "10m"}, {3600, "1h"}, {86400, "1d"}, {7 * 86400, "7d"}} {
		s.add(`<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" class="grid"/>`, padL, chartW-padR, y(g.sec), y(g.sec))
		s.text(padL-6, y(g.sec)+4, "end", "axis", g.label)
	}
	slot := (chartW - padL - padR) / float64(len(hours))
	every := max(1, int(math.Ceil(float64(len(hours))/12)))
	for i := range hours {
		if i%every == 0 {
			s.text(padL+slot*(float64(i)+0.5), chartH-padB+16, "middle", "axis", labels[i])
		}
	}
	for _, line := range []struct {
		class string
		name  string
		get   func(lagFigures) time.Duration
	}{{"l-p50", "p50", func(f lagFigures) time.Duration { return f.P50 }},
		{"l-p90", "p90", func(f lagFigures) time.Duration { return f.P90 }},
		{"l-p99", "p99", func(f lagFigures) time.Duration { return f.P99 }}} {
		var path strings.Builder
		pen := false
		for i, hr := range hours {
			if !hr.HasTaps {
				pen = false
				continue
			}
			xx, yy := padL+slot*(float64(i)+0.5), y(line.get(hr.lagFigures).Seconds())
			if pen {
				fmt.Fprintf(&path, " L%.1f %.1f", xx, yy)
			} else {
				fmt.Fprintf(&path, " M%.1f %.1f", xx, yy)
			}
			pen = true
			s.add(`<circle cx="%.1f" cy="%.1f" r="2.5" class="%s"><title>%s %s: ≤ %s (%d taps)</title></circle>`,
				xx, yy, line.class, labels[i], line.name, fmtDur(line.get(hr.lagFigures)), hr.Taps)
		}
		if path.Len() > 0 {
			s.add(`<path d="%s" class="%s line"/>`, strings.TrimSpace(path.String()), line.class)
		}
	}
	return s.html()
}

// rateChart: taps settled per hour, labelled in loc.
func rateChart(hours []lagHour, loc *time.Location) template.HTML {
	labels := hourLabels(hours, loc)
	v := make([]int64, len(hours))
	for i, hr := range hours {
		v[i] = hr.Taps
	}
	return stackedBars("Taps settled per hour", labels, []series{{"taps", "c-rate", v}}, 4, func(n int64) string { return fmt.Sprint(n) })
}
