package ingest

import (
	"fmt"
	"testing"
)

// TestFairQueueBounds: the per-device and overall bounds hold in count and
// bytes, and take serves the devices round-robin, one message each per
// round.
func TestFairQueueBounds(t *testing.T) {
	q := newFairQueue(3, 100, 6, 400)
	msg := func(n int) inbound { return inbound{payload: make([]byte, n)} }
	for i, tc := range []struct {
		dev  string
		size int
		want int
	}{
		{"a", 200, pushOK},       // one message is always allowed, whatever its size
		{"a", 1, pushDeviceFull}, // over a's bytes
		{"b", 40, pushOK},
		{"b", 40, pushOK},
		{"b", 40, pushDeviceFull}, // over b's bytes
		{"c", 10, pushOK},
		{"c", 10, pushOK},
		{"c", 10, pushOK},
		{"c", 10, pushFull}, // over the total count
		{"d", 10, pushFull},
	} {
		if got := q.push(tc.dev, msg(tc.size)); got != tc.want {
			t.Fatalf("push %d (%s, %d bytes) = %d, want %d", i, tc.dev, tc.size, got, tc.want)
		}
	}
	if n, b, d := q.depth(); n != 6 || b != 310 || d != 3 {
		t.Fatalf("depth %d messages, %d bytes, %d devices", n, b, d)
	}
	small := newFairQueue(3, 1000, 10, 100)
	if small.push("x", msg(80)) != pushOK || small.push("y", msg(30)) != pushFull {
		t.Fatal("the total bytes bound does not hold")
	}
	var order []int
	for range 10 {
		ms := q.take(10)
		if len(ms) == 0 {
			break
		}
		order = append(order, len(ms))
	}
	if fmt.Sprint(order) != "[3 2 1]" {
		t.Errorf("takes of %v messages, want rounds of [3 2 1]", order)
	}
	if n, b, d := q.depth(); n != 0 || b != 0 || d != 0 {
		t.Errorf("after draining: %d messages, %d bytes, %d devices", n, b, d)
	}
}
