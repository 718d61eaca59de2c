package metrics

import (
	"bytes"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"syscall"
	"time"
)

// RegisterRuntime registers the Go runtime's and the process's metrics
// under the names the Prometheus client uses (go_*, process_*), read at
// scrape time from runtime/metrics and /proc/self, so the same dashboards
// read them:
//
//	go_info{version}, go_goroutines, go_threads, go_gc_cycles_total,
//	go_memory_total_bytes, go_heap_objects_bytes, go_gc_goal_bytes,
//	process_cpu_seconds_total, process_resident_memory_bytes,
//	process_virtual_memory_bytes, process_open_fds, process_max_fds,
//	process_start_time_seconds (when RegisterRuntime was called: call
//	it as the program starts)
//
// A figure the system does not give (no /proc) reads as NaN.
func RegisterRuntime(r *Registry) {
	start := time.Now() // registered as the program starts
	r.GaugeVecFunc("go_info", "Information about the Go environment.", []string{"version"}, func(emit func(float64, ...string)) {
		emit(1, runtime.Version())
	})
	read := func(name string) func() float64 {
		return func() float64 {
			s := []metrics.Sample{{Name: name}}
			metrics.Read(s)
			switch s[0].Value.Kind() {
			case metrics.KindUint64:
				return float64(s[0].Value.Uint64())
			case metrics.KindFloat64:
				return s[0].Value.Float64()
			}
			return nan()
		}
	}
	r.GaugeFunc("go_goroutines", "Number of goroutines that currently exist.", read("/sched/goroutines:goroutines"))
	r.GaugeFunc("go_threads", "Number of OS threads created.", func() float64 { n, _ := runtime.ThreadCreateProfile(nil); return float64(n) })
	r.CounterFunc("go_gc_cycles_total", "Completed GC cycles.", read("/gc/cycles/total:gc-cycles"))
	r.GaugeFunc("go_memory_total_bytes", "All memory mapped by the Go runtime.", read("/memory/classes/total:bytes"))
	r.GaugeFunc("go_heap_objects_bytes", "Memory occupied by live and not yet swept heap objects.", read("/memory/classes/heap/objects:bytes"))
	r.GaugeFunc("go_gc_goal_bytes", "Heap size target for the end of the GC cycle.", read("/gc/heap/goal:bytes"))

	r.CounterFunc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", func() float64 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return nan()
		}
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	})
	r.GaugeFunc("process_resident_memory_bytes", "Resident memory size in bytes.", func() float64 { return statm(1) })
	r.GaugeFunc("process_virtual_memory_bytes", "Virtual memory size in bytes.", func() float64 { return statm(0) })
	r.GaugeFunc("process_open_fds", "Number of open file descriptors.", func() float64 {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return nan()
		}
		return float64(len(ents))
	})
	r.GaugeFunc("process_max_fds", "Maximum number of open file descriptors.", func() float64 {
		var l syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return nan()
		}
		return float64(l.Cur)
	})
	r.GaugeFunc("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", func() float64 {
		return float64(start.UnixNano()) / 1e9
	})
}

// statm returns field i of /proc/self/statm (in pages) in bytes.
func statm(i int) float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return nan()
	}
	f := bytes.Fields(b)
	if len(f) <= i {
		return nan()
	}
	v, err := strconv.ParseUint(string(f[i]), 10, 64)
	if err != nil {
		return nan()
	}
	return float64(v) * float64(os.Getpagesize())
}

func nan() float64 { return math.NaN() }
