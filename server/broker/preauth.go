package broker

import (
	"errors"
	"fmt"
	"sync"
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

// pendingAddrs counts the connections not yet logged in by client address.
type pendingAddrs struct {
	max int // negative: no bound

	mu sync.Mutex
	n  map[string]int
}

func newPendingAddrs(max int) *pendingAddrs {
	return &pendingAddrs{max: max, n: map[string]int{}}
}

// take counts a new connection of key, unless key holds max already.
func (p *pendingAddrs) take(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.max >= 0 && p.n[key] >= p.max {
		return false
	}
	p.n[key]++
	return true
}

// give takes one back.
func (p *pendingAddrs) give(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[key] <= 1 {
		delete(p.n, key)
		return
	}
	p.n[key]--
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
