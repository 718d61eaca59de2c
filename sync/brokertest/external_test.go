package brokertest

import (
	"net"
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
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		url := "tcp://" + l.Addr().String()
		t.Setenv(MosquittoEnv, url)
		if got := MosquittoURL(t); got != url {
			t.Errorf("MosquittoURL = %q, want the variable's %s", got, url)
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

// A FAREGO_TEST_MOSQUITTO left set where no broker listens (the README's
// line copied to a machine without Mosquitto) fails at once, saying what
// to do; each test of the external broker used to wait out its timeouts
// (TestMosquittoDrain: 90 s) and fail with "test server did not subscribe".
func TestMosquittoURLUnreachable(t *testing.T) {
	if os.Getenv("BROKERTEST_CHILD") == "mosquitto-unreachable" {
		MosquittoURL(t)
		return
	}
	if os.Getenv("FAREGO_QEMU") != "" {
		t.Skip("starts another program; skipped under qemu-user emulation")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cmd := exec.Command(os.Args[0], "-test.run=^TestMosquittoURLUnreachable$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BROKERTEST_CHILD=mosquitto-unreachable", "FAREGO_CI=", MosquittoEnv+"=tcp://"+addr)
	out, err := cmd.CombinedOutput()
	if _, failed := err.(*exec.ExitError); !failed {
		t.Fatalf("with %s naming a closed port: %v, want a failed test\n%s", MosquittoEnv, err, out)
	}
	for _, want := range []string{MosquittoEnv, addr, "unset", "--- FAIL: TestMosquittoURLUnreachable"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("with %s naming a closed port the failure does not say %q:\n%s", MosquittoEnv, want, out)
		}
	}
}
