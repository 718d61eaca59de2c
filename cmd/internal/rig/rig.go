// Package rig runs a whole farego system out of real processes on one
// machine: the settlement server (embedded broker, SQLite), validators
// reading pseudo-terminals through a cuttable network link, and riders made
// with the farego-rider tool. The demo, the end-to-end test and the chaos
// test are built on it. Everything listens on 127.0.0.1 ports the kernel
// picks, so it works where other services hold the usual ports.
package rig

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/cmd/internal/netcut"
	"github.com/farego/farego/queue"
)

// Binaries are the commands the rig runs.
var Binaries = []string{"farego-settlement", "farego-validator", "farego-rider", "farego-provision", "farego-sim"}

// TestHooksTag is the build tag of the binaries' fault injection (the
// validator's clock skew, SetClockSkew, among them): the tests build with
// it, the release (make build, make dist) without.
const TestHooksTag = "farego_testhooks"

// Build compiles the binaries into dir (go build, from the module at root)
// with the build tags given (TestHooksTag for the tests' fault injection;
// none, the release's build, without it).
func Build(ctx context.Context, root, dir string, tags ...string) error {
	for _, b := range Binaries {
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", strings.Join(tags, ","), "-o", filepath.Join(dir, b), "./cmd/"+b)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", b, err, out)
		}
	}
	return nil
}

// Rig is one system under test.
type Rig struct {
	Dir        string // everything the rig writes lives here
	Bin        string // directory holding the binaries
	Log        io.Writer
	HTTP       string // server's HTTP address once started
	MQTT       string // embedded broker's address
	Token      string // operator token
	server     *proc
	mu         sync.Mutex
	fleet      string
	mqttListen string

	// ExternalBroker runs the MQTT broker as its own process (farego-settlement
	// broker) so it can be restarted apart from the server.
	ExternalBroker bool
	// ServerEnv is added to the server's environment at its next start.
	ServerEnv []string
	// ServerData, if set, is the server's data directory (ledger and
	// keys) instead of DIR/server: the power-cut test puts it on a
	// power-cut disk.
	ServerData string
	// DB, if set, is the ledger DSN (postgres://…) of the server, its
	// instances and the tools, instead of SQLite in the data directory.
	DB string
	// LogLevel is the server's --log-level (default debug).
	LogLevel string
	// ServerArgs are added to the server's flags at its next start.
	ServerArgs []string
	broker     *proc
}

// New makes a rig in dir using the binaries in bin. Progress goes to log.
func New(dir, bin string, log io.Writer) *Rig {
	if log == nil {
		log = io.Discard
	}
	return &Rig{Dir: dir, Bin: bin, Log: log, mqttListen: "127.0.0.1:0"}
}

func (r *Rig) bin(name string) string { return filepath.Join(r.Bin, name) }

// command runs a tool to completion and returns its standard output.
func (r *Rig) command(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, r.bin(name), args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Init creates the fleet and the server's data directory with a fare table.
func (r *Rig) Init(ctx context.Context, faresJSON string) error {
	r.fleet = filepath.Join(r.Dir, "fleet")
	if _, err := r.command(ctx, "farego-provision", "init-fleet", "--dir", r.fleet); err != nil {
		return err
	}
	fares := filepath.Join(r.Dir, "fares.json")
	if err := os.WriteFile(fares, []byte(faresJSON), 0o644); err != nil {
		return err
	}
	if _, err := r.command(ctx, "farego-settlement", append([]string{"init", "--data", r.serverDir(), "--fleet-key",
		filepath.Join(r.fleet, "fleet.key"), "--fares", fares}, r.dbArgs()...)...); err != nil {
		return err
	}
	tok, err := os.ReadFile(filepath.Join(r.serverDir(), "keys", "operator.token"))
	if err != nil {
		return err
	}
	r.Token = strings.TrimSpace(string(tok))
	return nil
}

// dbArgs are the --db flag of the server and the tools, if DB is set.
func (r *Rig) dbArgs() []string {
	if r.DB == "" {
		return nil
	}
	return []string{"--db", r.DB}
}

// FleetPub is the fleet public key's file (PEM).
func (r *Rig) FleetPub() string { return filepath.Join(r.fleet, "fleet.pub") }

// DataDir is the server's data directory (keys, and the ledger unless DB
// is set).
func (r *Rig) DataDir() string { return r.serverDir() }

func (r *Rig) logLevel() string {
	if r.LogLevel == "" {
		return "debug"
	}
	return r.LogLevel
}

func (r *Rig) serverDir() string {
	if r.ServerData != "" {
		return r.ServerData
	}
	return filepath.Join(r.Dir, "server")
}

// proc is a farego-settlement process (server, broker or extra instance).
type proc struct {
	cmd  *exec.Cmd
	done chan error // yields the exit once
}

// startProc runs farego-settlement with args (and "--ready-file"), logging
// to DIR/name.log, and waits until the ready file holds its addresses.
func (r *Rig) startProc(ctx context.Context, name string, env []string, args ...string) (*proc, map[string]string, error) {
	ready := filepath.Join(r.Dir, name+".ready")
	os.Remove(ready)
	logf, err := os.OpenFile(filepath.Join(r.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(r.bin("farego-settlement"), append(args, "--ready-file", ready)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, err
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil {
			var addrs map[string]string
			if json.Unmarshal(b, &addrs) == nil {
				return p, addrs, nil
			}
		}
		select {
		case err := <-p.done:
			return nil, nil, fmt.Errorf("%s exited: %w (see %s)", name, err, filepath.Join(r.Dir, name+".log"))
		case <-ctx.Done():
			p.stop(syscall.SIGKILL)
			return nil, nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop(syscall.SIGKILL)
			return nil, nil, fmt.Errorf("%s did not become ready in 60 s", name)
		}
	}
}

// stop signals the process and waits for it (30 s, then SIGKILL).
func (p *proc) stop(sig syscall.Signal) error {
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return errors.New("did not stop in 30 s; killed")
	}
}

// StartServer runs farego-settlement and waits until it serves. After the
// first start the broker keeps its port, so validators reconnect to it.
// rigServerFlags are the settlement server's flags in the rig: its riders
// come from one address (127.0.0.1) many a minute, and its tests are about
// validators and settlement, with riders of little money among them; the
// credential minimum and the account rate limit are tested in server/api.
var rigServerFlags = []string{"--credential-minimum", "-1", "--accounts-per-minute", "-1"}

func (r *Rig) StartServer(ctx context.Context) error {
	http := "127.0.0.1:0"
	if r.HTTP != "" {
		http = r.HTTP
	}
	args := append(append([]string{"run", "--data", r.serverDir(), "--http", http, "--log-level", r.logLevel()}, rigServerFlags...), r.dbArgs()...)
	args = append(args, r.ServerArgs...)
	if r.ExternalBroker {
		args = append(args, "--broker", "tcp://"+r.MQTT)
	} else {
		args = append(args, "--mqtt", r.mqttListen)
	}
	p, a, err := r.startProc(ctx, "server", r.ServerEnv, args...)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.HTTP, r.server = a["http"], p
	if !r.ExternalBroker {
		r.MQTT, r.mqttListen = a["mqtt"], a["mqtt"]
	}
	return nil
}

// StartBroker runs the MQTT broker as its own process (ExternalBroker);
// after the first start it keeps its port.
func (r *Rig) StartBroker(ctx context.Context) error {
	p, a, err := r.startProc(ctx, "broker", nil, append([]string{"broker", "--data", r.serverDir(), "--mqtt", r.mqttListen}, r.dbArgs()...)...)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.MQTT, r.mqttListen, r.broker = a["mqtt"], a["mqtt"], p
	return nil
}

// StopBroker kills the broker process (SIGKILL: a crash).
func (r *Rig) StopBroker() {
	r.mu.Lock()
	p := r.broker
	r.broker = nil
	r.mu.Unlock()
	if p != nil {
		p.stop(syscall.SIGKILL)
	}
}

// WaitServerExit waits up to timeout for the server process to exit by
// itself (a crash on purpose) and forgets it.
func (r *Rig) WaitServerExit(timeout time.Duration) error {
	r.mu.Lock()
	p := r.server
	r.mu.Unlock()
	if p == nil {
		return errors.New("no server running")
	}
	select {
	case <-p.done:
		r.mu.Lock()
		r.server = nil
		r.mu.Unlock()
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("the server did not exit in %v", timeout)
	}
}

// StartInstance runs another settlement instance on the same data and the
// external broker (ExternalBroker), as a second server behind a shared
// subscription; stop it with the returned function.
func (r *Rig) StartInstance(ctx context.Context, name string) (stop func(), err error) {
	in, err := r.Instance(ctx, name)
	if err != nil {
		return nil, err
	}
	return func() { in.Stop(false) }, nil
}

// Instance is a settlement instance of the rig's own besides its server
// (StartInstance, Instance).
type Instance struct {
	Name string
	HTTP string // its HTTP API's address
	p    *proc
}

// Instance runs another settlement instance (logging to DIR/NAME.log) on
// the same data and ledger, with the external broker (ExternalBroker) at
// r.MQTT, and waits until it serves.
func (r *Rig) Instance(ctx context.Context, name string) (*Instance, error) {
	p, a, err := r.startProc(ctx, name, nil, append(append([]string{"run", "--data", r.serverDir(), "--http", "127.0.0.1:0",
		"--broker", "tcp://" + r.MQTT, "--log-level", r.logLevel()}, rigServerFlags...), r.dbArgs()...)...)
	if err != nil {
		return nil, err
	}
	return &Instance{Name: name, HTTP: a["http"], p: p}, nil
}

// Stop stops the instance: gracefully (SIGTERM) or, with kill, SIGKILL.
func (in *Instance) Stop(kill bool) error {
	if kill {
		in.p.stop(syscall.SIGKILL)
		return nil
	}
	return in.p.stop(syscall.SIGTERM)
}

// PeakRSS returns the instance's peak resident set in bytes.
func (in *Instance) PeakRSS() (int64, error) { return PeakRSS(in.p.cmd.Process.Pid) }

// StopServer stops the server: gracefully (SIGTERM) or, with kill, SIGKILL.
func (r *Rig) StopServer(kill bool) error {
	r.mu.Lock()
	p := r.server
	r.server = nil
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	if kill {
		p.stop(syscall.SIGKILL)
		return nil
	}
	return p.stop(syscall.SIGTERM)
}

// API calls the server's HTTP API with the operator token.
func (r *Rig) API(ctx context.Context, method, path string, body, out any) error {
	return cli.CallJSON(ctx, method, "http://"+r.HTTP+path, r.Token, body, out)
}

// MerchantToken creates an API token for a shop's scanner (role merchant,
// bound to merchant) with farego-settlement token create, and returns it.
func (r *Rig) MerchantToken(ctx context.Context, merchant string) (string, error) {
	out, err := r.command(ctx, "farego-settlement", append([]string{"token", "create", "--data", r.serverDir(), "--role", "merchant",
		"--merchant", merchant, "--name", merchant + " till"}, r.dbArgs()...)...)
	if err != nil {
		return "", err
	}
	lines := strings.Fields(out)
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "fgt_") {
		return "", fmt.Errorf("token create printed no token: %q", out)
	}
	return lines[len(lines)-1], nil
}

// Verify runs farego-settlement verify (the ledger's invariants).
func (r *Rig) Verify(ctx context.Context) (string, error) {
	return r.command(ctx, "farego-settlement", append([]string{"verify", "--data", r.serverDir()}, r.dbArgs()...)...)
}

// ServerPeakRSS returns the running server process's peak resident set
// (VmHWM) in bytes.
func (r *Rig) ServerPeakRSS() (int64, error) {
	r.mu.Lock()
	p := r.server
	r.mu.Unlock()
	if p == nil {
		return 0, errors.New("no server running")
	}
	return PeakRSS(p.cmd.Process.Pid)
}

// ServerCPU returns the CPU time (user and system) the running server
// process has used since it started.
func (r *Rig) ServerCPU() (time.Duration, error) {
	r.mu.Lock()
	p := r.server
	r.mu.Unlock()
	if p == nil {
		return 0, errors.New("no server running")
	}
	return ProcessCPU(p.cmd.Process.Pid)
}

// ProcessCPU returns the CPU time (user and system) a process has used,
// from /proc/PID/stat.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields 14 and 15
	// (utime, stime, in clock ticks) count from after its ')'.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// PeakRSS returns a process's peak resident set (VmHWM of
// /proc/PID/status) in bytes.
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// Close stops everything the rig started.
func (r *Rig) Close() {
	r.StopServer(false)
	r.StopBroker()
}

// Device is one validator with its pseudo-terminal scanner and its own link
// to the broker.
type Device struct {
	ID     string
	Dir    string
	rig    *Rig
	Link   *netcut.Proxy
	master *os.File
	cmd    *exec.Cmd
	exit   *exit
	Lines  chan string // the validator's feedback lines
	mu     sync.Mutex

	// Binary, when set, is the validator binary started (an installed
	// copy the updater replaces) instead of the rig's; Env is added to
	// its environment (FAREGO_BOOT_ID: a new kernel boot).
	Binary string
	Env    []string
}

// Exited is closed once the validator last started has exited (on its
// own: an update installed; or stopped); nil before a start.
func (d *Device) Exited() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.exit == nil {
		return nil
	}
	return d.exit.done
}

// Provision makes a device bundle with farego-provision and a cuttable link
// to the broker.
func (r *Rig) Provision(ctx context.Context, id, route string) (*Device, error) {
	link, err := netcut.Listen("127.0.0.1:0", r.MQTT)
	if err != nil {
		return nil, err
	}
	out := filepath.Join(r.Dir, "devices")
	if _, err := r.command(ctx, "farego-provision", "device", "--fleet", r.fleet, "--id", id, "--route", route,
		"--vehicle", "bus-"+id, "--server", "http://"+r.HTTP, "--operator-token", r.Token, "--out", out,
		"--broker", "tcp://"+link.Addr(), "--data-dir", "data", "--metrics", "", "--scanner", "front=scanner-front"); err != nil {
		link.Close()
		return nil, err
	}
	d := &Device{ID: id, Dir: filepath.Join(out, id), rig: r, Link: link}
	// Development settings: short passback so a demo's riders may ride again.
	cfg := filepath.Join(d.Dir, "validator.toml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return nil, err
	}
	b = []byte(strings.Replace(string(b), `level  = "info"`, `level  = "debug"`, 1))
	b = []byte(strings.Replace(string(b), "[feedback]\nconsole = true", "[feedback]\nconsole = true\ncolor = \"never\"", 1))
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		return nil, err
	}
	return d, nil
}

// SetPolicy replaces lines of the device config's [policy] section, e.g.
// SetPolicy("passback_window", `"-1s"`).
func (d *Device) SetPolicy(key, value string) error { return d.SetConfig(key, value) }

// AppendConfig adds TOML (a section the config does not have yet) to the
// end of the device config.
func (d *Device) AppendConfig(toml string) error {
	cfg := filepath.Join(d.Dir, "validator.toml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(cfg, append(b, "\n"+toml+"\n"...), 0o600)
}

// SetConfig replaces the line "key = …" of the device config (the first
// key of that name in any section), e.g. SetConfig("data_dir", `"/mnt/x"`).
func (d *Device) SetConfig(key, value string) error {
	cfg := filepath.Join(d.Dir, "validator.toml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	found := false
	for i, l := range lines {
		if f := strings.Fields(l); len(f) > 1 && f[0] == key && f[1] == "=" {
			lines[i], found = key+" = "+value, true
		}
	}
	if !found {
		return fmt.Errorf("%s has no %s", cfg, key)
	}
	return os.WriteFile(cfg, []byte(strings.Join(lines, "\n")), 0o600)
}

// exit is a validator process's end, for any number of waiters.
type exit struct {
	done chan struct{} // closed when the process has been reaped
	err  error
}

// Start runs the validator on a fresh pseudo-terminal and waits until it
// reads the scanner.
func (d *Device) Start(ctx context.Context) error { return d.start(ctx, -1) }

// StartKilled starts the validator like Start and SIGKILLs it after the
// given time, whether or not it is ready by then: a power cut while it
// boots. It returns nil if the validator became ready first; call Stop(true)
// afterwards either way.
func (d *Device) StartKilled(ctx context.Context, after time.Duration) error {
	return d.start(ctx, after)
}

func (d *Device) start(ctx context.Context, killAfter time.Duration) error {
	master, slave, err := pty.Open()
	if err != nil {
		return err
	}
	link := filepath.Join(d.Dir, "scanner-front")
	os.Remove(link)
	if err := os.Symlink(slave.Name(), link); err != nil {
		return err
	}
	slave.Close()
	logf, err := os.OpenFile(filepath.Join(d.Dir, "validator.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	bin := d.rig.bin("farego-validator")
	if d.Binary != "" {
		bin = d.Binary
	}
	cmd := exec.Command(bin, "run", "--config", filepath.Join(d.Dir, "validator.toml"))
	cmd.Env = append(append(os.Environ(), "FAREGO_TEST_CLOCK_SKEW_FILE="+d.skewFile()), d.Env...)
	// Its output through pipes of our own, not StdoutPipe and
	// StderrPipe: Wait closes those once the process exits, cutting off
	// what it wrote last and was not read yet (the feedback line of a tap
	// it answered just before a kill, a goroutine dump: dumpGoroutines).
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		return err
	}
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		stdout.Close()
		stdoutW.Close()
		return err
	}
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	err = cmd.Start()
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		stdout.Close()
		stderr.Close()
		return err
	}
	lines, connected, logged := make(chan string, 10000), make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		defer close(logged)
		defer stderr.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if strings.Contains(sc.Text(), "scanner connected") {
				once.Do(func() { close(connected) })
			}
		}
	}()
	go func() {
		defer stdout.Close()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	ex := &exit{done: make(chan struct{})}
	go func() {
		ex.err = cmd.Wait()
		select { // what it wrote last (a child of its own may hold the pipe)
		case <-logged:
		case <-time.After(5 * time.Second):
		}
		logf.Close()
		close(ex.done)
	}()
	if killAfter >= 0 {
		time.AfterFunc(killAfter, func() { cmd.Process.Kill() })
	}
	d.mu.Lock()
	d.master, d.cmd, d.exit, d.Lines = master, cmd, ex, lines
	d.mu.Unlock()
	select {
	case <-connected:
		return nil
	case <-ex.done:
		return fmt.Errorf("validator %s exited: %w (see %s)", d.ID, ex.err, filepath.Join(d.Dir, "validator.log"))
	case <-time.After(60 * time.Second):
		return fmt.Errorf("validator %s did not open its scanner in 60 s", d.ID)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Scan writes a code to the scanner's pty, as a QR scanner does, and
// returns the validator's feedback line.
func (d *Device) Scan(ctx context.Context, text string) (string, error) {
	d.mu.Lock()
	m, lines := d.master, d.Lines
	d.mu.Unlock()
	if _, err := m.Write([]byte(text + "\r\n")); err != nil {
		return "", err
	}
	select {
	case l, ok := <-lines:
		if !ok {
			return "", fmt.Errorf("validator %s exited", d.ID)
		}
		return l, nil
	case <-time.After(60 * time.Second):
		d.dumpGoroutines()
		return "", fmt.Errorf("validator %s gave no feedback in 60 s (its goroutines are at the end of %s)",
			d.ID, filepath.Join(d.Dir, "validator.log"))
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// dumpGoroutines makes a running validator write every goroutine's stack
// to its log and exit (SIGQUIT), for a test that found it stuck.
func (d *Device) dumpGoroutines() {
	d.mu.Lock()
	cmd, ex := d.cmd, d.exit
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-ex.done:
	case <-time.After(10 * time.Second):
	}
}

// Write sends raw text to the scanner without waiting for feedback.
func (d *Device) Write(text string) error {
	d.mu.Lock()
	m := d.master
	d.mu.Unlock()
	_, err := m.Write([]byte(text + "\r\n"))
	return err
}

// Stop stops the validator: gracefully (SIGTERM) or, with kill, SIGKILL.
func (d *Device) Stop(kill bool) error {
	d.mu.Lock()
	cmd, ex, m := d.cmd, d.exit, d.master
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	cmd.Process.Signal(sig)
	select {
	case <-ex.done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-ex.done
	}
	err := ex.err
	m.Close()
	if kill {
		return nil
	}
	return err
}

// Close stops the validator and its link.
func (d *Device) Close() {
	d.Stop(false)
	d.Link.Close()
}

// QueueFile is the validator's bbolt file.
func (d *Device) QueueFile() string { return filepath.Join(d.Dir, "data", "validator.db") }

func (d *Device) skewFile() string { return filepath.Join(d.Dir, "clock-skew") }

// SetClockSkew makes the validator's clock run skew ahead of (negative:
// behind) the system clock from the next second on, as a jump of its
// system clock would (fault injection through the validator's test clock
// file, FAREGO_TEST_CLOCK_SKEW_FILE: only a validator built with
// TestHooksTag reads it); 0 sets it right again.
func (d *Device) SetClockSkew(skew time.Duration) error {
	return os.WriteFile(d.skewFile(), []byte(skew.String()), 0o644)
}

// DamageQueue zeroes one leaf page of bucket in the stopped validator's
// queue file, as a flash fault would (queue.ArchiveBucket loses only acked
// taps; queue.PendingBucket loses unsent ones). It reports false if the
// bucket has no page of its own to damage.
func (d *Device) DamageQueue(bucket string) (bool, error) {
	ids, pageSize, err := queue.LeafPages(d.QueueFile(), bucket)
	if err != nil || len(ids) == 0 {
		return false, err
	}
	f, err := os.OpenFile(d.QueueFile(), os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, pageSize), int64(ids[len(ids)/2])*int64(pageSize)); err != nil {
		return false, err
	}
	return true, f.Sync()
}

// Rider is a rider app stand-in with its own state file.
type Rider struct {
	Name  string
	state string
	rig   *Rig
	ID    uint64
}

// NewRider registers a rider, tops the account up by topUp (minor units)
// and fetches a credential.
func (r *Rig) NewRider(ctx context.Context, name, profile string, topUp int64) (*Rider, error) {
	rd := &Rider{Name: name, state: filepath.Join(r.Dir, "riders", name+".json"), rig: r}
	os.MkdirAll(filepath.Dir(rd.state), 0o700)
	args := []string{"register", "--state", rd.state, "--server", "http://" + r.HTTP, "--profile", profile, "--name", name}
	if profile != "adult" {
		// The operator checked the rider's eligibility: a reduced
		// profile the rider asks for alone waits for that.
		args = append(args, "--operator-token", r.Token)
	}
	out, err := r.command(ctx, "farego-rider", args...)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Sscanf(out, "registered account %d", &rd.ID); err != nil {
		return nil, fmt.Errorf("farego-rider register said %q", out)
	}
	if topUp > 0 {
		if _, err := r.command(ctx, "farego-rider", "topup", "--state", rd.state, "--amount", fmt.Sprint(topUp), "--operator-token", r.Token); err != nil {
			return nil, err
		}
	}
	if _, err := r.command(ctx, "farego-rider", "credential", "--state", rd.state); err != nil {
		return nil, err
	}
	return rd, nil
}

// Code returns the rider's next payment code (offline), optionally also as a
// QR PNG.
func (rd *Rider) Code(ctx context.Context, png string) (string, error) {
	return rd.CodeAt(ctx, time.Time{}, png)
}

// CodeAt is Code with a code time other than now (zero: now).
func (rd *Rider) CodeAt(ctx context.Context, at time.Time, png string) (string, error) {
	args := []string{"code", "--state", rd.state}
	if png != "" {
		args = append(args, "--png", png)
	}
	if !at.IsZero() {
		args = append(args, "--now", fmt.Sprint(at.Unix()))
	}
	out, err := rd.rig.command(ctx, "farego-rider", args...)
	return strings.TrimSpace(strings.SplitN(out, "\n", 2)[0]), err
}

// Account is an account as the operator API shows it.
type Account struct {
	ID       uint64 `json:"id"`
	Balance  int64  `json:"balance"`
	Currency string `json:"currency"`
	Denied   bool   `json:"denied"`
	Rides    []struct {
		TapID  string `json:"tap_id"`
		Time   string `json:"time"`
		Route  string `json:"route"`
		Charge int64  `json:"charge"`
		Flag   string `json:"flag"`
	} `json:"recent_rides"`
}

// Account reads an account through the operator API.
func (r *Rig) Account(ctx context.Context, id uint64) (Account, error) {
	var a Account
	err := r.API(ctx, "GET", fmt.Sprintf("/v1/accounts/%d", id), nil, &a)
	return a, err
}

// WaitFor polls cond every 100 ms until it returns true or ctx/timeout ends.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// APIRider is a rider made straight through the HTTP API, whose codes are
// made in-process: for tests that need thousands of codes quickly.
type APIRider struct {
	ID      uint64
	cred    []byte
	key     ed25519.PrivateKey
	mu      sync.Mutex
	counter uint16
}

// NewAPIRider registers an account, tops it up and fetches a credential.
func (r *Rig) NewAPIRider(ctx context.Context, profile string, topUp int64) (*APIRider, error) {
	var acct struct {
		Account struct {
			ID uint64 `json:"id"`
		} `json:"account"`
		Secret string `json:"secret"`
	}
	tok := "" // a reduced profile is confirmed by the operator's token (see NewRider)
	if profile != "adult" {
		tok = r.Token
	}
	if err := cli.CallJSON(ctx, "POST", "http://"+r.HTTP+"/v1/accounts", tok, map[string]string{"profile": profile}, &acct); err != nil {
		return nil, err
	}
	id := acct.Account.ID
	if topUp > 0 {
		if err := r.API(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/topups", id), map[string]any{"amount": topUp, "reference": fmt.Sprintf("rig-%d", id)}, nil); err != nil {
			return nil, err
		}
	}
	var c struct {
		Credential string `json:"credential"`
		TokenSeed  string `json:"token_seed"`
	}
	if err := cli.CallJSON(ctx, "POST", fmt.Sprintf("http://%s/v1/accounts/%d/credentials", r.HTTP, id), acct.Secret, map[string]string{}, &c); err != nil {
		return nil, err
	}
	cred, err := hex.DecodeString(c.Credential)
	if err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(c.TokenSeed)
	if err != nil {
		return nil, err
	}
	k, err := paycode.RiderKey(seed)
	if err != nil {
		return nil, err
	}
	return &APIRider{ID: id, cred: cred, key: k}, nil
}

// Code makes the rider's next code at t.
func (a *APIRider) Code(t time.Time) string {
	a.mu.Lock()
	a.counter++
	n := a.counter
	a.mu.Unlock()
	b, err := paycode.MakeCode(a.cred, a.key, t, n)
	if err != nil {
		panic(err) // only with a broken credential, which NewAPIRider does not return
	}
	return paycode.EncodeText(b)
}

// Ride is a ride as the operator API shows it.
type Ride struct {
	TapID    string `json:"tap_id"`
	Charge   int64  `json:"charge"`
	Flag     string `json:"flag"`
	CodeHash string `json:"code_hash"`
}

// Rides returns an account's rides (up to 10,000).
func (r *Rig) Rides(ctx context.Context, id uint64) ([]Ride, error) {
	var out struct {
		Rides []Ride `json:"rides"`
	}
	err := r.API(ctx, "GET", fmt.Sprintf("/v1/accounts/%d/rides?limit=10000", id), nil, &out)
	return out.Rides, err
}

// DeviceStatus is a validator's last status as the server recorded it.
type DeviceStatus struct {
	ID            string `json:"id"`
	Online        bool   `json:"online"`
	StatusAt      string `json:"status_at"`
	QueueDepth    int    `json:"queue_depth"`
	LastSeq       uint64 `json:"last_seq"`
	ClockOffsetMS int64  `json:"clock_offset_ms"`
	Drifting      bool   `json:"drifting"`
	OutOfService  string `json:"out_of_service"`
}

// Devices lists the validators' last status.
func (r *Rig) Devices(ctx context.Context) ([]DeviceStatus, error) {
	var out struct {
		Devices []DeviceStatus `json:"devices"`
	}
	err := r.API(ctx, "GET", "/v1/devices", nil, &out)
	return out.Devices, err
}
