package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/brokertest"
)

// TestRefusedLoginLogBounded: a client that is not logged in chooses its
// username and client id (together up to MaxConnectSize); a refused
// login's log line carries them cut short (saying how long they were),
// and is written once a minute per client address (with how many were
// held back), whatever usernames the client makes up, so a flood of such
// logins cannot fill the disk with the broker's log, nor the log limiter's
// table (which would hold back the broker's other complaints). Another
// address has a line of its own.
func TestRefusedLoginLogBounded(t *testing.T) {
	var log brokertest.SyncBuffer
	b := startBroker(t, Config{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	const logins, size = 12, 7000
	login := func(i int, from string) {
		t.Helper()
		user := fmt.Sprintf("%d%s", i, strings.Repeat("u", size))
		id := fmt.Sprintf("%d%s", i, strings.Repeat("c", size))
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
		if _, _, err := dial(t, b.url(), user, "wrong", nil, func(o *mqtt.ClientOptions) { o.SetClientID(id).SetDialer(d) }); err == nil {
			t.Fatal("a bad login was accepted")
		}
	}
	for i := range logins {
		login(i, "127.0.0.2")
	}
	waitFor(t, "the refusals counted", func() bool { return b.Stats().Refused == logins })
	login(logins, "127.0.0.3")
	waitFor(t, "the other address's refusal in the log", func() bool {
		return strings.Contains(log.String(), "remote=127.0.0.3")
	})
	out := log.String()
	if n := strings.Count(out, "connection refused"); n != 2 {
		t.Errorf("%d refused logins from one address and 1 from another wrote %d lines, want 2:\n%.3000s", logins, n, out)
	}
	if len(out) > 4*1024 {
		t.Errorf("%d refused logins wrote %d bytes of log", logins+1, len(out))
	}
	if !strings.Contains(out, fmt.Sprintf("(%d bytes)", size+1)) {
		t.Errorf("the log does not say how long the username was:\n%.2000s", out)
	}
}

// TestRefusedDevicesLoggedApart: devices behind one address (a depot's
// NAT) that prove who they are and are refused each have their refusal in
// the log, apart from the address's line for clients that proved nothing:
// keyed by address alone, one device's reconnections (refused as not ready
// or banned) held back every other refusal from there, a revoked device's
// too.
func TestRefusedDevicesLoggedApart(t *testing.T) {
	var log brokertest.SyncBuffer
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret, DevicesReady: func() bool { return false },
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	for _, id := range []string{"bus-a", "bus-b"} {
		if _, _, err := dial(t, b.url(), id, devicePassword(secret, id), nil); err == nil {
			t.Fatalf("%s got in before the server was ready", id)
		}
	}
	if _, _, err := dial(t, b.url(), "bus-c", "wrong", nil); err == nil {
		t.Fatal("a bad login was accepted")
	}
	waitFor(t, "the refusals counted", func() bool { return b.Stats().Refused == 3 })
	out := log.String()
	for _, id := range []string{"bus-a", "bus-b", "bus-c"} {
		if !strings.Contains(out, "username="+id+" ") {
			t.Errorf("%s's refusal is not in the log:\n%.3000s", id, out)
		}
	}
}

// TestConnectionsBeforeLogin: what a client that has not logged in can
// make the broker hold. A first packet announcing more than MaxConnectSize
// ends the connection at once (mochi would allocate it, then wait
// ConnectTimeout for the bytes). One address holds at most
// MaxPendingPerAddress connections not logged in; another address, and
// devices that log in from the same one, are not held back, and a
// connection that logs in gives its place back.
func TestConnectionsBeforeLogin(t *testing.T) {
	b := startBroker(t, Config{MaxPendingPerAddress: 4, ConnectTimeout: time.Minute})
	from := func(ip string) *net.Dialer {
		return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	}
	// closedAtOnce reports whether the broker ends c within a few seconds
	// (it does not answer a half-sent CONNECT otherwise before the minute).
	closedAtOnce := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	big, err := from("127.0.0.3").Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	big.Write([]byte{0x10, 0x80, 0xe0, 0x12}) // CONNECT of 300 KiB (under MaxPacketSize), and nothing of it
	if !closedAtOnce(big) {
		t.Errorf("a CONNECT announcing 300 KiB was not refused at once")
	}

	var idle []net.Conn
	for range 4 {
		c, err := from("127.0.0.2").Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte{0x10}) // the start of a CONNECT, then nothing
		idle = append(idle, c)
	}
	waitFor(t, "four connections counted", func() bool { return b.pending.count("127.0.0.2") == 4 })
	fifth, err := from("127.0.0.2").Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer fifth.Close()
	if !closedAtOnce(fifth) {
		t.Errorf("a fifth connection not logged in from one address was not refused at once")
	}
	// Another address is not held back, nor are devices logging in from
	// the one that holds four: each one's place comes back when it logs in.
	dialFrom := func(ip string) func(o *mqtt.ClientOptions) {
		return func(o *mqtt.ClientOptions) { o.SetDialer(from(ip)) }
	}
	mustDial(t, b.url(), "bus-9", devicePassword(b.cfg.Secret, "bus-9"), nil, dialFrom("127.0.0.4"))
	idle[0].Close()
	waitFor(t, "a place given back", func() bool { return b.pending.count("127.0.0.2") == 3 })
	for i := range 3 {
		id := fmt.Sprint("bus-", i)
		mustDial(t, b.url(), id, devicePassword(b.cfg.Secret, id), nil, dialFrom("127.0.0.2"))
	}
	if n := b.pending.count("127.0.0.2"); n != 3 {
		t.Errorf("%d connections of 127.0.0.2 counted as not logged in, want the 3 idle ones", n)
	}
}

// FuzzConnectCheck: whatever a client sends first, split however the
// reads split it, the check refuses exactly the CONNECTs whose fixed
// header announces more than MaxConnectSize.
func FuzzConnectCheck(f *testing.F) {
	f.Add([]byte{0x10, 0x80, 0xe0, 0x12}, uint8(1))
	f.Add([]byte{0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T'}, uint8(3))
	f.Add([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}, uint8(2))
	f.Add([]byte{0x10, 0x80, 0x80, 0x01}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		var h connectCheck
		var err error
		for rest := data; len(rest) > 0 && err == nil; {
			n := min(int(chunk)+1, len(rest))
			err = h.check(rest[:n])
			rest = rest[n:]
		}
		// The announced size, read the plain way.
		size, complete := 0, false
		for i := 1; i < len(data) && i <= 4; i++ {
			size |= int(data[i]&0x7f) << (7 * (i - 1))
			if data[i]&0x80 == 0 || i == 4 {
				complete = true
				break
			}
		}
		if want := complete && size > MaxConnectSize; (err != nil) != want {
			t.Fatalf("% x in reads of %d: err %v, announced %d (complete %v)", data, int(chunk)+1, err, size, complete)
		}
	})
}

// TestTakeoverSaid: two clients logging in as one device knock each other
// off; each sees only "connection lost". The broker counts each takeover
// and logs it once a minute per identity, with the count it did not log.
func TestTakeoverSaid(t *testing.T) {
	var log brokertest.SyncBuffer
	b := startBroker(t, Config{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	pass := devicePassword(b.cfg.Secret, "bus-twin")
	const logins = 4
	for range logins {
		mustDial(t, b.url(), "bus-twin", pass, nil)
	}
	waitFor(t, "the takeovers counted", func() bool { return b.Stats().TakenOver == logins-1 })
	waitFor(t, "the takeover in the log", func() bool { return strings.Contains(log.String(), "closed its earlier connection") })
	if n := strings.Count(log.String(), "closed its earlier connection"); n != 1 || !strings.Contains(log.String(), "identity=bus-twin") {
		t.Errorf("%d takeover lines (want 1, naming bus-twin):\n%s", n, log.String())
	}
	// A second device's login is not a takeover.
	mustDial(t, b.url(), "bus-other", devicePassword(b.cfg.Secret, "bus-other"), nil)
	if got := b.Stats().TakenOver; got != logins-1 {
		t.Errorf("takeovers %d after another device's login, want %d", got, logins-1)
	}
}
