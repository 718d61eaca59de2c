package driver

import (
	"go/build"
	"strings"
	"testing"
)

// TestNoFarego keeps the hardware edges ignorant of the rest of farego: the
// driver packages import nothing from the module (no fares, no codes, no
// queue), so the agent can be tested without hardware and the drivers
// without the agent.
func TestNoFarego(t *testing.T) {
	for _, dir := range []string{"scanner", "feedback"} {
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		imports := append(append(pkg.Imports, pkg.TestImports...), pkg.XTestImports...)
		for _, imp := range imports {
			if strings.HasPrefix(imp, "github.com/farego/farego/") && !strings.HasPrefix(imp, "github.com/farego/farego/driver/") {
				t.Errorf("driver/%s imports %s", dir, imp)
			}
		}
	}
}
