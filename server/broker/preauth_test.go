package broker

import (
	"net"
	"runtime"
	"testing"
	"time"
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
