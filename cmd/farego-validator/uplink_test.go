package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// The out-of-service texts the validator builds pass the status's rule
// once made a status reason: a hold naming damaged files whose names hold
// control characters or are not UTF-8, and a route not covered by the
// fares quoted whole (64 bytes of route, more than the status carries).
func TestStatusReason(t *testing.T) {
	long := strings.Repeat("é", 32)
	for _, in := range []string{
		fmt.Sprintf("%s: clock unset (before 2026-01-01)", record.ReasonClock),
		fmt.Sprintf("%s: %s unreadable; run reset-queue", record.ReasonQueueDamaged, "queue.db.corrupt-1\n\x1b[2J, q\xff.db"),
		fmt.Sprintf("%s: route %q is not among the routes fare table version %d lists", record.ReasonRouteNotInFares, long, uint64(1<<62)),
	} {
		got := statusReason(in)
		if err := (&wire.Status{DeviceID: "bus-1", OutOfService: got}).Check(); err != nil {
			t.Errorf("statusReason(%q) = %q: %v", in, got, err)
		}
		if reason, _, _ := strings.Cut(in, ":"); !strings.HasPrefix(got, reason+":") {
			t.Errorf("statusReason(%q) = %q lost the reason", in, got)
		}
	}
}

// selftest warns when the running validator's status failed the server's
// check (ctl status's uplink_status_problem), beside the broker check.
func TestSelftestStatusProblem(t *testing.T) {
	connected := true
	for _, problem := range []string{"", "status: software version \"1.4 beta\" is neither…"} {
		s := &selftest{cfg: &Config{MQTT: MQTTConfig{Broker: "tcp://broker:1883"}},
			running: &ctlStatus{UplinkConnected: &connected, UplinkStatusProblem: problem}}
		s.checkBroker(context.Background())
		var warned bool
		for _, r := range s.results {
			if r.name == "status" {
				warned = r.level == levelWarn && strings.Contains(r.why, problem)
			}
		}
		if warned != (problem != "") {
			t.Errorf("problem %q: selftest results %+v", problem, s.results)
		}
	}
}
