package brokertest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// MosquittoURL gives the external broker's URL; without one it skips, and
// under FAREGO_CI it fails, naming what is missing (checked in a child
// process: a failing subtest would fail this test).
func TestMosquittoURL(t *testing.T) {
	if os.Getenv("BROKERTEST_CHILD") == "mosquitto-url" {
		MosquittoURL(t) // FAREGO_CI set, FAREGO_TEST_MOSQUITTO not: fails
		return
	}
	t.Run("set", func(t *testing.T) {
		t.Setenv(MosquittoEnv, "tcp://127.0.0.1:1")
		if got := MosquittoURL(t); got != "tcp://127.0.0.1:1" {
			t.Errorf("MosquittoURL = %q, want the variable's tcp://127.0.0.1:1", got)
		}
	})
	var skipped bool
	t.Run("skipped without it", func(t *testing.T) {
		t.Setenv(MosquittoEnv, "")
		t.Setenv("FAREGO_CI", "")
		defer func() { skipped = t.Skipped() }()
		MosquittoURL(t)
		t.Error("not skipped")
	})
	if !skipped {
		t.Errorf("MosquittoURL did not skip without %s", MosquittoEnv)
	}

	if os.Getenv("FAREGO_QEMU") != "" {
		t.Skip("starts another program; skipped under qemu-user emulation")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMosquittoURL$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BROKERTEST_CHILD=mosquitto-url", "FAREGO_CI=1", MosquittoEnv+"=")
	out, err := cmd.CombinedOutput()
	if _, failed := err.(*exec.ExitError); !failed {
		t.Fatalf("under FAREGO_CI without %s: %v, want a failed test\n%s", MosquittoEnv, err, out)
	}
	for _, want := range []string{"Mosquitto", MosquittoEnv, "FAREGO_CI", "--- FAIL: TestMosquittoURL"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("under FAREGO_CI without %s the failure does not say %q:\n%s", MosquittoEnv, want, out)
		}
	}
}
