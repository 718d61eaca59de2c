package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/sync/brokertest"
)

var (
	hooksOnce sync.Once
	hooksBin  string
	hooksErr  error
)

// testHooksBin builds farego-validator with -tags farego_testhooks (the
// OTA tests' fault injection) once, beside validatorBin.
func testHooksBin(t *testing.T) string {
	t.Helper()
	hooksOnce.Do(func() {
		hooksBin = filepath.Join(filepath.Dir(validatorBin), "farego-validator-testhooks")
		if out, err := exec.Command("go", "build", "-tags", "farego_testhooks", "-o", hooksBin, ".").CombinedOutput(); err != nil {
			hooksErr = fmt.Errorf("building farego-validator -tags farego_testhooks: %w\n%s", err, out)
		}
	})
	if hooksErr != nil {
		t.Fatal(hooksErr)
	}
	return hooksBin
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
