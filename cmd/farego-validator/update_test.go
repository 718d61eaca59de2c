package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/sync/brokertest"
)

// testHooksBin builds farego-validator with -tags farego_testhooks (the
// OTA tests' fault injection) once, beside validatorBin.
func testHooksBin(t *testing.T) string {
	t.Helper()
	return builtBin(t, "farego-validator-testhooks", nil, "-tags", "farego_testhooks")
}

// withUpdate installs a copy of bin as the device's binary (bin/ in its
// directory, which d.start runs) and adds an [update] section (extra
// appended) with a broker for the rollouts.
func (d *device) withUpdate(t *testing.T, bin, extra string) {
	t.Helper()
	d.withBroker(t, brokertest.Start(t, nil))
	must(t, os.MkdirAll(filepath.Join(d.dir, "bin"), 0o755))
	d.bin = filepath.Join(d.dir, "bin", "farego-validator")
	copyFile(t, bin, d.bin)
	cfg, _ := os.ReadFile(d.cfgPath)
	// Nothing listens on port 1: these tests download nothing.
	cfg = append(cfg, fmt.Sprintf("\n[update]\nserver = \"http://127.0.0.1:1\"\nbinary = \"bin/farego-validator\"\n%s\n", extra)...)
	must(t, os.WriteFile(d.cfgPath, cfg, 0o644))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	must(t, err)
	must(t, os.WriteFile(to, b, 0o755))
}

// TestCrashHookOnlyWithTestTag: the release build ignores
// FAREGO_TEST_CRASH_VERSION (whoever sets the service's environment
// cannot make it crash-loop); the build with -tags farego_testhooks, the
// OTA test's, still exits at start.
func TestCrashHookOnlyWithTestTag(t *testing.T) {
	crash := "FAREGO_TEST_CRASH_VERSION=" + agent.Version
	d := newDevice(t, "", "")
	d.withUpdate(t, validatorBin, "")
	d.env = []string{crash}
	d.start()
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 1001, now).Code(t, now)), "ACCEPTED  2.50 EUR")
	d.stop()

	copyFile(t, testHooksBin(t), d.bin)
	cmd := exec.Command(d.bin, "run", "--config", d.cfgPath)
	cmd.Env = append(os.Environ(), crash)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitFailure || !strings.Contains(string(out), "crashing at start for a test") {
		t.Fatalf("the test-hooks build with %s: %v, want exit status %d after \"crashing at start for a test\"\n%s", crash, err, exitFailure, out)
	}
}

// pendingUpdate makes the device's binary a version just installed over
// previous (kept as .farego-validator.previous) and waiting to report
// healthy, as the updater leaves it before the restart.
func (d *device) pendingUpdate(t *testing.T, previous string) {
	t.Helper()
	dir := filepath.Dir(d.bin)
	copyFile(t, previous, filepath.Join(dir, ".farego-validator.previous"))
	st := fmt.Sprintf(`{"pending":{"version":%q,"from":"0.9.0","at":%q,"boots":0,"rollout":3},"installed_rollout":3,"newest_rollout":3}`,
		agent.Version, time.Now().UTC().Format(time.RFC3339))
	must(t, os.WriteFile(filepath.Join(dir, ".farego-validator.update.json"), []byte(st), 0o600))
}

// updateOutcome waits for the log line that settles a pending update:
// confirmed or rolled back.
func (d *device) updateOutcome() string {
	d.t.Helper()
	for {
		l := d.waitLog("update: ")
		if strings.Contains(l, "update: new version healthy") || strings.Contains(l, "update: rolling back") {
			return l
		}
	}
}

// TestUpdateConfirmedOnlyAfterTapLoopBeats: a new version that reaches
// the broker and starts its scanners but whose tap loop never beats (the
// test hook of a tap path hung from the start) is not confirmed within
// health_timeout: it is rolled back (exit status 3, the previous binary
// in place). The same version with its tap loop beating is confirmed.
func TestUpdateConfirmedOnlyAfterTapLoopBeats(t *testing.T) {
	hooks := testHooksBin(t)
	prev, err := os.ReadFile(validatorBin)
	must(t, err)

	d := newDevice(t, "", "")
	d.withUpdate(t, hooks, `health_timeout = "6s"`)
	d.pendingUpdate(t, validatorBin)
	d.env = []string{"FAREGO_TEST_SILENT_TAP_LOOP_VERSION=" + agent.Version}
	d.start()
	l := d.updateOutcome()
	if !strings.Contains(l, "rolling back to the previous version") {
		t.Fatalf("a version whose tap loop never beats: %q, want it rolled back", l)
	}
	connected := strings.Contains(d.logged(), "uplink connected")
	if !connected {
		t.Fatal("rolled back without reaching the broker: the test proves nothing")
	}
	err = d.cmd.Wait()
	d.cmd = nil
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitRestart {
		t.Fatalf("exit after the rollback: %v, want status %d", err, exitRestart)
	}
	if got, err := os.ReadFile(d.bin); err != nil || string(got) != string(prev) {
		t.Fatalf("the previous binary is not back in place (%v)", err)
	}

	d = newDevice(t, "", "")
	d.withUpdate(t, hooks, `health_timeout = "6s"`)
	d.pendingUpdate(t, validatorBin)
	d.start()
	if l := d.updateOutcome(); !strings.Contains(l, "update: new version healthy") {
		t.Fatalf("a version whose tap loop beats: %q, want it confirmed", l)
	}
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 1002, now).Code(t, now)), "ACCEPTED  2.50 EUR")
	d.stop()
}

// TestUpdateSaysBinaryDirReadOnly: [update] on while the binary's
// directory cannot be written (the shipped unit's ProtectSystem=strict
// without the ReadWritePaths= drop-in, a package's /usr/bin) is said at
// start, naming the fix. It used to be said only when a rollout came, as
// that day's "update: refused" (and on a small root file system as a lack
// of free space, its first check), and the device never took the update.
func TestUpdateSaysBinaryDirReadOnly(t *testing.T) {
	dir := t.TempDir()
	ro := filepath.Join(dir, "bin")
	must(t, os.Mkdir(ro, 0o555))
	if writableDir(ro) == nil { // root: a read-only mount instead
		ro = "/proc/self"
		if writableDir(ro) == nil {
			t.Skip("no read-only directory to try")
		}
	}
	pub, _, err := ed25519.GenerateKey(nil)
	must(t, err)
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for _, c := range []struct {
		dir  string
		want bool
	}{{ro, true}, {dir, false}} {
		logs.Reset()
		cfg := &Config{DeviceID: "bus-1", dir: dir,
			Update: UpdateConfig{Server: "http://127.0.0.1:1", Binary: filepath.Join(c.dir, "farego-validator")}}
		u, err := bootUpdater(cfg, &linkKeys{fleet: pub}, log)
		if err != nil || u == nil {
			t.Fatalf("bootUpdater with the binary in %s: %v", c.dir, err)
		}
		said := strings.Contains(logs.String(), "not writable") && strings.Contains(logs.String(), "ReadWritePaths="+c.dir)
		if said != c.want {
			t.Errorf("binary in %s (read-only: %v): log %q", c.dir, c.want, logs.String())
		}
	}
}

// TestUpdateSaysBinaryDirFull: a binary's directory that cannot take a
// file because the disk is full is said to be full at start, not to be
// read-only with the drop-in advice (which would not help).
func TestUpdateSaysBinaryDirFull(t *testing.T) {
	dir := t.TempDir()
	probe := writableDir
	t.Cleanup(func() { writableDir = probe })
	writableDir = func(d string) error {
		return &os.PathError{Op: "open", Path: filepath.Join(d, ".farego-validator.probe1"), Err: syscall.ENOSPC}
	}
	pub, _, err := ed25519.GenerateKey(nil)
	must(t, err)
	var logs strings.Builder
	cfg := &Config{DeviceID: "bus-1", dir: dir,
		Update: UpdateConfig{Server: "http://127.0.0.1:1", Binary: filepath.Join(dir, "farego-validator")}}
	u, err := bootUpdater(cfg, &linkKeys{fleet: pub}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil || u == nil {
		t.Fatalf("bootUpdater with a full disk: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "no space left in the binary's directory") || strings.Contains(l, "not writable") ||
		strings.Contains(l, "ReadWritePaths") {
		t.Errorf("a full disk at start: log %q, want it said full, without the read-only advice", l)
	}
}

// TestUpdateRolledBackWhenConfigUnreadable: a new version that cannot
// read the configuration the device runs with (a key it no longer knows:
// parsing is strict) stops before its updater's boot check, so its own
// count of starts never ran and systemd started it again for ever, the
// bus without a validator. Each such start counts (max_boots, 3 when the
// configuration cannot be read); the one past it puts the previous binary
// back and exits with status 3 for systemd to start it, the failure
// recorded for the device's status.
func TestUpdateRolledBackWhenConfigUnreadable(t *testing.T) {
	d := newDevice(t, "", "")
	d.withUpdate(t, validatorBin, "")
	previous := filepath.Join(d.dir, "previous-binary")
	must(t, os.WriteFile(previous, []byte("#!/bin/sh\necho the previous version\n"), 0o755))
	d.pendingUpdate(t, previous)
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	// What a key the new release dropped looks like to it.
	must(t, os.WriteFile(d.cfgPath, append([]byte("retired_key = 1\n"), cfg...), 0o644))

	var exits []int
	for range 4 {
		cmd := exec.Command(d.bin, "run", "--config", d.cfgPath)
		cmd.Env = append(os.Environ(), "FAREGO_BOOT_ID=6f1c0b8e-4d7a-4c55-9a43-2c1e0f5b7d10") // one kernel boot
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("start %d: %v, want an exit status\n%s", len(exits)+1, err, out)
		}
		if !strings.Contains(string(out), "unknown keys: retired_key") {
			t.Fatalf("start %d did not fail on the configuration:\n%s", len(exits)+1, out)
		}
		exits = append(exits, exit.ExitCode())
		if exit.ExitCode() == exitUsage && !strings.Contains(string(out), "update: the new version failed to start; counted towards max_boots") {
			t.Errorf("start %d: the failed start is not said to count:\n%s", len(exits), out)
		}
		if exit.ExitCode() == exitRestart {
			if !strings.Contains(string(out), "update: rolling back to the previous version") {
				t.Errorf("exit status %d without the rollback logged:\n%s", exitRestart, out)
			}
			break
		}
	}
	if want := []int{exitUsage, exitUsage, exitUsage, exitRestart}; !slices.Equal(exits, want) {
		t.Fatalf("exit statuses %v, want %v: the version that cannot read its configuration is not rolled back after max_boots starts", exits, want)
	}
	if got, err := os.ReadFile(d.bin); err != nil || !strings.Contains(string(got), "the previous version") {
		t.Fatalf("the previous binary is not back in place (%v)", err)
	}
	st, err := os.ReadFile(filepath.Join(filepath.Dir(d.bin), ".farego-validator.update.json"))
	must(t, err)
	if !strings.Contains(string(st), `"failed"`) || !strings.Contains(string(st), "stopped 3 times at start") {
		t.Fatalf("the failure is not recorded for the device's status: %s", st)
	}
}
