package farego_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/farego/farego"

// layers ranks the top-level folders: a package may import packages of its
// own folder and of folders with a lower rank. queue and driver share the
// bottom and do not import each other.
var layers = map[string]int{
	"cmd":    4,
	"server": 3,
	"sync":   2,
	"agent":  1,
	"queue":  0,
	"driver": 0,
}

// folder returns the top-level folder of a package of the module ("" for
// the root, which imports nothing).
func folder(pkg string) string {
	rest := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
	f, _, _ := strings.Cut(rest, "/")
	return f
}

// TestImportGraph is the one dependency guard of the module. For every
// package, its tests included, it checks that imports of the module run
// one way (cmd → server → sync → agent → queue/driver), that only the
// queue imports bbolt (the engine stays behind queue.State), and that
// sync/brokertest (test support: brokers, PKI, leak check) is imported by
// tests only. It also checks that the validator binary links no server,
// broker or database code: it runs on small ARM boards, and its attack
// surface should be its own.
func TestImportGraph(t *testing.T) {
	if os.Getenv("FAREGO_QEMU") != "" {
		t.Skip("starts another program; skipped under qemu-user emulation")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	out, err := exec.Command(goBin, "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports,Error", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
			Error                              *struct{ Err string }
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		// With -e, go list reports what it could not load as a package
		// with an Error: a pattern that failed to match (its ImportPath is
		// the pattern, module+"/..."), or a package it could not read.
		if p.Error != nil {
			t.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
			continue
		}
		pkg := p.ImportPath
		from := folder(pkg)
		rank, ok := layers[from]
		if !ok && from != "" {
			t.Errorf("%s is in a top-level folder the house does not have (%s/)", pkg, from)
			continue
		}
		for i, list := range [][]string{p.Imports, p.TestImports, p.XTestImports} {
			test := i > 0
			for _, imp := range list {
				checked++
				if strings.HasPrefix(imp, "go.etcd.io/bbolt") && pkg != module+"/queue" {
					t.Errorf("%s imports %s: only queue may (use queue.State)", pkg, imp)
				}
				if !strings.HasPrefix(imp, module+"/") {
					continue
				}
				if imp == module+"/sync/brokertest" && !test {
					t.Errorf("%s imports %s outside its tests", pkg, imp)
				}
				to := folder(imp)
				if from == "" || to == from {
					continue
				}
				if layers[to] >= rank {
					t.Errorf("%s imports %s: %s/ may not import %s/ (cmd → server → sync → agent → queue, driver)", pkg, imp, from, to)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("go list listed no imports")
	}

	deps, err := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}}", "./cmd/farego-validator").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(deps)) {
		for _, banned := range []string{
			module + "/server",
			module + "/sync/ingest",
			module + "/sync/brokertest",
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

// TestTopLevel keeps the top of the repository to the house's folders:
// those of the import graph, testdata/ and .ci/ (and dot-folders of tools).
// Files of another kind (packaging, scripts) live beside the code that
// uses them, not in a new top-level folder.
func TestTopLevel(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		seen[name] = true
		if !e.IsDir() || strings.HasPrefix(name, ".") || name == "testdata" {
			continue
		}
		if _, ok := layers[name]; !ok && name != "bin" && name != "dist" && name != "try" && name != "demo-data" {
			t.Errorf("top-level folder %s/ is not one of the house's (cmd, server, sync, agent, queue, driver, testdata, .ci)", name)
		}
	}
	for _, want := range []string{"agent", "driver", "queue", "sync", "server", "cmd", "testdata", "go.mod", "Makefile", "README.md", ".ci"} {
		if !seen[want] {
			t.Errorf("the top level has no %s", want)
		}
	}
}
