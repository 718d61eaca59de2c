package brokertest

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain checks this package's tests with LeakCheck itself.
func TestMain(m *testing.M) {
	os.Exit(LeakCheck(m, 10*time.Second, "sync/brokertest.(*"))
}

// parkForLeakTest blocks until release is closed; its name marks the
// goroutine in TestLeakedGoroutines.
//
//go:noinline
func parkForLeakTest(release <-chan struct{}) { <-release }

func TestLeakedGoroutines(t *testing.T) {
	const mark = "brokertest.parkForLeakTest"
	release := make(chan struct{})
	parked := make(chan struct{})
	go func() {
		close(parked)
		parkForLeakTest(release)
	}()
	<-parked
	// The goroutine may not have entered parkForLeakTest yet: wait for it
	// (bounded) before asking with no grace.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(allStacks(), mark) {
		if time.Now().After(deadline) {
			t.Fatal("the parked goroutine never showed up in the stacks")
		}
		time.Sleep(time.Millisecond)
	}
	got := leakedGoroutines(0, []string{"no such marker", mark})
	if !strings.Contains(got, mark) || strings.Contains(got, "TestLeakedGoroutines(") {
		t.Errorf("leaked = %q, want only the parked goroutine", got)
	}
	if got := leakedGoroutines(0, []string{"no such marker"}); got != "" {
		t.Errorf("leaked with an unknown marker = %q, want none", got)
	}

	// A goroutine that ends within the grace period is no leak.
	close(release)
	if got := leakedGoroutines(time.Minute, []string{mark}); got != "" {
		t.Errorf("leaked after release = %q, want none", got)
	}
}

func TestAllStacksGrows(t *testing.T) {
	// Enough parked goroutines for more than the first 1 MiB buffer.
	release := make(chan struct{})
	defer close(release)
	for range 5000 {
		go parkForLeakTest(release)
	}
	s := allStacks()
	if len(s) <= 1<<20 {
		t.Skipf("stacks of 5,000 goroutines took %d bytes only", len(s))
	}
	// Every goroutine, parked yet or not, ends with the line naming the
	// function that started it.
	if n := strings.Count(s, "created by github.com/farego/farego/sync/brokertest.TestAllStacksGrows"); n < 5000 {
		t.Errorf("%d goroutines in the dump, want at least 5000", n)
	}
}
