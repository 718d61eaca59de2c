package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/servertest"
)

// Idle connections cannot keep riders out of the HTTP API, however many
// addresses they come from (an attack review: 6,000 idle connections from
// 20 addresses took all 5,000 places, and riders were refused until the
// server's header timeout closed them, 10 s; a botnet reconnecting kept it
// so). Through the real server, on loopback addresses 127.0.0.x:
//
//   - one address holds its share and no more (one over it takes the
//     place of the address's oldest idle one, counted in /metrics); a
//     trusted proxy, which every rider behind it shares, has no such share;
//   - idle connections from ten addresses, far more than the bound in
//     all, each take the place of the oldest idle one: the bound is never
//     passed, and a rider's request is still answered;
//   - a request being handled — a slow upload, its body half sent — is
//     never closed for them, and is answered once its body is in.
func TestHTTPIdleFloodCannotKeepRidersOut(t *testing.T) {
	const total, perAddr = 64, 16
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	a := servertest.RunConfig(t, server.Config{DataDir: dir, MetricsListen: "127.0.0.1:0",
		HTTPMaxConns: total, HTTPMaxConnsPerAddress: perAddr, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.20/32")}})
	dial := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", a.HTTP)
		if err != nil {
			t.Fatalf("from %s: %v", src, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// waitMetric waits, within a bound, for a figure of /metrics to reach
	// want, and fails if it passes it.
	waitMetric := func(series string, want float64) {
		t.Helper()
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
		var got float64
		var b []byte
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			resp, err := http.Get("http://" + a.Metrics + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			m := re.FindSubmatch(b)
			if m == nil {
				t.Fatalf("/metrics has no %s:\n%s", series, b)
			}
			if got, _ = strconv.ParseFloat(string(m[1]), 64); got >= want {
				break
			}
		}
		if got != want {
			t.Fatalf("%s = %v, want %v; /metrics:\n%s", series, got, want, regexp.MustCompile(`(?m)^farego_http_conn.*$`).FindAll(b, -1))
		}
	}

	// A rider's slow upload: the header read whole (the server asks for
	// the body: 100 Continue), half the body sent.
	body := `{"profile":"adult"}` + strings.Repeat(" ", 2000)
	upload := dial("127.0.0.1")
	fmt.Fprintf(upload, "POST /v1/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))
	upload.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(upload)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("upload: %q, %v; want 100 Continue", line, err)
	}
	br.ReadString('\n') // the empty line after 100 Continue
	io.WriteString(upload, body[:len(body)/2])

	// One address: its share, each one over it taking the place of the
	// address's oldest idle one (TestHTTPIdleConnectionsCannotKeepTheir-
	// AddressOut). The proxy: all.
	for range 2 * perAddr {
		dial("127.0.0.2")
	}
	waitMetric("farego_http_connections_evicted_total", perAddr)
	waitMetric(`farego_http_connections_refused_total{reason="per_address"}`, 0)
	proxy := make([]net.Conn, 2*perAddr)
	for i := range proxy {
		proxy[i] = dial("127.0.0.20")
	}
	waitMetric("farego_http_connections_open", 1+perAddr+2*perAddr)

	// Ten addresses, each its share: 160 connections on 64 places, half
	// of them sending nothing, half a request line and half a header.
	// Each evicts the oldest connection doing nothing (the proxy's first,
	// as the first address's were), and a rider's request evicts one.
	const flood = 10 * perAddr
	for i := range 10 {
		for j := range perAddr {
			c := dial(fmt.Sprintf("127.0.0.%d", 3+i))
			if j%2 == 1 {
				io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
			}
		}
	}
	waitMetric("farego_http_connections_open", total)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + a.HTTP + "/healthz")
	if err != nil {
		t.Fatalf("a rider's request during the flood: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a rider's request during the flood: %s", resp.Status)
	}
	waitMetric("farego_http_connections_evicted_total", perAddr+1+3*perAddr+flood+1-total)
	waitMetric(`farego_http_connections_refused_total{reason="all_busy"}`, 0)
	proxy[0].SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := proxy[0].Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("the oldest idle connection was not closed: read %d bytes, %v", n, err)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the oldest idle connection still open at the bound")
	}

	// The upload was not evicted: the rest of its body gets an answer.
	if _, err := io.WriteString(upload, body[len(body)/2:]); err != nil {
		t.Fatalf("upload: %v", err)
	}
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the slow upload was closed during the flood: %v", err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusCreated {
		t.Errorf("the slow upload: %s, want 201 Created", r.Status)
	}
}

// One client holding its address's share of connections idle cannot keep
// the other riders behind that address out (a carrier's NAT puts some
// dozens of riders behind one address): a new connection from it takes
// the place of the address's oldest doing nothing, as at the bound in
// all. Through the real server, from 127.0.0.2 (a review: the address's
// next connection was closed at once, the rider's request refused until
// the header timeout closed the idle ones, and a client reconnecting kept
// it so).
func TestHTTPIdleConnectionsCannotKeepTheirAddressOut(t *testing.T) {
	const perAddr = 4
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	a := servertest.RunConfig(t, server.Config{DataDir: dir, MetricsListen: "127.0.0.1:0", HTTPMaxConnsPerAddress: perAddr})
	from := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 10 * time.Second}
	metric := func(series string) string {
		t.Helper()
		resp, err := http.Get("http://" + a.Metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("/metrics has no %s", series)
		}
		return string(m[1])
	}
	// The address's share, idle: nothing sent, or half a header.
	idle := make([]net.Conn, perAddr)
	for i := range idle {
		c, err := from.Dial("tcp", a.HTTP)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i%2 == 1 {
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
		}
		idle[i] = c
	}
	for deadline := time.Now().Add(30 * time.Second); metric("farego_http_connections_open") != strconv.Itoa(perAddr); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("farego_http_connections_open = %s, want %d", metric("farego_http_connections_open"), perAddr)
		}
	}
	// A rider behind the same address.
	cl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: from.DialContext}}
	resp, err := cl.Get("http://" + a.HTTP + "/healthz")
	if err != nil {
		t.Fatalf("a rider behind the address of %d idle connections: %v", perAddr, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a rider behind the address of %d idle connections: %s", perAddr, resp.Status)
	}
	// The address's oldest idle connection gave its place.
	idle[0].SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := idle[0].Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("the address's oldest idle connection: read %d bytes, %v; want it closed", n, err)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the address's oldest idle connection still open")
	}
	if got := metric("farego_http_connections_evicted_total"); got != "1" {
		t.Errorf("farego_http_connections_evicted_total = %s, want 1", got)
	}
	if got := metric(`farego_http_connections_refused_total{reason="per_address"}`); got != "0" {
		t.Errorf(`farego_http_connections_refused_total{reason="per_address"} = %s, want 0`, got)
	}
}
