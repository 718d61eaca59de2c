package ingest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the layering honest: sync/* must not import the
// server (the ledger plugs in through Store), nor link broker code.
func TestDependencies(t *testing.T) {
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
			"github.com/farego/farego/server",
			"github.com/farego/farego/sync/brokertest",
			"github.com/mochi-mqtt/",
			"github.com/jackc/pgx",
			"modernc.org/sqlite",
		} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("sync/ingest depends on %s", dep)
			}
		}
	}
}
