package brokertest

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// mqttMarkers mark the goroutines of the MQTT client and broker libraries,
// which LeakCheck always counts as leaked.
var mqttMarkers = []string{"eclipse/paho", "mochi-mqtt"}

// LeakCheck runs the tests of m and then, if they passed, fails the run when
// goroutines of paho, of mochi-mqtt or whose stack mentions one of markers
// (such as "sync/uplink.(*" for the methods of a package's types) are still
// running after grace: paho finishes some of its work in goroutines after
// Disconnect returns. It prints the leaked goroutines' stacks to stderr and
// returns the exit code, for a TestMain:
//
//	func TestMain(m *testing.M) {
//		os.Exit(brokertest.LeakCheck(m, 10*time.Second, "sync/uplink.(*"))
//	}
func LeakCheck(m *testing.M, grace time.Duration, markers ...string) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	if leaked := leakedGoroutines(grace, slices.Concat(mqttMarkers, markers)); leaked != "" {
		fmt.Fprintf(os.Stderr, "goroutines leaked:\n%s\n", leaked)
		return 1
	}
	return 0
}

// leakedGoroutines waits up to grace for the goroutines whose stack
// contains one of markers to end, and returns the stacks of those that did
// not ("" if none is left).
func leakedGoroutines(grace time.Duration, markers []string) string {
	deadline := time.Now().Add(grace)
	for {
		var leaked []string
		for _, g := range strings.Split(allStacks(), "\n\n") {
			for _, mark := range markers {
				if strings.Contains(g, mark) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// allStacks returns the stacks of all goroutines.
func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}
