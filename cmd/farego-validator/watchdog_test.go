package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The real validator pings a real unixgram NOTIFY_SOCKET while its parts
// are alive, stops while its tap path hangs (the green light is a FIFO
// nobody reads: opening it blocks), and pings again once it recovers.
func TestWatchdogFollowsTheTapPath(t *testing.T) {
	dir := t.TempDir()
	green := filepath.Join(dir, "green")
	must(t, syscall.Mkfifo(green, 0o600))
	reader, err := os.OpenFile(green, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	must(t, err)
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	must(t, err)
	defer conn.Close()
	// Read the socket all along, as systemd does.
	msgs := make(chan string, 100000)
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	read := func(wait time.Duration) (string, bool) {
		select {
		case m := <-msgs:
			return m, true
		case <-time.After(wait):
			return "", false
		}
	}
	waitFor := func(msg string) {
		t.Helper()
		for range 200 {
			m, ok := read(60 * time.Second)
			if !ok {
				break
			}
			if m == msg {
				return
			}
		}
		t.Fatalf("no %s on the notify socket", msg)
	}
	drain := func() (pings int) {
		for {
			m, ok := read(time.Millisecond)
			if !ok {
				return pings
			}
			if m == "WATCHDOG=1" {
				pings++
			}
		}
	}

	d := newDevice(t, "", "gpio_green = \""+green+"\"")
	d.env = []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=1000000"} // a ping every 0.5 s
	d.start()
	waitFor("READY=1")
	waitFor("WATCHDOG=1")
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 4001, now).Code(t, now)), "ACCEPTED")

	// Nobody reads the green light any more: the next tap hangs on it.
	reader.Close()
	expectLine(t, d.scan(d.issuer.Rider(t, 4002, now).Code(t, time.Now())), "ACCEPTED") // the console shows it first
	line := d.waitLog("watchdog: not pinging")
	if !strings.Contains(line, "tap loop silent") {
		t.Errorf("watchdog log %q does not name the tap loop", line)
	}
	drain() // pings sent before the failing check
	time.Sleep(2 * time.Second)
	if n := drain(); n != 0 {
		t.Errorf("%d pings while the tap path hung", n)
	}
	// Someone reads it again: the tap completes, the pings come back.
	reader, err = os.OpenFile(green, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	must(t, err)
	defer reader.Close()
	d.waitLog("watchdog: every part alive again")
	waitFor("WATCHDOG=1")
	d.stop()
	if n := len(d.records()); n != 2 {
		t.Errorf("%d records, want 2 (the hung tap completed)", n)
	}
}
