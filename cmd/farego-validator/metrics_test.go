package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/sdnotify"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/sync/brokertest"
)

// metricValue returns the value of the sample line "name{labels} v" (the
// first whose name and labels start with prefix), and false if none.
func metricValue(text, prefix string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) && !strings.HasPrefix(l, "#") {
			f := strings.Fields(l)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// TestDeviceMetrics scrapes a real validator's /metrics after a tap, a
// dropped frame and a route change.
func TestDeviceMetrics(t *testing.T) {
	broker := brokertest.Start(t, nil)
	d := newDevice(t, "", "\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[ctl]\nsocket = \"ctl.sock\"")
	d.withBroker(t, broker)
	d.start()
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 6001, now).Code(t, now)), "ACCEPTED")
	_, err := d.master.Write([]byte("FG1:\x01\x02\r\n")) // a frame with control bytes: dropped by the reader
	must(t, err)
	d.waitLog("frame discarded")
	d.mustCtl("route", "43")
	brokertest.WaitFor(t, 60*time.Second, "the uplink to connect", func() bool {
		v, _ := metricValue(d.metrics(), "farego_uplink_connected ")
		return v == 1
	})
	if st := d.mustCtl("status"); st.UplinkStatusProblem != "" {
		t.Errorf("ctl status: the validator's own status fails the server's check: %s", st.UplinkStatusProblem)
	}
	m := d.metrics()
	for _, c := range []struct {
		prefix string
		want   float64 // -1: present, any value; -2: positive
	}{
		{`farego_scanner_up{scanner="front"} `, 1},
		{`farego_scanner_frames_total{scanner="front"} `, 1},
		{`farego_scanner_frames_dropped_total{scanner="front",reason="non_printable"} `, 1},
		{`farego_scanner_frames_dropped_total{scanner="front",reason="overlong"} `, 0},
		{`farego_assignment_info{route="43",vehicle="bus-7",source="local"} `, 1},
		{`farego_build_info{version="`, 1},
		{`farego_taps_total{outcome="accepted",reason=""} `, 1},
		{`farego_uplink_connected `, 1},
		{`farego_uplink_connects_total `, -2},
		{`farego_uplink_batches_total `, -2},
		{`farego_uplink_resends_total `, -1},
		{`farego_uplink_acks_total `, -1},
		{`farego_uplink_downlinks_total{result="refused"} `, -1},
		{`farego_uplink_ack_seconds_count `, -1},
		{`farego_uplink_status_sanitized_total `, 0}, // the validator's own status passes the server's check
		{`farego_clock_offset_seconds `, -1},
		{`farego_queue_depth `, 1},
		{`farego_queue_max_records `, 1_000_000},    // the default
		{`farego_queue_max_used_bytes `, 434 << 20}, // 7/8 of the 496 MiB bbolt allocates under the default 512 MiB
		{`farego_queue_used_bytes `, -2},
		{`go_info{version="go`, 1},
		{`go_goroutines `, -2},
		{`go_memory_total_bytes `, -2},
		{`process_cpu_seconds_total `, -2},
		{`process_resident_memory_bytes `, -2},
		{`process_open_fds `, -2},
		{`process_start_time_seconds `, -2},
	} {
		v, ok := metricValue(m, c.prefix)
		switch {
		case !ok:
			t.Errorf("no %s… in the scrape", c.prefix)
		case c.want == -2 && v <= 0, c.want >= 0 && v != c.want:
			t.Errorf("%s%v, want %v", c.prefix, v, c.want)
		}
	}
	if !regexp.MustCompile(`(?m)^# TYPE farego_scanner_frames_dropped_total counter$`).MatchString(m) {
		t.Error("dropped frames are not typed as a counter")
	}
	d.stop()
}

// BenchmarkScannerHeartbeat is what a serial reader pays after every read
// (several times a frame) to tell the watchdog it is alive.
func BenchmarkScannerHeartbeat(b *testing.B) {
	w := newScannerWatch(&sdnotify.Monitor{})
	c := scanner.Config{Name: "front"}
	w.config(&c)
	b.ReportAllocs()
	for b.Loop() {
		c.Heartbeat()
	}
}
