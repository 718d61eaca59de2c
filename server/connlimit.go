package server

import (
	"container/list"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"

	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/server/internal/clientaddr"
)

// Defaults of Config.HTTPMaxConns and Config.HTTPMaxConnsPerAddress.
const (
	// DefaultHTTPMaxConns bounds the HTTP connections open at once; fewer
	// when the process may open few files (a quarter of RLIMIT_NOFILE), so
	// that slow or idle HTTP clients can never take the file descriptors
	// the MQTT broker and the ledger need.
	DefaultHTTPMaxConns = 16384
	// DefaultHTTPMaxConnsPerAddress bounds those of one client address (a
	// wallet opens a few; a carrier's NAT puts some dozens of riders
	// behind one address). It was 256: 20 addresses then held 5,120
	// places, a server's whole bound on an open-files limit of 20,000
	// (an attack review).
	DefaultHTTPMaxConnsPerAddress = 128
)

// maxHeaderBytes bounds an HTTP request's header (net/http's default is
// 1 MiB, which a slow client makes the server hold for ReadHeaderTimeout:
// 256 MiB from one address, gigabytes from a few). A bearer token, a
// session cookie and a browser's usual headers take a few KiB.
const maxHeaderBytes = 32 << 10

// limitListener bounds the connections of an HTTP server.
//
// Per client address (clientaddr.Key: an IPv6 client's whole /64 is one
// address, as for the account-creation limit; otherwise one host holds
// perAddr connections per address of its /64), and per IPv6 site
// (clientaddr.SiteShare times perAddr for its /48: otherwise one
// household's /56 held 65,536, and 24 of its /64s took every place), a
// connection beyond the bound takes the place of that address's (site's)
// oldest doing nothing, and is closed at once only when all of them are
// handling a request (a review: one client behind a carrier's NAT holding
// the address's share idle kept every rider behind it out). A trusted reverse proxy
// (exempt) has no such bound: every rider behind it shares its address.
//
// In all, at total open connections a new one takes the place of the
// oldest that is doing nothing — no request header read whole yet, or idle
// between keep-alive requests — which is closed: so idle connections,
// however many addresses they come from, can never keep a rider's request
// out (an attack review: 6,000 idle connections from 20 addresses took all
// 5,000 places and riders were refused until the server's timeouts closed
// them, 10 s, and a botnet reconnecting kept it so). A connection whose
// request is being handled, a slow upload included, is never closed for
// another; only when every place is doing work is a new one refused.
//
// What a connection is doing comes from the http.Server's ConnState hook
// (track): net/http reports StateActive once it has read a request's
// header whole, before the handler runs, and StateIdle when it waits for
// the next one. The hook is given the listener's own connections as long
// as the server speaks plain HTTP (TLS ends at the reverse proxy); a
// connection it cannot place stays evictable.
type limitListener struct {
	net.Listener
	total, perAddr int
	exempt         []netip.Prefix

	mu    sync.Mutex
	open  int
	addrs map[string]int // by client address, and by site
	// idle holds the *limitConn doing nothing, the longest so first;
	// idleBy those of one address or site (the keys of addrs).
	idle   list.List
	idleBy map[string]*list.List
	// What was closed, for /metrics: over the bound per address (or
	// site) with none of its idle, over the bound in all with none idle,
	// idle for another.
	refusedAddr, refusedFull, evicted uint64
}

func newLimitListener(ln net.Listener, total, perAddr int, exempt []netip.Prefix) net.Listener {
	if total == 0 {
		total = DefaultHTTPMaxConns
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/4 < uint64(total) {
			total = int(max(rl.Cur/4, 16))
		}
	}
	if perAddr == 0 {
		perAddr = DefaultHTTPMaxConnsPerAddress
	}
	if total < 0 && perAddr < 0 {
		return ln
	}
	return &limitListener{Listener: ln, total: total, perAddr: perAddr, exempt: exempt, addrs: map[string]int{},
		idleBy: map[string]*list.List{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		remote := c.RemoteAddr().String()
		host, site := clientaddr.Key(remote), clientaddr.Site(remote)
		bounded := l.perAddr >= 0 && !clientaddr.In(remote, l.exempt)
		if !bounded {
			site = "" // counted as one address, not against its site
		}
		var evicts []*limitConn
		l.mu.Lock()
		ok := true
		if bounded {
			// Over its address's (or site's) bound, a new connection takes
			// the place of that address's (site's) oldest doing nothing:
			// otherwise one client behind a carrier's NAT holding its
			// address's share idle kept every rider behind it out.
			for i, k := range [2]string{host, site} {
				bound := l.perAddr
				if i == 1 {
					bound = clientaddr.SiteShare * l.perAddr
				}
				if k == "" || l.addrs[k] < bound {
					continue
				}
				q := l.idleBy[k]
				if q == nil || q.Len() == 0 {
					ok = false
					l.refusedAddr++
					break
				}
				e := q.Front().Value.(*limitConn)
				l.release(e)
				l.evicted++
				evicts = append(evicts, e)
			}
		}
		if ok && l.total >= 0 && l.open >= l.total {
			if e := l.idle.Front(); e != nil {
				ev := e.Value.(*limitConn)
				l.release(ev)
				l.evicted++
				evicts = append(evicts, ev)
			} else {
				ok = false
				l.refusedFull++
			}
		}
		var lc *limitConn
		if ok {
			lc = &limitConn{Conn: c, l: l, host: host, site: site}
			l.open++
			l.addrs[host]++
			if site != "" {
				l.addrs[site]++
			}
			l.markIdle(lc) // no header read yet
		}
		l.mu.Unlock()
		for _, e := range evicts {
			// Its goroutine in net/http sees the read fail and ends.
			e.Conn.Close()
		}
		if !ok {
			c.Close()
			continue
		}
		return lc, nil
	}
}

// release gives c's place back, once; l.mu is held.
func (l *limitListener) release(c *limitConn) {
	if c.released {
		return
	}
	c.released = true
	l.markBusy(c)
	l.open--
	for _, k := range []string{c.host, c.site} {
		if k == "" {
			continue
		}
		if l.addrs[k]--; l.addrs[k] <= 0 {
			delete(l.addrs, k)
		}
	}
}

// track sets srv's ConnState hook, which tells l which connections are
// doing nothing (and may be closed for a new one) and which are handling a
// request.
func (l *limitListener) track(srv *http.Server) {
	srv.ConnState = func(nc net.Conn, st http.ConnState) {
		c, ok := nc.(*limitConn)
		if !ok {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		switch {
		case c.released, st == http.StateNew: // new: idle since Accept
		case st == http.StateIdle:
			l.markIdle(c)
		default: // StateActive (header read), StateHijacked, StateClosed
			l.markBusy(c)
		}
	}
}

// markIdle puts c, doing nothing, last in the idle lists: all of l's,
// its address's and its site's; l.mu is held.
func (l *limitListener) markIdle(c *limitConn) {
	if c.idle != nil {
		return
	}
	c.idle = l.idle.PushBack(c)
	for i, k := range [2]string{c.host, c.site} {
		if k == "" {
			continue
		}
		q := l.idleBy[k]
		if q == nil {
			q = list.New()
			l.idleBy[k] = q
		}
		c.idleBy[i] = q.PushBack(c)
	}
}

// markBusy takes c out of the idle lists; l.mu is held.
func (l *limitListener) markBusy(c *limitConn) {
	if c.idle == nil {
		return
	}
	l.idle.Remove(c.idle)
	c.idle = nil
	for i, k := range [2]string{c.host, c.site} {
		if c.idleBy[i] == nil {
			continue
		}
		q := l.idleBy[k]
		q.Remove(c.idleBy[i])
		if q.Len() == 0 {
			delete(l.idleBy, k)
		}
		c.idleBy[i] = nil
	}
}

// register exports what l closed on reg.
func (l *limitListener) register(reg *metrics.Registry) {
	reg.CounterVecFunc("farego_http_connections_refused_total", "HTTP connections closed at once: over the bound per client address "+
		"(--http-max-conns-per-address) or in all (--http-max-conns) while every connection of the address, or of all, was handling a request.",
		[]string{"reason"}, func(emit func(v float64, values ...string)) {
			l.mu.Lock()
			addr, full := l.refusedAddr, l.refusedFull
			l.mu.Unlock()
			emit(float64(addr), "per_address")
			emit(float64(full), "all_busy")
		})
	reg.CounterFunc("farego_http_connections_evicted_total", "HTTP connections doing nothing (no request yet, or idle between requests) "+
		"closed to make room for a new one at --http-max-conns, or for one of the same address at --http-max-conns-per-address: a steady rate is a flood of idle connections.", func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(l.evicted)
	})
	reg.GaugeFunc("farego_http_connections_open", "HTTP connections open.", func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(l.open)
	})
}

// limitConn gives its place back when closed.
type limitConn struct {
	net.Conn
	l          *limitListener
	host, site string
	// Under l.mu: idle is c's place in l.idle (nil while it handles a
	// request), idleBy its places in l.idleBy[host] and [site];
	// released, that its place was given back.
	idle     *list.Element
	idleBy   [2]*list.Element
	released bool
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.l.mu.Lock()
	c.l.release(c)
	c.l.mu.Unlock()
	return err
}
