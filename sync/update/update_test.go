package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/farego/farego/sync/wire"
)

var fleetKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))

// release is a binary the test server serves, and the manifest for it.
type release struct {
	version string
	data    []byte // what the server sends
	signed  []byte // what the manifest describes (data unless corrupted)
	key     ed25519.PrivateKey
}

// server serves releases at /v1/releases/VERSION/ARCH with Range support
// (http.ServeContent, as the settlement server does). cut, when set,
// makes the first request of each binary stop half-way.
type server struct {
	rels     map[string]*release
	cut      bool
	requests atomic.Int32
	ranges   atomic.Int32
	url      string
}

func newServer(t *testing.T, rels ...*release) *server {
	t.Helper()
	s := &server{rels: map[string]*release{}}
	for _, r := range rels {
		s.rels[r.version] = r
	}
	cutDone := map[string]bool{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.requests.Add(1)
		rest, _ := strings.CutPrefix(req.URL.Path, "/v1/releases/")
		version, _, _ := strings.Cut(rest, "/")
		r, ok := s.rels[version]
		if !ok {
			http.NotFound(w, req)
			return
		}
		if req.Header.Get("Range") != "" {
			s.ranges.Add(1)
		}
		if s.cut && !cutDone[version] {
			cutDone[version] = true
			w.Header().Set("Content-Length", strconv.Itoa(len(r.data)))
			w.WriteHeader(http.StatusOK)
			w.Write(r.data[:len(r.data)/2])
			panic(http.ErrAbortHandler) // drop the connection mid-body
		}
		http.ServeContent(w, req, "bin", time.Time{}, bytes.NewReader(r.data))
	}))
	t.Cleanup(ts.Close)
	s.url = ts.URL
	return s
}

func newRelease(version string) *release {
	data := bytes.Repeat([]byte("farego-validator "+version+"\n"), 5000)
	return &release{version: version, data: data, signed: data, key: fleetKey}
}

// rollout returns a fleet rollout body for rel on arch "testarch".
func rollout(t *testing.T, rel *release, mut func(*wire.Rollout)) []byte {
	t.Helper()
	sum := sha256.Sum256(rel.signed)
	m := &wire.Manifest{Version: rel.version, Arch: "testarch", Size: int64(len(rel.signed)), SHA256: hex.EncodeToString(sum[:]),
		Date: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	mb, sig, err := wire.SignManifest(m, rel.key)
	if err != nil {
		t.Fatal(err)
	}
	r := &wire.Rollout{Version: rel.version, Builds: []wire.Build{{Manifest: mb, Signature: sig}}, Devices: []string{"bus-1"}}
	if mut != nil {
		mut(r)
	}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// device is a binary directory with version "1.0.0" installed.
type device struct {
	dir, bin string
	old      []byte
}

func newDevice(t *testing.T) *device {
	d := &device{dir: t.TempDir()}
	d.bin = filepath.Join(d.dir, "farego-validator")
	d.old = []byte("farego-validator 1.0.0\n")
	if err := os.WriteFile(d.bin, d.old, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *device) updater(t *testing.T, current, url string) *Updater {
	t.Helper()
	u, err := New(Config{Binary: d.bin, Current: current, DeviceID: "bus-1", Arch: "testarch",
		FleetPublicKey: fleetKey.Public().(ed25519.PublicKey), BaseURL: url,
		MinRetry: time.Millisecond, MaxRetry: 10 * time.Millisecond, HealthTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Boot(); err != nil {
		t.Fatalf("Boot: %v", err)
	}
	return u
}

// installed is a device on 1.0.0 that has installed release 1.1.0 from
// srv and is about to restart into it.
func installed(t *testing.T) (*release, *server, *device) {
	t.Helper()
	rel := newRelease("1.1.0")
	srv := newServer(t, rel)
	d := newDevice(t)
	u := d.updater(t, "1.0.0", srv.url)
	if err := u.apply(context.Background(), offer{1, rollout(t, rel, nil)}); !errors.Is(err, ErrRestart) {
		t.Fatal(err)
	}
	return rel, srv, d
}

func (d *device) binary(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(d.bin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGoodUpdateResumesAndConfirms(t *testing.T) {
	rel := newRelease("1.1.0")
	srv := newServer(t, rel)
	srv.cut = true
	d := newDevice(t)
	u := d.updater(t, "1.0.0", srv.url)
	err := u.apply(context.Background(), offer{1, rollout(t, rel, nil)})
	if !errors.Is(err, ErrRestart) {
		t.Fatalf("apply = %v, want ErrRestart", err)
	}
	if !bytes.Equal(d.binary(t), rel.data) {
		t.Fatal("the new binary is not in place")
	}
	if prev, _ := os.ReadFile(u.PreviousFile()); !bytes.Equal(prev, d.old) {
		t.Errorf("previous binary %q, want %q", prev, d.old)
	}
	if srv.ranges.Load() != 1 {
		t.Errorf("%d Range requests, want 1 (the cut download resumed)", srv.ranges.Load())
	}
	if fi, err := os.Stat(d.bin); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("installed binary mode: %v, %v", fi.Mode(), err)
	}
	for _, f := range []string{u.DownloadFile(), u.DownloadForFile()} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after the install (%v)", filepath.Base(f), err)
		}
	}

	// The new version starts: pending until healthy, then confirmed.
	u2 := d.updater(t, "1.1.0", srv.url)
	if st := u2.Status(); st == nil || st.Pending != "1.1.0" {
		t.Fatalf("status after the restart: %+v", st)
	}
	if err := u2.Healthy(); err != nil {
		t.Fatal(err)
	}
	if st := u2.Status(); st != nil {
		t.Errorf("status once healthy: %+v, want nothing to report", st)
	}
	// The retained rollout comes again: nothing to do.
	if err := u2.apply(context.Background(), offer{1, rollout(t, rel, nil)}); err != nil {
		t.Errorf("the same rollout again: %v", err)
	}
	u3 := d.updater(t, "1.1.0", srv.url)
	if u3.Pending() {
		t.Error("still pending after a confirmed start")
	}
}

// TestResumedDownloadDamagedByAPowerCut: a power cut during a download can
// leave a partial file whose end was never written (zeros, on file systems
// that grew its length first). The next start resumed it, its SHA-256
// failed, and the release was recorded as bad for good: the bus stayed on
// its old version until an operator rolled the release out again. A
// download resumed from an earlier start is fetched afresh once when its
// check fails.
func TestResumedDownloadDamagedByAPowerCut(t *testing.T) {
	rel := newRelease("1.1.0")
	srv := newServer(t, rel)
	d := newDevice(t)
	u := d.updater(t, "1.0.0", srv.url)
	body := rollout(t, rel, nil)
	sum := sha256.Sum256(rel.signed)
	// What the cut left: the first half, its last 4 KiB never written.
	half := bytes.Clone(rel.data[:len(rel.data)/2])
	clear(half[len(half)-4096:])
	if err := os.WriteFile(u.DownloadForFile(), []byte(hex.EncodeToString(sum[:])), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(u.DownloadFile(), half, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := u.apply(context.Background(), offer{1, body}); !errors.Is(err, ErrRestart) {
		t.Fatalf("apply = %v, want ErrRestart (installed); status %+v", err, u.Status())
	}
	if !bytes.Equal(d.binary(t), rel.data) {
		t.Fatal("the new binary is not in place")
	}
	if got := srv.ranges.Load(); got != 1 {
		t.Errorf("%d Range requests, want 1 (the resume, before the fresh download)", got)
	}

	// A release whose download is wrong from the start is still refused,
	// after one fresh try.
	bad := newRelease("1.2.0")
	bad.data = bytes.Clone(bad.data)
	bad.data[100] ^= 1
	srv2 := newServer(t, bad)
	d2 := newDevice(t)
	u2 := d2.updater(t, "1.0.0", srv2.url)
	if err := u2.apply(context.Background(), offer{2, rollout(t, bad, nil)}); err != nil {
		t.Fatalf("apply of a bad release = %v, want nil (refused)", err)
	}
	if st := u2.Status(); st == nil || st.Failed != "1.2.0" || !strings.Contains(st.FailedReason, "SHA-256") {
		t.Errorf("status after a bad release: %+v, want failed on its SHA-256", st)
	}
	if got := srv2.requests.Load(); got != 1 {
		t.Errorf("%d requests for a bad release downloaded whole, want 1 (no second try)", got)
	}
}

func TestRefusedUpdates(t *testing.T) {
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	for _, c := range []struct {
		name   string
		rel    func() *release
		mut    func(*wire.Rollout)
		reason string
	}{
		{"corrupted download", func() *release {
			r := newRelease("1.1.0")
			r.data = bytes.Clone(r.data)
			r.data[100] ^= 1
			return r
		}, nil, "SHA-256"},
		{"longer download", func() *release {
			r := newRelease("1.1.0")
			r.data = append(bytes.Clone(r.data), 'x')
			return r
		}, nil, "more than the manifest"},
		{"wrong signature", func() *release {
			r := newRelease("1.1.0")
			r.key = other
			return r
		}, nil, "bad signature"},
		{"downgrade", func() *release { return newRelease("0.9.0") }, nil, "older than the running 1.0.0"},
		{"no build for this arch", func() *release { return newRelease("1.1.0") }, func(r *wire.Rollout) {
			r.Builds[0] = buildFor(t, "otherarch", r.Version)
		}, "release 1.1.0 has no build for testarch (farego-settlement release add --arch testarch)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rel := c.rel()
			srv := newServer(t, rel)
			d := newDevice(t)
			u := d.updater(t, "1.0.0", srv.url)
			var changes atomic.Int32
			u.OnChange(func() { changes.Add(1) })
			if err := u.apply(context.Background(), offer{3, rollout(t, rel, c.mut)}); err != nil {
				t.Fatalf("apply = %v, want nil (refused)", err)
			}
			// Reported at once (it waited for the next status, up to a
			// minute).
			if n := changes.Load(); n != 1 {
				t.Errorf("OnChange called %d times for a refused update, want 1", n)
			}
			if !bytes.Equal(d.binary(t), d.old) {
				t.Fatal("the binary changed")
			}
			st := u.Status()
			if st == nil || st.Failed != rel.version || !strings.Contains(st.FailedReason, c.reason) {
				t.Fatalf("status %+v, want a failure of %s mentioning %q", st, rel.version, c.reason)
			}
			// A build to add is not a protocol mismatch (an operator read
			// "unsupported message type or version" as one).
			if strings.Contains(st.FailedReason, "unsupported") {
				t.Errorf("failure reason %q speaks of an unsupported message", st.FailedReason)
			}
			if _, err := os.Stat(u.DownloadFile()); err == nil {
				t.Error("the refused download is still there")
			}
			// The same rollout seen again (retained) is not tried again.
			n := srv.requests.Load()
			u.apply(context.Background(), offer{3, rollout(t, rel, c.mut)})
			if srv.requests.Load() != n {
				t.Error("the failed version was downloaded again under the same rollout")
			}
		})
	}
}

func buildFor(t *testing.T, arch, version string) wire.Build {
	m := &wire.Manifest{Version: version, Arch: arch, Size: 1, SHA256: strings.Repeat("00", 32), Date: time.Unix(1, 0)}
	mb, sig, err := wire.SignManifest(m, fleetKey)
	if err != nil {
		t.Fatal(err)
	}
	return wire.Build{Manifest: mb, Signature: sig}
}

func TestDowngradeAllowedAndRolloutMembership(t *testing.T) {
	rel := newRelease("0.9.0")
	srv := newServer(t, rel)
	d := newDevice(t)
	u := d.updater(t, "1.0.0", srv.url)
	notIn := func(r *wire.Rollout) { r.Devices = []string{"bus-2"}; r.AllowDowngrade = true }
	if err := u.apply(context.Background(), offer{1, rollout(t, rel, notIn)}); err != nil || srv.requests.Load() != 0 {
		t.Fatalf("a rollout without this device: %v, %d requests", err, srv.requests.Load())
	}
	allow := func(r *wire.Rollout) { r.AllowDowngrade = true }
	if err := u.apply(context.Background(), offer{2, rollout(t, rel, allow)}); !errors.Is(err, ErrRestart) {
		t.Fatalf("allowed downgrade: %v, want ErrRestart", err)
	}
	if !bytes.Equal(d.binary(t), rel.data) {
		t.Fatal("the allowed downgrade is not in place")
	}
}

func TestCrashLoopRollsBack(t *testing.T) {
	rel, srv, d := installed(t)
	for i := range DefaultMaxBoots {
		d.updater(t, "1.1.0", srv.url) // starts and dies before it is healthy
		if !bytes.Equal(d.binary(t), rel.data) {
			t.Fatalf("rolled back after %d starts", i+1)
		}
	}
	u, err := New(Config{Binary: d.bin, Current: "1.1.0", DeviceID: "bus-1", FleetPublicKey: fleetKey.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Boot(); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("start %d: Boot = %v, want ErrRolledBack", DefaultMaxBoots+1, err)
	}
	if !bytes.Equal(d.binary(t), d.old) {
		t.Fatal("the previous binary is not back")
	}
	old := d.updater(t, "1.0.0", srv.url)
	if st := old.Status(); st == nil || st.Failed != "1.1.0" || !strings.Contains(st.FailedReason, "at start") {
		t.Fatalf("the previous version reports %+v", st)
	}
	if err := old.apply(context.Background(), offer{1, rollout(t, rel, nil)}); err != nil {
		t.Fatalf("the failed version under the same rollout: %v, want nothing done", err)
	}
	if !bytes.Equal(d.binary(t), d.old) {
		t.Fatal("the failed version was installed again")
	}
}

// TestKernelBootID: the boot id comes from $FAREGO_BOOT_ID (the unit sets
// it: ProcSubset=pid hides /proc/sys there), else from the kernel.
func TestKernelBootID(t *testing.T) {
	t.Setenv(BootIDEnv, " 4F2C0E52boot \n")
	if got := kernelBootID(); got != "4f2c0e52boot" {
		t.Errorf("with %s set: %q", BootIDEnv, got)
	}
	t.Setenv(BootIDEnv, "")
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Skipf("no kernel boot id here: %v", err)
	}
	fromKernel := kernelBootID()
	// systemd's %b, as the unit hands it: the same id without dashes.
	t.Setenv(BootIDEnv, strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""))
	if fromUnit := kernelBootID(); fromKernel == "" || fromKernel != fromUnit {
		t.Errorf("from the kernel %q, from the unit %q: one boot read as two", fromKernel, fromUnit)
	}
}

// TestBootIDUnknownSaid: a validator whose unit predates FAREGO_BOOT_ID
// (an update replaces the binary, not the unit) cannot read the kernel's
// boot id (ProcSubset=pid): every start counts, a power cut too, as
// before the boot id; the log says so and what to install.
func TestBootIDUnknownSaid(t *testing.T) {
	_, _, d := installed(t)
	var log bytes.Buffer
	u, err := New(Config{Binary: d.bin, Current: "1.1.0", DeviceID: "bus-1", FleetPublicKey: fleetKey.Public().(ed25519.PublicKey),
		BootID: func() string { return "" }, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Boot(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "boot id is unknown") || !strings.Contains(log.String(), BootIDEnv+"=%b") {
		t.Errorf("log:\n%s", log.String())
	}
}

func TestHealthTimeoutRollsBack(t *testing.T) {
	_, _, d := installed(t)
	nu, err := New(Config{Binary: d.bin, Current: "1.1.0", DeviceID: "bus-1", FleetPublicKey: fleetKey.Public().(ed25519.PublicKey),
		HealthTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := nu.Boot(); err != nil {
		t.Fatal(err)
	}
	if err := nu.Run(context.Background()); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("Run = %v, want ErrRolledBack", err)
	}
	if !bytes.Equal(d.binary(t), d.old) {
		t.Fatal("the previous binary is not back")
	}
	if st := nu.Status(); st == nil || !strings.Contains(st.FailedReason, "did not report healthy") {
		t.Fatalf("status %+v", st)
	}
}

func TestRunReturnsRestartOnOffer(t *testing.T) {
	rel := newRelease("1.1.0")
	srv := newServer(t, rel)
	d := newDevice(t)
	u := d.updater(t, "1.0.0", srv.url)
	u.Offer(1, []byte("not a rollout")) // replaced by the next offer or refused
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	u.Offer(2, rollout(t, rel, nil))
	if err := <-done; !errors.Is(err, ErrRestart) {
		t.Fatalf("Run = %v, want ErrRestart", err)
	}
}

func TestArch(t *testing.T) {
	got := Arch()
	if err := wire.ValidArch(got); err != nil {
		t.Fatalf("Arch() = %q: %v", got, err)
	}
	if runtime.GOARCH == "arm" && !strings.HasPrefix(got, "armv") {
		t.Errorf("Arch() = %q on 32-bit ARM, want armvN", got)
	}
}

// TestReplayedOlderRolloutRefused: after rollout 5 installed 1.1.0, a
// replay of the older signed rollout 4 (0.9.0, downgrade allowed) is
// refused: nothing downloaded, the binary stays.
func TestReplayedOlderRolloutRefused(t *testing.T) {
	newer, older := newRelease("1.1.0"), newRelease("0.9.0")
	srv := newServer(t, newer, older)
	d := newDevice(t)
	u := d.updater(t, "1.0.0", srv.url)
	if err := u.apply(context.Background(), offer{5, rollout(t, newer, nil)}); !errors.Is(err, ErrRestart) {
		t.Fatalf("update to 1.1.0: %v, want ErrRestart", err)
	}
	u = d.updater(t, "1.1.0", srv.url) // the new binary starts
	if err := u.Healthy(); err != nil {
		t.Fatal(err)
	}
	before := srv.requests.Load()
	allow := func(r *wire.Rollout) { r.AllowDowngrade = true }
	if err := u.apply(context.Background(), offer{4, rollout(t, older, allow)}); err != nil {
		t.Fatalf("replayed rollout: %v, want refused without error", err)
	}
	if srv.requests.Load() != before || !bytes.Equal(d.binary(t), newer.data) {
		t.Fatalf("a replayed older rollout was acted on: %d requests, binary %.24q", srv.requests.Load()-before, d.binary(t))
	}
}

// TestReplayedRolloutRefusedWithoutInstall: a device that never installed
// a rollout (it already ran the rolled-out version) still refuses an
// older signed rollout seen again, even one allowing a downgrade, and
// remembers across restarts that it saw the newer one.
func TestReplayedRolloutRefusedWithoutInstall(t *testing.T) {
	current, older := newRelease("1.4.0"), newRelease("0.9.0")
	srv := newServer(t, current, older)
	d := newDevice(t)
	u := d.updater(t, "1.4.0", srv.url)
	if err := u.apply(context.Background(), offer{5, rollout(t, current, nil)}); err != nil {
		t.Fatalf("rollout of the running version: %v, want nothing to do", err)
	}
	u = d.updater(t, "1.4.0", srv.url) // a restart
	allow := func(r *wire.Rollout) { r.AllowDowngrade = true }
	if err := u.apply(context.Background(), offer{4, rollout(t, older, allow)}); err != nil {
		t.Fatalf("replayed rollout: %v, want refused without error", err)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Fatalf("a replayed older rollout was acted on: %d requests", n)
	}
}

// TestDownloadLeavesRoomForTheQueue: a rollout whose download would leave
// less than ReserveBytes free beside the binary is refused (recorded as a
// failed update, nothing downloaded): a full disk would stop the queue.
func TestDownloadLeavesRoomForTheQueue(t *testing.T) {
	rel := newRelease("1.1.0")
	srv := newServer(t, rel)
	d := newDevice(t)
	u := d.updater(t, "1.0.0", srv.url)
	statfs = func(string, *syscall.Statfs_t) error { return nil } // 0 bytes free
	t.Cleanup(func() { statfs = syscall.Statfs })
	if err := u.apply(context.Background(), offer{1, rollout(t, rel, nil)}); err != nil {
		t.Fatalf("rollout on a full disk: %v, want refused without error", err)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d download requests on a full disk", n)
	}
	if st := u.Status(); st == nil || st.Failed != "1.1.0" || !strings.Contains(st.FailedReason, "free") {
		t.Errorf("status = %+v, want 1.1.0 failed for want of space", st)
	}
}

// TestDamagedStateRefusesReplayedDowngrade: the newest rollout seen (5)
// is kept in the state file and in the guard file. With either copy
// damaged (the state file torn, garbage, deleted while a previous binary
// is kept, or holding an older rollout; the guard file garbage) the other
// keeps the guard: a replay of the older rollout 4, a downgrade it
// allows, is refused as a replay, and the newer rollout 7 allowing the
// same downgrade installs. With both copies damaged the guard is lost: the
// replay of rollout 4 is refused and reported, not installed, until an
// install of a newer version makes its rollout the guard again, and
// downgrades allowed by a later rollout go through once more.
func TestDamagedStateRefusesReplayedDowngrade(t *testing.T) {
	allow := func(r *wire.Rollout) { r.AllowDowngrade = true }
	write := func(t *testing.T, path string, b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tearState := func(t *testing.T, d *device, u *Updater) {
		b, err := os.ReadFile(u.StateFile())
		if err != nil {
			t.Fatal(err)
		}
		write(t, u.StateFile(), b[:len(b)/2])
	}
	garbageState := func(t *testing.T, d *device, u *Updater) { write(t, u.StateFile(), []byte("\x00\x00\x00")) }
	for _, damage := range []struct {
		name string
		do   func(t *testing.T, d *device, u *Updater)
		lost bool // both copies damaged
	}{
		{"state torn", tearState, false},
		{"state garbage", garbageState, false},
		{"state deleted with a previous binary kept", func(t *testing.T, d *device, u *Updater) {
			write(t, u.PreviousFile(), d.old)
			if err := os.Remove(u.StateFile()); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"state holds an older rollout", func(t *testing.T, d *device, u *Updater) {
			write(t, u.StateFile(), []byte(`{"newest_rollout":2}`))
		}, false},
		{"guard file garbage", func(t *testing.T, d *device, u *Updater) { write(t, u.GuardFile(), []byte("\x00\x00\x00")) }, false},
		{"both torn", func(t *testing.T, d *device, u *Updater) {
			tearState(t, d, u)
			b, err := os.ReadFile(u.GuardFile())
			if err != nil {
				t.Fatal(err)
			}
			write(t, u.GuardFile(), b[:len(b)/2])
		}, true},
		{"state garbage, guard file deleted", func(t *testing.T, d *device, u *Updater) {
			garbageState(t, d, u)
			if err := os.Remove(u.GuardFile()); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"state torn, guard file's rollout altered", func(t *testing.T, d *device, u *Updater) {
			tearState(t, d, u)
			b, err := os.ReadFile(u.GuardFile())
			if err != nil {
				t.Fatal(err)
			}
			write(t, u.GuardFile(), bytes.Replace(b, []byte(" 5 "), []byte(" 1 "), 1)) // its checksum no longer matches
		}, true},
	} {
		t.Run(damage.name, func(t *testing.T) {
			current, older, newer := newRelease("1.4.0"), newRelease("0.9.0"), newRelease("1.5.0")
			srv := newServer(t, current, older, newer)
			d := newDevice(t)
			u := d.updater(t, "1.4.0", srv.url)
			if err := u.apply(context.Background(), offer{5, rollout(t, current, nil)}); err != nil {
				t.Fatalf("rollout of the running version: %v, want nothing to do", err)
			}
			if g, err := u.readGuard(); g != 5 || err != nil {
				t.Fatalf("guard file after rollout 5: %d, %v", g, err)
			}
			damage.do(t, d, u)
			for range 2 { // and again after a restart
				u = d.updater(t, "1.4.0", srv.url)
				if err := u.apply(context.Background(), offer{4, rollout(t, older, allow)}); err != nil {
					t.Fatalf("replayed rollout: %v, want refused without error", err)
				}
				if n := srv.requests.Load(); n != 0 {
					t.Fatalf("a replayed older rollout was acted on: %d requests", n)
				}
				st := u.Status()
				if damage.lost {
					if st == nil || st.Failed != "0.9.0" || !strings.Contains(st.FailedReason, "damaged") {
						t.Fatalf("status = %+v, want the downgrade to 0.9.0 refused for the damaged state", st)
					}
					continue
				}
				// Refused as a replay (the guard kept), not for a lost guard.
				if st != nil || u.st.GuardLost || u.st.Newest != 5 {
					t.Fatalf("status = %+v, guard lost %v, newest rollout %d: want the replay refused by the guard 5",
						st, u.st.GuardLost, u.st.Newest)
				}
				if g, err := u.readGuard(); g != 5 || err != nil {
					t.Fatalf("guard file after the restart: %d, %v, want 5", g, err)
				}
			}

			if !damage.lost {
				if err := u.apply(context.Background(), offer{7, rollout(t, older, allow)}); !errors.Is(err, ErrRestart) {
					t.Fatalf("a downgrade allowed by the newer rollout 7: %v, want it installed", err)
				}
				if !bytes.Equal(d.binary(t), older.data) {
					t.Fatal("the downgrade allowed by rollout 7 is not in place")
				}
				return
			}
			if err := u.apply(context.Background(), offer{6, rollout(t, newer, nil)}); !errors.Is(err, ErrRestart) {
				t.Fatalf("rollout of a newer version: %v, want it installed", err)
			}
			u = d.updater(t, "1.5.0", srv.url)
			if err := u.Healthy(); err != nil {
				t.Fatal(err)
			}
			if err := u.apply(context.Background(), offer{4, rollout(t, older, allow)}); err != nil || !bytes.Equal(d.binary(t), newer.data) {
				t.Fatalf("rollout 4 replayed after rollout 6 was installed: %v, want refused", err)
			}
			if err := u.apply(context.Background(), offer{7, rollout(t, older, allow)}); !errors.Is(err, ErrRestart) {
				t.Fatalf("a downgrade allowed by rollout 7, after 6 was installed: %v, want it installed", err)
			}
		})
	}
}

// A failure reason (an error text of any length and bytes) is cut to what
// a status may carry, on a character, and made valid UTF-8: the server
// refuses a status with a longer reason.
func TestStatusReasonCut(t *testing.T) {
	for _, reason := range []string{
		"short",
		strings.Repeat("é", wire.MaxFailedReason),
		"x" + strings.Repeat("é", wire.MaxFailedReason),
		strings.Repeat("\xff", wire.MaxFailedReason),
	} {
		got := cutReason(reason)
		if len(got) > wire.MaxFailedReason || !utf8.ValidString(got) || !strings.HasPrefix(strings.ToValidUTF8(reason, "\uFFFD"), got) {
			t.Errorf("cutReason(%d bytes) = %d bytes, valid UTF-8 %v", len(reason), len(got), utf8.ValidString(got))
		}
		st := wire.Status{DeviceID: "bus-1", Software: "1.0.0", Update: &wire.UpdateStatus{Failed: "1.1.0", FailedReason: got,
			FailedAt: time.Now()}}
		p, _ := st.MarshalBinary()
		if _, err := wire.ParseStatus(p); err != nil {
			t.Errorf("status with the cut reason: %v", err)
		}
	}
}

// A release whose binary was built with another version stamp (make dist
// without VERSION=1.1.0) reports that version once running: the device
// used to forget the update as "never got in place", see its release
// again as newer than what it runs, and download, install and restart for
// ever. Now it puts the previous binary back, reports why, and does not
// take that rollout again.
func TestMisstampedReleaseRollsBackOnce(t *testing.T) {
	rel, srv, d := installed(t)
	u, err := New(Config{Binary: d.bin, Current: "1.0.0-3-g0123abc", DeviceID: "bus-1", Arch: "testarch",
		FleetPublicKey: fleetKey.Public().(ed25519.PublicKey), BaseURL: srv.url})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Boot(); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("Boot of the misstamped binary = %v, want ErrRolledBack", err)
	}
	if !bytes.Equal(d.binary(t), d.old) {
		t.Fatal("the previous binary is not back")
	}
	old := d.updater(t, "1.0.0", srv.url)
	if st := old.Status(); st == nil || st.Failed != "1.1.0" || !strings.Contains(st.FailedReason, "1.0.0-3-g0123abc") ||
		!strings.Contains(st.FailedReason, "VERSION=1.1.0") {
		t.Fatalf("the previous version reports %+v", st)
	}
	gets := srv.requests.Load()
	if err := old.apply(context.Background(), offer{1, rollout(t, rel, nil)}); err != nil {
		t.Fatalf("the same rollout again: %v, want nothing done", err)
	}
	if !bytes.Equal(d.binary(t), d.old) || srv.requests.Load() != gets {
		t.Fatal("the misstamped release was downloaded or installed again")
	}
}

// A partial download another release left (a rollout replaced while a
// download was cut) is not resumed: fetch starts afresh. A bad release
// downloaded that way was fetched twice, as if a resumed download had
// failed its check (README: a release wrong from the start is refused
// after one request).
func TestBadReleaseAfterOtherReleasesPartialFetchedOnce(t *testing.T) {
	bad := newRelease("1.2.0")
	bad.data = bytes.Clone(bad.data)
	bad.data[100] ^= 1
	srv := newServer(t, bad)
	d := newDevice(t)
	u := d.updater(t, "1.0.0", srv.url)
	other := sha256.Sum256([]byte("another release"))
	if err := os.WriteFile(u.DownloadForFile(), []byte(hex.EncodeToString(other[:])), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(u.DownloadFile(), bytes.Repeat([]byte{1}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := u.apply(context.Background(), offer{2, rollout(t, bad, nil)}); err != nil {
		t.Fatalf("apply of a bad release = %v, want nil (refused)", err)
	}
	if st := u.Status(); st == nil || st.Failed != "1.2.0" {
		t.Errorf("status after a bad release: %+v, want failed", st)
	}
	if got := srv.requests.Load(); got != 1 {
		t.Errorf("%d requests for a bad release, want 1: another release's partial was not resumed", got)
	}
}
