package update

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/farego/farego/driver/backoff"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/sync/wire"
)

// Defaults for the zero fields of Config.
const (
	// DefaultMaxSize bounds a download.
	DefaultMaxSize = 64 << 20
	// DefaultHealthTimeout is how long a new version has to report healthy.
	DefaultHealthTimeout = 2 * time.Minute
	// DefaultMaxBoots is how many starts of an unconfirmed version are
	// allowed before it counts as a crash loop.
	DefaultMaxBoots = 3
	// DefaultMinRetry and DefaultMaxRetry bound the wait between two
	// download attempts after a network error.
	DefaultMinRetry = 2 * time.Second
	DefaultMaxRetry = 5 * time.Minute
	// DefaultRequestTimeout bounds one download request without progress.
	DefaultRequestTimeout = 2 * time.Minute
	// DefaultReserveBytes is the free space a download must leave on the
	// binary's file system: the validator's queue may share it, and a
	// queue that cannot fsync takes the validator out of service.
	DefaultReserveBytes = 64 << 20
)

// statfs is the file system query (a test replaces it to simulate a full
// disk).
var statfs = syscall.Statfs

// Config configures an Updater. The zero value of every optional field
// means its default.
type Config struct {
	// Binary is the installed executable (default: os.Executable(), with
	// symlinks resolved). Its directory must be writable.
	Binary string
	// Current is the running version (agent.Version). Required.
	Current string
	// DeviceID is the device's id (for the rollout). Required.
	DeviceID string
	// Arch is the device's architecture in manifests (default Arch()).
	Arch string
	// FleetPublicKey checks the manifests. Required.
	FleetPublicKey ed25519.PublicKey
	// BaseURL is the settlement server's HTTP address (http://host:port or
	// https://…); binaries come from BaseURL/v1/releases/VERSION/ARCH.
	// Without it, rollouts are logged and not applied.
	BaseURL string
	// Client makes the download requests (default: a client whose
	// requests give up after RequestTimeout).
	Client *http.Client
	// MaxSize bounds a download (default DefaultMaxSize).
	MaxSize int64
	// ReserveBytes is the free space a download must leave (default
	// DefaultReserveBytes).
	ReserveBytes int64
	// HealthTimeout is how long a new version has to report healthy
	// (default DefaultHealthTimeout).
	HealthTimeout time.Duration
	// MaxBoots is how many starts of an unconfirmed version are allowed
	// (default DefaultMaxBoots).
	MaxBoots int
	// MinRetry and MaxRetry bound the wait between download attempts.
	MinRetry, MaxRetry time.Duration
	// RequestTimeout bounds one download request (default
	// DefaultRequestTimeout).
	RequestTimeout time.Duration
	// Logger receives the updater's log records; nil discards them.
	Logger *slog.Logger
	// Now is the clock of the state file's times; nil means time.Now.
	Now func() time.Time
	// BootID names the kernel's boot (default: $FAREGO_BOOT_ID, which
	// the unit sets from systemd's %b, or the kernel's
	// /proc/sys/kernel/random/boot_id; "" when unknown). Boot counts only
	// the starts of an unconfirmed version within one kernel boot.
	BootID func() string
}

// Arch returns this build's architecture as manifests name it: armv6,
// armv7, arm64, amd64, … (GOARCH, with GOARM for 32-bit ARM).
func Arch() string {
	if runtime.GOARCH == "arm" {
		return "armv" + goarm()
	}
	return runtime.GOARCH
}

// state is the updater's state file.
type state struct {
	Pending *pending `json:"pending,omitempty"`
	Failed  *failure `json:"failed,omitempty"`
	// Installed is the newest rollout (downlink version) installed.
	Installed uint64 `json:"installed_rollout,omitempty"`
	// Newest is the newest rollout seen, whatever came of it (installed,
	// nothing to do, not for this device, failed): an older one seen
	// again (a replay of a signed rollout) is refused, so it cannot take
	// the device back to a version since replaced.
	Newest uint64 `json:"newest_rollout,omitempty"`
	// GuardLost: the state file was found damaged (or gone while a
	// previous binary is kept) and the guard file (GuardFile) could not
	// be read either, so the newest rollout seen is unknown and a
	// replayed old rollout could not be told apart: until a rollout is
	// installed (its number becomes the guard again), a rollout older
	// than the running version is refused even where it allows a
	// downgrade.
	GuardLost bool `json:"guard_lost,omitempty"`
}

// pending is an installed version waiting for its health check.
type pending struct {
	Version string    `json:"version"`
	From    string    `json:"from"` // the version it replaced (kept as .B.previous)
	At      time.Time `json:"at"`
	Boots   int       `json:"boots"`
	// BootID is the kernel boot of the last start counted in Boots: a
	// start in another one follows a power cut or a reboot, not a crash.
	BootID  string `json:"boot_id,omitempty"`
	Rollout uint64 `json:"rollout"` // the rollout downlink's version
	// SHA256 is the installed binary's (the manifest's), to tell at the
	// next start a binary that reports another version than its
	// release's from one that never got in place.
	SHA256 string `json:"sha256,omitempty"`
}

// failure is the last failed update.
type failure struct {
	Version   string    `json:"version"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
	Rollout   uint64    `json:"rollout"`
	Restoring bool      `json:"restoring,omitempty"` // the previous binary is being put back
}

// offer is a rollout downlink handed to Offer.
type offer struct {
	version uint64
	body    []byte
}

// Updater applies signed rollouts to the running binary. Use New, Boot at
// start, Run beside the validator, Offer for every rollout downlink and
// Healthy once the validator works.
type Updater struct {
	cfg    Config
	log    *slog.Logger
	dir    string
	name   string
	offers chan offer

	mu      sync.Mutex
	st      state
	guard   uint64        // the rollout GuardFile holds (0: none, or unreadable)
	healthy chan struct{} // closed by Healthy
	once    sync.Once
	changed func() // see OnChange

	failedStart bool // made by FailedStart: Boot counts a start that failed
}

// OnChange sets fn to be called once the updater has recorded a refused
// update (Status changed), so that the device reports it at once: the
// operator saw the failure only with the next status, up to a minute
// later. fn must not block.
func (u *Updater) OnChange(fn func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.changed = fn
}

// New checks cfg and returns an Updater. It reads nothing yet: Boot does.
func New(cfg Config) (*Updater, error) {
	if err := cfg.runningBinary(); err != nil {
		return nil, err
	}
	if cfg.Current == "" || cfg.DeviceID == "" {
		return nil, fmt.Errorf("%w: Current and DeviceID are required", ErrConfig)
	}
	if len(cfg.FleetPublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: no fleet public key", ErrConfig)
	}
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: server URL %q: want http://host:port or https://host", ErrConfig, cfg.BaseURL)
		}
	}
	if cfg.Arch == "" {
		cfg.Arch = Arch()
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.ReserveBytes <= 0 {
		cfg.ReserveBytes = DefaultReserveBytes
	}
	cfg.MaxSize = min(cfg.MaxSize, wire.MaxBinarySize)
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = DefaultHealthTimeout
	}
	if cfg.MinRetry <= 0 {
		cfg.MinRetry = DefaultMinRetry
	}
	if cfg.MaxRetry < cfg.MinRetry {
		cfg.MaxRetry = max(DefaultMaxRetry, cfg.MinRetry)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.RequestTimeout}
	}
	return build(cfg), nil
}

// build fills in the defaults Boot needs and returns cfg's Updater.
func build(cfg Config) *Updater {
	if cfg.MaxBoots <= 0 {
		cfg.MaxBoots = DefaultMaxBoots
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BootID == nil {
		cfg.BootID = kernelBootID
	}
	return &Updater{cfg: cfg, log: cfg.Logger, dir: filepath.Dir(cfg.Binary), name: filepath.Base(cfg.Binary),
		offers: make(chan offer, 1), healthy: make(chan struct{})}
}

// runningBinary sets an empty Binary to the running executable.
func (cfg *Config) runningBinary() error {
	if cfg.Binary != "" {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("%w: the running binary: %w", ErrConfig, err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return fmt.Errorf("%w: the running binary: %w", ErrConfig, err)
	}
	cfg.Binary = exe
	return nil
}

// FailedStart is Boot for a start that failed before the validator could
// make its Updater: a configuration, provisioning file or key the new
// version cannot read. Of cfg it takes Binary (default: the running
// executable), Current, MaxBoots, Logger and BootID alone. Such a start
// counts towards MaxBoots as a crash does, and the start past it puts the
// previous binary back ([ErrRolledBack]): the new version's own boot check
// came after what failed, so it never counted, and a release that could
// not read the configuration its validators run with was started again
// and again, never rolled back (an operator's upgrade review). Nothing
// pending: nothing done.
func FailedStart(cfg Config) error {
	if err := cfg.runningBinary(); err != nil {
		return err
	}
	if cfg.Current == "" {
		return fmt.Errorf("%w: Current is required", ErrConfig)
	}
	u := build(cfg)
	u.failedStart = true
	return u.Boot()
}

func (u *Updater) path(suffix string) string { return filepath.Join(u.dir, "."+u.name+suffix) }

// StateFile is the updater's state file.
func (u *Updater) StateFile() string { return u.path(".update.json") }

// GuardFile is the second copy of the replay guard: the newest rollout
// seen, beside the state file, so that a damaged state file does not lose
// it.
func (u *Updater) GuardFile() string { return u.path(".update-guard") }

// PreviousFile is where the previous binary is kept.
func (u *Updater) PreviousFile() string { return u.path(".previous") }

// DownloadFile is the download in progress.
func (u *Updater) DownloadFile() string { return u.path(".download") }

// DownloadForFile names the binary DownloadFile is a part of (the
// manifest's SHA-256): a partial download is resumed only for that
// binary, never as the head of another release's.
func (u *Updater) DownloadForFile() string { return u.path(".download-for") }

// load reads the state file and the guard file; u.mu must be held. The
// replay guard is the newest rollout of both valid copies. A state file
// that is damaged, unreadable, or gone while a previous binary is kept
// (only an install leaves one, after writing the state) starts afresh
// with the guard file's rollout; only when the guard file cannot be read
// either is the replay guard lost (GuardLost).
func (u *Updater) load() error {
	g, gerr := u.readGuard()
	if gerr != nil && !errors.Is(gerr, fs.ErrNotExist) {
		u.log.Error("update: guard file damaged; the state file's copy of the newest rollout is used",
			"file", u.GuardFile(), "err", gerr)
	}
	u.guard = g
	// afresh starts a state lost: from the guard file if it was read.
	afresh := func(msg string, args ...any) {
		if gerr == nil {
			u.log.Error("update: "+msg+"; starting afresh, the newest rollout kept from the guard file",
				append(args, "guard_file", u.GuardFile(), "newest_rollout", g)...)
			u.st = state{Newest: g}
			return
		}
		u.log.Error("update: "+msg+" and no guard file to read; starting afresh, refusing downgrades until an update is installed",
			append(args, "guard_file", u.GuardFile(), "guard_err", gerr)...)
		u.st = state{GuardLost: true}
	}
	b, err := os.ReadFile(u.StateFile())
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Lstat(u.PreviousFile()); err == nil {
			afresh("state file gone but a previous binary kept", "file", u.StateFile())
			return u.save()
		}
		u.st = state{Newest: g} // a new device (or the guard file alone left)
		return nil
	}
	if err != nil {
		afresh("state file unreadable", "file", u.StateFile(), "err", err)
		return fmt.Errorf("update: read state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		// A damaged state file must not keep the validator down: start
		// afresh (the binary in place runs; nothing is rolled back).
		afresh("state file damaged", "file", u.StateFile(), "err", err)
		return u.save()
	}
	st.Newest = max(st.Newest, g)
	u.st = st
	// A guard file behind, damaged or missing (a state file written
	// before it existed) is brought up to date now; failing that is no
	// reason to skip the boot checks.
	if err := u.saveGuard(); err != nil {
		u.log.Error("update: the guard file could not be brought up to date", "err", err)
	}
	return nil
}

// guardMagic starts the guard file: "farego-update-guard N crc32=C\n",
// C the CRC-32 (IEEE, 8 hex digits) of the text before " crc32=", so a
// damaged file is told from a valid one.
const guardMagic = "farego-update-guard"

// readGuard reads GuardFile: its rollout, or an error (fs.ErrNotExist
// when there is none).
func (u *Updater) readGuard() (uint64, error) {
	b, err := os.ReadFile(u.GuardFile())
	if err != nil {
		return 0, err
	}
	text, sum, ok := strings.Cut(strings.TrimSuffix(string(b), "\n"), " crc32=")
	n, found := strings.CutPrefix(text, guardMagic+" ")
	if !ok || !found || sum != fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(text))) {
		return 0, fmt.Errorf("update: guard file %q: not a valid guard", u.GuardFile())
	}
	v, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("update: guard file %q: %w", u.GuardFile(), err)
	}
	return v, nil
}

// saveGuard writes the newest rollout seen to GuardFile durably if it is
// newer than the one there; u.mu must be held.
func (u *Updater) saveGuard() error {
	g := max(u.st.Newest, u.st.Installed)
	if g <= u.guard {
		return nil
	}
	text := fmt.Sprintf("%s %d", guardMagic, g)
	b := fmt.Appendf(nil, "%s crc32=%08x\n", text, crc32.ChecksumIEEE([]byte(text)))
	if err := durable.WriteFile(u.GuardFile(), b, 0o600); err != nil {
		return fmt.Errorf("update: save the guard file: %w", err)
	}
	u.guard = g
	return nil
}

// save writes the guard file (when the guard advanced) and the state
// durably; u.mu must be held. It tries both and returns their errors.
func (u *Updater) save() error {
	gerr := u.saveGuard()
	b, err := json.Marshal(u.st)
	if err != nil {
		return errors.Join(gerr, err)
	}
	if err := durable.WriteFile(u.StateFile(), b, 0o600); err != nil {
		return errors.Join(gerr, fmt.Errorf("update: save state: %w", err))
	}
	return gerr
}

// Boot reads the state at start. For a version installed and not yet
// confirmed it counts this start; past MaxBoots starts (a crash loop), or
// when a rollback was under way, it puts the previous binary back and
// returns ErrRolledBack: the caller exits so that it runs.
func (u *Updater) Boot() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.load(); err != nil {
		return err
	}
	if f := u.st.Failed; f != nil && f.Restoring {
		if f.Version == u.cfg.Current {
			return u.restore()
		}
		f.Restoring = false // it was restored before a power cut
		return u.save()
	}
	p := u.st.Pending
	if p == nil {
		return nil
	}
	if p.Version != u.cfg.Current {
		if _, sum, err := fileSHA256(u.cfg.Binary, wire.MaxBinarySize+1); err == nil && p.SHA256 != "" && sum == p.SHA256 {
			// The release's binary is running and says it is another
			// version: it was built with another version stamp. Kept, it
			// would take its own release again at every rollout document
			// (download, install, restart, for ever); put the previous
			// one back and record the failure, which this rollout does
			// not retry.
			return u.rollback(fmt.Sprintf("the binary of release %s reports version %s: it was built with another version "+
				"stamp (build it with make dist VERSION=%s)", p.Version, u.cfg.Current, p.Version))
		}
		// The new binary never got in place (a power cut between the
		// state and the rename), or someone put another one there.
		u.log.Warn("update: the installed version is not the one pending; forgetting it",
			"pending", p.Version, "running", u.cfg.Current)
		u.st.Pending = nil
		return u.save()
	}
	// Only the starts since the kernel booted count: the power goes
	// whenever the ignition does (and while the engine cranks), and a
	// version that reached no broker before three cuts was rolled back
	// as a crash loop, the same version refused until a new rollout.
	id := u.cfg.BootID()
	if id == "" {
		// A unit installed before FAREGO_BOOT_ID (an update brings the
		// binary, not the unit), whose ProcSubset=pid hides the kernel's.
		u.log.Warn("update: the kernel's boot id is unknown ($"+BootIDEnv+" unset, /proc/sys hidden): every start of the new version "+
			"counts towards max_boots, one after a power cut too; install this release's unit (Environment="+BootIDEnv+"=%b)",
			"version", p.Version)
	}
	if id != p.BootID {
		if p.BootID != "" && id != "" && p.Boots > 0 {
			u.log.Info("update: the previous start of the new version ended with the machine (a power cut or a reboot), not counted as a failed start",
				"version", p.Version, "starts_before", p.Boots)
			p.Boots = 0
		}
		p.BootID = id
	}
	p.Boots++
	if p.Boots > u.cfg.MaxBoots {
		return u.rollback(fmt.Sprintf("version %s stopped %d times at start without reporting healthy", p.Version, p.Boots-1))
	}
	if u.failedStart {
		u.log.Warn("update: the new version failed to start; counted towards max_boots",
			"version", p.Version, "from", p.From, "boot", p.Boots, "max_boots", u.cfg.MaxBoots)
	} else {
		u.log.Info("update: running a new version; waiting for it to report healthy",
			"version", p.Version, "from", p.From, "boot", p.Boots, "timeout", u.cfg.HealthTimeout.String())
	}
	return u.save()
}

// rollback records the failure of the pending version and puts the
// previous binary back; u.mu must be held. It returns ErrRolledBack.
func (u *Updater) rollback(reason string) error {
	p := u.st.Pending
	u.st.Pending = nil
	u.st.Failed = &failure{Version: p.Version, Reason: reason, At: u.cfg.Now().UTC(), Rollout: p.Rollout, Restoring: true}
	if err := u.save(); err != nil {
		return err
	}
	u.log.Error("update: rolling back to the previous version", "version", p.Version, "previous", p.From, "reason", reason)
	return u.restore()
}

// restore renames the previous binary over the running one; u.mu must be
// held.
func (u *Updater) restore() error {
	if err := durable.Rename(u.PreviousFile(), u.cfg.Binary); err != nil {
		return fmt.Errorf("update: put the previous binary back: %w", err)
	}
	u.st.Failed.Restoring = false
	if err := u.save(); err != nil {
		return err
	}
	return ErrRolledBack
}

// Pending reports whether the running version is waiting for its health
// check.
func (u *Updater) Pending() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st.Pending != nil
}

// Healthy confirms the running version: the validator calls it once it
// has reached the broker and its tap loop has beaten once. Calls after
// the first do nothing.
func (u *Updater) Healthy() error {
	var err error
	u.once.Do(func() {
		close(u.healthy)
		u.mu.Lock()
		defer u.mu.Unlock()
		if p := u.st.Pending; p != nil && p.Version == u.cfg.Current {
			u.st.Pending = nil
			err = u.save()
			u.log.Info("update: new version healthy", "version", p.Version, "from", p.From, "boots", p.Boots)
		}
	})
	return err
}

// Status returns the update report for the device status (nil when there
// is nothing to report).
func (u *Updater) Status() *wire.UpdateStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Pending == nil && u.st.Failed == nil {
		return nil
	}
	s := &wire.UpdateStatus{}
	if p := u.st.Pending; p != nil {
		s.Pending = p.Version
	}
	if f := u.st.Failed; f != nil {
		s.Failed, s.FailedReason, s.FailedAt = f.Version, cutReason(f.Reason), f.At
	}
	return s
}

// cutReason makes an error text a status can carry: valid UTF-8, at most
// wire.MaxFailedReason bytes, cut on a character (the server refuses a
// status with a longer reason).
func cutReason(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= wire.MaxFailedReason {
		return s
	}
	n := wire.MaxFailedReason
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Offer hands the updater a rollout downlink (version and body, already
// checked against the fleet key). It never blocks: a newer offer replaces
// one not yet taken.
func (u *Updater) Offer(version uint64, body []byte) {
	o := offer{version, body}
	for {
		select {
		case u.offers <- o:
			return
		default:
		}
		select {
		case <-u.offers:
		default:
		}
	}
}

// Run applies offered rollouts until ctx is done. It returns ErrRestart
// once a new binary is installed (the caller stops and exits so that
// systemd starts it), ErrRolledBack if the running version did not report
// healthy within HealthTimeout (the previous binary is back: exit too),
// and nil when ctx is done.
func (u *Updater) Run(ctx context.Context) error {
	var deadline <-chan time.Time
	healthy := u.healthy // nil once seen: a closed channel is always ready
	if u.Pending() {
		t := time.NewTimer(u.cfg.HealthTimeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-healthy:
			healthy, deadline = nil, nil
		case <-deadline:
			u.mu.Lock()
			var err error
			if u.st.Pending != nil {
				err = u.rollback(fmt.Sprintf("version %s did not report healthy within %s", u.st.Pending.Version, u.cfg.HealthTimeout))
			}
			u.mu.Unlock()
			if err != nil {
				return err
			}
		case o := <-u.offers:
			if err := u.apply(ctx, o); err != nil {
				return err
			}
		}
	}
}

// apply carries out one rollout: ErrRestart once installed, nil when
// there is nothing to do or it failed (logged and recorded).
func (u *Updater) apply(ctx context.Context, o offer) error {
	r, err := wire.ParseRollout(o.body)
	if err != nil {
		u.log.Warn("update: rollout refused", "rollout", o.version, "reason", err)
		return nil
	}
	u.mu.Lock()
	newest := max(u.st.Newest, u.st.Installed)
	if o.version > u.st.Newest {
		u.st.Newest = o.version
		if err := u.save(); err != nil {
			u.log.Error("update: recording the newest rollout failed", "rollout", o.version, "err", err)
		}
	}
	u.mu.Unlock()
	if o.version < newest {
		u.log.Warn("update: rollout older than one seen before refused", "rollout", o.version, "newest", newest)
		return nil
	}
	if !r.Includes(u.cfg.DeviceID) {
		u.log.Debug("update: this device is not in the rollout", "version", r.Version, "rollout", o.version)
		return nil
	}
	m, err := r.For(u.cfg.Arch, u.cfg.FleetPublicKey)
	if errors.Is(err, wire.ErrNoBuild) {
		// The operator's to mend (a build to add), not a manifest this
		// device distrusts: the error says so itself.
		u.fail(r.Version, o.version, err.Error())
		return nil
	}
	if err != nil {
		u.fail(r.Version, o.version, fmt.Sprintf("manifest refused: %v", err))
		return nil
	}
	u.mu.Lock()
	pend, failed, guardLost := u.st.Pending, u.st.Failed, u.st.GuardLost
	u.mu.Unlock()
	switch cmp, ok := wire.CompareVersions(m.Version, u.cfg.Current); {
	case m.Version == u.cfg.Current || (ok && cmp == 0):
		u.log.Debug("update: already running the rollout's version", "version", m.Version)
		return nil
	case pend != nil:
		u.log.Info("update: a rollout arrived before this version was confirmed; it waits", "version", m.Version, "pending", pend.Version)
		return nil
	case failed != nil && failed.Version == m.Version && failed.Rollout >= o.version:
		u.log.Debug("update: this version failed here already; waiting for a new rollout", "version", m.Version, "reason", failed.Reason)
		return nil
	case ok && cmp < 0 && guardLost:
		u.fail(m.Version, o.version, fmt.Sprintf("version %s is older than the running %s: the update state was found damaged "+
			"(the newest rollout seen is lost), so no downgrade until an update is installed", m.Version, u.cfg.Current))
		return nil
	case ok && cmp < 0 && !r.AllowDowngrade:
		u.fail(m.Version, o.version, fmt.Sprintf("version %s is older than the running %s and the rollout does not allow a downgrade", m.Version, u.cfg.Current))
		return nil
	case !ok:
		u.log.Warn("update: the running version is not a release version; installing the rollout's", "running", u.cfg.Current, "version", m.Version)
	}
	if m.Size > u.cfg.MaxSize {
		u.fail(m.Version, o.version, fmt.Sprintf("binary of %d bytes, this device takes at most %d", m.Size, u.cfg.MaxSize))
		return nil
	}
	if u.cfg.BaseURL == "" {
		u.log.Warn("update: a rollout for this device, but no server URL to download it from ([update] server)", "version", m.Version)
		return nil
	}
	if err := u.checkSpace(m); err != nil {
		u.fail(m.Version, o.version, err.Error())
		return nil
	}
	u.log.Info("update: downloading", "version", m.Version, "arch", m.Arch, "size", m.Size, "rollout", o.version)
	if err := u.download(ctx, m); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		os.Remove(u.DownloadFile())
		os.Remove(u.DownloadForFile())
		u.fail(m.Version, o.version, err.Error())
		return nil
	}
	if err := u.install(m, o.version); err != nil {
		os.Remove(u.DownloadFile())
		os.Remove(u.DownloadForFile())
		u.fail(m.Version, o.version, err.Error())
		return nil
	}
	u.log.Info("update: installed; restarting into the new version", "version", m.Version, "from", u.cfg.Current)
	return ErrRestart
}

// fail records and logs a failed update.
func (u *Updater) fail(version string, rollout uint64, reason string) {
	u.log.Error("update: refused", "version", version, "rollout", rollout, "reason", reason)
	u.mu.Lock()
	u.st.Failed = &failure{Version: version, Reason: reason, At: u.cfg.Now().UTC(), Rollout: rollout}
	if err := u.save(); err != nil {
		u.log.Error("update: could not record the failure", "err", err)
	}
	changed := u.changed
	u.mu.Unlock()
	if changed != nil {
		changed()
	}
}

// checkSpace refuses a download that would leave less than ReserveBytes
// free beside the binary: the download, and a copy of the running binary
// where it cannot be kept as a hard link, less what a partial download
// holds already.
func (u *Updater) checkSpace(m *wire.Manifest) error {
	var fs syscall.Statfs_t
	if err := statfs(u.dir, &fs); err != nil {
		return fmt.Errorf("update: free space of %s: %w", u.dir, err)
	}
	free := int64(fs.Bavail) * int64(fs.Bsize)
	need := 2*m.Size + u.cfg.ReserveBytes
	if fi, err := os.Stat(u.DownloadFile()); err == nil {
		need -= fi.Size()
	}
	if free < need {
		return fmt.Errorf("update: %d MiB free on %s, the download needs %d MiB and leaves %d MiB for the queue",
			free>>20, u.dir, (need-u.cfg.ReserveBytes)>>20, u.cfg.ReserveBytes>>20)
	}
	return nil
}

// download fetches the binary of m into DownloadFile, resuming a partial
// one, retrying network errors with backoff until ctx is done, and checks
// its size and SHA-256. A check failure is final, but for a download that
// began with a partial file an earlier start left: that one is fetched
// afresh once, and only its check is final (a power cut can leave a
// partial download whose end was never written, zeros on some file
// systems, and the release would have been recorded as bad for good).
func (u *Updater) download(ctx context.Context, m *wire.Manifest) error {
	b := backoff.Backoff{Min: u.cfg.MinRetry, Max: u.cfg.MaxRetry}
	fails := 0
	// Only a partial of this binary is resumed (fetch starts another
	// afresh): a bad release after another's partial is fetched once.
	inherited := false
	if fi, err := os.Stat(u.DownloadFile()); err == nil && fi.Size() > 0 && fi.Size() <= m.Size && u.partialIsFor(m) {
		inherited = true
	}
	for {
		err := u.fetch(ctx, m)
		if err == nil {
			if fails > 0 {
				u.log.Info("update: download finished after failures", "count", fails)
			}
			err = u.verify(m)
			if err == nil || !inherited || !errors.Is(err, ErrBadDownload) {
				return err
			}
			inherited = false
			u.log.Warn("update: a download resumed from an earlier start failed its check; downloading it afresh",
				"version", m.Version, "err", err)
			if err := os.Truncate(u.DownloadFile(), 0); err != nil {
				return fmt.Errorf("update: %w", err)
			}
			continue
		}
		if errors.Is(err, ErrBadDownload) || ctx.Err() != nil {
			return err
		}
		fails++
		if fails == 1 || fails%10 == 0 {
			u.log.Warn("update: download failed; resuming later", "version", m.Version, "count", fails, "err", err)
		}
		if !backoff.Sleep(ctx, b.Next()) {
			return ctx.Err()
		}
	}
}

// fetch makes one request for the rest of the binary.
func (u *Updater) fetch(ctx context.Context, m *wire.Manifest) error {
	f, err := os.OpenFile(u.DownloadFile(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadDownload, err) // not writable: no point retrying
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if !u.partialIsFor(m) {
		// A partial download of another binary (a rollout replaced
		// while the download was cut), or of one not known: start
		// afresh, and name the binary this download is for first.
		if err := f.Truncate(0); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := durable.WriteFile(u.DownloadForFile(), []byte(m.SHA256), 0o600); err != nil {
			return fmt.Errorf("%w: %w", ErrBadDownload, err)
		}
		if have, err = f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	if have > m.Size { // a partial download of something else
		if err := f.Truncate(0); err != nil {
			return err
		}
		have, _ = f.Seek(0, io.SeekStart)
	}
	if have == m.Size {
		// Found whole: synced here whatever left it so. A request syncs
		// only when it ends without an error, and one whose last read
		// failed after the last byte (a connection dropped before a
		// chunked body's end), or whose process was killed before the
		// fsync, left the bytes in the page cache only: renamed in place,
		// a power cut then left an empty binary, which no rollback can
		// replace (it runs in the binary).
		return f.Sync()
	}
	endpoint := u.cfg.BaseURL + "/v1/releases/" + url.PathEscape(m.Version) + "/" + url.PathEscape(m.Arch)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadDownload, err)
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := u.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		var start int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start); err != nil || start != have {
			return fmt.Errorf("%w: Content-Range %q for a request from %d", ErrBadDownload, resp.Header.Get("Content-Range"), have)
		}
	case resp.StatusCode == http.StatusOK:
		if err := f.Truncate(0); err != nil {
			return err
		}
		if have, err = f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: the server answers %s for %s", ErrBadDownload, resp.Status, endpoint)
	default:
		return fmt.Errorf("download %s: %s", endpoint, resp.Status)
	}
	// At most the rest of the manifest's size, and one byte more to see
	// a server sending too much.
	n, err := io.Copy(f, io.LimitReader(resp.Body, m.Size-have+1))
	if have+n > m.Size {
		return fmt.Errorf("%w: the server sent more than the manifest's %d bytes", ErrBadDownload, m.Size)
	}
	if err != nil {
		return err
	}
	if have+n < m.Size {
		return fmt.Errorf("download %s: %d of %d bytes", endpoint, have+n, m.Size)
	}
	return f.Sync()
}

// partialIsFor reports whether DownloadFile is (a part of) m's binary, as
// DownloadForFile names it.
func (u *Updater) partialIsFor(m *wire.Manifest) bool {
	b, err := os.ReadFile(u.DownloadForFile())
	return err == nil && string(b) == m.SHA256
}

// verify checks the downloaded file's size and SHA-256 against m.
func (u *Updater) verify(m *wire.Manifest) error {
	f, err := os.Open(u.DownloadFile())
	if err != nil {
		return err
	}
	got, err := m.Sum(f)
	f.Close()
	switch {
	case err != nil:
		return err
	case got.Size != m.Size:
		return fmt.Errorf("%w: %d bytes, the manifest says %d", ErrBadDownload, got.Size, m.Size)
	case !m.Matches(got):
		return fmt.Errorf("%w: SHA-256 %s, the manifest says %s", ErrBadDownload, got.SHA256, m.SHA256)
	}
	return nil
}

// install keeps the running binary as PreviousFile, records the pending
// version and renames the verified download over the binary.
func (u *Updater) install(m *wire.Manifest, rollout uint64) error {
	if err := chmodSync(u.DownloadFile(), 0o755); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	prev := u.PreviousFile()
	if err := os.Remove(prev); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("update: %w", err)
	}
	if err := os.Link(u.cfg.Binary, prev); err != nil {
		if err := copyFile(u.cfg.Binary, prev); err != nil {
			return fmt.Errorf("update: keep the previous binary: %w", err)
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	was, lost := u.st.Installed, u.st.GuardLost
	u.st.Pending = &pending{Version: m.Version, From: u.cfg.Current, At: u.cfg.Now().UTC(), Rollout: rollout, SHA256: m.SHA256}
	u.st.Installed = max(was, rollout)
	u.st.GuardLost = false // the installed rollout is the guard again
	if err := u.save(); err != nil {
		u.st.Pending, u.st.Installed, u.st.GuardLost = nil, was, lost
		return err
	}
	if err := durable.Rename(u.DownloadFile(), u.cfg.Binary); err != nil {
		u.st.Pending, u.st.Installed, u.st.GuardLost = nil, was, lost
		u.save()
		return fmt.Errorf("update: install: %w", err)
	}
	// The download it named is the binary now; left, it stayed for good.
	os.Remove(u.DownloadForFile())
	return nil
}

// BootIDEnv names the environment variable the validator's systemd unit
// sets to the kernel's boot id (Environment=FAREGO_BOOT_ID=%b): the unit's
// ProcSubset=pid hides /proc/sys from the validator.
const BootIDEnv = "FAREGO_BOOT_ID"

// kernelBootID returns the kernel's boot id: $FAREGO_BOOT_ID, or
// /proc/sys/kernel/random/boot_id ("" if neither can be read), in
// bootIDForm.
func kernelBootID() string {
	if id := bootIDForm(os.Getenv(BootIDEnv)); id != "" {
		return id
	}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return bootIDForm(string(b))
}

// bootIDForm writes a boot id one way: systemd's %b is 32 hex digits,
// the kernel's file the same with dashes (a start by hand, without the
// unit's environment, read as another boot than the unit's starts).
func bootIDForm(id string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(id), "-", ""))
}

// chmodSync sets the mode of path and fsyncs it: a mode is the file's own
// metadata, which the directory's fsync after a rename does not make
// durable (a power cut after an install left the release in place with
// the download's mode 0600, which systemd cannot start, and no rollback
// runs: it is in the binary).
func chmodSync(path string, mode fs.FileMode) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Chmod(mode)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyFile copies src to a new file dst (mode 0755) durably.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(dst))
}

// fileSHA256 reads at most limit bytes of a file and returns how many it
// read and their SHA-256 in hex.
func fileSHA256(path string, limit int64) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, limit))
	if err != nil {
		return n, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
