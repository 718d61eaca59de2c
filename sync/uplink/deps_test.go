package uplink

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDeviceDependencies keeps the device side honest: the uplink is linked
// into the validator binary, which must not carry broker, server or
// database code.
func TestDeviceDependencies(t *testing.T) {
	skipUnderQEMU(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/mochi-mqtt/",
			"github.com/farego/farego/server",
			"github.com/farego/farego/sync/ingest",
			"github.com/farego/farego/sync/brokertest",
			"github.com/jackc/pgx",
			"modernc.org/sqlite",
		} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("the uplink depends on %s", dep)
			}
		}
	}
}

// skipUnderQEMU skips tests that start other programs when the test runs
// under qemu-user emulation (make test-arm sets FAREGO_QEMU): qemu-user can
// deadlock forking a multithreaded emulated process. What they check does
// not depend on the architecture and runs natively in make test.
func skipUnderQEMU(t *testing.T) {
	t.Helper()
	if os.Getenv("FAREGO_QEMU") != "" {
		t.Skip("starts another program; skipped under qemu-user emulation")
	}
}
