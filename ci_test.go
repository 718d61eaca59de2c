package farego_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// serviceEnv matches code that reads the address of a test service itself:
// FAREGO_TEST_POSTGRES or FAREGO_TEST_MOSQUITTO, by name or through one of
// the constants naming them.
var serviceEnv = regexp.MustCompile(`(Getenv|LookupEnv)\(\s*(postgresEnv|mosquittoEnv|(ledgertest\.)?PostgresEnv|(brokertest\.)?MosquittoEnv|"FAREGO_TEST_(POSTGRES|MOSQUITTO)")\s*\)`)

// serviceHelpers are the two places that read them: ledgertest.PostgresURL
// and brokertest.MosquittoURL, which skip a test without its service, or
// fail it under FAREGO_CI.
var serviceHelpers = map[string]bool{
	"server/ledger/ledgertest/ledgertest.go": true,
	"sync/brokertest/external.go":            true,
}

// TestServicesAskTheirHelpers: a test of PostgreSQL or of the external
// Mosquitto gets the service's address from its helper, so that under
// FAREGO_CI a missing service fails it. Tests that read the variable
// themselves and skipped without it skipped in CI too: 95 PostgreSQL tests
// (every forEachBackend run among them) and the 4 external-broker tests.
func TestServicesAskTheirHelpers(t *testing.T) {
	checked := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || serviceHelpers[filepath.ToSlash(path)] {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		if !serviceEnv.Match(b) {
			return nil
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := serviceEnv.FindString(line); m != "" {
				t.Errorf("%s:%d reads %s itself: use ledgertest.PostgresURL / PostgresSchema or brokertest.MosquittoURL (they fail under FAREGO_CI)",
					path, i+1, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range serviceHelpers {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the helper %s: %v", p, err)
		}
	}
	if checked < 100 {
		t.Fatalf("checked %d Go files only", checked)
	}
}
