package sdnotify

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// listenNotify is a real notify socket in NOTIFY_SOCKET, with a 20 ms
// watchdog for this process in the environment.
func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "")
	return conn
}

func TestNotifyAndWatchdog(t *testing.T) {
	conn := listenNotify(t)
	n := FromEnv()
	if !n.Enabled() {
		t.Fatal("not enabled with NOTIFY_SOCKET set")
	}
	if err := n.Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Watchdog(ctx, nil, nil)
	buf := make([]byte, 64)
	var got []string
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for len(got) < 3 {
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(buf[:k]))
	}
	if got[0] != "READY=1" || got[1] != "WATCHDOG=1" || got[2] != "WATCHDOG=1" {
		t.Errorf("got %v, want READY=1 then WATCHDOG=1s", strings.Join(got, ", "))
	}
}

func TestDisabledWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := FromEnv()
	if n.Enabled() || n.Notify("READY=1") != nil {
		t.Error("notifier without NOTIFY_SOCKET should be a silent no-op")
	}
	n.Watchdog(context.Background(), nil, nil) // returns at once
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// A stalled part stops the pings on a real unixgram socket; its recovery
// starts them again.
func TestWatchdogStopsWhileAPartIsStuck(t *testing.T) {
	conn := listenNotify(t)
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	m := &Monitor{StallAfter: 10 * time.Second, Now: clock.Now}
	m.Beat("tap loop")
	m.Beat("queue")
	changes := make(chan error, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go FromEnv().Watchdog(ctx, m.Healthy, func(err error) { changes <- err })

	pings := func(atLeast int) int { // reads what is there, waiting for atLeast
		t.Helper()
		buf := make([]byte, 64)
		n := 0
		for {
			wait := 30 * time.Second
			if n >= atLeast {
				wait = time.Millisecond // only drain
			}
			conn.SetReadDeadline(time.Now().Add(wait))
			k, err := conn.Read(buf)
			if err != nil {
				if n < atLeast {
					t.Fatalf("%d pings, want %d: %v", n, atLeast, err)
				}
				return n
			}
			if string(buf[:k]) == "WATCHDOG=1" {
				n++
			}
		}
	}
	pings(2)

	// The queue goes silent for longer than StallAfter; the tap loop beats on.
	clock.Add(11 * time.Second)
	m.Beat("tap loop")
	err := <-changes
	if err == nil || !strings.Contains(err.Error(), "queue silent for 11s") || strings.Contains(err.Error(), "tap loop") {
		t.Fatalf("change = %v, want the queue named stuck", err)
	}
	pings(0) // drain what was sent before the failing check
	// Every tick from now fails: sends are synchronous, so a drain after
	// two more failing checks must find nothing.
	for range 2 {
		if err := m.Healthy(); err == nil {
			t.Fatal("healthy while the queue is silent")
		}
	}
	time.Sleep(50 * time.Millisecond) // several ticks (20 ms watchdog: 10 ms apart); no assertion on timing
	if n := pings(0); n != 0 {
		t.Errorf("%d pings while the queue was stuck", n)
	}
	m.Beat("queue")
	if err := <-changes; err != nil {
		t.Fatalf("change = %v, want recovery", err)
	}
	pings(1)
	m.Forget("queue")
	clock.Add(time.Hour)
	m.Beat("tap loop")
	if err := m.Healthy(); err != nil {
		t.Errorf("a forgotten part still counts: %v", err)
	}
}

// TestMonitorBeaten: a part counts as beaten from its first beat until it
// is forgotten (the validator confirms a new version only once its tap
// loop has beaten).
func TestMonitorBeaten(t *testing.T) {
	var m Monitor
	if m.Beaten("tap loop") {
		t.Fatal("a part never beaten counts as beaten")
	}
	m.Beat("tap loop")
	if !m.Beaten("tap loop") || m.Beaten("queue") {
		t.Fatal("Beaten does not follow the beats")
	}
	m.Forget("tap loop")
	if m.Beaten("tap loop") {
		t.Fatal("a forgotten part still counts as beaten")
	}
}
