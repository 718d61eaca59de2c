package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/keyfile"
	"github.com/farego/farego/sync/uplink"
	"golang.org/x/sys/unix"
)

const selftestUsage = `Usage: farego-validator selftest --config FILE

Checks the validator for a technician and prints one line per check:
OK, WARN or FAIL, why, and what to do. Exits 1 if a check failed.

  clock      set, synchronized, and near the server's (from the running
             validator's acks, or selftest.time_url's Date header)
  scanner    each scanner's device present and readable (and, the
             validator running, read by it: not held by another program)
  feedback   lights and buzzer: plays the accept and reject patterns
             (watch and listen)
  documents  keyring (a key valid now), fare table (covers the route),
             deny list: held and as new as the broker's
  queue      the queue file opens and passes its consistency check
  disk       room to spare for the queue on data_dir's file system
  cert       the device's TLS client certificate (mqtt.cert_file) is in
             its dates, and not within 90 days of its end
  broker     a connection with this device's credentials works

With the validator running (its control socket answers), the queue,
documents, clock and broker come from it, and the outputs it holds are
not played; stop it (systemctl stop farego-validator) for every check.
A broker check with the validator stopped connects as the device.

Flags:
`

// Check levels.
const (
	levelOK   = "OK"
	levelWarn = "WARN"
	levelFail = "FAIL"
)

// selftestLine is one line of the report.
type selftestLine struct {
	level, name, why, do string
}

// statfs is the file system query (a test replaces it to simulate a full disk).
var statfs = syscall.Statfs

// Disk space bounds of the disk check.
const (
	minFreeBytes  = 16 << 20 // below: FAIL
	wantFreeBytes = 64 << 20 // below: WARN
)

func cmdSelftest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("selftest", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), selftestUsage); fs.PrintDefaults() }
	configPath := configFlag(fs)
	if code, ok := parseConfigArgs(fs, configPath, args, stdout, stderr); !ok {
		return code
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		advice := "fix " + *configPath
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			advice = "give the validator's configuration file with --config (the device's is /etc/farego/validator.toml), readable by this user"
		}
		fmt.Fprintf(stdout, "%-4s  %-9s %v -> %s\n", levelFail, "config", err, advice)
		return exitFailure
	}
	st := &selftest{cfg: cfg, now: time.Now()}
	if why, fix := passwordOpenToAll(*configPath, cfg); why != "" {
		st.add(levelWarn, "config", why, fix)
	}
	// Run as root, selftest reads a config the service cannot (the
	// tarball's 0600 root, INSTALL.txt's chmod 0640 left out).
	if fi, err := os.Stat(*configPath); err == nil {
		if why := serviceCannotOpen(fi, false); why != "" {
			st.add(levelFail, "config", fmt.Sprintf("%s is %s, and it stops at start", *configPath, why),
				fmt.Sprintf("chown root:%s %s && chmod 0640 %s", serviceUser, *configPath, *configPath))
		}
	}
	st.run(ctx)
	failed := false
	for _, r := range st.results {
		line := fmt.Sprintf("%-4s  %-9s %s", r.level, r.name, r.why)
		if r.do != "" {
			line += " -> " + r.do
		}
		fmt.Fprintln(stdout, line)
		failed = failed || r.level == levelFail
	}
	if failed {
		return exitFailure
	}
	return exitOK
}

// selftest runs the checks of one config.
type selftest struct {
	cfg     *Config
	now     time.Time
	running *ctlStatus // the running validator's status, if it answers
	// heldElsewhere: the queue file is locked by a process that did not
	// answer on the control socket (a validator started by hand, or with
	// another [ctl] socket): it runs as this device, so nothing here logs
	// in as the device (that would take its broker session).
	heldElsewhere bool
	results       []selftestLine
	health        *agent.StateHealth // the device state, when the queue file could be read
	// noDeny is 1 + the index in results of the documents check's warning
	// when "no deny list" is all it warns of (0: none); noDenyWhy is that
	// line's text before the warning.
	noDeny    int
	noDenyWhy string
	// keyringWarn is 1 + the index in results of the documents check's
	// line when it warns of keyringEnding (0: none).
	keyringWarn int
}

func (s *selftest) add(level, name, why, do string) {
	s.results = append(s.results, selftestLine{level: level, name: name, why: why, do: do})
}

func (s *selftest) run(ctx context.Context) {
	if path := ctlSocketPath(s.cfg); path != "" {
		if resp, err := ctlCall(path, ctlRequest{Op: "status"}); err == nil && resp.OK {
			s.running = resp.Status
		}
	}
	s.checkClock(ctx)
	s.checkScanners()
	s.checkFeedback(ctx)
	s.checkQueue()
	s.checkDocuments()
	s.checkDisk()
	s.checkClientCert()
	s.checkBroker(ctx)
}

// provisionAgain is the fix for a device TLS certificate ended, not yet
// valid or refused: selftest's, the broker advice's and the running
// validator's log say the same.
const provisionAgain = "provision the device again (farego-provision device --force, same flags) and install its whole new bundle"

// certWarnBefore is how long before its end the device's TLS client
// certificate is warned about: provisioning again takes a visit.
const certWarnBefore = 90 * 24 * time.Hour

// checkClientCert checks the dates of the device's TLS client certificate
// (mqtt.cert_file): once it has ended the broker refuses the device, which
// then keeps its taps, and nothing else says why before that day.
func (s *selftest) checkClientCert() {
	m := s.cfg.MQTT
	if m.Broker == "" || m.CertFile == "" {
		return
	}
	path := s.cfg.path(m.CertFile)
	b, err := os.ReadFile(path)
	if err != nil {
		s.add(levelFail, "cert", fmt.Sprintf("mqtt.cert_file %s cannot be read: %v", path, err),
			"put the device's bundle back or fix the file's owner and mode (the validator's user reads it)")
		return
	}
	cert, err := firstCertificate(b)
	if err != nil {
		s.add(levelFail, "cert", fmt.Sprintf("mqtt.cert_file %s: %v", path, err), provisionAgain)
		return
	}
	if cn := cert.Subject.CommonName; cn != s.cfg.DeviceID {
		s.add(levelFail, "cert", fmt.Sprintf("mqtt.cert_file %s is the certificate of device %q, not of this one (device_id %q): the broker refuses it", path, record.Printable(cn, 64), s.cfg.DeviceID),
			fmt.Sprintf("install this device's whole bundle (farego-provision device --id %s)", s.cfg.DeviceID))
		return
	}
	dates := fmt.Sprintf("valid %s to %s", cert.NotBefore.UTC().Format(time.DateOnly), cert.NotAfter.UTC().Format(time.DateOnly))
	switch left := cert.NotAfter.Sub(s.now); {
	case left < 0:
		s.add(levelFail, "cert", fmt.Sprintf("the device's TLS certificate %s has expired (%s): the broker refuses the device, its taps stay on it", path, dates), provisionAgain)
	case s.now.Before(cert.NotBefore):
		s.add(levelFail, "cert", fmt.Sprintf("the device's TLS certificate %s is not valid yet (%s) by this device's clock, %s", path, dates, s.now.UTC().Format(time.RFC3339)),
			"set the device's clock (NTP); if it is right, the machine that provisioned the device had a clock ahead: provision it again")
	case left < certWarnBefore:
		s.add(levelWarn, "cert", fmt.Sprintf("the device's TLS certificate %s ends in %d days (%s): from then on the broker refuses the device", path, int(left.Hours()/24), dates), provisionAgain+" before then")
	default:
		s.add(levelOK, "cert", fmt.Sprintf("the device's TLS certificate: %s", dates), "")
	}
}

// firstCertificate parses the first PEM certificate of b.
func firstCertificate(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM certificate in it")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// clientCertRefused is the advice for a TLS alert from the broker about
// the device's own certificate ("remote error: tls: expired certificate"):
// the broker, not the device, refuses it. "" for other errors.
func clientCertRefused(e string) string {
	switch {
	case strings.Contains(e, "remote error: tls: expired certificate"):
		return "the broker refuses this device's TLS certificate (mqtt.cert_file) as expired (see the cert line; if it is not, the broker's clock is wrong): " + provisionAgain
	case strings.Contains(e, "remote error: tls: unknown certificate authority"), strings.Contains(e, "remote error: tls: bad certificate"),
		strings.Contains(e, "remote error: tls: certificate required"):
		return "the broker refuses this device's TLS certificate (mqtt.cert_file): it is another fleet's, missing, or the broker's --client-ca is not the fleet CA: " + provisionAgain
	}
	return ""
}

func (s *selftest) checkClock(ctx context.Context) {
	minClock := s.cfg.Policy.MinClock.Time
	if minClock.IsZero() {
		minClock = agent.MinClock()
	}
	if s.now.Before(minClock) {
		s.add(levelFail, "clock", fmt.Sprintf("the clock says %s, before %s: unset", s.now.UTC().Format(time.RFC3339),
			minClock.Format(time.DateOnly)), "set the time: check NTP (timedatectl) and the RTC battery")
		return
	}
	sync := ""
	var tx syscall.Timex
	if _, err := syscall.Adjtimex(&tx); err == nil && tx.Status&staUnsync != 0 {
		sync = "; the kernel says it is not synchronized (NTP)"
	}
	bound := time.Duration(s.cfg.Policy.MaxClockOffset)
	if bound == 0 {
		bound = agent.DefaultMaxClockOffset
	}
	var off time.Duration
	var from string
	switch {
	case s.running != nil && s.running.ClockOffsetMS != nil:
		off, from = time.Duration(*s.running.ClockOffsetMS)*time.Millisecond, "measured by the running validator: from the server's acks, or the Date of selftest.time_url until an ack came"
	case s.cfg.Selftest.TimeURL != "":
		o, _, err := httpClockSample(ctx, s.cfg.Selftest.TimeURL, time.Now)
		if err != nil {
			s.add(levelWarn, "clock", fmt.Sprintf("%s; offset from the server unknown: %v%s", s.now.UTC().Format(time.RFC3339), err, sync),
				"check the network and selftest.time_url")
			return
		}
		off, from = o, "from the Date of "+s.cfg.Selftest.TimeURL
	default:
		s.add(levelWarn, "clock", fmt.Sprintf("%s; offset from the server unknown (no measurement)%s", s.now.UTC().Format(time.RFC3339), sync),
			"set selftest.time_url to the settlement server's /healthz, or run the check while the validator runs")
		return
	}
	switch {
	case off.Abs() > bound && bound > 0:
		s.add(levelFail, "clock", fmt.Sprintf("%s from the server's (%s), bound %s: the validator is out of service%s",
			off.Round(time.Millisecond), from, bound, sync), "fix the time source (NTP) of this device")
	case sync != "":
		s.add(levelWarn, "clock", fmt.Sprintf("%s from the server's (%s)%s", off.Round(time.Millisecond), from, sync),
			"check NTP (timedatectl timesync-status)")
	default:
		s.add(levelOK, "clock", fmt.Sprintf("%s from the server's (%s)", off.Round(time.Millisecond), from), "")
	}
}

// staUnsync is the kernel's "clock not synchronized" status bit (STA_UNSYNC).
const staUnsync = 0x40

// httpClockSample compares the clock (now) with the Date header of an
// HTTP answer of url (one-second resolution; the round trip halved is
// subtracted), and returns the offset and the round trip.
func httpClockSample(ctx context.Context, url string, now func() time.Time) (offset, rtt time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	resp.Body.Close()
	rtt = time.Since(start)
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return 0, 0, fmt.Errorf("no Date header: %w", err)
	}
	mid := now().Add(-rtt / 2)
	// The Date is truncated to the second: half a second is its middle.
	return mid.Sub(date.Add(500 * time.Millisecond)), rtt, nil
}

func (s *selftest) checkScanners() {
	first := len(s.results)
	for _, sc := range s.cfg.Scanners {
		name := "scanner"
		if sc.Path == "-" {
			s.add(levelWarn, name, fmt.Sprintf("%s reads standard input (development)", sc.Name), "configure the real scanner's device path")
			continue
		}
		path := s.cfg.path(sc.Path)
		f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if hint, present := scanner.KernelNameHint(path); hint != "" {
				s.add(levelFail, name, fmt.Sprintf("%s: %s not found", sc.Name, path)+scanner.PresentNote(present), "plug the scanner in; "+hint)
				continue
			}
			s.add(levelFail, name, fmt.Sprintf("%s: %s not found", sc.Name, path),
				"plug the scanner in; check its cable and the udev rule that names it")
		case errors.Is(err, os.ErrPermission):
			s.add(levelFail, name, fmt.Sprintf("%s: %s: permission denied", sc.Name, path),
				"the validator's user needs the device: the farego udev rules (README, udev rules) give it to group farego")
		case err != nil:
			s.add(levelFail, name, fmt.Sprintf("%s: %s: %v", sc.Name, path, err), "replug the scanner; replace it if this persists")
		default:
			fi, _ := f.Stat()
			// A serial scanner's path must be a tty: the validator
			// configures it with termios and cannot open anything else
			// (/dev/null, a file, an evdev scanner's /dev/input/event*
			// given as serial: "inappropriate ioctl for device").
			_, terr := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
			f.Close()
			serialPort := sc.Type != "evdev"
			if serialPort && errors.Is(terr, unix.ENOTTY) {
				s.add(levelFail, name, fmt.Sprintf("%s: %s is not a serial port: the validator cannot open it", sc.Name, path),
					"point path at the scanner's tty (/dev/ttyACM0, /dev/ttyUSB0 or its udev name); a scanner that types "+
						"like a USB keyboard is type = \"evdev\" with its /dev/input event device")
				continue
			}
			if fi != nil && fi.Mode()&os.ModeCharDevice == 0 {
				s.add(levelWarn, name, fmt.Sprintf("%s: %s is not a character device", sc.Name, path), "point path at the scanner's device")
				continue
			}
			if why := serviceCannotOpen(fi, sc.Type != "evdev"); why != "" {
				s.add(levelFail, name, fmt.Sprintf("%s: %s: %s", sc.Name, path, why),
					"give it to group farego with a udev rule (serial: name it /dev/scanner-NAME, the package's 72-farego-scanners.rules "+
						"does the rest): README, udev rules")
				continue
			}
			if hint, _ := scanner.KernelNameHint(path); hint != "" {
				// Read now, and maybe not after the next re-plug or
				// boot (or another device, a modem's port, read as
				// the scanner).
				s.add(levelWarn, name, fmt.Sprintf("%s: %s present and readable, under a name the kernel may give another device", sc.Name, path), hint)
				continue
			}
			if serialPort {
				if who := othersCanOpen(fi); who != "" {
					s.add(levelWarn, name, fmt.Sprintf("%s: %s present and readable, and %s: one could hold its lock, and the validator "+
						"would read no code meanwhile", sc.Name, path, who),
						"give it to group farego alone: name it /dev/scanner-NAME with a udev rule (the package's "+
							"72-farego-scanners.rules then does), or add GROUP=\"farego\", MODE=\"0660\" to its rule (README, udev rules)")
					continue
				}
			}
			s.add(levelOK, name, fmt.Sprintf("%s: %s present and readable", sc.Name, path), "")
		}
	}
	s.runningReads(first)
}

// runningReads fails the scanners' lines (from results[first], one each)
// of those the running validator does not read, for a reason the device
// file's own check cannot see: another program holding it (its lock, an
// evdev grab), a device that hangs up. That check said "present and
// readable" and the documents check "in service" (it leaves a scanner's
// reason to this check) while the validator was out of service for want
// of a scanner and no rider could pay.
func (s *selftest) runningReads(first int) {
	if s.running == nil || len(s.results) != first+len(s.cfg.Scanners) {
		return
	}
	for i, sc := range s.cfg.Scanners {
		line := &s.results[first+i]
		if line.level == levelFail {
			continue
		}
		for _, r := range s.running.Scanners {
			if r.Name != sc.Name || r.Up {
				continue
			}
			*line = selftestLine{level: levelFail, name: line.name,
				why: fmt.Sprintf("%s: %s present, but the running validator does not read it: %s", sc.Name, s.cfg.path(sc.Path), r.Problem),
				do:  "free it (the reason names any program holding it) or replug it; ctl status says when it is read again"}
		}
	}
}

// othersCanOpen says who besides the validator may open a serial scanner
// (and so hold its lock, flock, which the validator waits for): every
// user, or every user of group dialout, the group a tty has by default.
// "" when neither: a device of group farego (the udev rules'), or of
// another group such as tty (a pseudo-terminal, 0620).
func othersCanOpen(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	m := fi.Mode().Perm()
	group := strconv.FormatUint(uint64(st.Gid), 10)
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	switch {
	case m&0o006 != 0:
		return fmt.Sprintf("open to every user (mode %04o)", m)
	case group == "dialout" && m&0o060 != 0:
		return fmt.Sprintf("open to every user of group dialout (mode %04o)", m)
	}
	return ""
}

// serviceUser is the user the shipped unit runs the validator as (with
// its group and dialout); a test names another.
var serviceUser = "farego"

// serviceCannotOpen says why the validator's service (serviceUser, its
// group and dialout, as the shipped unit runs it) could not open a device
// selftest could (for reading, and writing too for a serial port, which
// the validator opens read-write): selftest is run as root, which opens
// anything, and an evdev scanner without the farego udev rule (root:input
// 0660) was "present and readable" while the validator could not open it.
// "" when it can, or when there is no such user (not a device installed as
// the README says).
func serviceCannotOpen(fi os.FileInfo, write bool) string {
	if fi == nil {
		return ""
	}
	u, err := user.Lookup(serviceUser)
	st, ok := fi.Sys().(*syscall.Stat_t)
	if err != nil || !ok {
		return ""
	}
	uid, gid := strconv.FormatUint(uint64(st.Uid), 10), strconv.FormatUint(uint64(st.Gid), 10)
	groups := []string{u.Gid}
	if g, err := user.LookupGroup("dialout"); err == nil {
		groups = append(groups, g.Gid)
	}
	need := fs.FileMode(0o4) // read
	if write {
		need |= 0o2
	}
	m := fi.Mode().Perm()
	shift := 0 // the kernel's order: owner, else group, else others
	switch {
	case uid == u.Uid:
		shift = 6
	case slices.Contains(groups, gid):
		shift = 3
	}
	if (m>>shift)&need == need {
		return ""
	}
	owner, group := uid, gid
	if o, err := user.LookupId(uid); err == nil {
		owner = o.Username
	}
	if g, err := user.LookupGroupId(gid); err == nil {
		group = g.Name
	}
	return fmt.Sprintf("owned by %s:%s, mode %04o: the validator (user %s, groups %s and dialout) may not open it",
		owner, group, m, serviceUser, serviceUser)
}

func (s *selftest) checkFeedback(ctx context.Context) {
	gcfg, fitted := gpioConfig(s.cfg)
	if !fitted {
		s.add(levelWarn, "feedback", "no lights or buzzer configured (console only)", "set feedback.gpio_* if this validator has them")
		return
	}
	g, err := feedback.NewGPIO(gcfg, slog.New(slog.DiscardHandler))
	if err != nil {
		if s.running != nil {
			s.add(levelWarn, "feedback", fmt.Sprintf("not played: %v", err), "the running validator holds them: stop it to test the outputs")
			return
		}
		s.add(levelFail, "feedback", fmt.Sprintf("outputs unusable: %v", err), "check the gpio_* settings, wiring and the udev rule")
		return
	}
	defer g.Close()
	var errs []error
	for _, play := range []func() error{
		func() error { return g.Accepted(ctx, feedback.Accept{}) },
		func() error { return g.Wait(ctx) },
		func() error { return g.Rejected(ctx, feedback.Reject{}) },
		func() error { return g.Wait(ctx) },
	} {
		if err := play(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		s.add(levelFail, "feedback", fmt.Sprintf("playing the patterns failed: %v", err), "check the wiring and the gpio_* settings")
		return
	}
	s.add(levelOK, "feedback", "played accept (green, beep) then reject (red, beeps)", "check you saw and heard both")
}

func (s *selftest) checkQueue() {
	path := filepath.Join(s.cfg.path(s.cfg.DataDir), queueFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		s.add(levelWarn, "queue", fmt.Sprintf("%s does not exist yet", path), "it is created at the validator's first start")
		return
	}
	if s.running != nil {
		s.add(levelOK, "queue", fmt.Sprintf("in use by the running validator: %d taps waiting", s.running.QueueDepth),
			"stop the validator for a consistency check")
		return
	}
	q, err := queue.Open(path, &queue.Options{LockTimeout: 2 * time.Second})
	if errors.Is(err, queue.ErrLocked) {
		s.heldElsewhere = true
		s.add(levelWarn, "queue", fmt.Sprintf("%s is in use by another process: a validator runs on it, but not on the control socket %s",
			path, orNone(ctlSocketPath(s.cfg))),
			"stop that validator for the full check, or give it and this command the same [ctl] socket")
		return
	}
	if errors.Is(err, fs.ErrPermission) {
		s.add(levelFail, "queue", fmt.Sprintf("%s cannot be opened: %v", path, err),
			fmt.Sprintf("run selftest as the validator's user (farego) or root: uid %d may not read it", os.Getuid()))
		return
	}
	if err != nil {
		s.add(levelFail, "queue", fmt.Sprintf("%s cannot be opened: %v", path, err),
			"start the validator: it salvages a damaged file (or run reset-queue as the README says)")
		return
	}
	defer q.Close()
	if err := q.Check(); err != nil {
		s.add(levelFail, "queue", fmt.Sprintf("%s fails its consistency check: %v", path, err),
			"start the validator: it salvages a damaged file")
		return
	}
	st, err := q.Stats()
	if err != nil {
		s.add(levelFail, "queue", fmt.Sprintf("%s: %v", path, err), "start the validator: it salvages a damaged file")
		return
	}
	acfg := s.cfg.agentConfig() // the run path's agent settings
	acfg.Logger = slog.New(slog.DiscardHandler)
	a, err := agent.New(q, feedback.Multi{}, acfg)
	if err != nil {
		s.add(levelFail, "queue", fmt.Sprintf("device state unreadable: %v", err), "start the validator: it salvages a damaged file")
		return
	}
	h := a.StateHealth()
	s.health = &h
	s.add(levelOK, "queue", fmt.Sprintf("healthy: %d taps waiting, %d MiB", st.Count+st.Adopted, st.FileSize>>20), "")
}

func (s *selftest) checkDocuments() {
	if s.running != nil {
		v := s.running.Versions
		why := fmt.Sprintf("keyring v%d, fares v%d, deny list v%d", v[record.DocKeyring], v[record.DocFares], v[record.DocDenyList])
		// No scanner read is the scanners' check's to say.
		if oos := s.running.OutOfService; oos != "" && !strings.HasPrefix(oos, reasonScanner+":") {
			s.add(levelFail, "documents", why+"; out of service: "+oos, "see the reason; the README lists what to do for each")
			return
		}
		if s.running.KeyringEnds != nil {
			if w := s.keyringEnding(*s.running.KeyringEnds); w != "" {
				s.add(levelWarn, "documents", why+"; in service; "+w, keyringEndingDo)
				return
			}
		}
		s.add(levelOK, "documents", why+"; in service", "")
		return
	}
	if s.heldElsewhere {
		s.add(levelWarn, "documents", "not read: the device state is in the queue file the running validator holds",
			"stop that validator for the full check")
		return
	}
	h := s.health
	if h == nil { // no device state yet: the provisioning bundle is what the validator starts with
		h = s.provisioned()
	}
	var fails, warns []string
	switch {
	case h.Keys == 0:
		fails = append(fails, "no keyring")
	case h.KeysValidNow == 0:
		fails = append(fails, fmt.Sprintf("none of the keyring's %d keys is valid now", h.Keys))
	}
	switch {
	case !h.Fares:
		fails = append(fails, "no fare table")
	case !h.FaresCoverRoute:
		fails = append(fails, fmt.Sprintf("route %q is not among the routes the fare table lists (%s)", s.cfg.Route, record.ReasonRouteNotInFares))
	}
	do := "connect it to the broker: the deny list arrives from the server"
	if w := s.keyringEnding(h.KeysEnd); w != "" && len(fails) == 0 {
		warns, do = append(warns, w), keyringEndingDo
		s.keyringWarn = len(s.results) + 1
	}
	if h.Versions[record.DocDenyList] == 0 {
		warns = append(warns, noDenyList)
	}
	why := fmt.Sprintf("keyring v%d (%d of %d keys valid now), fares v%d, deny list v%d (%d entries)", h.Versions[record.DocKeyring],
		h.KeysValidNow, h.Keys, h.Versions[record.DocFares], h.Versions[record.DocDenyList], h.DenyEntries)
	switch {
	case len(fails) > 0:
		s.add(levelFail, "documents", why+": "+strings.Join(slices.Concat(fails, warns), "; "),
			"provision the device again (farego-provision device) or connect it to the broker")
	case len(warns) > 0:
		if len(warns) == 1 && warns[0] == noDenyList {
			s.noDeny, s.noDenyWhy = len(s.results)+1, why // the only warning
		}
		s.add(levelWarn, "documents", why+": "+strings.Join(warns, "; "), do)
	default:
		s.add(levelOK, "documents", why, "")
	}
	s.health = h
}

// keyringEnding is the documents check's warning for a keyring whose last
// key valid now ends within keyringWarnBefore ("" otherwise, and for a
// zero end: no key valid now, which is a failure of its own). The server
// renews its keyring 30 days before its keys end and publishes it at
// once: a device that still ends this soon has not heard from the server
// since, and on that day refuses every rider, with nothing said before.
func (s *selftest) keyringEnding(end time.Time) string {
	left := end.Sub(s.now)
	if end.IsZero() || left >= keyringWarnBefore {
		return ""
	}
	return fmt.Sprintf("the keyring's last valid key ends %s (in %s): from then every rider is refused; %s",
		end.UTC().Format("2006-01-02 15:04 UTC"), days(max(left, 0)), keyringNotHad)
}

// keyringNotHad is why keyringEnding's device ends so soon, unless the
// broker says otherwise (keyringNotRenewed).
const keyringNotHad = "the server publishes its renewed keyring 30 days before, so this device has not had it"

// keyringNotRenewed takes back the documents check's advice to connect
// the device when the broker holds the server's keyring at the device's
// version: the device has the server's newest, and the server has not
// renewed its keys (its renewal failing, or a keyring restored from an
// old backup). Every device of the fleet will refuse every rider then.
func (s *selftest) keyringNotRenewed(version uint64) {
	if s.keyringWarn == 0 {
		return
	}
	l := &s.results[s.keyringWarn-1]
	l.why = strings.Replace(l.why, keyringNotHad, fmt.Sprintf("the broker holds the server's keyring at this version (v%d): "+
		"the server has not renewed its keys, and every device of the fleet ends with them", version), 1)
	l.do = "check the settlement server now: it renews 30 days before its keys end and logs 'issuer key renewed' " +
		"(POST /v1/keyring/rotate renews by hand; see Key rotation in the README)"
}

// keyringEndingDo is what to do about keyringEnding's warning.
const keyringEndingDo = "connect it to the broker (see the broker line) so that it gets the current keyring, " +
	"or provision it again (farego-provision device)"

// keyringWarnBefore is how long before the end of its last valid key the
// device's keyring is warned about. The server renews 30 days before
// (and checks every hour): a device that connected in the last two weeks
// has the renewal.
const keyringWarnBefore = 14 * 24 * time.Hour

// days says a duration in days, or in hours under two days.
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("%d hours", int(d.Hours()))
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// provisioned reads the provisioning bundle's documents named in the
// config (missing or invalid ones count as absent).
func (s *selftest) provisioned() *agent.StateHealth {
	h := &agent.StateHealth{Versions: map[string]uint64{}}
	read := func(p string) []byte {
		if p == "" {
			return nil
		}
		b, err := os.ReadFile(s.cfg.path(p))
		if err != nil {
			return nil
		}
		return b
	}
	if kr, err := paycode.ParseKeyring(read(s.cfg.Provision.Keyring)); err == nil {
		h.Versions[record.DocKeyring] = kr.Version()
		for _, k := range kr.Keys() {
			h.Keys++
			if !s.now.Before(k.NotBefore) && !s.now.After(k.NotAfter) {
				h.KeysValidNow++
			}
		}
		h.KeysEnd = kr.ValidUntil(s.now)
	}
	if t, err := fare.Parse(read(s.cfg.Provision.Fares)); err == nil {
		h.Versions[record.DocFares], h.Fares, h.FaresCoverRoute = t.Version, true, t.Covers(s.cfg.Route)
	}
	if dl, err := record.ParseDenyList(read(s.cfg.Provision.DenyList)); err == nil {
		h.Versions[record.DocDenyList], h.DenyEntries = dl.Version, len(dl.Entries)
	}
	return h
}

func (s *selftest) checkDisk() {
	dir := s.cfg.path(s.cfg.DataDir)
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir) // data_dir not made yet: its file system
	}
	var fs syscall.Statfs_t
	if err := statfs(dir, &fs); err != nil {
		s.add(levelFail, "disk", fmt.Sprintf("%s: %v", dir, err), "check data_dir and the storage")
		return
	}
	free := int64(fs.Bavail) * int64(fs.Bsize)
	why := fmt.Sprintf("%d MiB free on %s", free>>20, dir)
	s.checkStorage(dir)
	switch {
	case free < minFreeBytes:
		s.add(levelFail, "disk", why+": the queue cannot grow", "free space on the device (old logs, core dumps) or replace the storage")
	case free < wantFreeBytes:
		s.add(levelWarn, "disk", why+": little room for queued taps", "free space on the device")
	default:
		s.add(levelOK, "disk", why, "")
	}
}

// statfsType is the file system query of the storage check (a test
// replaces it to simulate a data_dir in memory).
var statfsType = syscall.Statfs

// checkStorage fails a data_dir whose file system is in memory and warns
// on an overlay, whose upper layer may be.
func (s *selftest) checkStorage(dir string) {
	var fs syscall.Statfs_t
	if statfsType(dir, &fs) != nil {
		return // the disk line says why
	}
	switch name, surely := volatileFS(&fs); {
	case surely:
		s.add(levelFail, "storage", fmt.Sprintf("%s is on %s, in memory: the taps not yet sent are lost when the power goes", dir, name),
			"put data_dir on the card's persistent file system (with a read-only or overlay root: a writable partition mounted at /var/lib/farego)")
	case name != "":
		s.add(levelWarn, "storage", fmt.Sprintf("%s is on %s: if its upper layer is in memory (overlayroot, an overlay file system option) the taps not yet sent are lost when the power goes", dir, name),
			"mount a persistent partition at /var/lib/farego")
	}
}

// volatileFS names the file system st describes if it does not survive a
// power cut (tmpfs, ramfs: surely) or may not (overlay: its upper layer may
// be in memory, as with overlayroot); "" for any other. A bus whose queue
// was in memory lost every green tap not yet sent at each power-off, and
// nothing said so: the queue's own checks pass.
func volatileFS(st *syscall.Statfs_t) (name string, surely bool) {
	switch uint32(st.Type) { // int32 on 32-bit ARM, int64 on 64-bit
	case 0x01021994:
		return "tmpfs", true
	case 0x858458f6:
		return "ramfs", true
	case 0x794c7630:
		return "overlay", false
	}
	return "", false
}

func (s *selftest) checkBroker(ctx context.Context) {
	m := s.cfg.MQTT
	if m.Broker == "" {
		s.add(levelWarn, "broker", "no mqtt.broker configured: taps stay on this device", "configure [mqtt] (farego-provision device)")
		return
	}
	if s.running == nil && s.heldElsewhere {
		s.add(levelWarn, "broker", "not tried: the validator running on this data_dir logs in as this device, and a second login would take its place",
			"see the broker check of a stopped validator, or its log")
		return
	}
	if s.running != nil && s.running.UplinkConnected != nil {
		if *s.running.UplinkConnected {
			if e := s.running.UplinkError; e != "" {
				s.add(levelWarn, "broker", "the running validator is "+e,
					"if other devices say so too, check the settlement server and its database; if not, install the device's "+
						"whole current bundle, and stop the validator and run selftest to check fleet.pub")
			} else {
				s.add(levelOK, "broker", "the running validator is connected with this device's credentials", "")
			}
		} else {
			why, do := "the running validator is not connected to "+m.Broker, "check the network, the broker and the device's credentials; its log says why"
			if e := s.running.UplinkError; e != "" {
				why += ": " + e
				do = runningBrokerAdvice(e)
			}
			s.add(levelFail, "broker", why, do)
		}
		if p := s.running.UplinkStatusProblem; p != "" {
			s.add(levelWarn, "status", "the running validator's status fails the server's check and is sent sanitized: "+p,
				"fix this build or its configuration")
		}
		return
	}
	// A key file that cannot be read is not the network's fault: say
	// which file, and what to do about it.
	devKey, err := keyfile.ReadPrivate(s.cfg.path(m.DeviceKey))
	if err != nil {
		s.add(levelFail, "broker", fmt.Sprintf("not tried: mqtt.device_key %s cannot be read: %v", s.cfg.path(m.DeviceKey), err),
			"put the device's bundle back (farego-provision device writes it) or fix the file's owner and mode (the validator's user reads it)")
		return
	}
	// Run as root, selftest reads a key the service cannot (INSTALL.txt's
	// chown farego left out): it said OK, and the unit then stopped at
	// start on "permission denied".
	if fi, err := os.Stat(s.cfg.path(m.DeviceKey)); err == nil {
		if why := serviceCannotOpen(fi, false); why != "" {
			p := s.cfg.path(m.DeviceKey)
			s.add(levelFail, "broker", fmt.Sprintf("not tried: mqtt.device_key %s is %s, and it stops at start", p, why),
				fmt.Sprintf("chown %s %s && chmod 0600 %s (the device's signing key, its user's alone)", serviceUser, p, p))
			return
		}
	}
	fleet, err := keyfile.ReadPublic(s.cfg.path(m.FleetPublicKey))
	if err != nil {
		s.add(levelFail, "broker", fmt.Sprintf("not tried: mqtt.fleet_public_key %s cannot be read: %v", s.cfg.path(m.FleetPublicKey), err),
			"put the device's bundle back (farego-provision device writes it) or fix the file's owner and mode")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := uplink.Probe(ctx, uplink.Config{
		Brokers: m.brokers(), DeviceID: s.cfg.DeviceID, DeviceKey: devKey, FleetPublicKey: fleet,
		TopicPrefix: m.TopicPrefix, Username: m.Username, Password: m.Password,
		CAFile: s.cfg.path(m.CAFile), CertFile: s.cfg.path(m.CertFile), KeyFile: s.cfg.path(m.KeyFile),
		ConnectTimeout: 10 * time.Second, MaxBackoff: 5 * time.Second,
	}, 0)
	if err != nil {
		s.add(levelFail, "broker", fmt.Sprintf("no connection to %s as %s: %v", m.Broker, s.cfg.DeviceID, err), brokerAdvice(err, m.CAFile, m.CertFile != "" && m.Username == ""))
		return
	}
	s.brokerOK(res)
}

// brokerAdvice is what to do about a failed broker connection: a broker
// certificate the device does not trust is a matter of mqtt.ca_file or
// of the certificate's names, not of the network. certOnly: the device
// logs in with its client certificate alone (a --tls bundle).
func brokerAdvice(err error, caFile string, certOnly bool) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	if do := clientCertRefused(err.Error()); do != "" {
		return do
	}
	switch {
	case errors.As(err, &host):
		return "the broker's certificate does not name the host in mqtt.broker: issue it for that name (farego-provision broker-cert --host) or use a name it has"
	case errors.As(err, &unknown) && caFile == "":
		return "the broker's certificate is not signed by a CA this device trusts: set mqtt.ca_file = \"ca.crt\" (the fleet CA of the device's bundle, which signs farego-provision broker-cert's certificates)"
	case errors.As(err, &unknown):
		return "the broker's certificate is not signed by the CA in mqtt.ca_file " + caFile + ": give the CA that signed it (the fleet's ca.crt for farego-provision broker-cert)"
	case strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "tls:"):
		return "a TLS failure: check the broker's certificate (its CA in mqtt.ca_file, its names, its dates) and the device's clock"
	case certOnly && strings.Contains(err.Error(), "not Authorized"):
		// A broker that asks for no client certificate never sees the
		// device's, and refuses it for having no password: a
		// settlement server run with --mqtt-tls but no --client-ca.
		return "this device logs in with its client certificate (mqtt.cert_file, no password): the broker must ask for one " +
			"(farego-settlement run --client-ca FLEET/ca.crt beside --mqtt-tls; an external broker's require_certificate), " +
			"or provision the device without --tls to log in with a password; else it was provisioned again (--force) or revoked: install its current bundle"
	case strings.Contains(err.Error(), "not Authorized") || strings.Contains(err.Error(), "bad user name or password"):
		return refusedLogin
	case noAnswer(err.Error()):
		// It said to check "the device's credentials (farego-provision
		// device re-registers it)" too: a new key, which the broker never
		// saw, for a broker that was not reached.
		return "the broker was not reached: check that it runs, mqtt.broker, and the route to its port (nc -vz HOST PORT: network, APN, firewall); the device's credentials were not tried"
	}
	return "check the network, mqtt.broker and the device's credentials (install its current bundle)"
}

// refusedLogin is what to do about a broker that refused the device's
// login (MQTT "not Authorized").
const refusedLogin = "the broker refuses this device's credentials: it was provisioned again (farego-provision device --force: " +
	"the old key and password stop working) or revoked since this bundle was made; install its current bundle"

// noAnswer reports whether a connection error is the network's: nothing
// listens at the address, it does not resolve, or nothing answers.
func noAnswer(e string) bool {
	for _, s := range []string{"connection refused", "i/o timeout", "no such host", "network is unreachable", "no route to host", "connection reset"} {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

// runningBrokerAdvice is what to do about the running validator's uplink
// error, which comes as text over the control socket.
func runningBrokerAdvice(e string) string {
	if do := clientCertRefused(e); do != "" {
		return do
	}
	switch {
	case strings.Contains(e, "not Authorized") || strings.Contains(e, "bad user name or password"):
		return refusedLogin
	case strings.Contains(e, "x509:") || strings.Contains(e, "tls:"):
		return "a TLS failure: check the broker's certificate (its CA in mqtt.ca_file, its names, its dates) and the device's clock"
	}
	return "check the network, mqtt.broker and the broker; stop the validator for selftest's own broker check"
}

func (s *selftest) brokerOK(res *uplink.ProbeResult) {
	why := fmt.Sprintf("connected to %s as %s", res.Broker, s.cfg.DeviceID)
	if res.Refused > 0 {
		// The server's documents do not verify: a device with another
		// fleet's key refuses every downlink and ack, and its taps never
		// leave it.
		what := fmt.Sprintf("; %d of the fleet documents on the broker do not verify with %s", res.Refused, s.cfg.MQTT.FleetPublicKey)
		if len(res.Downlinks) == 0 {
			s.add(levelFail, "broker", why+what+" (none does): this device has another fleet's key",
				"provision it again from the fleet directory the server was initialised with (farego-provision device --force)")
			return
		}
		s.add(levelWarn, "broker", why+what, "check the server's fleet key and what else publishes on the fleet topics")
		return
	}
	// The broker holds the server's other documents but no deny list (nor
	// any shard of one): the server has published none. Without the
	// keyring seen the broker's retained documents may not have come in
	// time (or were lost): the warning stays.
	if res.Downlinks[record.DocDenyList] == 0 && res.Downlinks[record.DocKeyring] > 0 {
		s.noDenyListPublished()
	}
	if v := res.Downlinks[record.DocKeyring]; v > 0 && s.health != nil && v <= s.health.Versions[record.DocKeyring] {
		s.keyringNotRenewed(v)
	}
	var newer []string
	for _, k := range record.DocKinds {
		have := uint64(0)
		if s.health != nil {
			have = s.health.Versions[k]
		}
		if v := res.Downlinks[k]; v > have {
			newer = append(newer, fmt.Sprintf("%s v%d (device has v%d)", k, v, have))
		}
	}
	if len(newer) > 0 {
		s.add(levelWarn, "broker", why+"; the server publishes newer "+strings.Join(newer, ", "),
			"start the validator connected: it applies them")
		return
	}
	s.add(levelOK, "broker", why+"; the device's documents are the server's newest", "")
}

// noDenyList is the documents check's warning for a device without a deny
// list.
const noDenyList = "no deny list"

// noDenyListPublished takes back the documents check's "no deny list"
// when the broker holds none either: a fleet in which no account or pass
// was ever denied has none (the ledger's version 0), and the device is as
// up to date as it can be.
func (s *selftest) noDenyListPublished() {
	if s.noDeny == 0 {
		return
	}
	s.results[s.noDeny-1] = selftestLine{level: levelOK, name: "documents",
		why: s.noDenyWhy + "; the broker holds the server's documents and no deny list: none published (nobody denied yet)"}
}

// orNone is s, or "(none)" when it is empty.
func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
