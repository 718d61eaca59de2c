package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tarm/serial"
	"golang.org/x/sys/unix"

	"github.com/farego/farego/driver/backoff"
)

// Serial reader defaults, used for zero fields of [Config].
const (
	// DefaultBaud is the default line speed. Most scanners ship at 9600;
	// 115200 is common once configured.
	DefaultBaud = 9600
	// DefaultReadTimeout bounds each read of the port: how quickly the
	// reader notices cancellation, partial-frame timeouts and a vanished
	// device path.
	DefaultReadTimeout = 100 * time.Millisecond
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between two
	// attempts to reopen a lost device (doubling, with jitter).
	DefaultMinBackoff = 200 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// maxReadTimeout is the longest read timeout a termios VTIME can express.
const maxReadTimeout = 25500 * time.Millisecond

// fastEOFLimit is how many zero-length reads in a row, each returning in less
// than half the read timeout, mean the device has hung up (an unplugged USB
// scanner or a closed pty returns end-of-file at once, forever).
const fastEOFLimit = 3

// readBufSize is the size of the read buffer: several frames' worth.
const readBufSize = 2048

// bauds are the line speeds github.com/tarm/serial supports on Linux.
// SupportedBaud reports whether a serial scanner can be set to baud (0
// is DefaultBaud).
func SupportedBaud(baud int) bool { return baud == 0 || bauds[baud] }

var bauds = map[int]bool{
	50: true, 75: true, 110: true, 134: true, 150: true, 200: true, 300: true,
	600: true, 1200: true, 1800: true, 2400: true, 4800: true, 9600: true,
	19200: true, 38400: true, 57600: true, 115200: true, 230400: true,
	460800: true, 500000: true, 576000: true, 921600: true, 1000000: true,
	1152000: true, 1500000: true, 2000000: true, 2500000: true, 3000000: true,
	3500000: true, 4000000: true,
}

// State is a serial reader's connection state, reported to Config.OnState.
type State int

const (
	// Disconnected: the device is absent, unplugged or failing; the reader
	// is retrying.
	Disconnected State = iota
	// Connected: the port is open, in raw mode, and reading.
	Connected
)

// String returns "disconnected" or "connected".
func (s State) String() string {
	if s == Connected {
		return "connected"
	}
	return "disconnected"
}

// Config configures one serial scanner. Zero fields mean the documented
// defaults; Name and Path are required.
type Config struct {
	// Name identifies the scanner ("front", "rear"): it tags every frame and
	// log line.
	Name string
	// Path is the device, for example /dev/ttyACM0 or, better, a stable
	// udev symlink such as /dev/scanner-front. It need not exist yet.
	Path string
	// Baud is the line speed (default [DefaultBaud]); USB-CDC scanners
	// ignore it. The port is always 8N1 without flow control.
	Baud int
	// Framing says how to cut the byte stream into frames.
	Framing Framing
	// ReadTimeout bounds each read (default [DefaultReadTimeout]). The
	// kernel counts it in tenths of a second: it is rounded down to a
	// multiple of 100 ms, with 100 ms at least and 25.5 s at most.
	ReadTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered, doubling wait between
	// reconnection attempts (defaults [DefaultMinBackoff],
	// [DefaultMaxBackoff]). The wait starts again from MinBackoff once a
	// connection works.
	MinBackoff, MaxBackoff time.Duration
	// OnState, if not nil, is called from the reader's goroutine when the
	// connection comes up (the port is open and a first read succeeded) and
	// when it goes down. It must not block. The agent can use it to show
	// "out of service" while the scanner is away; tests use it to know when
	// to write.
	OnState func(State)
	// Heartbeat, if not nil, is called from the reader's goroutine after
	// every read (at least every ReadTimeout while the port is open) and
	// every reconnection attempt (at least every MaxBackoff while the
	// device is away): a reader that stops calling it is stuck (the
	// systemd watchdog uses it). It must not block.
	Heartbeat func()
}

// Serial reads frames from one scanner on a serial port. Make it with
// [NewSerial] and run it with [Serial.Run].
type Serial struct {
	cfg         Config
	readTimeout time.Duration // effective, as the kernel applies it
	log         *slog.Logger
	framer      *Framer
	running     atomic.Bool
	// problem is why the scanner is not read now ("" while it is, and
	// before the first attempt): Problem.
	problem atomic.Pointer[string]

	// openPort opens the device; tests replace it to inject faults.
	openPort func(*serial.Config) (io.ReadCloser, error)
}

// NewSerial checks cfg and returns a reader for it. It does not open the
// device. log may be nil.
func NewSerial(cfg Config, log *slog.Logger) (*Serial, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("%w: scanner without a name", ErrInvalidConfig)
	}
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: scanner %s: no device path", ErrInvalidConfig, cfg.Name)
	}
	if cfg.Baud == 0 {
		cfg.Baud = DefaultBaud
	}
	if !bauds[cfg.Baud] {
		return nil, fmt.Errorf("%w: scanner %s: unsupported baud rate %d", ErrInvalidConfig, cfg.Name, cfg.Baud)
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.ReadTimeout < 0 || cfg.ReadTimeout > maxReadTimeout {
		return nil, fmt.Errorf("%w: scanner %s: read timeout %v outside 100ms..25.5s", ErrInvalidConfig, cfg.Name, cfg.ReadTimeout)
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.MinBackoff < 0 || cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("%w: scanner %s: backoff %v..%v", ErrInvalidConfig, cfg.Name, cfg.MinBackoff, cfg.MaxBackoff)
	}
	log = orDiscard(log)
	dl := &discardLogger{log: log, name: cfg.Name}
	framer, err := NewFramer(cfg.Name, cfg.Framing, dl.logDiscard)
	if err != nil {
		return nil, fmt.Errorf("scanner %s: %w", cfg.Name, err)
	}
	dl.framer, dl.framing, dl.baud = framer, cfg.Framing, cfg.Baud
	// What the kernel will do with VTIME (see tarm/serial's posixTimeoutValues).
	rt := max(cfg.ReadTimeout.Truncate(100*time.Millisecond), 100*time.Millisecond)
	return &Serial{cfg: cfg, readTimeout: rt, log: log, framer: framer, openPort: openSerial}, nil
}

// openSerial opens a real port, once it holds the device's lock.
func openSerial(c *serial.Config) (io.ReadCloser, error) {
	lock, err := lockDevice(c.Name)
	if err != nil {
		return nil, err
	}
	p, err := serial.OpenPort(c)
	if err != nil {
		unix.Close(lock)
		return nil, err
	}
	return &lockedPort{Port: p, lock: lock}, nil
}

// lockDevice takes an exclusive flock on the device path names (through
// any symlink: the lock is the device node's) and returns the descriptor
// that holds it. A tty read by two readers gives each a part of every
// scan (both refuse them as garbled), and each opening flushes the other's
// input: a second validator given the same scanner, or a second
// [[scanner]] of one config with the same path, would break the door for
// both. The second reader gets ErrInUse instead, without touching the tty,
// and retries until the first lets go.
func lockDevice(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := lockHolder(fd)
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			if holder != "" {
				return -1, &os.PathError{Op: "open", Path: path, Err: &inUseError{holder: holder}}
			}
			return -1, &os.PathError{Op: "open", Path: path, Err: ErrInUse}
		}
		return -1, &os.PathError{Op: "lock", Path: path, Err: err}
	}
	return fd, nil
}

// procLocks is the kernel's table of file locks (a test names another).
var procLocks = "/proc/locks"

// lockHolder names the process holding a flock on fd's file, from
// /proc/locks ("pid 812 (minicom)"; "pid 812" when its name cannot be
// read, "" when no lock of the file is found): the technician learns what
// holds the scanner, not only that something does. At most 64 KiB of the
// table is read.
func lockHolder(fd int) string {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return ""
	}
	f, err := os.Open(procLocks)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	for _, line := range strings.Split(string(b), "\n") {
		// "3: FLOCK  ADVISORY  WRITE 5725 00:19:5 0 EOF"
		fs := strings.Fields(line)
		if len(fs) < 6 || fs[1] != "FLOCK" || fs[5] != id {
			continue
		}
		pid, err := strconv.Atoi(fs[4])
		if err != nil || pid <= 0 {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if name := commName(comm); err == nil && name != "" {
			return fmt.Sprintf("pid %d (%s)", pid, name)
		}
		return fmt.Sprintf("pid %d", pid)
	}
	return ""
}

// commName is a process name from /proc/PID/comm for a log line: any
// user names their process, so only letters, digits and ._-+: are kept,
// at most 32 of them.
func commName(b []byte) string {
	var out []byte
	for _, c := range b {
		if len(out) == 32 {
			break
		}
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-+:", c) >= 0 {
			out = append(out, c)
		}
	}
	return string(out)
}

// lockedPort is an open port and the descriptor holding its device's lock.
type lockedPort struct {
	*serial.Port
	lock int
}

func (p *lockedPort) Close() error {
	err := p.Port.Close()
	unix.Close(p.lock)
	return err
}

// Name returns the scanner's name.
func (s *Serial) Name() string { return s.cfg.Name }

// Problem returns why the scanner is not being read now (the last failure
// to open or read it, as logged: "… in use by another reader …: held by
// pid 812 (minicom)"), or "" while it is read. It is safe to call at any
// time; the validator's ctl status shows it at the bus.
func (s *Serial) Problem() string {
	if p := s.problem.Load(); p != nil {
		return *p
	}
	return ""
}

// Stats returns a snapshot of the reader's counters. It is safe to call at
// any time from any goroutine.
func (s *Serial) Stats() Stats { return s.framer.Stats() }

// Run opens the device and sends its frames to out until ctx is done, then
// closes the port and returns nil. It does not close out.
//
// Run does not give up on the device: when it is absent, unplugged or
// failing, Run logs that once, retries with backoff and logs again once when
// it is back ("scanner resumed", with the number of attempts). A partial frame
// cut off by the loss is counted as incomplete. It returns [ErrRunning] if
// the reader is already running.
func (s *Serial) Run(ctx context.Context, out chan<- Frame) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)

	st := &link{backoff: backoff.Backoff{Min: s.cfg.MinBackoff, Max: s.cfg.MaxBackoff}}
	defer func() {
		if st.up {
			s.setState(Disconnected)
		}
	}()
	for {
		s.beat()
		err := s.session(ctx, out, st)
		if ctx.Err() != nil {
			return nil
		}
		s.failed(st, err)
		if !backoff.Sleep(ctx, st.backoff.Next()) {
			return nil
		}
	}
}

// link is the reconnection state of one Run.
type link struct {
	up        bool      // connected, and the first read worked
	everUp    bool      // was up at least once
	down      bool      // an outage has been logged and not yet recovered
	downSince time.Time // when it began
	failures  int       // failed attempts since the outage began
	backoff   backoff.Backoff

	// Losses logged in the flap window: a loose cable or a scanner that
	// resets every second lost and resumed at every flap, two log lines
	// each, all day, on the device's flash. Past flapLogBurst a loss is
	// logged only if it lasts (flapQuietFor), or with the next one logged.
	flapWindow time.Time // when the window began
	flapLogged int       // losses logged in it
	quiet      error     // the loss now under way, not logged (nil: none)
	notLogged  int       // losses and returns not logged since the last logged loss

	// renamed: this outage's "another name" warning was logged (a
	// kernel-numbered path gone while a device of its kind is present).
	renamed bool
}

// A scanner lost more than flapLogBurst times in flapLogWindow has its
// further losses logged only if one lasts flapQuietFor, or counted in the
// next loss logged.
const (
	flapLogBurst  = 5
	flapLogWindow = 10 * time.Minute
	flapQuietFor  = 5 * time.Second
)

// logLoss reports whether a loss beginning now is to be logged: within
// the window's burst.
func (st *link) logLoss(now time.Time) bool {
	if st.flapWindow.IsZero() || now.Sub(st.flapWindow) >= flapLogWindow {
		st.flapWindow, st.flapLogged = now, 0
	}
	if st.flapLogged < flapLogBurst {
		st.flapLogged++
		return true
	}
	return false
}

// session opens the port once, reads from it until the device is lost or ctx
// is done, and closes it. It returns why the device was lost (nil if ctx).
func (s *Serial) session(ctx context.Context, out chan<- Frame, st *link) error {
	port, id, err := s.open()
	if err != nil {
		return err
	}
	defer func() {
		// Reads are bounded by ReadTimeout and nothing reads concurrently,
		// so Close cannot block here.
		port.Close()
		s.framer.Reset()
	}()

	buf := make([]byte, readBufSize)
	fast := 0
	for ctx.Err() == nil {
		start := time.Now()
		n, err := port.Read(buf)
		now := time.Now()
		s.beat()
		if n > 0 {
			fast = 0
			s.up(st)
			for _, fr := range s.framer.Feed(buf[:n], now) {
				select {
				case out <- fr:
				case <-ctx.Done():
					return nil
				}
			}
		}
		switch {
		case err == nil:
		case n == 0 && errors.Is(err, io.EOF):
			// With VMIN=0, VTIME>0 a read that times out returns 0 bytes,
			// which os.File reports as io.EOF: "no data yet". A hung-up
			// device returns the same at once, again and again.
			if now.Sub(start) < s.readTimeout/2 {
				if fast++; fast >= fastEOFLimit {
					return fmt.Errorf("%w: hung up (%d empty reads in a row)", errDeviceLost, fast)
				}
				continue
			}
			fast = 0
			s.up(st)
			s.framer.Flush(now)
			if err := samePath(s.cfg.Path, id); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: %w", errDeviceLost, err)
		}
	}
	return nil
}

// open opens and configures the port and identifies the device behind the
// path, to notice later when the path goes away or names another device
// (a udev symlink re-created for a re-plugged scanner).
func (s *Serial) open() (io.ReadCloser, os.FileInfo, error) {
	port, err := s.openPort(&serial.Config{
		Name:        s.cfg.Path,
		Baud:        s.cfg.Baud,
		ReadTimeout: s.cfg.ReadTimeout,
	})
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Path == s.cfg.Path {
			return nil, nil, err // "open PATH: …" already (not the path twice)
		}
		return nil, nil, fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	id, err := os.Stat(s.cfg.Path)
	if err != nil {
		port.Close()
		return nil, nil, fmt.Errorf("%w: %w", errDeviceLost, err)
	}
	// Input that waited in the tty while nobody read it (the validator was
	// restarting, or the scanner was re-plugged) may hold the first half of
	// a scan whose second half is gone: discard it (tcflush), and drop the
	// first frame too if it started before the line was seen idle.
	if f, ok := port.(flusher); ok {
		if err := f.Flush(); err != nil {
			s.log.Warn("scanner: cannot discard pending input", slog.String("scanner", s.cfg.Name), slog.Any("err", err))
		}
	}
	s.framer.Resync()
	return port, id, nil
}

// flusher is a port that can discard its pending input (tarm/serial's
// Port.Flush: tcflush(TCIOFLUSH) on the tty).
type flusher interface{ Flush() error }

// samePath returns an error when path no longer names the device id.
func samePath(path string, id os.FileInfo) error {
	now, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %w", errDeviceLost, err)
	}
	if !os.SameFile(id, now) {
		return fmt.Errorf("%w: %s now names another device", errDeviceLost, path)
	}
	return nil
}

// up marks the connection as working, once per session: the first read
// returned data or waited its full timeout.
func (s *Serial) up(st *link) {
	if st.up {
		return
	}
	st.up = true
	// Counted, then connected, before the problem is cleared and the line
	// logged: a reader of the state sees the reconnection counted, a
	// reader of both (ctl status, selftest) that sees no problem sees it
	// read, and one that waited for the line sees it connected.
	if st.everUp {
		s.framer.c.reconnects.Add(1)
	}
	st.everUp = true
	s.setState(Connected)
	s.problem.Store(nil)
	st.backoff.Reset()
	switch {
	case st.down && st.quiet != nil: // a flap whose loss was not logged
		st.quiet = nil
		st.notLogged++
		s.log.Debug("scanner resumed (flapping)", slog.String("scanner", s.cfg.Name),
			slog.String("downtime", time.Since(st.downSince).Round(time.Millisecond).String()))
	case st.down:
		s.log.Info("scanner resumed",
			slog.String("scanner", s.cfg.Name),
			slog.Int("attempts", st.failures+1),
			slog.String("downtime", time.Since(st.downSince).Round(time.Millisecond).String()))
	default:
		s.log.Info("scanner connected", slog.String("scanner", s.cfg.Name), slog.String("path", s.cfg.Path))
	}
	st.down, st.failures, st.renamed = false, 0, false
}

// failed records a lost connection or a failed attempt, logging the first of
// an outage only.
func (s *Serial) failed(st *link, err error) {
	why := err.Error()
	attrs := []any{slog.String("scanner", s.cfg.Name), slog.String("path", s.cfg.Path), slog.Any("err", err)}
	if h := accessHint(err); h != "" {
		attrs = append(attrs, slog.String("hint", h))
	}
	var present []string
	if errors.Is(err, fs.ErrNotExist) {
		if h, p := KernelNameHint(s.cfg.Path); h != "" {
			present = p
			if len(p) > 0 {
				attrs = append(attrs, slog.String("present", strings.Join(p, ", ")))
			}
			attrs = append(attrs, slog.String("hint", h))
			why += PresentNote(p)
		}
	}
	s.problem.Store(&why)
	if len(present) > 0 && st.down && !st.renamed {
		// The loss was logged with the read's error (EIO), and the
		// attempts since fail silently: a USB scanner back under
		// another number (ttyACM1) would be retried under the old one
		// for good, with nothing in the log to say so.
		st.renamed = true
		s.log.Warn("scanner not back under its path; a device of its kind is present under another name", attrs...)
	}
	if st.up {
		st.up = false
		s.setState(Disconnected) // before the line is logged, as in up
		st.down, st.downSince, st.failures = true, time.Now(), 0
		st.renamed = len(present) > 0 // said in the loss's line (its path gone at once)
		if st.logLoss(st.downSince) {
			if st.notLogged > 0 {
				attrs = append(attrs, slog.Int("flaps_not_logged", st.notLogged))
				st.notLogged = 0
			}
			s.log.Warn("scanner lost; reconnecting", attrs...)
		} else {
			st.quiet = err
			s.log.Debug("scanner lost again (flapping; logged if it lasts)", attrs...)
		}
		return
	}
	if st.quiet != nil && time.Since(st.downSince) >= flapQuietFor {
		// A flap that lasts: the loss is logged after all, late.
		s.log.Warn("scanner lost; reconnecting", slog.String("scanner", s.cfg.Name), slog.String("path", s.cfg.Path),
			slog.Any("err", st.quiet), slog.String("down_for", time.Since(st.downSince).Round(time.Second).String()),
			slog.Int("flaps_not_logged", st.notLogged))
		st.quiet, st.notLogged = nil, 0
	}
	st.failures++
	if !st.down {
		st.down, st.downSince = true, time.Now()
		st.renamed = len(present) > 0
		s.setState(Disconnected)
		s.log.Warn("scanner unavailable; retrying", attrs...)
	}
}

// kernelNumbered matches the device names the kernel numbers in the order
// devices appear (ttyACM0, ttyUSB1, event3): a USB scanner unplugged and
// plugged back while the validator still held the old node open, or found
// after another USB device of its kind (a mobile modem's ports are ttyUSBn
// and ttyACMn too), gets another number.
var kernelNumbered = regexp.MustCompile(`^(ttyACM|ttyUSB|event)[0-9]+$`)

// KernelNameHint says what to do about a scanner path that is a
// kernel-numbered name (see kernelNumbered) and lists, at most 4, the
// serial devices of its kind present now in its directory ("" and nil for any
// other path, a udev name such as /dev/scanner-front or
// /dev/serial/by-id/…, which follows the scanner).
func KernelNameHint(path string) (hint string, present []string) {
	base := filepath.Base(path)
	m := kernelNumbered.FindStringSubmatch(base)
	if m == nil {
		return "", nil
	}
	stable, other := "/dev/scanner-NAME", "a modem"
	if m[1] == "event" {
		stable, other = "/dev/input/scanner-NAME, or /dev/input/by-id/…-event-kbd", "a keyboard"
	}
	hint = fmt.Sprintf("%s is a number the kernel gives in the order devices appear: the scanner re-plugged, or found after "+
		"another USB device of its kind (%s), comes back under another number (%s1, …); give it a stable name with a udev rule "+
		"(%s, README: udev rules) and put that in [[scanner]] path", base, other, m[1], stable)
	if m[1] == "event" {
		// Every keyboard, button and sensor is an eventN: one present
		// says nothing of where the scanner went.
		return hint, nil
	}
	names, _ := filepath.Glob(filepath.Join(filepath.Dir(path), m[1]+"*"))
	for _, n := range names {
		if n != path && kernelNumbered.MatchString(filepath.Base(n)) && len(present) < 4 {
			present = append(present, n)
		}
	}
	return hint, present
}

// PresentNote is what a scanner's problem adds for the devices of its kind
// present under other names (KernelNameHint's list): "" for none.
func PresentNote(present []string) string {
	if len(present) == 0 {
		return ""
	}
	return "; present now: " + strings.Join(present, ", ") + " (the scanner under another name?)"
}

// notSerialHint is what to do about a path that opens but is no serial
// port (ENOTTY from the termios ioctl: /dev/null, a file, an input event
// device of a keyboard-wedge scanner configured as serial).
const notSerialHint = "not a serial port: point [[scanner]] path at the scanner's tty (/dev/ttyACM0, /dev/ttyUSB0 or its udev name); " +
	"a scanner that types like a USB keyboard is type = \"evdev\" with its /dev/input event device"

// inUseHint is what to do about a scanner another reader holds.
const inUseHint = "give each validator its own scanners, and each [[scanner]] its own path (look for another validator or [[scanner]] with this path; " +
	"udev names: one SYMLINK per scanner, by its serial); another program (the err names it) must let go: give the scanner to group farego " +
	"alone (README, udev rules), so that users of group dialout cannot open it; this reader takes the scanner when the other lets go"

// accessHint is what to do about a device the validator may not open.
// EPERM on open is the service's device allow-list (the unit's
// DevicePolicy=closed and DeviceAllow=, a cgroup rule: the file's mode and
// group are not asked, so selftest run as root finds the device
// "readable"): a SoC UART such as /dev/ttymxc0 is not on the shipped list.
// EACCES is the file's owner, group and mode. ENOTTY is a path that is not
// a serial port at all.
func accessHint(err error) string {
	switch {
	case errors.Is(err, syscall.EPERM):
		return "the service's device allow-list lacks this kind of device: add DeviceAllow=char-NAME rw in a drop-in " +
			"(systemctl edit farego-validator; NAME is the one beside the device's major number in /proc/devices, e.g. ttymxc)"
	case errors.Is(err, syscall.EACCES):
		return "the validator's user may not open it: group dialout for a serial port, group farego (a udev rule) for an input device"
	case errors.Is(err, syscall.ENOTTY):
		return notSerialHint
	case errors.Is(err, ErrInUse):
		return inUseHint
	}
	return ""
}

func (s *Serial) beat() {
	if s.cfg.Heartbeat != nil {
		s.cfg.Heartbeat()
	}
}

func (s *Serial) setState(state State) {
	if s.cfg.OnState != nil {
		s.cfg.OnState(state)
	}
}
