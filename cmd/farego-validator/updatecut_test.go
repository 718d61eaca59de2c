package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/sync/update"
	"github.com/farego/farego/sync/wire"
)

// TestUpdateSurvivesPowerCutsAtEverySync: the whole life of an over-the-air
// update — the download (truncate, the file naming what it is for, the
// body), its check, the previous binary kept, the state and guard files,
// the rename over the binary, the starts of the new version counted, its
// health check; and for a release that fails at every start, the crash
// loop, the rollback marker, the previous binary put back and the failure
// recorded — with the power cut before each of its syncs in turn
// (Disk.FreezeAfterSyncs), every other cut asked to tear a page. After every cut
// the binary in place is one of the releases, whole and executable (never
// a half file: nothing on the device can replace a binary that does not
// start); the device then boots on what survived and, with the power on,
// ends where the update should: the good release in place and confirmed,
// never recorded as failed; the crashing one rolled back, the previous
// binary in place, the failure kept so the same rollout is not installed
// again.
func TestUpdateSurvivesPowerCutsAtEverySync(t *testing.T) {
	disk := powercut.Mount(t, nil)
	fleet := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	binaries := map[string][]byte{
		"1.0.0": bytes.Repeat([]byte("farego-validator 1.0.0\n"), 700),  // 4 pages and a bit
		"1.1.0": bytes.Repeat([]byte("farego-validator 1.1.0\n"), 5000), // 28 pages and a bit
		"1.2.0": bytes.Repeat([]byte("farego-validator 1.2.0\n"), 3000), // exits at every start
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := strings.CutPrefix(r.URL.Path, "/v1/releases/")
		v, ok2 := strings.CutSuffix(v, "/testarch")
		data, ok3 := binaries[v]
		if !ok || !ok2 || !ok3 || v == "1.0.0" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "bin", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()

	scenarios := []struct {
		name    string
		version string // the release rolled out
		rollout uint64
	}{
		{"a good release", "1.1.0", 1},
		{"a release that exits at every start", "1.2.0", 2},
	}
	cuts, torn, pages, entries := 0, 0, 0, 0
	var cutOff int64
	for _, sc := range scenarios {
		body := rolloutOf(t, fleet, sc.version, binaries[sc.version])
		for n := int64(0); ; n++ {
			if n > 200 {
				t.Fatalf("%s: the update still syncs after 200 syncs", sc.name)
			}
			dir := disk.Path(fmt.Sprintf("%s-%d", sc.version, n))
			bin := filepath.Join(dir, "farego-validator")
			must(t, os.Mkdir(dir, 0o755))
			must(t, os.WriteFile(bin, binaries["1.0.0"], 0o755))
			f, err := os.Open(bin)
			must(t, err)
			must(t, f.Sync())
			f.Close()
			must(t, syncDir(dir))
			must(t, syncDir(disk.Dir()))

			dev := &otaDevice{t: t, disk: disk, bin: bin, binaries: binaries, fleet: fleet, url: srv.URL,
				target: sc.version, rollout: sc.rollout, body: body, boot: fmt.Sprintf("boot-%d-a", n)}
			must(t, disk.FreezeAfterSyncs(n))
			done := dev.life()
			st, err := disk.Stats()
			must(t, err)
			if !st.Frozen {
				if !done {
					t.Fatalf("%s, power on throughout: the update did not end where it should", sc.name)
				}
				must(t, disk.FreezeAfterSyncs(-1))
				dev.final()
				t.Logf("%s: %d syncs from the first start to the end", sc.name, n)
				break
			}
			tear := cuts%2 == 1
			rep, err := disk.Cut(tear)
			must(t, err)
			cuts++
			if rep.Torn {
				torn++
			}
			pages += rep.PagesDiscarded
			cutOff += rep.BytesCutOff
			entries += rep.EntriesDiscarded
			what := fmt.Sprintf("%s, cut before sync %d (tear %v)", sc.name, n, tear)
			dev.what = what
			dev.inPlace() // whole and executable, before anything runs
			dev.boot = fmt.Sprintf("boot-%d-b", n)
			if !dev.life() {
				t.Fatalf("%s: after the cut, with the power on, the update did not end where it should", what)
			}
			dev.final()
		}
	}
	t.Logf("%d power cuts of an update's life (%d tearing a page; %d unsynced pages put back, %d unsynced bytes cut off, "+
		"%d unsynced entries undone): after each the binary whole and executable, the device booted and the update ended where it should",
		cuts, torn, pages, cutOff, entries)
}

// otaDevice is a validator's updater driven as the validator drives it:
// each start reads the binary in place for its version, boots the
// updater, and then confirms health (a good version), exits (one that
// exits at every start), or takes the retained rollout.
type otaDevice struct {
	t        *testing.T
	disk     *powercut.Disk
	bin      string
	binaries map[string][]byte
	fleet    ed25519.PrivateKey
	url      string
	target   string
	rollout  uint64
	body     []byte
	boot     string // the kernel's boot id: a new one after each cut
	what     string
}

// inPlace returns the version of the binary in place, failing the test
// when it is none of the releases whole, or not executable.
func (d *otaDevice) inPlace() string {
	d.t.Helper()
	fi, err := os.Stat(d.bin)
	if err != nil {
		d.t.Fatalf("%s: no binary in place: %v (the device is a brick)", d.what, err)
	}
	got, err := os.ReadFile(d.bin)
	must(d.t, err)
	for v, b := range d.binaries {
		if bytes.Equal(got, b) {
			if fi.Mode().Perm()&0o100 == 0 {
				d.t.Fatalf("%s: the binary of %s in place has mode %v: systemd cannot start it", d.what, v, fi.Mode().Perm())
			}
			return v
		}
	}
	d.t.Fatalf("%s: the binary in place (%d bytes) is none of the releases whole: the device is a brick", d.what, len(got))
	return ""
}

func (d *otaDevice) frozen() bool {
	st, err := d.disk.Stats()
	must(d.t, err)
	return st.Frozen
}

// updater is the updater of a start of version v.
func (d *otaDevice) updater(v string, log *logRecorder) *update.Updater {
	u, err := update.New(update.Config{Binary: d.bin, Current: v, DeviceID: "bus-1", Arch: "testarch",
		FleetPublicKey: d.fleet.Public().(ed25519.PublicKey), BaseURL: d.url, ReserveBytes: 1,
		MinRetry: time.Millisecond, MaxRetry: 5 * time.Millisecond, HealthTimeout: time.Hour,
		Logger: slog.New(log), BootID: func() string { return d.boot }})
	must(d.t, err)
	return u
}

// life starts the device again and again until the update has ended
// where it should (true), or the power is off (false).
func (d *otaDevice) life() bool {
	d.t.Helper()
	for start := 0; start < 20; start++ {
		if d.frozen() {
			return false
		}
		v := d.inPlace()
		log := &logRecorder{}
		u := d.updater(v, log)
		err := u.Boot()
		if d.frozen() {
			return false
		}
		switch {
		case errors.Is(err, update.ErrRolledBack):
			continue // the validator exits; systemd starts what is in place
		case err != nil:
			d.t.Fatalf("%s: start %d of %s: Boot: %v", d.what, start, v, err)
		}
		switch v {
		case "1.2.0": // exits at every start, before it reports healthy
			continue
		case d.target:
			if err := u.Healthy(); err != nil {
				if d.frozen() {
					return false
				}
				d.t.Fatalf("%s: Healthy: %v", d.what, err)
			}
			return !d.frozen()
		}
		// The previous version: the rollout is retained on the broker, so
		// every start takes it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		res := make(chan error, 1)
		u.Offer(d.rollout, d.body)
		go func() { res <- u.Run(ctx) }()
		var rerr error
		ran := false
		for !ran {
			select {
			case rerr = <-res:
				ran = true
				continue
			case <-time.After(2 * time.Millisecond):
			}
			if ctx.Err() != nil {
				cancel()
				d.t.Fatalf("%s: the update of %s did not end in 2 minutes; log:\n%s", d.what, v, log)
			}
			if d.frozen() || log.has("update: refused", "update: this version failed here already") {
				cancel()
				rerr = <-res
				ran = true
			}
		}
		cancel()
		if d.frozen() {
			return false
		}
		switch {
		case errors.Is(rerr, update.ErrRestart):
			continue
		case rerr != nil:
			d.t.Fatalf("%s: Run: %v", d.what, rerr)
		case log.has("update: this version failed here already") && d.target == "1.2.0":
			return true // rolled back, and the same rollout is not taken again
		default:
			d.t.Fatalf("%s: start %d of %s: the rollout of %s was not installed; log:\n%s", d.what, start, v, d.target, log)
		}
	}
	d.t.Fatalf("%s: 20 starts and the update has not ended", d.what)
	return false
}

// final checks, after a life that ended with the power on and a cut of
// what it left unsynced (none), where the update ended.
func (d *otaDevice) final() {
	d.t.Helper()
	if _, err := d.disk.Cut(false); err != nil {
		d.t.Fatal(err)
	}
	v := d.inPlace()
	log := &logRecorder{}
	u := d.updater(v, log)
	if err := u.Boot(); err != nil {
		d.t.Fatalf("%s: the start after the update: %v", d.what, err)
	}
	st := u.Status()
	switch d.target {
	case "1.2.0":
		if v != "1.0.0" || st == nil || st.Failed != "1.2.0" || st.Pending != "" {
			d.t.Fatalf("%s: after the crash loop %s is in place, status %+v; want 1.0.0, 1.2.0 failed", d.what, v, st)
		}
	default:
		if v != d.target || u.Pending() || (st != nil && st.Failed != "") {
			d.t.Fatalf("%s: after the update %s is in place, status %+v; want %s confirmed, nothing failed", d.what, v, st, d.target)
		}
	}
}

// rolloutOf is the fleet-signed rollout of release version (the binary
// data, for testarch) to bus-1.
func rolloutOf(t *testing.T, fleet ed25519.PrivateKey, version string, data []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(data)
	m := &wire.Manifest{Version: version, Arch: "testarch", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]),
		Date: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	mb, sig, err := wire.SignManifest(m, fleet)
	must(t, err)
	body, err := (&wire.Rollout{Version: version, Builds: []wire.Build{{Manifest: mb, Signature: sig}}, Devices: []string{"bus-1"}}).Marshal()
	must(t, err)
	return body
}

// logRecorder is a slog.Handler keeping every record's message and
// attributes, at every level.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	s := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		s += " " + a.String()
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
	return nil
}

// has reports whether a record's message starts with one of msgs.
func (l *logRecorder) has(msgs ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		for _, m := range msgs {
			if _, rest, ok := strings.Cut(s, " "); ok && strings.HasPrefix(rest, m) {
				return true
			}
		}
	}
	return false
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
