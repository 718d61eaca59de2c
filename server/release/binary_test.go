package release

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var builds struct {
	sync.Mutex
	dir  string
	bins map[string][]byte
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}

// goBinary builds a small Go program for goos/goarch (GOARM goarm) with
// the Go toolchain, once per test binary: a real executable with the build
// information Add reads.
func goBinary(t *testing.T, goos, goarch, goarm string) []byte {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	key := goos + "/" + goarch + "/" + goarm
	if b, ok := builds.bins[key]; ok {
		return b
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "farego-release-test")
		if err != nil {
			t.Fatal(err)
		}
		// The versions the tests add it as, as make dist's stamp puts one
		// in a validator (Add refuses a binary without its version).
		src := "package main\n\nvar versions = []string{\"1.3.0\", \"1.4.0\", \"1.4.0+build.7\", \"1.5.0\", \"9.9.9\"}\n\n" +
			"func main() { println(\"validator\", versions[len(versions)-1]) }\n"
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/validator\n\ngo 1.22\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		builds.dir, builds.bins = dir, map[string][]byte{}
	}
	out := filepath.Join(builds.dir, strings.ReplaceAll(key, "/", "-"))
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
	cmd.Dir = builds.dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOARM="+goarm, "GOWORK=off", "GOFLAGS=")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build for %s: %v\n%s", key, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	builds.bins[key] = b
	return b
}

// TestAddChecksTheBinary: a build for another machine is refused with what
// it was built for (a validator could neither start it nor roll it back),
// as is a file that is no Go program; nothing is stored, and the version
// stays free.
func TestAddChecksTheBinary(t *testing.T) {
	s := Open(filepath.Join(t.TempDir(), "releases"), fleet)
	arm7, arm64 := goBinary(t, "linux", "arm", "7"), goBinary(t, "linux", "arm64", "")
	for _, c := range []struct {
		name, arch, want string
		bin              []byte
	}{
		{"armv7 build as arm64", "arm64", "built for armv7", arm7},
		{"arm64 build as armv7", "armv7", "built for arm64", arm64},
		{"armv6 build as armv7", "armv7", "built for armv6", goBinary(t, "linux", "arm", "6")},
		{"windows build", "arm64", "windows", goBinary(t, "windows", "arm64", "")},
		{"not a program", "armv7", "not a Go program", bytes.Repeat([]byte("validator"), 1000)},
		{"a shell script", "armv7", "not a Go program", []byte("#!/bin/sh\nexec /bin/true\n")},
	} {
		_, err := s.Add(bytes.NewReader(c.bin), "1.4.0", c.arch, now)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid saying %q", c.name, err, c.want)
		}
		// Said once, and of the file uploaded, not of the copy checked
		// ("release: release: invalid: … from …/.binary.tmp123: …").
		if err != nil && (strings.Contains(err.Error(), ".binary.tmp") || strings.Count(err.Error(), "release") > 1) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// A binary built without VERSION= (it carries the commit, not the
	// version): every validator would install it, see another version
	// and roll it back.
	if _, err := s.Add(bytes.NewReader(arm64), "2.0.0", "arm64", now); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "make dist VERSION=2.0.0") {
		t.Errorf("a binary without its version: %v, want ErrInvalid saying make dist VERSION=2.0.0", err)
	}
	// A binary stamped by make (the version between markers) is taken for
	// its stamped version only, whatever versions its other bytes hold
	// (this one holds 1.4.0: a dependency's, say).
	stamped := append(append([]byte(nil), arm64...), "farego-version:1.5.0/"...)
	if _, err := s.Add(bytes.NewReader(stamped), "1.4.0", "arm64", now); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "does not carry the version 1.4.0") {
		t.Errorf("a binary stamped 1.5.0 as 1.4.0: %v, want ErrInvalid", err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("after refusals: List = %+v, %v", list, err)
	}
	if _, err := s.Add(bytes.NewReader(stamped), "v1.5.0", "arm64", now); err != nil {
		t.Errorf("a binary stamped 1.5.0 as v1.5.0: %v", err)
	}
	// The version is free for its other spelling: no directory was left.
	if _, err := s.Add(bytes.NewReader(arm64), "v1.4.0", "arm64", now); err != nil {
		t.Fatalf("v1.4.0 after refused 1.4.0 uploads: %v", err)
	}
	// A name no validator asks for (update.Arch) would never be
	// installed: refused, with the name validators use where it is known.
	for arch, want := range map[string]string{"armhf": "armhf is armv7", "aarch64": "aarch64 is arm64", "imx6ull": "validators ask for their GOARCH"} {
		if _, err := s.Add(bytes.NewReader(arm7), "v1.4.0", arch, now); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("--arch %s: %v; want ErrInvalid saying %q", arch, err, want)
		}
	}
}

// A refused first build leaves no releases directory behind.
func TestRefusedAddLeavesNoDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "releases")
	s := Open(dir, fleet)
	if _, err := s.Add(bytes.NewReader([]byte("#!/bin/sh\n")), "1.4.0", "armv7", time.Now()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a shell script: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused add left %s: %v", dir, err)
	}
}

// TestAddRemovesCopiesKilledAddsLeft: an Add killed while it copied the
// binary (a power cut, SIGKILL, Ctrl-C of farego-settlement release add,
// the server stopped during an upload) runs no deferred removal: its copy,
// up to 256 MiB, stayed in the release's directory for good, one more at
// each such kill, and kept the directory of a release never stored. The
// next Add of that build removes the dead copies, and passes over one
// still being written (locked by its Add, here or in another process);
// a refused Add then leaves no directory.
func TestAddRemovesCopiesKilledAddsLeft(t *testing.T) {
	s := Open(filepath.Join(t.TempDir(), "releases"), fleet)
	dir := s.relDir("1.4.0", "arm64")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dead := []string{filepath.Join(dir, ".binary.tmp111"), filepath.Join(dir, ".binary.tmp222")}
	// A killed Add's copy was last written some time ago.
	leave := func() {
		for _, name := range dead {
			if err := os.WriteFile(name, bytes.Repeat([]byte{0x7f}, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			old := time.Now().Add(-2 * deadTempAge)
			if err := os.Chtimes(name, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	leave()
	if _, err := s.Add(bytes.NewReader([]byte("#!/bin/sh\n")), "1.4.0", "arm64", now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a shell script: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a refused Add the copies killed Adds left keep %s: %v", dir, err)
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	leave()
	// Another Add's copy, just made and not locked yet, is not taken for
	// dead.
	fresh := filepath.Join(dir, ".binary.tmp444")
	if err := os.WriteFile(fresh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, ".binary.tmp333")
	f, err := os.Create(live)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(bytes.NewReader(goBinary(t, "linux", "arm64", "")), "1.4.0", "arm64", now); err != nil {
		t.Fatal(err)
	}
	for _, name := range dead {
		if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s, left by a killed Add, is still there after the next: %v", filepath.Base(name), err)
		}
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the copy another Add is writing was removed: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("the copy another Add has just made was removed: %v", err)
	}
}
