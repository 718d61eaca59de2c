package broker

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/farego/farego/server/internal/clientaddr"
)

// TestConnectionBeforeLoginIsCheap: what a connection that has sent only
// part of its CONNECT makes the broker hold. mochi sets aside a client's
// whole write queue (MaxPendingWrites slots, 64 KiB) and two goroutines
// as soon as it is handed a connection: handed it before the CONNECT had
// arrived, 4,500 half-open connections (32 from each of 140 addresses, a
// part of one IPv6 /48's /64s) held 300 MB of a settlement server in an
// attack review. The broker now reads the CONNECT itself first.
func TestConnectionBeforeLoginIsCheap(t *testing.T) {
	const conns = 1000
	b := startBroker(t, Config{MaxPendingPerAddress: -1, ConnectTimeout: time.Minute})
	held := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse + m.StackInuse
	}
	before := held()
	for range conns {
		c, err := net.DialTimeout("tcp", b.Addr(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte{0x10, 0x20, 0, 4, 'M', 'Q'}) // the start of a CONNECT, then nothing
	}
	waitFor(t, "the connections counted", func() bool { return b.pending.count("127.0.0.1") == conns })
	time.Sleep(200 * time.Millisecond) // each one's first bytes read
	per := (int64(held()) - int64(before)) / conns
	t.Logf("%d connections not logged in: %d bytes each", conns, per)
	if per > 24<<10 {
		t.Errorf("a connection that sent part of its CONNECT holds %d bytes of the broker, want at most %d", per, 24<<10)
	}
}

// TestPendingPerIPv6Site: the /64s of one IPv6 site (its /48) hold at most
// the larger of clientaddr.SiteShare times an address's connections not
// logged in and a siteShareOfAll-th of all the broker's connections; another
// site, and IPv4 addresses, have places of their own; a place given back is
// taken again. (Loopback has one IPv6 address: the listener's use of take
// and give is TestConnectionsBeforeLogin's.)
func TestPendingPerIPv6Site(t *testing.T) {
	for _, c := range []struct{ maxConns, want int }{
		{100, clientaddr.SiteShare * 2}, // a few times an address's
		{siteShareOfAll * 13, 13},       // a share of all
		{-1, 100},                       // no bound (the loop's 100)
	} {
		p := newPendingAddrs(2, c.maxConns)
		taken := 0
		for i := range 50 {
			for j := range 2 {
				remote := fmt.Sprintf("[2001:db8:7:%x::%x]:1000", i+1, j+1)
				if p.take(clientaddr.Key(remote), clientaddr.Site(remote)) {
					taken++
				}
			}
		}
		if taken != c.want {
			t.Errorf("with %d connections in all, one site holds %d connections not logged in, want %d", c.maxConns, taken, c.want)
		}
		for _, remote := range []string{"[2001:db8:8::1]:1000", "192.0.2.1:1000"} {
			if !p.take(clientaddr.Key(remote), clientaddr.Site(remote)) {
				t.Errorf("%s refused while another site is full", remote)
			}
		}
		p.give(clientaddr.Key("[2001:db8:7:1::1]:1000"), clientaddr.Site("[2001:db8:7:1::1]:1000"))
		if remote := "[2001:db8:7:ff::1]:1000"; !p.take(clientaddr.Key(remote), clientaddr.Site(remote)) {
			t.Errorf("with %d connections in all, a place the site gave back was not taken again", c.maxConns)
		}
	}
}
