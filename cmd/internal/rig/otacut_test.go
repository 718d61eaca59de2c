package rig

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/sync/update"
)

// TestUpdatePowerCutsProcesses rolls a release out to a real validator
// whose binary and data directory are on a power-cut disk, and cuts the
// power again and again while it downloads, installs, restarts into the
// new version and waits for its health check — each cut a new kernel boot
// (FAREGO_BOOT_ID), each restart after an install played as systemd's.
// After every cut: the binary in place is the old release or the new one,
// whole and executable; the validator boots and takes taps; every green
// tap is queued or in the ledger. The new version is confirmed healthy
// (not rolled back as a crash loop). Then a release that exits at every
// start is rolled out, the power cut while it is installed, crash-loops
// and is rolled back: the previous release comes back in place. Finally
// the ledger holds exactly the green taps.
func TestUpdatePowerCutsProcesses(t *testing.T) {
	cuts := 12
	if testing.Short() {
		cuts = 5
	}
	disk := powercut.Mount(t, &powercut.Options{Seed: 11})
	r, ctx := newRig(t)
	builds := t.TempDir()
	bins := map[string][]byte{}
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0"} {
		b, err := os.ReadFile(buildVersion(t, ctx, builds, v))
		must(t, err)
		bins[v] = b
	}
	dev, err := r.Provision(ctx, "otacut-0", "42")
	must(t, err)
	defer dev.Close()
	dataDir := disk.Path("var", "lib", "farego")
	binDir := disk.Path("usr", "local", "bin")
	installed := filepath.Join(binDir, "farego-validator")
	must(t, os.MkdirAll(binDir, 0o755))
	must(t, os.WriteFile(installed, bins["1.0.0"], 0o755))
	syncPath(t, installed)
	for d := binDir; d != filepath.Dir(disk.Dir()); d = filepath.Dir(d) {
		syncPath(t, d)
	}
	must(t, dev.SetPolicy("passback_window", `"-1s"`))
	must(t, dev.SetPolicy("risk_cap", "-1"))
	must(t, dev.SetConfig("data_dir", strconv.Quote(dataDir)))
	must(t, dev.AppendConfig(fmt.Sprintf("[update]\nserver = %q\nbinary = %q\nhealth_timeout = \"5m\"\nmax_boots = 2", "http://"+r.HTTP, installed)))
	dev.Binary = installed
	boot := 0
	dev.Env = []string{update.BootIDEnv + "=otacut-boot-0", "FAREGO_TEST_CRASH_VERSION=1.2.0"}
	logFile := filepath.Join(dev.Dir, "validator.log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("validator.log (tail):\n%s", tail(string(b), 60))
		}
	})

	riders := newRiders(t, ctx, r, 6, 1_000_000)
	c := newCutChecker(t, r, riders, dev.ID)
	rnd := rand.New(rand.NewPCG(29, 29))
	// start starts the validator, and again when it exits on its own
	// (an update installed: systemd's Restart=always).
	// once: one start only (in a crash loop, the power goes between two).
	once := false
	start := func(when string) {
		t.Helper()
		for range 10 { // a crash loop, then the rollback, then the previous version
			if err := dev.Start(ctx); err == nil {
				return
			} else if !strings.Contains(err.Error(), "exited") {
				t.Fatalf("%s: the validator does not start: %v", when, err)
			}
			if once {
				return
			}
			dev.Stop(true)
			for l := range dev.Lines {
				c.feedback("", l)
			}
		}
		t.Fatalf("%s: the validator exits at every start", when)
	}
	// restarted plays systemd's Restart=always: the validator exited
	// (an update installed, a rollback, a crash) is started again.
	restarted := func() {
		select {
		case <-dev.Exited():
			dev.Stop(true)
			for l := range dev.Lines {
				c.feedback("", l)
			}
			start("after it exited")
		default:
		}
	}

	taps := func(n int) {
		t.Helper()
		for range n {
			restarted()
			code := riders[rnd.IntN(len(riders))].Code(time.Now())
			line, err := dev.Scan(ctx, code)
			if err != nil && strings.Contains(err.Error(), "exited") {
				continue // it went to install the release in the middle of the tap
			}
			must(t, err)
			c.feedback(code, line)
		}
	}
	start("first start")
	taps(3)
	_, err = r.command(ctx, "farego-settlement", "release", "add", "--data", r.DataDir(), "--file", filepath.Join(builds, "1.1.0", "farego-validator"),
		"--version", "1.1.0", "--arch", update.Arch())
	must(t, err)
	must(t, r.API(ctx, "POST", "/v1/releases/1.1.0/rollout", map[string]any{"devices": []string{dev.ID}}, nil))

	var torn, discarded int
	inPlace := map[string]int{}
	// powerCut cuts the power (the validator killed, the disk's unsynced
	// writes dropped), checks what survived and boots again: a new
	// kernel boot.
	powerCut := func(when string, allowed ...string) {
		t.Helper()
		dev.Stop(true)
		for l := range dev.Lines {
			c.feedback("", l)
		}
		rep, err := disk.Cut(rnd.IntN(2) == 0)
		must(t, err)
		if rep.Torn {
			torn++
		}
		if rep.FilesRolledBack+rep.EntriesDiscarded+rep.FilesRemoved > 0 {
			discarded++
		}
		fi, err := os.Stat(installed)
		if err != nil {
			t.Fatalf("%s: no binary in place: %v", when, err)
		}
		got, err := os.ReadFile(installed)
		must(t, err)
		found := ""
		for _, v := range allowed {
			if bytes.Equal(got, bins[v]) {
				found = v
			}
		}
		if found == "" {
			t.Fatalf("%s: the binary in place (%d bytes) is none of %v", when, len(got), allowed)
		}
		inPlace[found]++
		if fi.Mode().Perm()&0o100 == 0 {
			t.Fatalf("%s: the binary in place has mode %v", when, fi.Mode().Perm())
		}
		c.check(ctx, when, filepath.Join(dataDir, "validator.db"), logFile)
		boot++
		dev.Env = []string{update.BootIDEnv + "=otacut-boot-" + strconv.Itoa(boot), "FAREGO_TEST_CRASH_VERSION=1.2.0"}
		start(when)
	}
	logged := func(msg string) int {
		b, _ := os.ReadFile(logFile)
		return strings.Count(string(b), msg)
	}
	for i := range cuts {
		// Soon after the start: while the rollout arrives, the download
		// runs, the release is installed, or the new version boots.
		time.Sleep(time.Duration(rnd.IntN(400)) * time.Millisecond)
		if rnd.IntN(2) == 0 {
			taps(1)
		}
		powerCut(fmt.Sprintf("cut %d", i+1), "1.0.0", "1.1.0")
	}
	for _, m := range []string{"update: downloading", "update: installed; restarting", "update: running a new version", "update: new version healthy", "not counted as a failed start"} {
		t.Logf("%q logged %d times during the cuts", m, logged(m))
	}
	// No more cuts: the release is (or gets) installed and confirmed.
	must(t, WaitFor(ctx, 3*time.Minute, "1.1.0 confirmed healthy", func() bool {
		restarted()
		return logged("update: new version healthy") > 0
	}))
	if got, _ := os.ReadFile(installed); !bytes.Equal(got, bins["1.1.0"]) {
		t.Fatal("1.1.0 is not in place at the end")
	}
	if logged("rolling back") > 0 {
		t.Error("the release was rolled back")
	}
	taps(3)

	// 1.2.0 exits at every start: the power goes while it is installed,
	// while it crash-loops and while it is rolled back.
	_, err = r.command(ctx, "farego-settlement", "release", "add", "--data", r.DataDir(), "--file", filepath.Join(builds, "1.2.0", "farego-validator"),
		"--version", "1.2.0", "--arch", update.Arch())
	must(t, err)
	must(t, r.API(ctx, "POST", "/v1/releases/1.2.0/rollout", map[string]any{"devices": []string{dev.ID}}, nil))
	once = true
	for i := range cuts {
		time.Sleep(time.Duration(rnd.IntN(400)) * time.Millisecond)
		restarted()
		time.Sleep(time.Duration(rnd.IntN(100)) * time.Millisecond)
		powerCut(fmt.Sprintf("cut %d of the crashing release", i+1), "1.1.0", "1.2.0")
	}
	once = false
	must(t, WaitFor(ctx, 3*time.Minute, "1.2.0 rolled back", func() bool {
		restarted()
		got, _ := os.ReadFile(installed)
		return logged("update: rolling back") > 0 && bytes.Equal(got, bins["1.1.0"])
	}))
	taps(3)
	c.drain(ctx, []*Device{dev})
	dev.Stop(false)
	c.check(ctx, "after the drain", filepath.Join(dataDir, "validator.db"), logFile)
	t.Logf("update power cuts: %d (binary in place after them: %v; %d tore a page, %d discarded unsynced data or entries); "+
		"1.2.0 crashed at %d starts, rolled back %d times; %d taps, %d green; ledger: %d rides, exactly the green ones (+%d of %d cut off mid-tap)",
		2*cuts, inPlace, torn, discarded, logged("crashing at start for a test"), logged("update: rolling back"),
		c.taps, len(c.green), c.rides, c.cutOffSettled, len(c.cutOff))
}

// syncPath fsyncs a file or directory.
func syncPath(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	must(t, f.Sync())
}
