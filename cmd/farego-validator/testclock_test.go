package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// builds holds one build of farego-validator per name (builtBin).
var builds sync.Map // name → func() (string, error)

// builtBin builds farego-validator once per name, beside validatorBin,
// with go build's args and the environment's extra variables env.
func builtBin(t *testing.T, name string, env []string, args ...string) string {
	t.Helper()
	f, _ := builds.LoadOrStore(name, sync.OnceValues(func() (string, error) {
		bin := filepath.Join(filepath.Dir(validatorBin), name)
		cmd := exec.Command("go", append(append([]string{"build"}, args...), "-o", bin, ".")...)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building farego-validator (go build %s): %w\n%s", strings.Join(args, " "), err, out)
		}
		return bin, nil
	}))
	bin, err := f.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// releaseBuild builds farego-validator once, beside validatorBin, as
// make dist does (static, -trimpath, stripped, no build tags) for this
// machine's architecture.
func releaseBuild(t *testing.T) string {
	t.Helper()
	return builtBin(t, "farego-validator-release", []string{"CGO_ENABLED=0"}, "-trimpath", "-ldflags", "-s -w")
}

// TestClockSkewHookOnlyWithTestTag: a validator built as the release is
// (make dist; its go build lines carry no -tags) ignores
// FAREGO_TEST_CLOCK_SKEW_FILE, so whoever sets a shipped validator's
// environment cannot move the clock that decides whether a payment code
// is fresh: with a file saying 2h, a fresh code is accepted. The build
// with -tags farego_testhooks, the chaos test's, reads it and refuses the
// same kind of code as expired.
func TestClockSkewHookOnlyWithTestTag(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	must(t, err)
	sc := bufio.NewScanner(bytes.NewReader(mk))
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, "$(GO) build") && strings.Contains(l, "-tags") {
			t.Errorf("a Makefile build carries build tags: %s", l)
		}
	}

	d := newDevice(t, "", "")
	skew := filepath.Join(d.dir, "clock-skew")
	must(t, os.WriteFile(skew, []byte("2h"), 0o644))
	d.env = []string{clockSkewEnvName + "=" + skew}
	d.bin = releaseBuild(t)
	d.start()
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 1001, now).Code(t, now)), "ACCEPTED  2.50 EUR")
	d.stop()
	if log := d.logged(); strings.Contains(log, "clock skewed") {
		t.Errorf("the release build read %s:\n%s", clockSkewEnvName, log)
	}

	d.bin = testHooksBin(t)
	d.start()
	now = time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 1002, now).Code(t, now)), "(code_expired)")
	d.stop()
	if log := d.logged(); !strings.Contains(log, "clock skewed by a test file") {
		t.Errorf("the test-hooks build did not read %s:\n%s", clockSkewEnvName, log)
	}
}

// clockSkewEnvName is clockSkewEnv, which only the test-hooks build has.
const clockSkewEnvName = "FAREGO_TEST_CLOCK_SKEW_FILE"
