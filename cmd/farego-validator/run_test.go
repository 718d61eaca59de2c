package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/wire"
)

// validatorBin is the farego-validator binary built once for the
// end-to-end tests, which run it as a real process reading a real
// pseudo-terminal and writing a real bbolt file.
var validatorBin string

func TestMain(m *testing.M) {
	powercut.Main() // serves a power-cut disk when started as one; returns otherwise
	dir, err := os.MkdirTemp("", "farego-validator-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	validatorBin = filepath.Join(dir, "farego-validator")
	if out, err := exec.Command("go", "build", "-o", validatorBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building farego-validator: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const fareJSON = `{"version": 1, "currency": "EUR",
  "fares": {"*": {"adult": 250, "child": 120, "senior": 120, "student": 180}}}`

// device is one validator process with its pty scanner and data directory.
type device struct {
	t       *testing.T
	dir     string
	cfgPath string
	issuer  *paycodetest.Issuer
	master  *os.File // the scanner's end of the pty
	cmd     *exec.Cmd
	lines   chan string          // feedback lines from stdout
	logs    chan string          // log lines from stderr
	env     []string             // added to the validator's environment
	bin     string               // the binary run (default validatorBin)
	attr    *syscall.SysProcAttr // the validator's credentials (nil: the test's)
	mu      sync.Mutex
	logText strings.Builder
}

// newDevice writes a config (extra TOML appended to [policy]) and a
// provisioning bundle, and opens the pty the scanner path points to.
func newDevice(t *testing.T, policy string, extra string) *device {
	t.Helper()
	d := &device{t: t, dir: t.TempDir(), issuer: paycodetest.NewIssuer(t, 7, time.Now())}
	kr, _ := d.issuer.Keyring.MarshalJSON()
	must(t, os.WriteFile(filepath.Join(d.dir, "keyring.json"), kr, 0o644))
	must(t, os.WriteFile(filepath.Join(d.dir, "fares.json"), []byte(fareJSON), 0o644))
	deny, _ := json.Marshal(record.DenyList{Version: 1, Entries: []record.DenyEntry{{Account: 666, Reason: "negative_balance"}}})
	must(t, os.WriteFile(filepath.Join(d.dir, "denylist.json"), deny, 0o644))
	d.newPTY()
	cfg := fmt.Sprintf(`device_id = "bus-7-front"
route = "42"
vehicle = "bus-7"
data_dir = "data"

[log]
level = "debug"

[policy]
%s

[provision]
keyring = "keyring.json"
fares = "fares.json"
denylist = "denylist.json"

[[scanner]]
name = "front"
path = "scanner-front"

[feedback]
color = "never"
%s
`, policy, extra)
	d.cfgPath = filepath.Join(d.dir, "validator.toml")
	must(t, os.WriteFile(d.cfgPath, []byte(cfg), 0o644))
	t.Cleanup(func() {
		d.kill()
		if d.master != nil {
			d.master.Close()
		}
		if t.Failed() {
			t.Logf("validator log:\n%s", d.logged())
		}
	})
	return d
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// newPTY opens a pseudo-terminal and points the scanner's path at it, as a
// udev symlink points at a USB scanner.
func (d *device) newPTY() {
	master, slave, err := pty.Open()
	must(d.t, err)
	link := filepath.Join(d.dir, "scanner-front")
	os.Remove(link)
	must(d.t, os.Symlink(slave.Name(), link))
	slave.Close()
	d.master = master
}

// start runs the validator and waits until it reads the scanner.
func (d *device) start() {
	d.t.Helper()
	d.startUntil("scanner connected")
}

// startUntil runs the validator and waits until it logs substr.
func (d *device) startUntil(substr string) {
	d.t.Helper()
	bin := validatorBin
	if d.bin != "" {
		bin = d.bin
	}
	d.cmd = exec.Command(bin, "run", "--config", d.cfgPath)
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.SysProcAttr = d.attr
	stdout, err := d.cmd.StdoutPipe()
	must(d.t, err)
	stderr, err := d.cmd.StderrPipe()
	must(d.t, err)
	must(d.t, d.cmd.Start())
	d.lines, d.logs = make(chan string, 1000), make(chan string, 10000)
	go pump(stdout, d.lines, nil)
	go pump(stderr, d.logs, func(s string) { d.mu.Lock(); d.logText.WriteString(s + "\n"); d.mu.Unlock() })
	d.waitLog(substr)
}

func pump(r io.Reader, ch chan string, also func(string)) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if also != nil {
			also(sc.Text())
		}
		select {
		case ch <- sc.Text():
		default:
		}
	}
	close(ch)
}

// logged is the validator's log so far (read while it runs).
func (d *device) logged() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logText.String()
}

func (d *device) waitLog(substr string) string {
	d.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-d.logs:
			if !ok {
				d.t.Fatalf("validator exited while waiting for %q", substr)
			}
			if strings.Contains(l, substr) {
				return l
			}
		case <-timeout:
			d.t.Fatalf("no %q in the validator log", substr)
		}
	}
}

// scan writes one frame as the scanner does and returns the feedback line.
func (d *device) scan(text string) string {
	d.t.Helper()
	_, err := d.master.Write([]byte(text + "\r\n"))
	must(d.t, err)
	select {
	case l, ok := <-d.lines:
		if !ok {
			d.t.Fatal("validator exited")
		}
		return l
	case <-time.After(60 * time.Second):
		d.dumpStacks()
		d.t.Fatalf("no feedback for a scan (the validator's goroutines are at the end of its log)")
	}
	return ""
}

// dumpStacks makes the validator print its goroutines' stacks into its log
// (SIGQUIT; it exits) and waits a moment for them, so that the log shown
// when the test fails says where a scan without feedback waits.
func (d *device) dumpStacks() {
	if d.cmd == nil || d.cmd.Process == nil || d.cmd.Process.Signal(syscall.SIGQUIT) != nil {
		return
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-d.logs:
			if !ok {
				return
			}
		case <-timeout:
			return
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *device) stop() {
	d.t.Helper()
	must(d.t, d.cmd.Process.Signal(syscall.SIGTERM))
	if err := d.cmd.Wait(); err != nil {
		d.t.Fatalf("validator exit after SIGTERM: %v", err)
	}
	d.cmd = nil
}

func (d *device) kill() {
	if d.cmd != nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
		d.cmd = nil
	}
}

// records opens the validator's queue file (the validator must be stopped)
// and returns its taps, after a consistency check.
func (d *device) records() []*record.Tap {
	d.t.Helper()
	q, err := queue.Open(filepath.Join(d.dir, "data", queueFile), nil)
	must(d.t, err)
	defer q.Close()
	must(d.t, q.Check())
	recs, err := q.Peek(100000, 1<<30)
	must(d.t, err)
	var out []*record.Tap
	var prev [32]byte
	for i, r := range recs {
		tp, err := record.ParseTap(r.Data)
		must(d.t, err)
		if i > 0 && tp.PrevHash != prev { // the first goes on from an earlier file's chain, if any
			d.t.Errorf("record %d: hash chain broken", i)
		}
		prev = record.Hash(r.Data)
		out = append(out, tp)
	}
	return out
}

// metrics scrapes the validator's /metrics (its config must listen).
func (d *device) metrics() string {
	d.t.Helper()
	logs := d.logged()
	const key = `msg="metrics listening" addr=`
	i := strings.LastIndex(logs, key) // this run's
	if i < 0 {
		d.t.Fatal("the validator serves no metrics")
	}
	addr, _, _ := strings.Cut(logs[i+len(key):], "\n")
	resp, err := http.Get("http://" + addr + "/metrics")
	must(d.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(d.t, err)
	return string(b)
}

func expectLine(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("feedback %q, want it to contain %q", got, want)
	}
}

// expectRemembered checks the feedback to a code the validator accepted
// before: no charge — green "Already paid" within the re-read window,
// refused as used after it (which one depends on how long the restart
// took).
func expectRemembered(t *testing.T, got string) {
	t.Helper()
	if !strings.Contains(got, "ACCEPTED  0.00 EUR  Already paid") && !strings.Contains(got, "(code_used)") {
		t.Errorf("feedback %q, want the code remembered (Already paid, or code_used)", got)
	}
}

func TestRunEndToEnd(t *testing.T) {
	// A passback window far longer than the scans take, even on a busy
	// machine: the third scan must fall within it.
	d := newDevice(t, `passback_window = "1m"`, "")
	d.start()
	now := time.Now()
	is := d.issuer
	rider := is.Rider(t, 1001, now)
	first := rider.Code(t, now)
	window := func(acct uint64, nb, na time.Duration) *paycodetest.Rider {
		return is.RiderWith(t, paycode.Credential{Account: acct, Serial: 1,
			NotBefore: uint32(now.Add(nb).Unix()), NotAfter: uint32(now.Add(na).Unix())})
	}
	tampered := func() string {
		c, _ := paycode.ParseText(is.Rider(t, 1007, now).Code(t, now))
		b := c.Bytes()
		b[150] ^= 1
		return paycode.EncodeText(b)
	}()
	otherKey := paycodetest.NewIssuer(t, 9, now).Rider(t, 1008, now)
	forged := paycodetest.NewIssuer(t, 7, now).Rider(t, 1009, now)

	for _, tc := range []struct {
		name, text, want string
	}{
		{"valid code", first, "ACCEPTED  2.50 EUR"},
		{"same code again", first, "Already paid"},
		{"new code within passback", rider.Code(t, time.Now()), "(passback)"},
		{"malformed", "HELLO WORLD", "(malformed)"},
		{"another format version", "FG2:" + first[4:], "(unsupported_version)"},
		{"unknown issuer key", otherKey.Code(t, now), "(unknown_issuer_key)"},
		{"forged credential", forged.Code(t, now), "(bad_credential_signature)"},
		{"credential not yet valid", window(1002, time.Hour, 2*time.Hour).Code(t, now), "(credential_not_yet_valid)"},
		{"credential expired", window(1003, -2*time.Hour, -time.Hour).Code(t, now), "(credential_expired)"},
		{"bad code signature", tampered, "(bad_code_signature)"},
		{"code from the future", is.Rider(t, 1004, now).Code(t, now.Add(2*time.Minute)), "(code_from_future)"},
		{"expired code", is.Rider(t, 1005, now).Code(t, now.Add(-5*time.Minute)), "(code_expired)"},
		{"denied account", is.Rider(t, 666, now).Code(t, now), "(denied)"},
		{"another rider", is.Rider(t, 1006, now).Code(t, time.Now()), "ACCEPTED  2.50 EUR"},
	} {
		expectLine(t, d.scan(tc.text), tc.want)
	}
	// The log names reasons and accounts, never the code itself.
	d.stop()
	if log := d.logged(); strings.Contains(log, first[4:60]) || !strings.Contains(log, "reason=passback") {
		t.Errorf("log leaks a code or lacks reasons")
	}
	// Each key once per line ("scanner connected" used to carry scanner twice).
	connected := false
	for _, line := range strings.Split(d.logged(), "\n") {
		connected = connected || strings.Contains(line, `msg="scanner connected"`)
		if k := repeatedKey(line); k != "" {
			t.Errorf("log line repeats %q: %s", k, line)
		}
	}
	if !connected {
		t.Error("no scanner connected line in the log")
	}
	recs := d.records()
	if len(recs) != 2 || recs[0].Account != 1001 || recs[1].Account != 1006 || paycode.EncodeText(recs[0].Code) != first {
		t.Fatalf("records = %d, want the two accepted taps", len(recs))
	}

	// A restart remembers the code: not charged again.
	d.start()
	expectRemembered(t, d.scan(first))
	d.stop()
	if n := len(d.records()); n != 2 {
		t.Errorf("%d records after restart, want 2", n)
	}
}

func TestRunRiskCapAndQueueFull(t *testing.T) {
	d := newDevice(t, "passback_window = \"-1s\"\nrisk_cap = 2", "")
	cfg, _ := os.ReadFile(d.cfgPath)
	must(t, os.WriteFile(d.cfgPath, append(cfg, []byte("\n[queue]\nmax_records = 3\n")...), 0o644))
	d.start()
	now := time.Now()
	r := d.issuer.Rider(t, 2001, now)
	expectLine(t, d.scan(r.Code(t, now)), "ACCEPTED")
	expectLine(t, d.scan(r.Code(t, now)), "ACCEPTED")
	expectLine(t, d.scan(r.Code(t, now)), "(risk_cap)")
	expectLine(t, d.scan(d.issuer.Rider(t, 2002, now).Code(t, now)), "ACCEPTED")
	expectLine(t, d.scan(d.issuer.Rider(t, 2003, now).Code(t, now)), "OUT OF SERVICE")
	d.stop()
	if n := len(d.records()); n != 3 {
		t.Errorf("%d records, want 3", n)
	}
}

// TestRunClockUnset: with the clock before min_clock the validator never
// starts a queue file (its taps would be numbered from a wrong clock): it
// stays out of service, says why, and starts one only once the clock is
// set. An existing file is used as it is, out of service too.
func TestRunClockUnset(t *testing.T) {
	d := newDevice(t, `min_clock = 2099-01-01T00:00:00Z`, "\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[ctl]\nsocket = \"ctl.sock\"")
	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 3001, time.Now()).Code(t, time.Now())), "OUT OF SERVICE  Out of service: clock")
	if m := d.metrics(); !strings.Contains(m, "\nfarego_out_of_service 1\n") {
		t.Errorf("metrics while waiting for the clock:\n%s", m)
	}
	// The technician asks it why (it had no control socket until the
	// clock was set: hours, on a validator without a network).
	if st := d.mustCtl("status"); st.InService || !strings.HasPrefix(st.OutOfService, "clock: clock unset") || st.Device == "" {
		t.Errorf("ctl status while waiting for the clock: %+v", st)
	}
	if _, stderr, err := d.ctl("route", "43"); err == nil || !strings.Contains(stderr, "not running yet") {
		t.Errorf("ctl route while waiting for the clock: %v, %q", err, stderr)
	}
	d.stop()
	if !strings.Contains(d.logged(), "clock unset: not starting a new queue file") {
		t.Error("the log does not say why the validator is out of service")
	}
	file := filepath.Join(d.dir, "data", queueFile)
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("a queue file was started on an unset clock (stat: %v)", err)
	}

	// With the clock set the file starts, numbered from the clock.
	cfg, _ := os.ReadFile(d.cfgPath)
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(cfg), "min_clock = 2099-01-01T00:00:00Z", "", 1)), 0o644))
	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 3002, time.Now()).Code(t, time.Now())), "ACCEPTED")
	d.stop()
	recs := d.records()
	if len(recs) != 1 || recs[0].Seq < uint64(time.Now().Add(-time.Hour).UnixMilli()) {
		t.Fatalf("records %+v, want one numbered from the clock", recs)
	}
	epoch := recs[0].Epoch

	// An existing file opens on an unset clock; taps are refused.
	must(t, os.WriteFile(d.cfgPath, cfg, 0o644))
	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 3003, time.Now()).Code(t, time.Now())), "OUT OF SERVICE  Out of service: clock")
	d.stop()
	if recs := d.records(); len(recs) != 1 || recs[0].Epoch != epoch {
		t.Errorf("records after a start on an unset clock: %+v", recs)
	}
}

// TestRunClockFromServerDate: a validator whose clock is three hours off
// the server's (here the server's Date is three hours ahead) and that has
// no ack yet learns it from the Date of the server's HTTP answer
// ([selftest] time_url) and is out of service ("Out of service: clock")
// instead of refusing every rider's fresh code as expired: it took no tap,
// got no ack, and never learned why.
func TestRunClockFromServerDate(t *testing.T) {
	d := newDevice(t, "", "\n[selftest]\ntime_url = \""+dateServer(t, 3*time.Hour)+"/healthz\"\n")
	// A clock NTP does not keep (a bus just powered): the Date is believed.
	d.bin, d.env = testHooksBin(t), []string{"FAREGO_TEST_KERNEL_CLOCK_SYNCED=0"}
	d.start()
	var line string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		line = d.scan(d.issuer.Rider(t, 4100, time.Now()).Code(t, time.Now()))
		if strings.Contains(line, "OUT OF SERVICE") || time.Now().After(deadline) {
			break
		}
	}
	d.stop()
	if !strings.Contains(line, "Out of service: clock") {
		t.Errorf("a fresh code on a clock 3 h off the server's: %q; want out of service (clock)", line)
	}
	if n := len(d.records()); n != 0 {
		t.Errorf("%d taps recorded; want none", n)
	}
	if !strings.Contains(d.logged(), "clock too far from the server's") {
		t.Error("the log does not say the clock is off")
	}
}

// dateServer serves a time_url whose Date is ahead of the real clock by
// ahead, and returns its URL.
func dateServer(t *testing.T, ahead time.Duration) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(ahead).UTC().Format(http.TimeFormat))
		fmt.Fprintln(w, `{"ok":true}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestRunForgedDateNotBelieved: a Date over plain HTTP 3 h from a clock
// NTP keeps is anyone's forgery on the path (a device attack review: it put
// a right validator out of service, and with no tap to send it never got an
// ack to learn better): logged, not believed; riders are served.
func TestRunForgedDateNotBelieved(t *testing.T) {
	d := newDevice(t, "", "\n[selftest]\ntime_url = \""+dateServer(t, 3*time.Hour)+"/healthz\"\n")
	d.bin, d.env = testHooksBin(t), []string{"FAREGO_TEST_KERNEL_CLOCK_SYNCED=1"}
	d.start()
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(d.logged(), "not believed"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			d.stop()
			t.Fatalf("no word of the forged Date in the log:\n%s", d.logged())
		}
	}
	line := d.scan(d.issuer.Rider(t, 4101, time.Now()).Code(t, time.Now()))
	d.stop()
	if !strings.Contains(line, "ACCEPTED") {
		t.Errorf("a fresh code after a forged Date: %q; want accepted", line)
	}
}

// TestRunNTPStateUnreadable: where adjtimex is filtered (the shipped unit's
// ProtectClock= and @system-service allow-list both took it away) the
// validator cannot tell a clock NTP keeps, and believes every Date over
// plain HTTP: it says so at start, naming the unit's fix, instead of
// dropping the forged-Date defence in silence (field review).
func TestRunNTPStateUnreadable(t *testing.T) {
	d := newDevice(t, "", "\n[selftest]\ntime_url = \""+dateServer(t, 0)+"/healthz\"\n")
	d.bin, d.env = testHooksBin(t), []string{"FAREGO_TEST_KERNEL_CLOCK_SYNCED=denied"}
	d.start()
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(d.logged(), "cannot read whether NTP keeps this clock"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			d.stop()
			t.Fatalf("no word in the log that the clock's NTP state cannot be read:\n%s", d.logged())
		}
	}
	line := d.scan(d.issuer.Rider(t, 4102, time.Now()).Code(t, time.Now()))
	d.stop()
	if !strings.Contains(line, "ACCEPTED") {
		t.Errorf("a fresh code: %q; want accepted", line)
	}
	if !strings.Contains(d.logged(), "SystemCallFilter=adjtimex") {
		t.Error("the warning does not name the unit's fix")
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range map[string]string{
		"unknown key":         "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\ncolour = 1\n[[scanner]]\nname = \"a\"\npath = \"-\"\n",
		"no scanner":          "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n",
		"bad device id":       "device_id = \"a/b\"\nroute = \"1\"\ndata_dir = \"x\"\n",
		"not provisioned":     "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n",
		"missing keyring":     "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[provision]\nkeyring = \"nope.json\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n",
		"bad duration":        "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[policy]\nmax_age = \"soon\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n",
		"mqtt without key":    "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[mqtt]\nbroker = \"tcp://127.0.0.1:1\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n",
		"missing device key":  "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[mqtt]\nbroker = \"tcp://127.0.0.1:1\"\ndevice_key = \"nope.key\"\nfleet_public_key = \"nope.pub\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n",
		"bad metrics address": "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[metrics]\nlisten = \"127.0.0.1:99999\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n",
	} {
		// Each its own data directory: a configuration error makes none
		// (nor a queue file, with its new epoch); only "not provisioned"
		// is told once the queue file is open.
		data := "data-" + strings.ReplaceAll(name, " ", "-")
		cfg = strings.Replace(cfg, `data_dir = "x"`, `data_dir = "`+data+`"`, 1)
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".toml")
		must(t, os.WriteFile(p, []byte(cfg), 0o644))
		out, err := exec.Command(validatorBin, "run", "--config", p).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%s: exit %v, want status 2; output:\n%s", name, err, out)
		}
		if _, err := os.Stat(filepath.Join(dir, data)); name != "not provisioned" && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: the data directory was made (%v)", name, err)
		}
	}
}

// SIGKILL at random moments while taps stream in: every tap the validator
// reported accepted is in the queue, exactly once, the chain is intact and
// the file is consistent.
func TestRunKillDuringTaps(t *testing.T) {
	d := newDevice(t, `passback_window = "-1s"`, "")
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	next := uint64(10000)
	accepted := map[uint64]bool{}
	acceptedLines := 0
	for round := range rounds {
		d.start()
		now := time.Now()
		codes := make([]string, 60)
		for i := range codes {
			codes[i] = d.issuer.Rider(t, next, now).Code(t, now)
			next++
		}
		killAfter := time.Duration(rand.IntN(150)) * time.Millisecond
		go func(m *os.File) {
			for _, c := range codes {
				if _, err := m.Write([]byte(c + "\r\n")); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}(d.master)
		time.Sleep(killAfter)
		d.cmd.Process.Signal(syscall.SIGKILL)
		d.cmd.Wait()
		d.cmd = nil
		for l := range d.lines {
			if strings.Contains(l, "ACCEPTED") {
				acceptedLines++
			}
		}
		for l := range d.logs {
			if strings.Contains(l, "tap accepted") {
				var acct uint64
				if i := strings.Index(l, "account="); i >= 0 {
					fmt.Sscanf(l[i:], "account=%d", &acct)
				}
				accepted[acct] = true
			}
		}
		t.Logf("round %d: killed after %v", round, killAfter)
		// The next round needs a fresh pty: the killed process left the old one in a state of its choosing.
		d.master.Close()
		d.newPTY()
	}
	recs := d.records()
	inQueue := map[uint64]int{}
	for _, r := range recs {
		inQueue[r.Account]++
	}
	for acct := range accepted {
		if inQueue[acct] != 1 {
			t.Errorf("account %d was accepted but is in the queue %d times", acct, inQueue[acct])
		}
	}
	for acct, n := range inQueue {
		if n != 1 {
			t.Errorf("account %d is in the queue %d times", acct, n)
		}
	}
	if acceptedLines > len(recs) {
		t.Errorf("%d accepted feedback lines but only %d records", acceptedLines, len(recs))
	}
	t.Logf("%d rounds: %d accepted lines, %d logged accepted, %d records", rounds, acceptedLines, len(accepted), len(recs))
}

// repeatedKey returns a key that occurs twice in a text-format log line
// (key=value pairs, values possibly quoted), or "".
func repeatedKey(line string) string {
	seen := map[string]bool{}
	for i := 0; i < len(line); {
		j := strings.IndexByte(line[i:], '=')
		if j < 0 {
			break
		}
		key := line[i : i+j]
		if seen[key] {
			return key
		}
		seen[key] = true
		i += j + 1
		if i < len(line) && line[i] == '"' { // a quoted value: skip to its closing quote
			for i++; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' {
					i++
				}
			}
			i++
		} else {
			for i < len(line) && line[i] != ' ' {
				i++
			}
		}
		for i < len(line) && line[i] == ' ' {
			i++
		}
	}
	return ""
}

// damageQueue zeroes one page of the stopped validator's queue file that
// holds unsent records, as a flash fault would.
func (d *device) damageQueue() {
	d.t.Helper()
	file := filepath.Join(d.dir, "data", queueFile)
	ids, pageSize, err := queue.LeafPages(file, queue.PendingBucket)
	if err != nil || len(ids) < 3 {
		d.t.Fatalf("LeafPages = %v, %v", ids, err)
	}
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	must(d.t, err)
	defer f.Close()
	_, err = f.WriteAt(make([]byte, pageSize), int64(ids[1])*int64(pageSize))
	must(d.t, err)
}

// TestRunSalvageIgnoresADamagedKey: one flipped bit in the top byte of a
// stored sequence number (bit rot on an SD card) made the salvaged file's
// highest number 2^63 and more, the new file numbered every later tap
// above it, and the server could store none of them: every green tap
// after the salvage stayed on the device, never charged. The number is
// not believed: the new file numbers from the wall clock.
func TestRunSalvageIgnoresADamagedKey(t *testing.T) {
	d := newDevice(t, `passback_window = "-1s"`+"\nrisk_cap = -1", "")
	d.start()
	for i := range 40 {
		expectLine(t, d.scan(d.issuer.Rider(t, uint64(5000+i), time.Now()).Code(t, time.Now())), "ACCEPTED")
	}
	d.stop()
	// The top byte of the last key of a leaf page of unsent taps.
	file := filepath.Join(d.dir, "data", queueFile)
	ids, pageSize, err := queue.LeafPages(file, queue.PendingBucket)
	if err != nil || len(ids) < 2 {
		t.Fatalf("LeafPages = %v, %v", ids, err)
	}
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	must(t, err)
	page := make([]byte, pageSize)
	_, err = f.ReadAt(page, int64(ids[0])*int64(pageSize))
	must(t, err)
	count := int(binary.LittleEndian.Uint16(page[10:12]))
	elem := 16 + (count-1)*16 // bbolt leaf element: flags, pos, ksize, vsize
	pos := int(binary.LittleEndian.Uint32(page[elem+4 : elem+8]))
	page[elem+pos] = 0xc0
	_, err = f.WriteAt(page, int64(ids[0])*int64(pageSize))
	must(t, err)
	must(t, f.Close())

	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 5999, time.Now()).Code(t, time.Now())), "ACCEPTED")
	d.stop()
	recs := d.records()
	last := recs[len(recs)-1]
	if now := uint64(time.Now().UnixMilli()); last.Account != 5999 || last.Seq > now+1<<20 || last.Seq < now-1<<30 {
		t.Errorf("the tap after the salvage is numbered %d (account %d); want near the wall clock in ms, %d", last.Seq, last.Account, now)
	}
	if !strings.Contains(d.logged(), "implausible") {
		t.Error("the log does not say the damaged number was not believed")
	}
}

// TestRunSalvagesDamagedQueue: the queue file holding unsent taps is
// damaged while the validator is off. At the next start it is moved aside
// and what can be read is salvaged: the new file adopts its taps (to be
// sent under their own epoch) and the device state, so a code accepted
// before the damage still counts as paid; the operator is told (log,
// metrics, and the status over MQTT).
func TestRunSalvagesDamagedQueue(t *testing.T) {
	d := newDevice(t, `passback_window = "-1s"`+"\nrisk_cap = -1", "\n[metrics]\nlisten = \"127.0.0.1:0\"")
	d.start()
	var codes []string
	for i := range 60 {
		code := d.issuer.Rider(t, uint64(4000+i), time.Now()).Code(t, time.Now())
		expectLine(t, d.scan(code), "ACCEPTED")
		codes = append(codes, code)
	}
	d.stop()
	before := d.records()
	d.damageQueue()

	d.start()
	for _, i := range []int{0, 30, 59} {
		expectRemembered(t, d.scan(codes[i]))
	}
	expectLine(t, d.scan(d.issuer.Rider(t, 4999, time.Now()).Code(t, time.Now())), "ACCEPTED")
	m := d.metrics()
	d.stop()
	log := d.logged()
	if !strings.Contains(log, "queue: corrupt file moved aside") || !strings.Contains(log, "damaged queue file salvaged") {
		t.Errorf("the log does not tell the operator about the damaged file and the salvage")
	}
	q, err := queue.Open(filepath.Join(d.dir, "data", queueFile), nil)
	must(t, err)
	st, _ := q.Stats()
	rep := lastSalvage(q)
	adopted, _ := q.PeekAdopted(before[0].Epoch, 0, 0, 0)
	q.Close()
	if rep == nil || rep.Epoch != before[0].Epoch || rep.LostPages != 1 || rep.Records != len(adopted) || !rep.State {
		t.Fatalf("salvage report %+v, want epoch %s, one page lost, %d records, state restored", rep, before[0].Epoch, len(adopted))
	}
	if err := (&wire.Status{DeviceID: "bus-1", Epoch: q.Epoch(), Salvage: rep}).Check(); err != nil {
		t.Errorf("the server would refuse the status with this salvage report and epoch: %v", err)
	}
	if st.Adopted < 40 || st.Adopted >= 60 || st.Count != 1 {
		t.Errorf("queue: %d adopted and %d own records, want 40-59 and 1", st.Adopted, st.Count)
	}
	for _, r := range adopted {
		tp, err := record.ParseTap(r.Data)
		if err != nil || tp.Epoch != before[0].Epoch || tp.Seq != r.Seq {
			t.Fatalf("adopted record %d: %+v, %v", r.Seq, tp, err)
		}
	}
	if !strings.Contains(m, fmt.Sprintf("farego_queue_salvaged_records %d\n", rep.Records)) ||
		!strings.Contains(m, "farego_queue_salvage_lost_pages 1\n") || !strings.Contains(m, fmt.Sprintf("farego_queue_depth %d\n", rep.Records+1)) {
		t.Errorf("metrics do not show the salvage:\n%s", m)
	}
	moved, _ := filepath.Glob(filepath.Join(d.dir, "data", queueFile+".corrupt-*"+salvagedSuffix))
	if len(moved) != 1 {
		t.Errorf("damaged file not marked salvaged: %v", moved)
	}
	if recs := d.records(); len(recs) != 1 || recs[0].Seq <= before[len(before)-1].Seq {
		t.Errorf("new file records %+v, want one numbered above the damaged file's", recs)
	}
}

// TestRunUnreadableQueueNeedsReset: nothing can be read from the damaged
// file. The validator stays out of service (queue_damaged) until the
// operator gives it up with reset-queue, then takes taps again without a
// restart.
func TestRunUnreadableQueueNeedsReset(t *testing.T) {
	d := newDevice(t, "", "")
	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 4100, time.Now()).Code(t, time.Now())), "ACCEPTED")
	d.stop()
	file := filepath.Join(d.dir, "data", queueFile)
	// Every page destroyed (both meta pages alone are read around, page
	// by page).
	info, err := os.Stat(file)
	must(t, err)
	must(t, os.WriteFile(file, bytes.Repeat([]byte("garbage!"), int(info.Size()/8)), 0o600))

	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 4101, time.Now()).Code(t, time.Now())), "OUT OF SERVICE")
	if code, out, _ := runCmd(t, "", "reset-queue", "--config", d.cfgPath); code != exitUsage || !strings.Contains(out, "would be renamed") {
		t.Errorf("reset-queue without --i-understand: exit %d, %q", code, out)
	}
	expectLine(t, d.scan(d.issuer.Rider(t, 4102, time.Now()).Code(t, time.Now())), "OUT OF SERVICE")
	if code, out, errOut := runCmd(t, "", "reset-queue", "--config", d.cfgPath, "--i-understand"); code != exitOK {
		t.Fatalf("reset-queue: exit %d, %q, %q", code, out, errOut)
	}
	d.waitLog("damaged queue files reset by the operator")
	expectLine(t, d.scan(d.issuer.Rider(t, 4103, time.Now()).Code(t, time.Now())), "ACCEPTED")
	d.stop()
	if reset, _ := filepath.Glob(file + ".corrupt-*" + resetSuffix); len(reset) != 1 {
		t.Errorf("damaged file not kept as .reset: %v", reset)
	}
	if code, out, _ := runCmd(t, "", "reset-queue", "--config", d.cfgPath); code != exitOK || !strings.Contains(out, "nothing to reset") {
		t.Errorf("reset-queue with nothing to do: exit %d, %q", code, out)
	}
}

// TestRunCutFrameAcrossRestart: the scanner sent half a scan while the
// validator was down (the tty kept it); after the restart the next scan
// is read alone, not glued to the stale half as one garbled frame.
func TestRunCutFrameAcrossRestart(t *testing.T) {
	d := newDevice(t, "", "")
	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 4200, time.Now()).Code(t, time.Now())), "ACCEPTED")
	d.kill()
	// The tty outlives the validator (a USB-CDC scanner's does while it
	// stays plugged in): hold it open as the kernel does for the device.
	hold, err := os.OpenFile(filepath.Join(d.dir, "scanner-front"), os.O_RDWR|syscall.O_NOCTTY, 0)
	must(t, err)
	defer hold.Close()
	half := d.issuer.Rider(t, 4201, time.Now()).Code(t, time.Now())
	_, err = d.master.Write([]byte(half[:150]))
	must(t, err)
	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 4202, time.Now()).Code(t, time.Now())), "ACCEPTED")
}

// TestVersionSummary: the start line lists the documents' versions and
// sums up the deny list's shards (256 of them made a 7.6 KB line).
func TestVersionSummary(t *testing.T) {
	v := map[string]uint64{record.DocKeyring: 2, record.DocFares: 5, record.DocDenyList: 9}
	for n := range 256 {
		v[record.DenyShardKey(n)] = uint64(3 + n%4)
	}
	got := fmt.Sprint(versionSummary(v))
	if want := "map[denylist:9 denylist_shards:256, versions 3 to 6 fares:5 keyring:2]"; got != want {
		t.Errorf("versionSummary = %s, want %s", got, want)
	}
	if got := fmt.Sprint(versionSummary(map[string]uint64{record.DocKeyring: 1})); got != "map[keyring:1]" {
		t.Errorf("without shards: %s", got)
	}
}

// TestRunConfigErrorSaidPlainly: a file the configuration names that cannot
// be read stops the validator with exit 2 and one plain line naming the
// setting and the file, also when the log is JSON (it was only a JSON
// record, "validator stopped", a technician's outside check found).
func TestRunConfigErrorSaidPlainly(t *testing.T) {
	d := newDevice(t, "", `
[mqtt]
broker = "tcp://127.0.0.1:1"
device_key = "missing.key"
fleet_public_key = "fleet.pub"
`)
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(cfg), "level = \"debug\"", "level = \"debug\"\nformat = \"json\"", 1)), 0o644))
	code, _, stderr := runCmd(t, "", "run", "--config", d.cfgPath)
	missing := filepath.Join(d.dir, "missing.key")
	if code != exitUsage || !strings.Contains(stderr, "farego-validator run: config: mqtt.device_key: ") || !strings.Contains(stderr, missing) ||
		strings.Contains(stderr, `"validator stopped"`) {
		t.Errorf("exit %d, stderr:\n%s\nwant exit %d and a plain line naming mqtt.device_key and %s", code, stderr, exitUsage, missing)
	}
}

// TestRunTwiceSaidPlainly: the same configuration started twice (a
// technician's second start) names the likely cause in a plain line: the
// metrics address in use asks whether the validator is already running;
// a queue file held by another process says so (it came after a 10 s wait
// as a JSON log record, exit 1).
func TestRunTwiceSaidPlainly(t *testing.T) {
	// The same configuration started again beside the running validator,
	// with the metrics address that one holds: its control socket says so
	// (the metrics address in use alone is another program's, see
	// TestRunMetricsAddressOfAnotherProgram).
	d := newDevice(t, "", "\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[ctl]\nsocket = \"ctl.sock\"\n")
	d.start()
	logs := d.logged()
	const key = `msg="metrics listening" addr=`
	addr, _, _ := strings.Cut(logs[strings.LastIndex(logs, key)+len(key):], "\n")
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(cfg), `"127.0.0.1:0"`, strconv.Quote(addr), 1)), 0o644))
	code, _, stderr := runCmd(t, "", "run", "--config", d.cfgPath)
	if code != exitUsage || !strings.Contains(stderr, "is in use by a running validator") {
		t.Errorf("started twice: exit %d, stderr:\n%s\nwant exit %d saying a validator runs on its control socket", code, stderr, exitUsage)
	}
	d.stop()

	d = newDevice(t, "", "")
	must(t, os.MkdirAll(filepath.Join(d.dir, "data"), 0o700))
	q, err := queue.Open(filepath.Join(d.dir, "data", "validator.db"), nil)
	must(t, err)
	defer q.Close()
	code, _, stderr = runCmd(t, "", "run", "--config", d.cfgPath)
	if code != exitUsage || !strings.Contains(stderr, "farego-validator run: queue: the file is in use by another process") ||
		strings.Contains(stderr, "validator stopped") {
		t.Errorf("queue file locked: exit %d, stderr:\n%s\nwant exit %d and a plain line saying the file is in use", code, stderr, exitUsage)
	}
}

// TestRunSecondStartMakesNothing: a validator whose control socket another
// validator answers on is refused before it makes its data directory (it
// made the directory first). (The metrics address in use with no
// validator on this socket is another program's, and no longer stops it:
// TestRunMetricsAddressOfAnotherProgram, whose log names the status
// command of this configuration's socket.)
func TestRunSecondStartMakesNothing(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl") // short: a socket path has at most 107 bytes
	must(t, err)
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "ctl.sock")
	live, err := net.Listen("unix", sock)
	must(t, err)
	defer live.Close()
	d := newDevice(t, "", fmt.Sprintf("[ctl]\nsocket = %q\n", sock))
	code, _, stderr := runCmd(t, "", "run", "--config", d.cfgPath)
	if code != exitUsage || !strings.Contains(stderr, "ctl.socket: "+sock+" is in use by a running validator") {
		t.Errorf("control socket in use: exit %d, stderr:\n%s\nwant exit %d saying the socket is in use", code, stderr, exitUsage)
	}
	if _, err := os.Stat(filepath.Join(d.dir, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused for its control socket, the validator made its data directory (stat: %v)", err)
	}
}

// TestRunMetricsAddressOfAnotherProgram: the metrics address held by
// another program (node_exporter listens on :9100, the bundle's default
// port, on every interface) does not keep the validator from taking taps:
// it ran into "address already in use" and exit 2 at every start, so a bus
// with node_exporter installed took no taps at all. It runs without
// /metrics, says why (naming this configuration's status command), and
// serves them once the address is free.
func TestRunMetricsAddressOfAnotherProgram(t *testing.T) {
	exporter, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer exporter.Close()
	dir, err := os.MkdirTemp("", "ctl") // short: a socket path has at most 107 bytes
	must(t, err)
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "ctl.sock")
	d := newDevice(t, "", fmt.Sprintf("\n[metrics]\nlisten = %q\n\n[ctl]\nsocket = %q\n", exporter.Addr().String(), sock))
	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 3001, time.Now()).Code(t, time.Now())), "ACCEPTED")
	logs := d.logged()
	for _, want := range []string{"metrics.listen: the address is in use by another program", "node_exporter", "farego-validator ctl --socket " + sock + " status"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q:\n%s", want, logs)
		}
	}
	exporter.Close()
	d.waitLog("metrics listening")
	if m := d.metrics(); !strings.Contains(m, `farego_taps_total{outcome="accepted",reason=""} 1`) {
		t.Errorf("metrics once the address was free:\n%s\nwant the accepted tap counted", m)
	}
	d.stop()
	if n := len(d.records()); n != 1 {
		t.Errorf("%d records, want the 1 tap", n)
	}
}

// TestRunStopsWhileTheQueueIsLocked: a validator told to stop while
// another process holds its queue file (a technician's second start, or
// the last process not yet gone) stops at once, cleanly; it went on
// waiting out the queue's 10 s lock timeout and then failed with "in use
// by another process" (systemd's stop waited, and said it failed).
func TestRunStopsWhileTheQueueIsLocked(t *testing.T) {
	d := newDevice(t, "", "")
	must(t, os.MkdirAll(filepath.Join(d.dir, "data"), 0o700))
	q, err := queue.Open(filepath.Join(d.dir, "data", "validator.db"), nil)
	must(t, err)
	defer q.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"run", "--config", d.cfgPath}, strings.NewReader(""), &out, &errb) }()
	time.Sleep(500 * time.Millisecond) // into the lock's wait (stopping before it ends the same way)
	cancel()
	select {
	case code := <-done:
		if code != 0 || strings.Contains(errb.String(), "in use by another process") ||
			!strings.Contains(errb.String(), "validator stopped before its queue file was open") {
			t.Errorf("stopped while the queue file was locked: exit %d, stderr:\n%s\nwant exit 0, stopped before the queue was open", code, errb.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the validator did not stop")
	}
}

// TestResetQueueBeforeRun: reset-queue acts on damaged files the
// validator moved aside; on a garbage queue file never started on it says
// where the file is checked (it said only "nothing to reset"), and changes
// nothing.
func TestResetQueueBeforeRun(t *testing.T) {
	d := newDevice(t, "", "")
	file := filepath.Join(d.dir, "data", "validator.db")
	must(t, os.MkdirAll(filepath.Dir(file), 0o700))
	must(t, os.WriteFile(file, []byte("not a bbolt file"), 0o600))
	code, out, _ := runCmd(t, "", "reset-queue", "--config", d.cfgPath, "--i-understand")
	if code != exitOK || !strings.Contains(out, "no damaged queue file moved aside") || !strings.Contains(out, "checks "+file+" at every start") {
		t.Errorf("reset-queue on a queue file never checked: exit %d, %q", code, out)
	}
	if b, _ := os.ReadFile(file); string(b) != "not a bbolt file" {
		t.Error("reset-queue changed the queue file")
	}
}

// TestOpenWhenSpace: a disk full at start (the queue file cannot be made)
// leaves the validator running and out of service, waiting for space,
// instead of exiting: under systemd it started again every 2 s, logged two
// lines each time and showed the riders no light at all (field review, a
// 600 KiB file system filled up). Once space is freed it opens the file.
func TestOpenWhenSpace(t *testing.T) {
	defer func(r time.Duration, s func(string, *syscall.Statfs_t) error) { spaceRetry, statfs = r, s }(spaceRetry, statfs)
	spaceRetry = 10 * time.Millisecond
	var free atomic.Int64
	statfs = func(path string, st *syscall.Statfs_t) error {
		err := syscall.Statfs(path, st)
		st.Bavail, st.Bsize = uint64(free.Load()/4096), 4096
		return err
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var waiting atomic.Bool
	waits, tries := 0, 0
	want := &queueFiles{}
	qf, err := openWhenSpace(context.Background(), log, t.TempDir(), &waiting, func() { waits++ }, func(context.Context) (*queueFiles, error) {
		tries++
		if tries == 1 {
			go func() { time.Sleep(100 * time.Millisecond); free.Store(64 << 20) }() // a technician frees space
		}
		if free.Load() == 0 {
			return nil, fmt.Errorf("queue: open validator.db: %w", &os.PathError{Op: "write", Path: "validator.db", Err: syscall.ENOSPC})
		}
		if !waiting.Load() {
			t.Error("not marked out of service while waiting for space")
		}
		return want, nil
	})
	if err != nil || qf != want {
		t.Fatalf("openWhenSpace: %v, %v; want the queue once space was freed", qf, err)
	}
	if waits != 1 || tries != 2 || waiting.Load() {
		t.Errorf("waits %d, tries %d, waiting %v; want one wait, a try when space was freed, and no longer waiting", waits, tries, waiting.Load())
	}
	if strings.Count(logs.String(), "no space left to open the queue file") != 1 || !strings.Contains(logs.String(), "space freed") {
		t.Errorf("log:\n%s", logs.String())
	}

	// Another error is not waited on; a context done ends the wait.
	if _, err := openWhenSpace(context.Background(), log, t.TempDir(), &waiting, func() {}, func(context.Context) (*queueFiles, error) {
		return nil, errors.New("queue: locked")
	}); err == nil || tries != 2 {
		t.Errorf("another error: %v", err)
	}
	free.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := openWhenSpace(ctx, log, t.TempDir(), &waiting, func() {}, func(context.Context) (*queueFiles, error) {
		return nil, &os.PathError{Op: "write", Path: "validator.db", Err: syscall.ENOSPC}
	}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting with the context done: %v", err)
	}
}

// TestOpenWhenSpaceMissingDir: a data_dir that could not be made (the disk
// full at its first start: a second door's /var/lib/farego/rear) is waited
// on like a queue file that could not be: the space is measured on the
// directory it goes in. It exited as a "config" error, and systemd started
// it again every 2 s with no light.
func TestOpenWhenSpaceMissingDir(t *testing.T) {
	defer func(r time.Duration, s func(string, *syscall.Statfs_t) error) { spaceRetry, statfs = r, s }(spaceRetry, statfs)
	spaceRetry = 10 * time.Millisecond
	var free atomic.Int64
	statfs = func(path string, st *syscall.Statfs_t) error {
		err := syscall.Statfs(path, st)
		st.Bavail, st.Bsize = uint64(free.Load()/4096), 4096
		return err
	}
	dir := filepath.Join(t.TempDir(), "farego", "rear")
	var waiting atomic.Bool
	tries := 0
	want := &queueFiles{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qf, err := openWhenSpace(ctx, slog.New(slog.DiscardHandler), dir, &waiting, func() {}, func(context.Context) (*queueFiles, error) {
		tries++
		if tries == 1 {
			go func() { time.Sleep(100 * time.Millisecond); free.Store(64 << 20) }()
			return nil, &os.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOSPC}
		}
		return want, nil
	})
	if err != nil || qf != want || tries != 2 {
		t.Fatalf("openWhenSpace on a missing data_dir: %v, %v after %d tries; want the queue once space was freed", qf, err, tries)
	}
}
