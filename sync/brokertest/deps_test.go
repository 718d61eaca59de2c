package brokertest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyTestsImportIt keeps brokertest test support only: no package of
// the module imports it outside its tests (Go's internal rule no longer
// does that since the server's tests use it too).
func TestOnlyTestsImportIt(t *testing.T) {
	if os.Getenv("FAREGO_QEMU") != "" {
		t.Skip("starts another program; skipped under qemu-user emulation")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	const self = "github.com/farego/farego/sync/brokertest"
	out, err := exec.Command(goBin, "list", "-e", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "github.com/farego/farego/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		imports := strings.Fields(line)
		if len(imports) == 0 {
			continue
		}
		for _, imp := range imports[1:] {
			if imp == self {
				t.Errorf("%s imports %s outside its tests", imports[0], self)
			}
		}
	}
}
