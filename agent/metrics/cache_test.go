package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
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

// blockingWriter is a client that does not read: every Write waits until
// released.
type blockingWriter struct {
	h       http.Header
	release chan struct{}
}

func (b *blockingWriter) Header() http.Header         { return b.h }
func (b *blockingWriter) WriteHeader(int)             {}
func (b *blockingWriter) Write(p []byte) (int, error) { <-b.release; return len(p), nil }

// TestSlowScrapeHoldsNoLock: a /metrics client that reads slowly (or not
// at all) must not hold a counter's lock: the HTTP request counters are
// taken by every request. Before, the exposition was written to the client
// under the vector's lock, and with more than a buffer's worth of series a
// stalled client stalled every With.
func TestSlowScrapeHoldsNoLock(t *testing.T) {
	r := NewRegistry()
	v := r.Counter("farego_http_requests_total", "Requests.", "route", "status")
	for i := range 300 { // well over bufio's 4 KiB
		v.With(fmt.Sprintf("GET /v1/route/%03d/%s", i, strings.Repeat("x", 20)), "2xx").Inc()
	}
	w := &blockingWriter{h: http.Header{}, release: make(chan struct{})}
	served := make(chan struct{})
	go func() { r.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil)); close(served) }()
	done := make(chan struct{})
	go func() {
		time.Sleep(50 * time.Millisecond) // let the scrape reach its write
		v.With("GET /healthz", "2xx").Inc()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("a counter's With waited for a client that does not read /metrics")
	}
	close(w.release)
	<-served
	<-done
}
