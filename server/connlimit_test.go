package server

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Idle or slow HTTP clients cannot hold more than their share of
// connections: beyond the per-address and total bounds a connection is
// closed at once, and a place freed is usable again. Without the bounds,
// some thousands of clients trickling headers (or sending nothing) took
// every file descriptor of the process, and the embedded broker's accept
// failed ("too many open files"): no validator could connect.
func TestHTTPConnectionLimit(t *testing.T) {
	for _, tc := range []struct {
		name           string
		total, perAddr int
		want           int
	}{
		{"per address", -1, 4, 4},
		{"total", 3, -1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
				ReadHeaderTimeout: time.Minute}
			go srv.Serve(newLimitListener(ln, tc.total, tc.perAddr))
			t.Cleanup(func() { srv.Close() })
			addr := ln.Addr().String()
			// Slow clients: a request line and half a header, then nothing.
			var held []net.Conn
			for range tc.want {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "))
				held = append(held, c)
			}
			// Let the server accept them all before the next one.
			time.Sleep(100 * time.Millisecond)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 1)); err == nil || n > 0 {
				t.Errorf("connection %d: read %d bytes, %v; want it closed", tc.want+1, n, err)
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("connection %d: still open after 5 s", tc.want+1)
			}
			c.Close()
			for _, c := range held[:1] {
				c.Close()
			}
			// The place freed serves a request again, once the server has
			// seen the slow client go (on a busy machine that may take a
			// while: wait for it, within a bound).
			cl := &http.Client{Timeout: 5 * time.Second}
			var resp *http.Response
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if resp, err = cl.Get("http://" + addr + "/"); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				t.Fatalf("after a slow client left: %v", err)
			}
			resp.Body.Close()
			for _, c := range held[1:] {
				c.Close()
			}
		})
	}
}

// addrListener hands out connections from the remote addresses it is given
// (loopback cannot make connections from many IPv6 addresses).
type addrListener struct {
	net.Listener
	remotes []string
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func (l *addrListener) Accept() (net.Conn, error) {
	if len(l.remotes) == 0 {
		return nil, net.ErrClosed
	}
	ap := netip.MustParseAddrPort(l.remotes[0])
	l.remotes = l.remotes[1:]
	c, _ := net.Pipe()
	return addrConn{c, net.TCPAddrFromAddrPort(ap)}, nil
}

// The per-address bound counts an IPv6 client by its /64, as the
// account-creation limit does: a host that owns a /64 cannot open
// perAddr connections from each of its addresses. IPv4 addresses, and
// other /64s, have places of their own.
func TestHTTPConnectionLimitPerIPv6Prefix(t *testing.T) {
	remotes := []string{"[2001:db8:1:2::1]:1000", "[2001:db8:1:2::2]:1001", "[2001:db8:1:2:ffff::3]:1002", // the third is over
		"[2001:db8:1:3::1]:1003", "192.0.2.1:1004", "[::ffff:192.0.2.1]:1005", "192.0.2.1:1006", // the mapped form is the same address: the third is over
		"192.0.2.2:1007"}
	ln := newLimitListener(&addrListener{remotes: remotes}, -1, 2)
	var got []string
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		got = append(got, c.RemoteAddr().String())
	}
	want := []string{"[2001:db8:1:2::1]:1000", "[2001:db8:1:2::2]:1001", "[2001:db8:1:3::1]:1003", "192.0.2.1:1004", "192.0.2.1:1005",
		"192.0.2.2:1007"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("accepted %v, want %v", got, want)
	}
}

// The /64s of one IPv6 site (its /48) hold at most clientaddr.SiteShare
// times the per-address bound together: without it one household's /56
// (256 /64s) held 65,536 connections, and 24 of its /64s took every place
// of the HTTP API (an attack review: another address's requests were all
// refused). Another site, and IPv4 clients, have places of their own; a
// place given back is taken again.
func TestHTTPConnectionLimitPerIPv6Site(t *testing.T) {
	var remotes []string
	for i := range 5 { // 10 from five /64s of one /48: 8 fit
		remotes = append(remotes, fmt.Sprintf("[2001:db8:7:%x::1]:1000", i+1), fmt.Sprintf("[2001:db8:7:%x::2]:1001", i+1))
	}
	remotes = append(remotes, "[2001:db8:8::1]:1002", "192.0.2.1:1003")
	ln := newLimitListener(&addrListener{remotes: remotes}, -1, 2)
	var got []string
	var site []net.Conn
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		got = append(got, c.RemoteAddr().String())
		if strings.HasPrefix(c.RemoteAddr().String(), "[2001:db8:7:") {
			site = append(site, c)
		}
	}
	if want := append(remotes[:8:8], remotes[10:]...); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("accepted %v, want %v", got, want)
	}
	site[0].Close()
	ln.(*limitListener).Listener = &addrListener{remotes: []string{"[2001:db8:7:ff::1]:1004"}}
	if c, err := ln.Accept(); err != nil {
		t.Errorf("a place the site gave back was not taken again: %v", err)
	} else {
		c.Close()
	}
}
