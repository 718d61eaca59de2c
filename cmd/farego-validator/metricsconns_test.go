package main

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMetricsConnectionsBounded: any local user (or, with metrics.listen on
// the bus's network, anyone on it) opened keep-alive connections to
// /metrics, asked once on each and left them open. The validator kept every
// one, forever (no idle timeout, no limit): 20,000 of them held 400 MB of
// its memory and every file descriptor it may open, on a board of 512 MB.
// It now answers at most maxMetricsConns at once and closes the others at
// once; the scanner still takes taps meanwhile.
func TestMetricsConnectionsBounded(t *testing.T) {
	d := newDevice(t, "", "\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
	d.start()
	logs := d.logged()
	const key = `msg="metrics listening" addr=`
	i := strings.LastIndex(logs, key)
	if i < 0 {
		t.Fatal("the validator serves no metrics")
	}
	addr, _, _ := strings.Cut(logs[i+len(key):], "\n")

	const tries = 64
	answered := 0
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range tries {
		c, err := net.Dial("tcp", addr)
		must(t, err)
		held = append(held, c)
		c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang fails the test, it does not time it
		_, err = c.Write([]byte("GET /metrics HTTP/1.1\r\nHost: v\r\n\r\n"))
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(bufio.NewReader(c), nil)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection %d: neither answered nor closed: %v", len(held), err)
		}
		if err != nil {
			continue // closed by the validator: over its bound
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			answered++
		}
	}
	if answered == 0 {
		t.Fatal("no connection was answered")
	}
	if answered > 16 {
		t.Errorf("%d keep-alive connections to /metrics held open at once, want at most 16", answered)
	}
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 6101, now).Code(t, now)), "ACCEPTED")
}
