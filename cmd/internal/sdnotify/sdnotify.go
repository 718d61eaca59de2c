// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): READY=1 once the service is up, WATCHDOG=1 while it is
// healthy, STOPPING=1 on the way down. Without NOTIFY_SOCKET (not run by
// systemd with Type=notify) every call is a no-op.
package sdnotify

import (
	"context"
	"net"
	"os"
	"strconv"
	"time"
)

// notifyTimeout bounds one notification's write.
const notifyTimeout = 2 * time.Second

// Notifier sends notifications to systemd.
type Notifier struct {
	addr     string
	watchdog time.Duration
}

// FromEnv returns a notifier for $NOTIFY_SOCKET, with the watchdog interval
// from $WATCHDOG_USEC (when $WATCHDOG_PID is unset or this process).
func FromEnv() *Notifier {
	n := &Notifier{addr: os.Getenv("NOTIFY_SOCKET")}
	if usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && usec > 0 {
		if pid := os.Getenv("WATCHDOG_PID"); pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(usec) * time.Microsecond
		}
	}
	return n
}

// Enabled reports whether there is a socket to notify.
func (n *Notifier) Enabled() bool { return n.addr != "" }

// Notify sends one state string, e.g. "READY=1".
func (n *Notifier) Notify(state string) error {
	if n.addr == "" {
		return nil
	}
	addr := n.addr
	if addr[0] == '@' { // abstract socket
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	// A reader that does not keep up must not hang the caller (the
	// watchdog goroutine): systemd does read; anything else may not.
	c.SetWriteDeadline(time.Now().Add(notifyTimeout))
	_, err = c.Write([]byte(state))
	return err
}

// WatchdogInterval returns the watchdog interval systemd asked for (0:
// none).
func (n *Notifier) WatchdogInterval() time.Duration { return n.watchdog }

// Watchdog sends WATCHDOG=1 at half the watchdog interval while healthy()
// returns nil, until ctx is done; onChange (if set) is called with the
// error when healthy starts failing and with nil when it recovers, so the
// caller can log it once each way. Without a watchdog it returns at once.
func (n *Notifier) Watchdog(ctx context.Context, healthy func() error, onChange func(error)) {
	if n.addr == "" || n.watchdog <= 0 {
		return
	}
	t := time.NewTicker(n.watchdog / 2)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			var err error
			if healthy != nil {
				err = healthy()
			}
			if (err != nil) != failing {
				failing = err != nil
				if onChange != nil {
					onChange(err)
				}
			}
			if err == nil {
				n.Notify("WATCHDOG=1")
			}
		}
	}
}
