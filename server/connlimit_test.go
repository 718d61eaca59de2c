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
// connections: beyond the per-address bound, or beyond the total bound
// while every connection is handling a request, a connection is closed at
// once, and a place freed is usable again. Without the bounds,
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
		hold := make(chan struct{})
		handling := make(chan struct{}, tc.want)
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hold" {
					handling <- struct{}{}
					<-hold
				}
				io.WriteString(w, "ok")
			}), ReadHeaderTimeout: time.Minute}
			lln := newLimitListener(ln, tc.total, tc.perAddr, nil)
			lln.(*limitListener).track(srv)
			go srv.Serve(lln)
			t.Cleanup(func() { srv.Close() })
			addr := ln.Addr().String()
			// Requests being handled (idle connections, a header half
			// sent or nothing, would give their place, in all and of
			// their address).
			var held []net.Conn
			for range tc.want {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c.Write([]byte("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"))
				held = append(held, c)
			}
			// Every one handling its request (net/http reports it active
			// before the handler runs) before the next one: one whose
			// header the server has not read yet is doing nothing, and
			// the next takes its place (a fixed 100 ms here, on a busy
			// machine, and the next one was kept: "still open after 5 s").
			for i := range tc.want {
				select {
				case <-handling:
				case <-time.After(30 * time.Second):
					t.Fatalf("%d of the %d held requests being handled", i, tc.want)
				}
			}
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
			close(hold)
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

// handling tells ln's http.Server hook that c is handling a request (an
// idle connection would give its place to one over its address's bound).
func handling(ln net.Listener, c net.Conn) {
	var srv http.Server
	ln.(*limitListener).track(&srv)
	srv.ConnState(c, http.StateActive)
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
	ln := newLimitListener(&addrListener{remotes: remotes}, -1, 2, nil)
	var got []string
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		handling(ln, c)
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
	ln := newLimitListener(&addrListener{remotes: remotes}, -1, 2, nil)
	var got []string
	var site []net.Conn
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		handling(ln, c)
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

// Over its address's or its IPv6 site's bound, a connection takes the
// place of the oldest of that address (site) doing nothing, and of no
// other's: one client holding an address's share idle (a carrier's NAT:
// some dozens of riders behind it) does not keep the others out, nor can
// it close another address's connections.
func TestHTTPConnectionLimitEvictsItsAddressIdle(t *testing.T) {
	remotes := []string{"192.0.2.9:999", // another address's, idle, the oldest
		"192.0.2.1:1000", "192.0.2.1:1001", // the second takes the first's place (1 an address)
		"[2001:db8:7:1::1]:1002", "[2001:db8:7:2::1]:1003", "[2001:db8:7:3::1]:1004", "[2001:db8:7:4::1]:1005",
		"[2001:db8:7:5::1]:1006"} // over its site's 4: takes the site's oldest's place
	ln := newLimitListener(&addrListener{remotes: remotes}, -1, 1, nil)
	var got []net.Conn
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		got = append(got, c)
	}
	if len(got) != len(remotes) {
		t.Fatalf("accepted %d of %d", len(got), len(remotes))
	}
	l := ln.(*limitListener)
	l.mu.Lock()
	defer l.mu.Unlock()
	var closed []string
	for _, c := range got {
		if c.(*limitConn).released {
			closed = append(closed, c.RemoteAddr().String())
		}
	}
	if want := []string{"192.0.2.1:1000", "[2001:db8:7:1::1]:1002"}; strings.Join(closed, " ") != strings.Join(want, " ") {
		t.Errorf("closed %v, want %v", closed, want)
	}
	if l.evicted != 2 || l.refusedAddr != 0 || l.open != len(remotes)-2 {
		t.Errorf("evicted %d, refused %d, open %d; want 2, 0, %d", l.evicted, l.refusedAddr, l.open, len(remotes)-2)
	}
}
