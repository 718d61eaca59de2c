package metrics

import (
	"testing"
	"time"
)

// TestCacheReadsOncePerTTL: scrapes within the TTL share one reading; past
// it the figure is read again; a zero TTL reads every time.
func TestCacheReadsOncePerTTL(t *testing.T) {
	reads := 0
	c := Cache[int]{TTL: time.Hour, Read: func() int { reads++; return reads }}
	for range 5 {
		if v := c.Get(); v != 1 {
			t.Fatalf("Get = %d within the TTL, want the first reading 1", v)
		}
	}
	c.TTL = time.Nanosecond
	time.Sleep(time.Millisecond)
	if v := c.Get(); v != 2 {
		t.Errorf("Get = %d past the TTL, want a new reading 2", v)
	}
	z := Cache[int]{Read: func() int { reads++; return reads }}
	if a, b := z.Get(), z.Get(); a == b {
		t.Errorf("a zero TTL gave one reading twice (%d)", a)
	}
}
