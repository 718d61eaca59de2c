package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/uplink"
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

// selftest with the validator running and its uplink down says why (ctl
// status's uplink_error): a bus "not syncing" after its board's bundle was
// made again with --force shows the broker's refusal and what to do, not
// only "its log says why" (the log said it once, when the outage began).
func TestSelftestRunningUplinkError(t *testing.T) {
	down := false
	for _, c := range []struct{ err, want string }{
		{"connect: not Authorized", "install its current bundle"},
		{"connect: network Error : dial tcp 10.0.0.1:8883: i/o timeout", "check the network"},
	} {
		s := &selftest{cfg: &Config{MQTT: MQTTConfig{Broker: "ssl://broker:8883"}},
			running: &ctlStatus{UplinkConnected: &down, UplinkError: c.err}}
		s.checkBroker(context.Background())
		var got *selftestLine
		for i, r := range s.results {
			if r.name == "broker" {
				got = &s.results[i]
			}
		}
		if got == nil || got.level != levelFail || !strings.Contains(got.why, c.err) || !strings.Contains(got.do, c.want) {
			t.Errorf("uplink error %q: selftest results %+v; want a failed broker line with the error and %q", c.err, s.results, c.want)
		}
	}
}

// A device whose device.key is not the one registered for its id (a new
// bundle's validator.toml installed without its device.key) is let in by
// the broker, and the server refuses its batches without a word: ctl
// status said only "uplink_connected": true while the queue grew, and
// selftest beside it said OK. After noAckAfter ack timeouts in a row,
// uplink_error says what is wrong and selftest warns with it.
func TestUplinkProblemNoAcks(t *testing.T) {
	st := uplink.Stats{}
	st.Connected = true
	st.AckTimeoutsInRow = noAckAfter - 1
	if p := uplinkProblem(st); p != "" {
		t.Errorf("%d timeouts in a row: %q, want none yet", st.AckTimeoutsInRow, p)
	}
	st.AckTimeoutsInRow = noAckAfter
	p := uplinkProblem(st)
	// A server (or its database) down acks nothing either: every device
	// says so then, and reinstalling bundles fleet-wide is no fix.
	if !strings.Contains(p, "no ack from the server") || !strings.Contains(p, "device.key") || !strings.Contains(p, "database is down") {
		t.Fatalf("%d timeouts in a row: %q, want the missing acks and device.key named", st.AckTimeoutsInRow, p)
	}
	up := true
	s := &selftest{cfg: &Config{MQTT: MQTTConfig{Broker: "ssl://broker:8883"}},
		running: &ctlStatus{UplinkConnected: &up, UplinkError: p}}
	s.checkBroker(context.Background())
	if len(s.results) != 1 || s.results[0].level != levelWarn || !strings.Contains(s.results[0].why, "device.key") {
		t.Errorf("selftest results %+v; want a broker warning naming device.key", s.results)
	}
}
