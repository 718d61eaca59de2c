package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/agent/ridertext"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/cmd/internal/sdnotify"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/sync/keyfile"
	"github.com/farego/farego/sync/update"
	"github.com/farego/farego/sync/uplink"
	"github.com/farego/farego/sync/wire"
)

const runUsage = `Usage: farego-validator run --config FILE

Runs the validator: reads the configured QR scanners, decides every tap
offline, records accepted taps durably in DATA_DIR/validator.db, gives the
rider feedback, and (with [mqtt] configured) forwards taps to the settlement
server and applies fleet updates. Stops cleanly on SIGINT or SIGTERM.

Flags:
`

// queueFile is the validator's bbolt file inside data_dir.
const queueFile = "validator.db"

func cmdRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), runUsage); fs.PrintDefaults() }
	configPath := configFlag(fs)
	if code, ok := parseConfigArgs(fs, configPath, args, stdout, stderr); !ok {
		return code
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "%sfarego-validator run: %v\n", cli.ErrorPrefix(stderr), err)
		return startFailed(nil, stderr, nil)
	}
	log, err := cli.NewLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintf(stderr, "%sfarego-validator run: %v\n", cli.ErrorPrefix(stderr), err)
		return startFailed(cfg, stderr, nil)
	}
	if why, fix := passwordOpenToAll(*configPath, cfg); why != "" {
		log.Warn("config: "+why, "fix", fix)
	}
	if err := runValidator(ctx, cfg, log, stdin, stdout); err != nil {
		if errors.Is(err, errRestart) {
			log.Info("validator stopped to restart into the binary now in place")
			return exitRestart
		}
		if errors.Is(err, errConfig) || errors.Is(err, agent.ErrNotProvisioned) || errors.Is(err, queue.ErrLocked) {
			// What a technician must fix, said as plainly as a
			// configuration file that does not parse (not as a JSON log
			// record of "validator stopped" with the file in its err).
			fmt.Fprintf(stderr, "%sfarego-validator run: %v\n", cli.ErrorPrefix(stderr), err)
			return exitUsage
		}
		log.Error("validator stopped", "err", err)
		return exitFailure
	}
	return exitOK
}

// startFailed ends a start that failed before the updater's boot check
// (bootUpdater): a new version that cannot read what the one before read
// is rolled back after max_boots such starts, as one that crashes is
// (update.FailedStart). It returns the exit status: exitRestart once the
// previous binary is back, else exitUsage. log nil: a text logger on
// stderr (the configuration's could not be made).
func startFailed(cfg *Config, stderr io.Writer, log *slog.Logger) int {
	if log == nil {
		log, _ = cli.NewLogger(stderr, "", "")
	}
	uc := update.Config{Current: agent.Version, Logger: log.With("part", "update")}
	if cfg != nil {
		if cfg.Update.Binary != "" {
			uc.Binary = cfg.path(cfg.Update.Binary)
		}
		uc.MaxBoots = cfg.Update.MaxBoots
	}
	err := update.FailedStart(uc)
	if errors.Is(err, update.ErrRolledBack) {
		log.Info("validator stopped to restart into the binary now in place")
		return exitRestart
	}
	if err != nil {
		log.Error("update: boot check after a failed start failed", "err", err)
	}
	return exitUsage
}

func runValidator(ctx context.Context, cfg *Config, log *slog.Logger, stdin io.Reader, stdout io.Writer) (err error) {
	// A start that fails before the updater's boot check is counted by
	// startFailed (a new version that cannot read this device's files
	// never reached its own count, and was never rolled back); one
	// stopped by another validator running is not this version's failure.
	counted := false
	defer func() {
		if err != nil && !counted && startFailed(cfg, io.Discard, log) == exitRestart {
			err = errRestart
		}
	}()
	// The files the configuration names are read before anything is
	// made: a configuration error changes nothing (no data directory, no
	// queue file and its new epoch).
	docs, err := readProvision(cfg)
	if err != nil {
		return err
	}
	keys, err := readLinkKeys(cfg)
	if err != nil {
		return err
	}
	// A validator already running with this configuration is found
	// before this one makes anything (its data directory).
	if err := ctlSocketFree(ctlSocketPath(cfg)); err != nil {
		counted = true
		return err
	}
	reg := metrics.NewRegistry()
	if cfg.Metrics.Listen != "" {
		stop, err := serveMetrics(cfg.Metrics.Listen, ctlStatusCommand(cfg), reg, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	dataDir := cfg.path(cfg.DataDir)
	// Durably: a power cut must not take back the directory with the
	// queue file (and every green tap) in it.
	// A disk too full to make it is waited on as for the queue file
	// (openWhenSpace below makes it): exiting, the validator started again
	// every 2 s under systemd with no light, as "config: data_dir".
	// One it cannot write (a read-only mount, a directory outside the
	// unit's StateDirectory=, which ProtectSystem=strict makes read-only,
	// or another user's) is a config error too, said with its fix: it
	// stopped only when the queue file failed to open ("validator
	// stopped", exit 1, every 2 s under systemd), naming neither.
	if err := durable.MkdirAll(dataDir, 0o700); err != nil && !errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: data_dir: %w%s", errConfig, err, dataDirFix(err, dataDir))
	} else if err == nil {
		if err := unix.Access(dataDir, unix.W_OK); err != nil {
			return fmt.Errorf("%w: data_dir %s cannot be written by this validator: %w%s", errConfig, dataDir, err, dataDirFix(err, dataDir))
		}
	}
	var dfs syscall.Statfs_t
	if statfs(dataDir, &dfs) == nil {
		if name, surely := volatileFS(&dfs); surely {
			log.Error("data_dir is in memory: the taps not yet sent are lost when the power goes; put it on persistent storage",
				"data_dir", dataDir, "fs", name)
		} else if name != "" {
			log.Warn("data_dir is on an overlay file system: if its upper layer is in memory the taps not yet sent are lost when the power goes",
				"data_dir", dataDir, "fs", name)
		}
	}
	upd, err := bootUpdater(cfg, keys, log)
	counted = err == nil || errors.Is(err, errRestart)
	if err != nil {
		return err
	}
	minClock := cfg.Policy.MinClock.Time
	if minClock.IsZero() {
		minClock = agent.MinClock()
	}

	fb, closeFB, err := buildFeedback(cfg, log, stdout)
	if err != nil {
		return err
	}
	defer closeFB()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notifier := sdnotify.FromEnv()
	mon := newWatchdogMonitor(notifier)
	watch := newScannerWatch(mon)
	sources, err := buildSources(cfg, log, stdin, watch)
	if err != nil {
		return err
	}
	scannerList := scannerStates(sources, watch)
	scannerOut := scannerOutOfService(scannerList, watch, scannerGrace(log))
	// The scanners start once the queue file is open, or earlier if the
	// validator has to wait for the clock first: then every scan is
	// answered "out of service" until it can open one.
	frames := make(chan scanner.Frame, 16)
	scanErr := make(chan error, 1)
	var scanOnce sync.Once
	scannersStarted := false
	startScanners := func() {
		scanOnce.Do(func() {
			scannersStarted = true
			watch.changed.Store(time.Now().UnixNano()) // the grace counts from their start
			go func() { scanErr <- scanner.RunAll(ctx, sources, frames) }()
		})
	}
	scannersStopped := false
	stopScanners := func() error {
		cancel()
		if !scannersStarted || scannersStopped {
			return nil
		}
		scannersStopped = true
		return <-scanErr
	}
	defer stopScanners()
	go notifier.Watchdog(ctx, mon.Healthy, func(err error) {
		if err != nil {
			log.Error("watchdog: not pinging systemd, which restarts the validator unless this recovers", "err", err)
			return
		}
		log.Info("watchdog: every part alive again; pinging systemd")
	})
	notifier.Notify("READY=1")

	var theAgent atomic.Pointer[agent.Agent]
	now := validatorClock(log) // the agent's, and the queue's numbering's
	clock := &clockWait{minClock: minClock, log: log}
	var noSpace atomic.Bool            // the queue file cannot be opened for lack of space
	var foreign atomic.Pointer[string] // why the queue file is another device's
	reg.GaugeFunc("farego_out_of_service", "1 while the validator takes no taps (the reason is in its log and status).", func() float64 {
		a := theAgent.Load()
		if clock.waiting.Load() || a == nil || outOfService(a, scannerOut) != "" {
			return 1
		}
		return 0
	})
	// The control socket answers from now: a technician at a validator
	// waiting for its clock (hours, without a network) asks it why.
	cs := &ctlServer{device: cfg.DeviceID, log: log.With("part", "ctl"), starting: func() string {
		if clock.waiting.Load() {
			return fmt.Sprintf("%s: clock unset (%s, before %s): waiting for it to be set before opening the queue file",
				record.ReasonClock, time.Now().UTC().Format(time.RFC3339), minClock.UTC().Format(time.DateOnly))
		}
		if noSpace.Load() {
			return fmt.Sprintf("%s: no space left on %s to open the queue file: waiting for space to be freed",
				record.ReasonInternal, cfg.path(cfg.DataDir))
		}
		if why := foreign.Load(); why != nil {
			return fmt.Sprintf("%s: %s", record.ReasonInternal, *why)
		}
		return "starting: opening the queue file"
	}}
	stopCtl, err := serveCtl(ctx, ctlSocketPath(cfg), ctlGroup(cfg), cfg.Ctl.Socket != "", cs)
	if err != nil {
		return err
	}
	defer stopCtl()
	lang := cfg.language()
	clock.onWait = func() {
		startScanners()
		notifier.Notify("STATUS=out of service: clock unset")
	}
	qf, err := openWhileOutOfService(ctx, frames, fb, lang, clock, func(ctx context.Context) (*queueFiles, error) {
		return openWhenOwn(ctx, log, dataDir, &foreign, func() {
			startScanners()
			notifier.Notify("STATUS=out of service: the queue file holds another device's taps")
		}, func(ctx context.Context) (*queueFiles, error) {
			return openWhenSpace(ctx, log, cfg.path(cfg.DataDir), &noSpace, func() {
				startScanners()
				notifier.Notify("STATUS=out of service: no space left for the queue file")
			}, func(ctx context.Context) (*queueFiles, error) {
				if err := durable.MkdirAll(dataDir, 0o700); err != nil {
					return nil, err
				}
				return openQueue(ctx, cfg, log, minClock, now, clock.wait)
			})
		})
	})
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			log.Info("validator stopped before its queue file was open")
			return nil
		}
		return err
	}
	q := qf.q
	defer func() {
		if err := q.Close(); err != nil {
			log.Error("closing the queue", "err", err)
		}
	}()

	var up *uplink.Uplink // set before any tap is decided
	acfg := cfg.agentConfig()
	acfg.Logger, acfg.Metrics, acfg.Now = log.With("part", "agent"), reg, now
	acfg.Heartbeat = func() { mon.Beat(partTapLoop) }
	if silentTapLoop(log) {
		acfg.Heartbeat = nil // a test hook, absent from the release build
	}
	acfg.Accepted = func() {
		if up != nil {
			up.Notify()
		}
	}
	acfg.ServiceChanged = func() {
		if up != nil {
			up.StatusChanged()
		}
	}
	a, err := agent.New(q, fb, acfg)
	if err != nil {
		return err
	}
	if err := seed(a, docs); err != nil {
		return err
	}
	if err := a.Ready(); err != nil {
		if cfg.MQTT.Broker == "" {
			return fmt.Errorf("%w: provision a keyring and a fare table ([provision] in the config)", err)
		}
		log.Warn("not provisioned yet: out of service until the fleet downlinks arrive", "err", err)
	}
	if oos := a.OutOfService(); strings.HasPrefix(oos, string(record.ReasonNoValidKey)+":") {
		log.Error("out of service: the keyring has no key valid now", "why", oos)
	}
	theAgent.Store(a)
	registerQueueMetrics(reg, q, qf.unreadable)
	registerDeviceMetrics(reg, sources, watch, a)
	var theUplink atomic.Pointer[uplink.Uplink]
	ackLatency := registerUplinkMetrics(reg, theUplink.Load)
	go beatQueue(ctx, q, mon)

	registerUpdateMetrics(reg, upd)
	var ackClock atomic.Bool // an ack has measured the clock
	if up, err = newUplink(cfg, keys, q, a, upd, scannerOut, now, log, &ackClock, ackLatency); err != nil {
		return fmt.Errorf("%w: mqtt: %w", errConfig, err)
	}
	theUplink.Store(up)
	if len(qf.unreadable) > 0 {
		names := make([]string, len(qf.unreadable))
		for i, f := range qf.unreadable {
			names[i] = filepath.Base(f)
		}
		// The detail goes into the status (the server keeps 128 bytes of it).
		a.Hold(record.ReasonQueueDamaged, fmt.Sprintf("%s unreadable; run reset-queue", strings.Join(names, ", ")))
		log.Error("out of service until an operator gives up the unreadable damaged queue files: their taps are lost unless "+
			"recovered by hand; then run farego-validator reset-queue --config FILE --i-understand", "files", names)
		go watchReset(ctx, qf.unreadable, 2*time.Second, func() {
			a.Hold("", "")
			log.Info("damaged queue files reset by the operator: back in service")
		})
	}
	running := &ctlRunning{a: a, q: q, scanners: scannerList, scannerOut: scannerOut}
	if upd != nil {
		running.update = upd.Status
	}
	if up != nil {
		running.connected = func() bool { return up.Stats().Connected }
		running.statusProblem = func() string { return up.Stats().StatusProblem }
		running.uplinkError = func() string { return uplinkProblem(up.Stats()) }
	}
	cs.running.Store(running)
	defer cs.running.Store(nil) // before the queue file closes
	stopUplink := runUplink(ctx, up, log)
	go watchScannerService(ctx, scannerOut, up, log)
	var restart atomic.Bool
	// A new version is confirmed (no rollback) only once its tap loop has
	// beaten, so one whose tap path hangs from the start is not.
	tapping := func() bool { return mon.Beaten(partTapLoop) }
	stopUpdater := runUpdater(ctx, upd, up, tapping, cancel, &restart, log)
	startScanners()
	if u := cfg.Selftest.TimeURL; u != "" {
		bound := time.Duration(cfg.Policy.MaxClockOffset)
		if bound == 0 {
			bound = agent.DefaultMaxClockOffset
		}
		go httpClock(ctx, u, bound, now, a, &ackClock, log.With("part", "clock"))
	}

	if cfg.MQTT.Broker != "" && cfg.MQTT.CertFile != "" {
		go watchClientCert(ctx, cfg.path(cfg.MQTT.CertFile), now, log.With("part", "tls"))
	}
	notifier.Notify("STATUS=running")
	as := a.Assignment()
	log.Info("validator running", "device", cfg.DeviceID, "route", as.Route, "vehicle", as.Vehicle, "scanners", len(sources),
		"versions", versionSummary(a.Versions()), "epoch", q.Epoch(), "software", agent.Version)

	runErr := a.Run(ctx, frames) // returns once every tap it started is decided
	notifier.Notify("STOPPING=1")
	told := ctx.Err() != nil
	err = stopScanners()
	if !told && err == nil {
		// Not told to stop, and no scanner failed: their input ended.
		log.Info("validator stopping: every scanner's input ended (a scanner on standard input ends with it)")
	} else {
		log.Info("validator stopping")
	}
	stopUplink()
	stopUpdater()
	if restart.Load() {
		return errRestart
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	return nil
}

// openWhileOutOfService runs open (the queue file: waiting for the clock,
// salvaging) while answering every scan "out of service".
func openWhileOutOfService(ctx context.Context, frames <-chan scanner.Frame, fb feedback.Feedback, lang ridertext.Language,
	clock *clockWait, open func(context.Context) (*queueFiles, error)) (*queueFiles, error) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-frames:
				reason := record.ReasonInternal
				if clock.waiting.Load() {
					reason = record.ReasonClock
				}
				fb.OutOfService(ctx, ridertext.Message(lang, string(reason)))
			}
		}
	}()
	qf, err := open(ctx)
	close(stop)
	<-done
	return qf, err
}

// spaceRetry is how often openWhenSpace looks for freed space, and
// spaceNeeded how much free space it waits for.
var (
	spaceRetry  = 2 * time.Second
	spaceNeeded = int64(256 << 10)
)

// openWhenSpace runs open, and while it fails for lack of space (a disk
// full at start: the queue file cannot be made or grown) waits, out of
// service (waiting set, onWait called once: scans are answered so), for
// spaceNeeded free in dir, then tries again. The validator used to exit:
// under systemd it started again every 2 s, two log lines each time, and
// no light told the riders or the driver anything.
func openWhenSpace(ctx context.Context, log *slog.Logger, dir string, waiting *atomic.Bool, onWait func(),
	open func(context.Context) (*queueFiles, error)) (*queueFiles, error) {
	for {
		qf, err := open(ctx)
		if !errors.Is(err, syscall.ENOSPC) {
			if waiting.Load() && err == nil {
				log.Info("queue: space freed: queue file open")
			}
			waiting.Store(false)
			return qf, err
		}
		if !waiting.Load() {
			log.Error("queue: no space left to open the queue file: out of service until space is freed", "data_dir", dir, "err", err)
			waiting.Store(true)
			onWait()
		}
		for {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(spaceRetry):
			}
			var st syscall.Statfs_t
			if statfsExisting(dir, &st) == nil && int64(st.Bavail)*int64(st.Bsize) >= spaceNeeded {
				break
			}
		}
	}
}

// ownRetry is how often openWhenOwn looks again at a queue file of
// another device.
var ownRetry = 10 * time.Second

// openWhenOwn runs open, and while it finds a queue file holding another
// device's unsent taps (a card or data directory moved to a board
// provisioned with another id) stays out of service (why set, onWait
// called once: scans are answered so, ctl status says why), looking again
// every ownRetry for a change in dir: the technician runs the file with its own device's
// bundle elsewhere, or gives this validator a data directory of its own.
// The validator used to exit: systemd started it again every 2 s with no
// light for the riders, and a pending update counted each start as a
// failed one and was rolled back.
func openWhenOwn(ctx context.Context, log *slog.Logger, dir string, why *atomic.Pointer[string], onWait func(),
	open func(context.Context) (*queueFiles, error)) (*queueFiles, error) {
	for {
		// Read before the open: a file moved away while it runs is a
		// change all the same (the open's own changes, a damaged file
		// moved aside, cost one open more).
		was := dirState(dir)
		qf, err := open(ctx)
		var fe foreignQueueError
		if !errors.As(err, &fe) {
			if why.Load() != nil && err == nil {
				log.Info("queue: the queue file is this device's: open")
			}
			why.Store(nil)
			return qf, err
		}
		if why.Load() == nil {
			msg := strings.TrimPrefix(fe.Error(), errConfig.Error()+": ")
			log.Error("out of service: the queue file holds another device's taps; nothing was changed in it; looking again every "+
				ownRetry.String(), "err", msg)
			why.Store(&msg)
			onWait()
		}
		// Opened again only once something in the data directory has
		// changed: each open is logged.
		for dirState(dir) == was {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(ownRetry):
			}
		}
	}
}

// dirState sums up the entries of dir (names, sizes, inodes), to tell
// when a file is moved in or out or replaced; "" if it cannot be read.
// Not their times: opening the queue file writes to it.
func dirState(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(&b, "%s %d %d\n", e.Name(), fi.Size(), ino)
	}
	return b.String()
}

// statfsExisting is statfs of dir, or of its nearest existing parent when
// dir could not be made yet (a full disk): the space it would be made in.
func statfsExisting(dir string, st *syscall.Statfs_t) error {
	for {
		err := statfs(dir, st)
		parent := filepath.Dir(dir)
		if err == nil || !errors.Is(err, syscall.ENOENT) || parent == dir {
			return err
		}
		dir = parent
	}
}

// linkKeys are the device's MQTT keys, read once at start (nil without
// [mqtt]).
type linkKeys struct {
	device ed25519.PrivateKey
	fleet  ed25519.PublicKey
}

// readLinkKeys reads the keys [mqtt] names.
func readLinkKeys(cfg *Config) (*linkKeys, error) {
	m := cfg.MQTT
	if m.Broker == "" {
		return nil, nil
	}
	devPath := cfg.path(m.DeviceKey)
	dev, err := keyfile.ReadPrivate(devPath)
	if err != nil {
		return nil, fmt.Errorf("%w: mqtt.device_key: %w%s", errConfig, err,
			notReadableFix(err, fmt.Sprintf("chown farego %s && chmod 0600 %s (the device's signing key, its user's alone)", devPath, devPath)))
	}
	fleet, err := keyfile.ReadPublic(cfg.path(m.FleetPublicKey))
	if err != nil {
		return nil, fmt.Errorf("%w: mqtt.fleet_public_key: %w", errConfig, err)
	}
	if err := checkClientTLS(cfg); err != nil {
		return nil, err
	}
	return &linkKeys{device: dev, fleet: fleet}, nil
}

// dataDirFix says how to fix a data_dir the validator cannot make or
// write, by the error's cause ("" for others).
func dataDirFix(err error, dir string) string {
	switch {
	case errors.Is(err, syscall.EROFS):
		return fmt.Sprintf(" (a read-only file system; under the unit, ProtectSystem=strict leaves only /var/lib/farego writable: "+
			"use data_dir = \"/var/lib/farego\", or add ReadWritePaths=%s in a drop-in, on a partition mounted read-write)", dir)
	case errors.Is(err, syscall.EACCES):
		return fmt.Sprintf(" (give it to the validator's user, chown farego %s, or use data_dir = \"/var/lib/farego\", which the unit makes)", dir)
	}
	return ""
}

// checkClientTLS checks the device's TLS client certificate and key
// (mqtt.cert_file, mqtt.key_file, a --tls bundle's) before anything is
// made. A certificate of another device (a bundle's files mixed up) and a
// key every user may read (its login to the broker: anyone on the device
// could log in as it) both started a validator that took taps and never
// sent them, the one logging only "not Authorized" at each attempt.
func checkClientTLS(cfg *Config) error {
	m := cfg.MQTT
	if m.Broker == "" || m.CertFile == "" {
		return nil
	}
	keyPath := cfg.path(m.KeyFile)
	info, err := os.Stat(keyPath)
	if err != nil {
		return fmt.Errorf("%w: mqtt.key_file: %w", errConfig, err)
	}
	if perm := info.Mode().Perm(); perm&0o007 != 0 {
		return fmt.Errorf("%w: mqtt.key_file %s is open to every user (mode %v), who could log in to the broker as this device: chmod 0640 it (owner root, group farego)",
			errConfig, keyPath, perm)
	}
	certPath := cfg.path(m.CertFile)
	b, err := os.ReadFile(certPath)
	if err != nil {
		return fmt.Errorf("%w: mqtt.cert_file: %w", errConfig, err)
	}
	cert, err := firstCertificate(b)
	if err != nil {
		return fmt.Errorf("%w: mqtt.cert_file %s: %w", errConfig, certPath, err)
	}
	if cn := cert.Subject.CommonName; cn != cfg.DeviceID {
		return fmt.Errorf("%w: mqtt.cert_file %s is the certificate of device %q, not of this one (device_id %q), and the broker would refuse it: install this device's whole bundle (farego-provision device --id %s)",
			errConfig, certPath, record.Printable(cn, 64), cfg.DeviceID, cfg.DeviceID)
	}
	return nil
}

// provisionDoc is a document of the provisioning bundle, read.
type provisionDoc struct {
	kind, path string
	body       []byte
}

// readProvision reads the provisioning bundle's documents the
// configuration names.
func readProvision(cfg *Config) ([]provisionDoc, error) {
	var out []provisionDoc
	for _, d := range []provisionDoc{
		{kind: record.DocKeyring, path: cfg.Provision.Keyring},
		{kind: record.DocFares, path: cfg.Provision.Fares},
		{kind: record.DocDenyList, path: cfg.Provision.DenyList},
	} {
		if d.path == "" {
			continue
		}
		var err error
		if d.body, err = os.ReadFile(cfg.path(d.path)); err != nil {
			return nil, fmt.Errorf("%w: provision.%s: %w", errConfig, d.kind, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// seed applies the provisioning bundle's documents that are newer than the
// device's state.
func seed(a *agent.Agent, docs []provisionDoc) error {
	for _, d := range docs {
		if err := a.Seed(d.kind, d.body); err != nil {
			return fmt.Errorf("%w: provision.%s (%s): %w", errConfig, d.kind, d.path, err)
		}
	}
	return nil
}

func buildFeedback(cfg *Config, log *slog.Logger, stdout io.Writer) (feedback.Feedback, func(), error) {
	var out feedback.Multi
	closeFn := func() {}
	if cfg.Feedback.Console == nil || *cfg.Feedback.Console {
		mode := feedback.ColorAuto
		switch cfg.Feedback.Color {
		case "always":
			mode = feedback.ColorAlways
		case "never":
			mode = feedback.ColorNever
		}
		cc := feedback.ConsoleConfig{Color: mode}
		if isJournal(stdout) {
			// Each line is a journal entry: a scanner sending garbage
			// must not flood it (journald then drops the other lines).
			cc.RepeatEvery = time.Second
		}
		out = append(out, feedback.NewConsole(stdout, cc))
	}
	if gcfg, ok := gpioConfig(cfg); ok {
		g, err := feedback.NewGPIO(gcfg, log.With("part", "gpio"))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: feedback: %w", errConfig, err)
		}
		out = append(out, g)
		closeFn = func() { g.Close() }
	}
	return out, closeFn, nil
}

func buildSources(cfg *Config, log *slog.Logger, stdin io.Reader, watch *scannerWatch) ([]scanner.Source, error) {
	var out []scanner.Source
	for _, s := range cfg.Scanners {
		if s.Path == "-" {
			out = append(out, scanner.NewLineSource(s.Name, stdin, log.With("part", "scanner")))
			continue
		}
		scfg := scanner.Config{
			Name: s.Name, Path: cfg.path(s.Path), Baud: s.Baud,
			Framing: scanner.Framing{Terminator: s.Terminator, Prefix: s.Prefix, Suffix: s.Suffix, MaxLen: s.MaxLen,
				InterCharTimeout: time.Duration(s.InterCharTimeout)},
		}
		watch.config(&scfg)
		src, err := newScanner(s.Type, scfg, log.With("part", "scanner"))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errConfig, err)
		}
		out = append(out, src)
	}
	return out, nil
}

func registerQueueMetrics(reg *metrics.Registry, q *queue.Queue, unreadable []string) {
	stat := func(f func(queue.Stats) float64) func() float64 {
		return func() float64 {
			s, err := q.Stats()
			if err != nil {
				return -1
			}
			return f(s)
		}
	}
	reg.GaugeFunc("farego_queue_depth", "Accepted taps waiting for the server's ack (salvaged ones included).",
		stat(func(s queue.Stats) float64 { return float64(s.Count + s.Adopted) }))
	reg.GaugeFunc("farego_queue_salvaged_depth", "Taps salvaged from a damaged queue file still waiting for the server's ack.",
		stat(func(s queue.Stats) float64 { return float64(s.Adopted) }))
	salvage := func(f func(*wire.SalvageStatus) int) func() float64 {
		return func() float64 {
			if st := lastSalvage(q); st != nil {
				return float64(f(st))
			}
			return 0
		}
	}
	reg.GaugeFunc("farego_queue_salvaged_records", "Unsent taps recovered from the last damaged queue file.",
		salvage(func(s *wire.SalvageStatus) int { return s.Records }))
	reg.GaugeFunc("farego_queue_salvage_damaged_records", "Records of the last damaged queue file the hash chain showed damaged (not sent).",
		salvage(func(s *wire.SalvageStatus) int { return s.Damaged }))
	reg.GaugeFunc("farego_queue_salvage_lost_pages", "Pages of the last damaged queue file that could not be read (their taps are lost).",
		salvage(func(s *wire.SalvageStatus) int { return s.LostPages }))
	reg.GaugeFunc("farego_queue_damaged_unreadable", "Damaged queue files nothing can be read from (out of service until reset-queue).",
		func() float64 {
			n := 0
			for _, f := range unreadable {
				if _, err := os.Stat(f); err == nil {
					n++
				}
			}
			return float64(n)
		})
	reg.GaugeFunc("farego_queue_oldest_unacked_seconds", "Age of the oldest tap not yet acknowledged by the server.",
		stat(func(s queue.Stats) float64 {
			if s.OldestUnacked.IsZero() {
				return 0
			}
			return time.Since(s.OldestUnacked).Seconds()
		}))
	reg.GaugeFunc("farego_queue_file_bytes", "Size of the queue's bbolt file.",
		stat(func(s queue.Stats) float64 { return float64(s.FileSize) }))
	// The queue's bounds beside its figures, for an alert before it is
	// full (then the validator is out of service): a rule could not be
	// written without them.
	maxRecords, maxUsed := q.Limits()
	reg.GaugeFunc("farego_queue_used_bytes", "Bytes of the queue's file in use (its pages not free): unacked taps, the archive of acked ones, the device's state.",
		stat(func(s queue.Stats) float64 { return float64(s.UsedSize) }))
	reg.GaugeFunc("farego_queue_max_records", "Unacked taps at which the validator refuses new ones (queue.max_records): out of service.",
		func() float64 { return float64(maxRecords) })
	reg.GaugeFunc("farego_queue_max_used_bytes", "Bytes of the queue's file in use at which the validator refuses new taps (7/8 of what its file may grow to under queue.max_file_size): out of service.",
		func() float64 { return float64(maxUsed) })
}

// metricsRetry is how often a validator whose metrics address another
// program holds tries to take it again.
const metricsRetry = 5 * time.Second

// Bounds of the metrics server. Anyone who can reach metrics.listen (any
// local user on 127.0.0.1) could open keep-alive connections, ask once on
// each and leave them open: each held one for ever, some 20 KB of memory
// and a file descriptor (20,000 of them: 400 MB, and no descriptor left
// for the broker or a scanner coming back). A scraper needs one.
const (
	maxMetricsConns   = 16
	metricsIdle       = 2 * time.Minute
	metricsMaxHeaders = 8 << 10
)

// limitListener accepts at most cap(sem) connections at once and closes
// the others as soon as they are accepted.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			c.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// serveMetrics serves reg on addr; status is the command that asks this
// validator's status ("": no control socket). An address in use is not
// an error: taps do not depend on /metrics, and the bundle's default
// port, 9100, is also node_exporter's (installed beside the validator to
// watch the computer, it stopped the validator at every start: no taps
// at all). A validator already running with this configuration was
// refused before, on its control socket (ctlSocketFree); so this one
// runs without /metrics, logs why, and serves them once the address is
// free (with the control socket off, a second start is refused at the
// queue file's lock instead).
func serveMetrics(addr, status string, reg *metrics.Registry, log *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", reg)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: metricsIdle, MaxHeaderBytes: metricsMaxHeaders}
	serve := func(ln net.Listener) {
		go srv.Serve(&limitListener{Listener: ln, sem: make(chan struct{}, maxMetricsConns)})
		log.Info("metrics listening", "addr", ln.Addr().String())
	}
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		serve(ln)
		return shutdown, nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%w: metrics.listen: %w", errConfig, err)
	}
	args := []any{"addr", addr, "err", err}
	if status != "" {
		args = append(args, "status", status)
	}
	log.Error("metrics.listen: the address is in use by another program (an exporter: node_exporter's default port is 9100; or another validator's metrics.listen); taking taps without /metrics until it is free: give this validator another metrics.listen",
		args...)
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(metricsRetry)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if ln, err := net.Listen("tcp", addr); err == nil {
				serve(ln)
				return
			}
		}
	}()
	return func() {
		close(done)
		<-exited
		shutdown()
	}, nil
}

// versionSummary is a device's document versions for its start line: the
// documents' own, and the deny list's shards (up to 256 of them) as how
// many there are and their lowest and highest versions, not each one.
func versionSummary(v map[string]uint64) map[string]any {
	out := map[string]any{}
	shards, lo, hi := 0, uint64(0), uint64(0)
	for k, n := range v {
		if !strings.HasPrefix(k, record.DocDenyList+"/") {
			out[k] = n
			continue
		}
		if shards == 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
		shards++
	}
	if shards > 0 {
		out["denylist_shards"] = fmt.Sprintf("%d, versions %d to %d", shards, lo, hi)
	}
	return out
}

// noAckAfter is how many ack timeouts in a row, connected, make ctl status
// (uplink_error) and selftest say the server takes none of the device's
// batches: with the doubling ack timeout, over a minute without any ack.
const noAckAfter = 3

// uplinkProblem is why the uplink does not sync: the last error while it
// is down; connected, a run of sends without any ack. A device whose
// device.key is not the one registered for its id (validator.toml of a
// new bundle copied without its device.key) is let in by the broker, and
// the server refuses its batches without a word: the device only logged
// "no ack from the server in time" once and ctl status said connected.
func uplinkProblem(s uplink.Stats) string {
	if !s.Connected {
		return s.LastError
	}
	if s.AckTimeoutsInRow >= noAckAfter {
		// The server answers nothing either while it, or its database,
		// is down (ingest.RejectStoreError): then every device says so,
		// and no bundle is to be installed.
		return fmt.Sprintf("connected, but no ack from the server for %d sends in a row: if other devices say so too, the server "+
			"or its database is down or not reading the broker; if only this one, the server refuses its batches "+
			"(device.key is not the key registered for this device: install the whole bundle of its last farego-provision device, "+
			"not only validator.toml) or the device refuses the server's acks (fleet.pub of another fleet)", s.AckTimeoutsInRow)
	}
	return ""
}

// isJournal reports whether w is the systemd journal's stream
// (cli.IsJournal).
func isJournal(w io.Writer) bool { return cli.IsJournal(w) }

// watchClientCert logs the end of the device's TLS client certificate
// (mqtt.cert_file) at start and every day while it runs: an error once it
// has ended (the broker refuses the device, which keeps its taps), a
// warning within certWarnBefore. Only selftest said so: a validator runs
// for months, and nobody runs selftest on a working bus.
func watchClientCert(ctx context.Context, path string, now func() time.Time, log *slog.Logger) {
	check := func() {
		b, err := os.ReadFile(path)
		if err != nil {
			return // the uplink says why it cannot connect
		}
		cert, err := firstCertificate(b)
		if err != nil {
			return
		}
		attrs := []any{"file", path, "not_after", cert.NotAfter.UTC().Format(time.RFC3339), "fix", provisionAgain}
		switch left := cert.NotAfter.Sub(now()); {
		case left < 0:
			log.Error("the device's TLS certificate has expired: the broker refuses the device, its taps stay on it", attrs...)
		case left < certWarnBefore:
			log.Warn("the device's TLS certificate ends soon: from then on the broker refuses the device",
				append([]any{"days_left", int(left.Hours() / 24)}, attrs...)...)
		}
	}
	check()
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}
