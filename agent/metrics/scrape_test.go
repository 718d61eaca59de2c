package metrics

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
)

// fleetRegistry is a registry of a fleet's gauges: families of devices
// series each, labelled by device, as the settlement server's /metrics.
func fleetRegistry(families, devices int, calls *[]int) *Registry {
	reg := NewRegistry()
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("bus-%04d", i)
	}
	*calls = make([]int, families)
	for f := range families {
		reg.GaugeVecFunc(fmt.Sprintf("fleet_gauge_%d", f), "a gauge per device", []string{"device"}, func(emit func(float64, ...string)) {
			(*calls)[f]++
			for i, id := range ids {
				emit(float64(i), id)
			}
		})
	}
	return reg
}

// allocated is how many bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A scrape of 2,000 devices' series costs little per series: a label
// value's escaper was made for each value, a 256-entry table each time
// (some 7 KB a series: 150 MB and 200 ms of CPU a scrape of the server's
// /metrics for 2,000 validators, which anyone reaching the API may ask
// for, again and again).
func TestScrapeCostPerSeries(t *testing.T) {
	var calls []int
	reg := fleetRegistry(10, 2000, &calls)
	reg.WriteTo(io.Discard) // the escaper's own table, once
	const series = 10 * 2000
	perSeries := allocated(func() {
		if _, err := reg.WriteTo(io.Discard); err != nil {
			t.Fatal(err)
		}
	}) / series
	if perSeries > 512 {
		t.Errorf("a scrape allocates %d bytes a series, want at most 512", perSeries)
	}
}

// failingWriter fails every write after its first after bytes.
type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	n := min(len(p), w.after)
	w.after -= n
	if n < len(p) {
		return n, errors.New("client gone")
	}
	return n, nil
}

// A scrape whose client is gone stops: the server formatted each one to
// its end (a client sending requests and hanging up on them kept the
// server's cores busy for each).
func TestScrapeStopsWhenTheClientIsGone(t *testing.T) {
	var calls []int
	reg := fleetRegistry(3, 2000, &calls)
	full := allocated(func() { reg.WriteTo(io.Discard) })
	var n int64
	var err error
	cut := allocated(func() { n, err = reg.WriteTo(&failingWriter{after: 100}) })
	if err == nil || n != 100 {
		t.Errorf("WriteTo to a client gone: %d bytes, %v", n, err)
	}
	if calls[0] != 2 || calls[1] != 1 || calls[2] != 1 {
		t.Errorf("families read %v times, want [2 1 1]: those after the failure read again", calls)
	}
	if cut > full/10 {
		t.Errorf("a scrape cut after 100 bytes allocated %d bytes, a whole one %d: it went on formatting", cut, full)
	}
}
