package durable

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// leftovers fails the test if dir holds anything but want.
func leftovers(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if len(got) != len(want) {
		t.Fatalf("directory holds %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("directory holds %v, want %v", got, want)
		}
	}
}

func TestWriteFileReplaces(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "keyring.json")
	for i, data := range []string{"one\n", "two, longer\n", "3\n"} {
		if err := WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != data {
			t.Fatalf("write %d: got %q, want %q", i, got, data)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Mode().Perm(), fs.FileMode(0o644); got != want {
		t.Errorf("mode %v, want %v (the umask must not narrow it)", got, want)
	}
	leftovers(t, dir, "keyring.json")
}

func TestWriteFileFailureLeavesTargetAlone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "target")
	if err := os.Mkdir(path, 0o755); err != nil { // a rename over a directory fails
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile over a directory succeeded")
	}
	leftovers(t, dir, "target")
	if err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
}

func TestCreateIsExclusive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "operator.token")
	if err := Create(path, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Create(path, []byte("other\n"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: %v, want fs.ErrExist", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "secret\n" {
		t.Fatalf("content %q after a refused Create", got)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", info.Mode().Perm())
	}
	leftovers(t, dir, "operator.token")
}

func TestCreateInPlaceFallback(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := createInPlace(path, []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := createInPlace(path, []byte("again"), 0o640); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second createInPlace: %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "data" {
		t.Fatalf("content %q", got)
	}
}

func TestRename(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "sub", "b")
	if err := os.WriteFile(a, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Dir(b), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Rename(a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b); err != nil {
		t.Fatal(err)
	}
	if err := Rename(a, b); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("renaming a missing file: %v", err)
	}
}

// TestCrashLeavesWholeFile kills a process that keeps replacing a file and
// checks that the file always holds one whole version.
func TestCrashLeavesWholeFile(t *testing.T) {
	if os.Getenv("FAREGO_QEMU") != "" {
		t.Skip("starts another program; skipped under qemu-user emulation")
	}
	if dir := os.Getenv("DURABLE_CRASH_CHILD"); dir != "" {
		path := filepath.Join(dir, "state")
		for i := 0; ; i++ {
			_ = WriteFile(path, version(i%2), 0o600)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		dir := t.TempDir()
		path := filepath.Join(dir, "state")
		if err := Create(path, version(1), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe, "-test.run=^TestCrashLeavesWholeFile$")
		cmd.Env = append(os.Environ(), "DURABLE_CRASH_CHILD="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until the child has replaced the file at least once.
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := os.ReadFile(path)
			if err == nil && bytes.Equal(got, version(0)) {
				break
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatal("the child never replaced the file")
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(round) * 3 * time.Millisecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !bytes.Equal(got, version(0)) && !bytes.Equal(got, version(1)) {
			t.Fatalf("round %d: the file holds %d bytes that are neither version", round, len(got))
		}
	}
}

// version returns a 256 KiB content that differs from the other version in
// every block.
func version(i int) []byte {
	return bytes.Repeat([]byte("version "+strconv.Itoa(i)+"\n"), 256<<10/10)
}

func TestMkdirAll(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "a", "b", "c")
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(deep); err != nil || !info.IsDir() {
		t.Fatalf("%s: %v", deep, err)
	}
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Fatalf("again: %v", err)
	}
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(f, "sub"), 0o700); err == nil {
		t.Fatal("MkdirAll below a file succeeded")
	}
}

// TestMkdirAllFailedSyncsWhatItMade: a MkdirAll that fails part way (a
// full disk: the validator waits and calls it again) made the upper
// directories durable neither then nor at the call that succeeded, which
// syncs only the parent of the first directory it makes itself: a power
// cut could take the data directory back with the queue file in it.
func TestMkdirAllFailedSyncsWhatItMade(t *testing.T) {
	defer func(f func(string) error) { syncDir = f }(syncDir)
	var synced []string
	syncDir = func(d string) error { synced = append(synced, d); return SyncDir(d) }
	base := t.TempDir()
	// The second level cannot be made (a name too long stands for ENOSPC).
	if err := MkdirAll(filepath.Join(base, "farego", strings.Repeat("r", 300)), 0o700); err == nil {
		t.Fatal("MkdirAll of a name too long succeeded")
	}
	if err := MkdirAll(filepath.Join(base, "farego", "rear"), 0o700); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(synced, base) {
		t.Errorf("synced %q: never %s, which holds the directory farego made by the failed call", synced, base)
	}
}

// TestMkdirAllSyncsExistingAncestors: a directory above the ones MkdirAll
// makes may have been made by another program that synced nothing
// (systemd's StateDirectory=farego, below which a validator makes its
// data_dir front): its entry is synced too, or a power cut takes it back
// with the data directory and the queue file in it (the power-cut test is
// TestPowerCutKeepsADataDirBelowAFreshDirectory in cmd/farego-validator).
func TestMkdirAllSyncsExistingAncestors(t *testing.T) {
	defer func(f func(string) error) { syncDir = f }(syncDir)
	var synced []string
	syncDir = func(d string) error { synced = append(synced, d); return SyncDir(d) }
	base := t.TempDir()
	if err := os.Mkdir(filepath.Join(base, "farego"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"front", "front"} { // made, then found there
		synced = nil
		if err := MkdirAll(filepath.Join(base, "farego", dir), 0o700); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(synced, base) {
			t.Errorf("synced %q: never %s, which holds farego", synced, base)
		}
	}
}
