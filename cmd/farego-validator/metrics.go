package main

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/cmd/internal/sdnotify"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/sync/uplink"
)

// scannerWatch follows the scanner readers: their heartbeats (for the
// watchdog) and whether each is connected (for the metrics).
type scannerWatch struct {
	mon *sdnotify.Monitor
	mu  sync.Mutex
	up  map[string]*atomic.Bool
	// changed is when a reader last came or went (unix ns; the watch's
	// making until one does).
	changed atomic.Int64
}

func newScannerWatch(mon *sdnotify.Monitor) *scannerWatch {
	w := &scannerWatch{mon: mon, up: map[string]*atomic.Bool{}}
	w.changed.Store(time.Now().UnixNano())
	return w
}

// config fills in a scanner's Heartbeat and OnState.
func (w *scannerWatch) config(c *scanner.Config) {
	name := c.Name
	up := &atomic.Bool{}
	w.mu.Lock()
	w.up[name] = up
	w.mu.Unlock()
	// The reader calls Heartbeat after every read, several times a
	// frame: beat the monitor (a shared lock and map) at most once a
	// second, far inside minStallAfter.
	part := "scanner " + name
	var last atomic.Int64
	c.Heartbeat = func() {
		if now := time.Now().UnixNano(); now-last.Load() >= int64(scannerBeatInterval) {
			last.Store(now)
			w.mon.Beat(part)
		}
	}
	c.OnState = func(s scanner.State) {
		up.Store(s == scanner.Connected)
		w.changed.Store(time.Now().UnixNano())
	}
}

// scannerDownGrace is how long every scanner must have been away before
// the validator counts itself out of service for it: a scanner replugged,
// or reopened after a glitch, is back within seconds (driver/scanner's
// backoff), and a boot's first status is not a fault.
const scannerDownGrace = 20 * time.Second

// scannerOutOfService returns why the validator takes no taps for want of
// a scanner ("" while one is read): every scanner reader of states has been
// away for grace or longer. With none read no code reaches the validator,
// and ctl status said in service, as did the status the server showed the
// operator, while the bus's riders could not pay (the scanner unplugged,
// its cable cut, held by another program). Validators without readers
// (stdin) never are.
func scannerOutOfService(states func() []ctlScanner, w *scannerWatch, grace time.Duration) func() string {
	if states == nil {
		return func() string { return "" }
	}
	return func() string {
		if time.Since(time.Unix(0, w.changed.Load())) < grace {
			return ""
		}
		list := states()
		why := make([]string, 0, len(list))
		for _, s := range list {
			if s.Up {
				return ""
			}
			why = append(why, s.Name+": "+s.Problem)
		}
		return reasonScanner + ": no scanner is read (" + strings.Join(why, "; ") + ")"
	}
}

// reasonScanner begins the out-of-service reason scannerOutOfService
// gives.
const reasonScanner = "scanner"

// scannerBeatInterval is the least time between two beats of one scanner
// reader on the watchdog's monitor.
const scannerBeatInterval = time.Second

// scannerStates returns each scanner reader of sources (stdin has none),
// read now or not and why not, for ctl status.
func scannerStates(sources []scanner.Source, w *scannerWatch) func() []ctlScanner {
	type reader interface {
		Name() string
		Problem() string
	}
	var readers []reader
	for _, s := range sources {
		if r, ok := s.(reader); ok {
			readers = append(readers, r)
		}
	}
	if len(readers) == 0 {
		return nil
	}
	return func() []ctlScanner {
		out := make([]ctlScanner, 0, len(readers))
		for _, r := range readers {
			w.mu.Lock()
			up := w.up[r.Name()]
			w.mu.Unlock()
			c := ctlScanner{Name: r.Name(), Up: up != nil && up.Load()}
			if !c.Up {
				c.Problem = r.Problem()
				if c.Problem == "" {
					c.Problem = "not open yet"
				}
			}
			out = append(out, c)
		}
		return out
	}
}

// statsSource is a scanner reader with counters (serial and evdev).
type statsSource interface {
	Name() string
	Stats() scanner.Stats
}

// ackBuckets bound the uplink's ack latency histogram (seconds).
var ackBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// registerDeviceMetrics registers what shows the device in the field: the
// scanners (up, frames, frames dropped by reason), the assignment and
// software version as info metrics, the Go runtime and the process. The
// uplink's are registered by registerUplinkMetrics.
func registerDeviceMetrics(reg *metrics.Registry, sources []scanner.Source, w *scannerWatch, a *agent.Agent) {
	var readers []statsSource
	for _, s := range sources {
		if r, ok := s.(statsSource); ok {
			readers = append(readers, r)
		}
	}
	reg.GaugeVecFunc("farego_scanner_up", "1 while the scanner's device is open and reading, 0 while it is away.",
		[]string{"scanner"}, func(emit func(float64, ...string)) {
			for _, r := range readers {
				w.mu.Lock()
				up := w.up[r.Name()]
				w.mu.Unlock()
				v := 0.0
				if up != nil && up.Load() {
					v = 1
				}
				emit(v, r.Name())
			}
		})
	reg.CounterVecFunc("farego_scanner_frames_total", "Frames a scanner delivered.", []string{"scanner"},
		func(emit func(float64, ...string)) {
			for _, r := range readers {
				emit(float64(r.Stats().Frames), r.Name())
			}
		})
	reg.CounterVecFunc("farego_scanner_frames_dropped_total",
		"Candidate frames a scanner's reader dropped, by reason (overlong, non_printable, unframed, incomplete).",
		[]string{"scanner", "reason"}, func(emit func(float64, ...string)) {
			for _, r := range readers {
				st := r.Stats()
				for _, d := range []struct {
					reason scanner.Discard
					n      uint64
				}{{scanner.DiscardOverlong, st.Overlong}, {scanner.DiscardNonPrintable, st.NonPrintable},
					{scanner.DiscardUnframed, st.Unframed}, {scanner.DiscardIncomplete, st.Incomplete}} {
					emit(float64(d.n), r.Name(), d.reason.String())
				}
			}
		})
	reg.CounterVecFunc("farego_scanner_reconnects_total", "Times a lost scanner came back.", []string{"scanner"},
		func(emit func(float64, ...string)) {
			for _, r := range readers {
				emit(float64(r.Stats().Reconnects), r.Name())
			}
		})
	reg.GaugeVecFunc("farego_assignment_info", "The route and vehicle recorded in taps, and where they came from (config, local, server).",
		[]string{"route", "vehicle", "source"}, func(emit func(float64, ...string)) {
			as := a.Assignment()
			emit(1, as.Route, as.Vehicle, as.Source)
		})
	reg.GaugeVecFunc("farego_build_info", "The validator's software version.", []string{"version"},
		func(emit func(float64, ...string)) { emit(1, agent.Version) })
	metrics.RegisterRuntime(reg)
}

// registerUplinkMetrics registers the link's figures (nothing without one)
// and returns the ack latency histogram for OnClock.
func registerUplinkMetrics(reg *metrics.Registry, up func() *uplink.Uplink) *metrics.Histogram {
	stat := func(f func(uplink.Stats) uint64) func() float64 {
		return func() float64 {
			if u := up(); u != nil {
				return float64(f(u.Stats()))
			}
			return 0
		}
	}
	reg.GaugeFunc("farego_uplink_connected", "1 while connected to the broker.", func() float64 {
		if u := up(); u != nil && u.Stats().Connected {
			return 1
		}
		return 0
	})
	reg.CounterFunc("farego_uplink_connects_total", "Connections to the broker made.", stat(func(s uplink.Stats) uint64 { return s.Connects }))
	reg.CounterFunc("farego_uplink_connect_failures_total", "Failed connection attempts.", stat(func(s uplink.Stats) uint64 { return s.ConnectFailures }))
	reg.CounterFunc("farego_uplink_batches_total", "Tap batches published (resends included).", stat(func(s uplink.Stats) uint64 { return s.BatchesSent }))
	reg.CounterFunc("farego_uplink_records_sent_total", "Tap records published (resends included).", stat(func(s uplink.Stats) uint64 { return s.RecordsSent }))
	reg.CounterFunc("farego_uplink_resends_total", "Times no ack came in time and the unacked batches were sent again.",
		stat(func(s uplink.Stats) uint64 { return s.AckTimeouts }))
	reg.CounterFunc("farego_uplink_acks_total", "Valid acks from the server.", stat(func(s uplink.Stats) uint64 { return s.Acks }))
	reg.CounterFunc("farego_uplink_records_acked_total", "Records the server acknowledged.", stat(func(s uplink.Stats) uint64 { return s.RecordsAcked }))
	reg.CounterVecFunc("farego_uplink_downlinks_total", "Fleet downlinks by result (applied, unchanged, refused).", []string{"result"},
		func(emit func(float64, ...string)) {
			var s uplink.Stats
			if u := up(); u != nil {
				s = u.Stats()
			}
			emit(float64(s.DownlinksApplied), "applied")
			emit(float64(s.DownlinksUnchanged), "unchanged")
			emit(float64(s.DownlinksRefused), "refused")
		})
	reg.CounterFunc("farego_uplink_status_sanitized_total", "Status messages that failed the server's check and were sent sanitized "+
		"(the log and ctl status say why): this build or its configuration needs fixing.",
		stat(func(s uplink.Stats) uint64 { return s.StatusSanitized }))
	reg.CounterFunc("farego_uplink_messages_refused_total", "Acks and commands refused (signature, format, another device).",
		stat(func(s uplink.Stats) uint64 { return s.MessagesRefused }))
	return reg.Histogram("farego_uplink_ack_seconds", "Time from publishing a batch to the server's ack.", ackBuckets)
}
