package broker

import (
	"errors"
	"fmt"
	"sync"

	"github.com/farego/farego/server/internal/clientaddr"
)

// What a connection that has not logged in yet may make the broker hold.
// mochi allocates a packet's whole announced size before reading it, and
// waits ConnectTimeout for the CONNECT: without these, one host opening
// connections that announce 400 KiB and send nothing held every place
// under MaxConnections (validators were refused) and 60 to 90 KB each.
const (
	// DefaultMaxPendingPerAddress bounds the connections of one client
	// address (an IPv4 address, an IPv6 /64) not yet logged in. A fleet
	// behind one carrier NAT reconnecting at once still fits: a login
	// takes a round trip or two, and a refused device retries after its
	// back-off.
	DefaultMaxPendingPerAddress = 32
	// MaxConnectSize bounds the first packet, the CONNECT: a device's
	// carries its id, password and client id, a few hundred bytes.
	MaxConnectSize = 16 << 10
)

// errConnectTooLarge ends a connection whose first packet announces more
// than MaxConnectSize.
var errConnectTooLarge = errors.New("broker: the first packet announces more than the broker takes before a login")

// pendingAddrs counts the connections not yet logged in by client address
// (clientaddr.Key) and by IPv6 site (clientaddr.Site, a /48).
type pendingAddrs struct {
	max     int // per address; negative: no bound
	siteMax int // per site; negative: no bound

	mu sync.Mutex
	n  map[string]int // by address, and by site
}

// siteShareOfAll is the share of all the broker's connections
// (MaxConnections) that the addresses of one IPv6 site may hold not
// logged in together. Without a bound per site, one /48 (a free tunnel's:
// 65,536 /64s of 32 places each) could hold every place and keep every
// validator out; bound to a few times one address's, four phones of a
// mobile carrier's /48 (which validators share with the public) kept its
// validators out. A sixteenth of all is out of a few phones' reach, and
// leaves the rest to the other sites.
const siteShareOfAll = 16

// newPendingAddrs bounds an address to perAddr connections not logged in
// and a site to the larger of clientaddr.SiteShare times perAddr and a
// siteShareOfAll-th of maxConns (negative: no bound).
func newPendingAddrs(perAddr, maxConns int) *pendingAddrs {
	site := -1
	if perAddr >= 0 && maxConns >= 0 {
		site = max(perAddr*clientaddr.SiteShare, maxConns/siteShareOfAll)
	}
	return &pendingAddrs{max: perAddr, siteMax: site, n: map[string]int{}}
}

// take counts a new connection of key in site ("": none), unless key
// holds max already or site siteMax.
func (p *pendingAddrs) take(key, site string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.max >= 0 && p.n[key] >= p.max || site != "" && p.siteMax >= 0 && p.n[site] >= p.siteMax {
		return false
	}
	p.n[key]++
	if site != "" {
		p.n[site]++
	}
	return true
}

// give takes one back.
func (p *pendingAddrs) give(key, site string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range []string{key, site} {
		if k == "" {
			continue
		}
		if p.n[k] <= 1 {
			delete(p.n, k)
			continue
		}
		p.n[k]--
	}
}

// count is how many connections of key are counted (for tests).
func (p *pendingAddrs) count(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[key]
}

// connectCheck reads the fixed header of a connection's first packet as
// it arrives (clientConn.readFirst), and refuses an announced size over
// MaxConnectSize before any of the packet is read.
type connectCheck struct {
	done  bool
	seen  int // bytes of the fixed header seen: the type, then the length's
	size  int
	shift uint
}

// check looks at the bytes read next.
func (h *connectCheck) check(p []byte) error {
	for _, b := range p {
		if h.done {
			return nil
		}
		h.seen++
		if h.seen == 1 {
			continue // the packet type: mochi refuses anything but CONNECT
		}
		h.size |= int(b&0x7f) << h.shift
		h.shift += 7
		if b&0x80 == 0 || h.seen == 5 {
			h.done = true
			if h.size > MaxConnectSize {
				return fmt.Errorf("%w (%d bytes, at most %d)", errConnectTooLarge, h.size, MaxConnectSize)
			}
		}
	}
	return nil
}
