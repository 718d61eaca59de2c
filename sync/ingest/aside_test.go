package ingest

import (
	"fmt"
	"testing"
	"time"
)

// TestAsideBudget: a device is refused once the records kept aside reach
// its budget, is taken again as the budget refills (a device's batches
// are never refused for good: it sends them again), overdraws by at most
// what one commit kept aside and pays that back before it is taken again;
// devices are counted apart, and with many devices the full buckets are
// forgotten, not the others.
func TestAsideBudget(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a := newAsideBudget(100, func() time.Time { return now })
	if a.over("bus-1") {
		t.Fatal("a device never charged is over its budget")
	}
	a.charge("bus-1", 99)
	if a.over("bus-1") {
		t.Error("over after 99 of 100")
	}
	a.charge("bus-1", 31) // one commit: 30 past the budget
	if !a.over("bus-1") || a.over("bus-2") {
		t.Errorf("bus-1 over %v, bus-2 over %v; want only bus-1", a.over("bus-1"), a.over("bus-2"))
	}
	now = now.Add(17 * time.Minute) // 28 records back: still 2 in debt
	if !a.over("bus-1") {
		t.Error("taken again before its overdraft was paid back")
	}
	now = now.Add(2 * time.Minute)
	if a.over("bus-1") {
		t.Error("not taken again once the budget refilled")
	}
	now = now.Add(10 * time.Hour)
	a.charge("bus-1", 100)
	if !a.over("bus-1") {
		t.Error("the bucket grew past its capacity in 10 hours")
	}

	for i := range maxAsideDevices + 10 {
		a.charge(fmt.Sprint("dev-", i), 1)
	}
	now = now.Add(time.Hour) // every one of them full again
	a.charge("bus-1", 100)
	a.charge("late", 1)
	if len(a.devs) > 3 || !a.over("bus-1") {
		t.Errorf("%d devices tracked after the full ones were forgotten; bus-1 over %v", len(a.devs), a.over("bus-1"))
	}

	if none := newAsideBudget(-1, time.Now); func() bool { none.charge("x", 1<<30); return none.over("x") }() {
		t.Error("a negative budget (none) refuses")
	}
}
