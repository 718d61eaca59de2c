package server

import (
	"net"
	"sync"
	"syscall"

	"github.com/farego/farego/server/internal/clientaddr"
)

// Defaults of Config.HTTPMaxConns and Config.HTTPMaxConnsPerAddress.
const (
	// DefaultHTTPMaxConns bounds the HTTP connections open at once; fewer
	// when the process may open few files (a quarter of RLIMIT_NOFILE), so
	// that slow or idle HTTP clients can never take the file descriptors
	// the MQTT broker and the ledger need.
	DefaultHTTPMaxConns = 16384
	// DefaultHTTPMaxConnsPerAddress bounds those of one client address.
	DefaultHTTPMaxConnsPerAddress = 256
)

// maxHeaderBytes bounds an HTTP request's header (net/http's default is
// 1 MiB, which a slow client makes the server hold for ReadHeaderTimeout:
// 256 MiB from one address, gigabytes from a few). A bearer token, a
// session cookie and a browser's usual headers take a few KiB.
const maxHeaderBytes = 32 << 10

// limitListener refuses (closes at once) a connection beyond total open
// connections, beyond perAddr of its client address (clientaddr.Key: an
// IPv6 client's whole /64 is one address, as for the account-creation
// limit; otherwise one host holds 256 connections per address of its /64),
// or beyond clientaddr.SiteShare times perAddr of its IPv6 site (its /48:
// otherwise one household's /56 held 65,536, and 24 of its /64s took every
// place: nobody else was answered).
type limitListener struct {
	net.Listener
	total, perAddr int

	mu    sync.Mutex
	open  int
	addrs map[string]int // by client address, and by site
}

func newLimitListener(ln net.Listener, total, perAddr int) net.Listener {
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
	return &limitListener{Listener: ln, total: total, perAddr: perAddr, addrs: map[string]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		remote := c.RemoteAddr().String()
		host, site := clientaddr.Key(remote), clientaddr.Site(remote)
		l.mu.Lock()
		ok := (l.total < 0 || l.open < l.total) && (l.perAddr < 0 || l.addrs[host] < l.perAddr &&
			(site == "" || l.addrs[site] < clientaddr.SiteShare*l.perAddr))
		if ok {
			l.open++
			l.addrs[host]++
			if site != "" {
				l.addrs[site]++
			}
		}
		l.mu.Unlock()
		if !ok {
			c.Close()
			continue
		}
		return &limitConn{Conn: c, l: l, host: host, site: site}, nil
	}
}

// limitConn gives its place back when closed.
type limitConn struct {
	net.Conn
	l          *limitListener
	host, site string
	once       sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		for _, k := range []string{c.host, c.site} {
			if k == "" {
				continue
			}
			if c.l.addrs[k]--; c.l.addrs[k] <= 0 {
				delete(c.l.addrs, k)
			}
		}
		c.l.mu.Unlock()
	})
	return err
}
