package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The device binary must not link the server's database or broker code:
// it runs on small ARM boards and its attack surface should be its own.
func TestValidatorDoesNotLinkServerCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/farego/farego/server",
			"github.com/farego/farego/sync/ingest",
			"github.com/mochi-mqtt/",
			"modernc.org/sqlite",
			"github.com/jackc/pgx",
			"database/sql",
		} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("farego-validator links %s", dep)
			}
		}
	}
}
