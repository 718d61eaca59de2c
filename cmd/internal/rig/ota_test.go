package rig

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/farego/farego/sync/update"
)

// rolloutSeq returns the server's current rollout sequence (GET
// /v1/releases), 0 with none.
func rolloutSeq(t *testing.T, ctx context.Context, r *Rig) uint64 {
	t.Helper()
	var got struct {
		Rollout *struct {
			Seq uint64 `json:"seq"`
		} `json:"rollout"`
	}
	must(t, r.API(ctx, "GET", "/v1/releases", nil, &got))
	if got.Rollout == nil {
		return 0
	}
	return got.Rollout.Seq
}

// buildVersion builds farego-validator with agent.Version set to version.
func buildVersion(t *testing.T, ctx context.Context, dir, version string) string {
	t.Helper()
	out := filepath.Join(dir, version, "farego-validator")
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", TestHooksTag, "-ldflags", "-X github.com/farego/farego/agent.Version="+version+" -X github.com/farego/farego/agent.VersionStamp=farego-version:"+version+"/",
		"-o", out, "./cmd/farego-validator")
	cmd.Dir = "../../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", version, err, b)
	}
	return out
}

// supervisor plays systemd with Restart=always for one validator: it
// starts the binary at a fixed path, and starts it again whenever it
// exits, until stopped (at most maxStarts starts).
type supervisor struct {
	bin, config, log string
	env              []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exits   []string // "version: exit status", in order
	stopped bool
	done    chan struct{}
}

const maxStarts = 30

func (s *supervisor) run() {
	defer close(s.done)
	for i := 0; i < maxStarts; i++ {
		logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return
		}
		cmd := exec.Command(s.bin, "run", "--config", s.config)
		cmd.Env = append(os.Environ(), s.env...)
		cmd.Stderr, cmd.Stdout = logf, logf
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			logf.Close()
			return
		}
		err = cmd.Start()
		s.cmd = cmd
		s.mu.Unlock()
		if err == nil {
			err = cmd.Wait()
		}
		logf.Close()
		s.mu.Lock()
		s.exits = append(s.exits, fmt.Sprint(err))
		stopped := s.stopped
		s.mu.Unlock()
		if stopped {
			return
		}
		time.Sleep(200 * time.Millisecond) // RestartSec
	}
}

func (s *supervisor) stop() {
	s.mu.Lock()
	s.stopped = true
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(os.Interrupt)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.mu.Lock()
		s.cmd.Process.Kill()
		s.mu.Unlock()
		<-s.done
	}
}

func (s *supervisor) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *supervisor) exitList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.exits...)
}

// TestOTAUpdate runs a validator (1.0.0) under a supervisor that restarts
// it like systemd, against a real settlement server, and rolls releases
// out to it with farego-settlement release and the API:
//
//   - a corrupted binary on the server: refused (SHA-256), 1.0.0 keeps running;
//   - a release signed with another fleet key: the server refuses to roll it out;
//   - the good 1.1.0 (the operator rolls out again): installed, restarted,
//     confirmed healthy, reported by the server;
//   - 1.2.0 crashes at start: after max_boots starts the previous binary
//     is back, 1.1.0 runs, and the failure is recorded and logged.
func TestOTAUpdate(t *testing.T) {
	r, ctx := newRig(t)
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	builds := t.TempDir()
	bins := map[string]string{}
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0"} {
		bins[v] = buildVersion(t, ctx, builds, v)
	}
	arch := update.Arch()

	d, err := r.Provision(ctx, "ota-1", "42")
	must(t, err)
	binDir := filepath.Join(d.Dir, "bin")
	must(t, os.MkdirAll(binDir, 0o755))
	installed := filepath.Join(binDir, "farego-validator")
	copyFile(t, bins["1.0.0"], installed)
	must(t, d.AppendConfig(fmt.Sprintf("[update]\nserver = %q\nbinary = \"bin/farego-validator\"\nhealth_timeout = \"90s\"\nmax_boots = 2", "http://"+r.HTTP)))
	master, slave, err := pty.Open() // the scanner, for every start
	must(t, err)
	defer master.Close()
	must(t, os.Symlink(slave.Name(), filepath.Join(d.Dir, "scanner-front")))
	slave.Close()
	go drain(master)

	logPath := filepath.Join(d.Dir, "validator.log")
	sup := &supervisor{bin: installed, config: filepath.Join(d.Dir, "validator.toml"), log: logPath,
		env: []string{"FAREGO_TEST_CRASH_VERSION=1.2.0"}, done: make(chan struct{})}
	go sup.run()
	defer sup.stop()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("validator.log (tail):\n%s\nexits: %v", tail(string(b), 60), sup.exitList())
		}
	})
	waitSoftware(t, ctx, r, "1.0.0")
	settlement := func(args ...string) (string, error) {
		// farego-settlement release SUB --data DIR ARGS…
		return r.command(ctx, "farego-settlement", append(args[:2:2], append([]string{"--data", r.DataDir()}, args[2:]...)...)...)
	}

	// A corrupted binary on the server (same size, one bit flipped).
	_, err = settlement("release", "add", "--file", bins["1.1.0"], "--version", "1.1.0", "--arch", arch)
	must(t, err)
	stored := filepath.Join(r.DataDir(), "releases", "1.1.0", arch, "binary")
	good, err := os.ReadFile(stored)
	must(t, err)
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 0x10
	must(t, os.WriteFile(stored, bad, 0o644))
	pid := sup.pid()
	// A device the ledger does not know (a typo) is refused, nothing set.
	if out, err := settlement("release", "rollout", "--devices", "ota-1,ota-9", "1.1.0"); err == nil || !strings.Contains(err.Error(), `no device "ota-9"`) {
		t.Fatalf("rollout to an unknown device: %q, %v", out, err)
	}
	// The operator is told at once, and nothing goes out: the CLI and the
	// API refuse to roll out a binary that is no longer its manifest's
	// (it went out, and every device downloaded it and refused it).
	if out, err := settlement("release", "rollout", "--devices", "ota-1", "1.1.0"); err == nil ||
		!strings.Contains(err.Error(), "damaged on disk") || !strings.Contains(err.Error(), "release add the binary again") {
		t.Fatalf("rollout of a damaged binary: %q, %v; want it refused as damaged", out, err)
	}
	if err := r.API(ctx, "POST", "/v1/releases/1.1.0/rollout", map[string]any{"devices": []string{"ota-1"}}, nil); err == nil ||
		!strings.Contains(err.Error(), "damaged on disk") {
		t.Fatalf("API rollout of a damaged binary: %v; want it refused as damaged", err)
	}
	if ro := rolloutSeq(t, ctx, r); ro != 0 {
		t.Fatalf("a refused rollout was set (rollout %d)", ro)
	}
	// Damaged after its rollout (the device stopped meanwhile, so that it
	// fetches the binary only once the damage is done): the device refuses
	// it.
	must(t, os.WriteFile(stored, good, 0o644))
	must(t, syscall.Kill(pid, syscall.SIGSTOP))
	out, err := settlement("release", "rollout", "--devices", "ota-1", "1.1.0")
	if err == nil {
		err = os.WriteFile(stored, bad, 0o644)
	}
	must(t, syscall.Kill(pid, syscall.SIGCONT))
	must(t, err)
	if want := "builds of 1.1.0: " + arch + " ("; !strings.Contains(out, want) {
		t.Errorf("rollout said %q; want the release's builds (%q)", out, want)
	}
	waitLog(t, ctx, logPath, `"msg":"update: refused"`, "SHA-256")
	if sup.pid() != pid || readFile(t, installed) != readFile(t, bins["1.0.0"]) {
		t.Fatal("the corrupted release was installed or the validator restarted")
	}
	waitSoftware(t, ctx, r, "1.0.0")
	// The operator stops it from the CLI (--percent 0 alone: refused as a
	// usage error before, so that only the API could stop a rollout).
	seq := rolloutSeq(t, ctx, r)
	if out, err := settlement("release", "rollout", "--percent", "0", "1.1.0"); err != nil || !strings.Contains(out, "stopped") {
		t.Fatalf("stopping the rollout: %q, %v", out, err)
	}
	if got := rolloutSeq(t, ctx, r); got != seq+1 {
		t.Errorf("rollout after the stop: %d, want %d", got, seq+1)
	}

	// A release signed with another fleet key is refused before it
	// reaches a device.
	other := filepath.Join(r.Dir, "other")
	_, err = r.command(ctx, "farego-settlement", "init", "--data", other)
	must(t, err)
	_, err = r.command(ctx, "farego-settlement", "release", "add", "--data", other, "--file", bins["1.2.0"], "--version", "1.2.0", "--arch", arch)
	must(t, err)
	foreign := filepath.Join(r.DataDir(), "releases", "1.2.0")
	must(t, os.CopyFS(foreign, os.DirFS(filepath.Join(other, "releases", "1.2.0"))))
	if out, err := settlement("release", "rollout", "--devices", "ota-1", "1.2.0"); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("rollout of a release signed with another key: %q, %v", out, err)
	}
	must(t, os.RemoveAll(foreign)) // 1.2.0 is added, signed with this fleet's key, below
	// A binary that does not carry its release's version (built without
	// make dist's VERSION=) is refused: every validator would install it,
	// report another version and roll it back.
	if out, err := settlement("release", "add", "--file", bins["1.2.0"], "--version", "1.3.0", "--arch", arch); err == nil ||
		!strings.Contains(err.Error(), "does not carry the version 1.3.0") {
		t.Fatalf("a binary of 1.2.0 added as 1.3.0: %q, %v", out, err)
	}

	// The binary repaired, the operator rolls 1.1.0 out again (API).
	must(t, os.WriteFile(stored, good, 0o644))
	must(t, r.API(ctx, "POST", "/v1/releases/1.1.0/rollout", map[string]any{"devices": []string{"ota-1"}}, nil))
	waitSoftware(t, ctx, r, "1.1.0")
	waitLog(t, ctx, logPath, `"msg":"update: new version healthy"`, `"version":"1.1.0"`)
	if readFile(t, installed) != readFile(t, bins["1.1.0"]) {
		t.Fatal("1.1.0 is not in place")
	}
	if readFile(t, filepath.Join(binDir, ".farego-validator.previous")) != readFile(t, bins["1.0.0"]) {
		t.Error("the previous binary (1.0.0) is not kept")
	}

	// 1.2.0 crashes at every start: rolled back after max_boots starts.
	_, err = settlement("release", "add", "--file", bins["1.2.0"], "--version", "1.2.0", "--arch", arch)
	must(t, err)
	_, err = settlement("release", "rollout", "--percent", "100", "1.2.0")
	must(t, err)
	waitLog(t, ctx, logPath, `"msg":"update: rolling back to the previous version"`, `"version":"1.2.0"`)
	waitSoftware(t, ctx, r, "1.1.0")
	if readFile(t, installed) != readFile(t, bins["1.1.0"]) {
		t.Fatal("1.1.0 is not back in place")
	}
	var st struct {
		Failed *struct {
			Version, Reason string
		} `json:"failed"`
	}
	must(t, json.Unmarshal([]byte(readFile(t, filepath.Join(binDir, ".farego-validator.update.json"))), &st))
	if st.Failed == nil || st.Failed.Version != "1.2.0" || !strings.Contains(st.Failed.Reason, "at start") {
		t.Fatalf("update state %+v, want the failure of 1.2.0", st.Failed)
	}
	crashes := 0
	for _, e := range sup.exitList() {
		if e == "exit status 1" {
			crashes++
		}
	}
	if crashes != 2 {
		t.Errorf("exits %v: want 2 crashes of 1.2.0 before the rollback", sup.exitList())
	}
	// The retained rollout of 1.2.0 comes again on every connection: not
	// tried again.
	installs := 0
	for _, l := range strings.Split(readFile(t, logPath), "\n") {
		if strings.Contains(l, `"msg":"update: installed; restarting into the new version"`) && strings.Contains(l, `"version":"1.2.0"`) {
			installs++
		}
	}
	if installs != 1 {
		t.Errorf("1.2.0 installed %d times, want once", installs)
	}
	// Rolling out an older version to a listed device says it will be
	// refused (it was rolled out without a word, and failed on the bus).
	_, err = settlement("release", "add", "--file", bins["1.0.0"], "--version", "1.0.0", "--arch", arch)
	must(t, err)
	out, err = settlement("release", "rollout", "--devices", "ota-1", "1.0.0")
	must(t, err)
	if !strings.Contains(out, "warning: ota-1 runs 1.1.0, newer than 1.0.0: it refuses this rollout") {
		t.Errorf("rollout of an older version: %q, want a warning that ota-1 runs a newer one", out)
	}
	if out, err = settlement("release", "rollout", "--devices", "ota-1", "1.1.0"); err != nil || !strings.Contains(out, "ota-1 runs 1.1.0 already") {
		t.Errorf("rollout of the version it runs: %q, %v; want a note that it runs it already", out, err)
	}
}

func drain(f *os.File) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	must(t, err)
	must(t, os.WriteFile(to, b, 0o755))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// waitSoftware waits until the server shows the device online running
// version.
func waitSoftware(t *testing.T, ctx context.Context, r *Rig, version string) {
	t.Helper()
	var got string
	err := WaitFor(ctx, 2*time.Minute, "the validator to run "+version, func() bool {
		var out struct {
			Devices []struct {
				Online   bool   `json:"online"`
				Software string `json:"software"`
			} `json:"devices"`
		}
		if err := r.API(ctx, "GET", "/v1/devices", nil, &out); err != nil || len(out.Devices) != 1 {
			return false
		}
		got = out.Devices[0].Software
		return out.Devices[0].Online && got == version
	})
	if err != nil {
		t.Fatalf("%v (the server shows %q)", err, got)
	}
}

// waitLog waits for a log line holding every one of subs.
func waitLog(t *testing.T, ctx context.Context, path string, subs ...string) {
	t.Helper()
	err := WaitFor(ctx, 2*time.Minute, fmt.Sprintf("a log line with %q", subs), func() bool {
		for _, l := range strings.Split(readFile(t, path), "\n") {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(l, s)
			}
			if all {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
}
