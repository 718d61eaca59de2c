package brokertest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// mosquittoWait bounds how long StartMosquitto waits for the listeners. It
// is generous: tests run on loaded 2-core machines.
const mosquittoWait = 90 * time.Second

// MosquittoOptions describes the mosquitto that StartMosquitto starts.
type MosquittoOptions struct {
	// Listeners is the number of listeners the configuration declares;
	// StartMosquitto picks a free loopback port for each. Zero means 1.
	Listeners int

	// Users, if set, are written to Mosquitto.PasswordFile with
	// mosquitto_passwd, which must then be installed too: username →
	// password.
	Users map[string]string

	// Config returns the text of mosquitto's configuration for m: its
	// listeners on 127.0.0.1 at m.Ports, its password file, and any file
	// it writes to m.Dir. StartMosquitto puts the user and logging
	// settings in front of it. It is required.
	Config func(m *Mosquitto) string
}

// Mosquitto is a mosquitto process of a test's own, started by
// StartMosquitto.
type Mosquitto struct {
	Dir          string   // temporary directory of the configuration and other files
	Addrs        []string // host:port of each listener
	Ports        []string // the port of each listener, in the order of Addrs
	PasswordFile string   // the password file with Users ("" without Users)
	PID          int      // the mosquitto process: SIGHUP makes it read its password and ACL files again
}

// StartMosquitto starts a mosquitto configured by opts.Config, waits until
// every listener takes connections and kills it when the test ends (showing
// its log if the test failed).
//
// It skips the test under qemu-user emulation (FAREGO_QEMU set: qemu-user
// can deadlock forking a multithreaded emulated process), and when
// mosquitto (or mosquitto_passwd, with Users) is not installed, unless
// FAREGO_CI is set: then that fails the test.
func StartMosquitto(tb testing.TB, opts MosquittoOptions) *Mosquitto {
	tb.Helper()
	if opts.Config == nil {
		tb.Fatal("brokertest: StartMosquitto without MosquittoOptions.Config")
	}
	if os.Getenv("FAREGO_QEMU") != "" {
		tb.Skip("starts mosquitto; skipped under qemu-user emulation")
	}
	bin, err := exec.LookPath("mosquitto")
	if err == nil && opts.Users != nil {
		_, err = exec.LookPath("mosquitto_passwd")
	}
	if err != nil {
		missing(tb, fmt.Sprintf("mosquitto not installed: %v", err))
	}
	me, err := user.Current()
	if err != nil {
		tb.Fatal(err)
	}

	dir := tb.TempDir()
	for attempt := 1; ; attempt++ {
		m, taken := startMosquitto(tb, bin, me.Username, dir, opts)
		if !taken {
			return m
		}
		if attempt == portAttempts {
			tb.Fatalf("mosquitto: a port picked was taken by another process before mosquitto bound it, %d times", attempt)
		}
		tb.Logf("mosquitto: a port picked was taken before mosquitto bound it; picking again (attempt %d of %d)", attempt+1, portAttempts)
	}
}

// portAttempts bounds how often StartMosquitto picks new ports when one it
// picked was taken (by a client's ephemeral port, say) before mosquitto
// bound it.
const portAttempts = 5

// pickAddr is FreeAddr; a test replaces it to hand out a taken port.
var pickAddr = FreeAddr

// startMosquitto starts one mosquitto in dir on ports picked now. It
// reports taken, having killed nothing and waited for nothing, when
// mosquitto exited because one of them was in use.
func startMosquitto(tb testing.TB, bin, username, dir string, opts MosquittoOptions) (m *Mosquitto, taken bool) {
	tb.Helper()
	m = &Mosquitto{Dir: dir}
	for range max(opts.Listeners, 1) {
		addr := pickAddr(tb)
		_, port, _ := net.SplitHostPort(addr)
		m.Addrs, m.Ports = append(m.Addrs, addr), append(m.Ports, port)
	}
	if opts.Users != nil {
		m.PasswordFile = filepath.Join(m.Dir, "passwd")
		if err := os.WriteFile(m.PasswordFile, nil, 0o600); err != nil {
			tb.Fatal(err)
		}
		for u, pw := range opts.Users {
			if out, err := exec.Command("mosquitto_passwd", "-b", m.PasswordFile, u, pw).CombinedOutput(); err != nil {
				tb.Fatalf("mosquitto_passwd: %v: %s", err, out)
			}
		}
	}
	// user: when started as root, mosquitto would otherwise switch to the
	// mosquitto user, which cannot read the test's files.
	conf := fmt.Sprintf("user %s\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n", username) + opts.Config(m)
	confFile := filepath.Join(m.Dir, "mosquitto.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}

	var stderr SyncBuffer
	cmd := exec.Command(bin, "-c", confFile)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	m.PID = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	for _, addr := range m.Addrs {
		deadline := time.Now().Add(mosquittoWait)
		for {
			// Its own listening socket, not a connection: whoever took
			// the port would answer that.
			err := listening(m.PID, addr)
			if err == nil {
				break
			}
			select {
			case <-exited:
				if strings.Contains(stderr.String(), "Address already in use") {
					return nil, true
				}
				tb.Fatalf("mosquitto exited: %s", stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exited
				tb.Fatalf("mosquitto not listening on %s: %v\n%s", addr, err, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if tb.Failed() {
			tb.Logf("mosquitto log:\n%s", stderr.String())
		}
	})
	return m, false
}

// SyncBuffer is a bytes.Buffer a test reads while another goroutine
// writes it (mosquitto's output copier, a broker's or client's logger).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// listening tells whether process pid has a socket listening on addr, a
// 127.0.0.1 address, from /proc: the listening sockets of /proc/net/tcp
// on that port, one of which must be among the process's files.
func listening(pid int, addr string) error {
	_, port, _ := net.SplitHostPort(addr)
	p, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return err
	}
	want := fmt.Sprintf("0100007F:%04X", p)
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) >= 10 && f[1] == want && f[3] == "0A" {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return err
	}
	for _, fd := range fds {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && inodes[link] {
			return nil
		}
	}
	return fmt.Errorf("process %d does not listen on %s", pid, addr)
}
