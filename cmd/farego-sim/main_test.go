package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// A small fleet with outages: every accepted tap settles, nothing is left
// in the queues, and the report shows rate, lag and depths.
func TestSimulatorSmallFleet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, []string{"--validators", "5", "--riders", "20", "--rate", "5", "--duration", "4s",
		"--outage-every", "2s", "--outage-for", "1s", "--drain", "90s", "--dir", t.TempDir()}, &out, &errb)
	if err != nil {
		t.Fatalf("farego-sim: %v\n%s%s", err, out.String(), errb.String())
	}
	s := out.String()
	for _, want := range []string{"results:", "end-to-end lag", "left in queues     0", "0 refused"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

func TestSimulatorRefusesBadFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--validators", "0"}, &out, &errb); err == nil {
		t.Error("zero validators accepted")
	}
	if err := run(context.Background(), []string{"--server", "http://127.0.0.1:1"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "--broker") {
		t.Errorf("--server without --broker: %v", err)
	}
}
