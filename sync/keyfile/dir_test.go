package keyfile

import (
	"os"
	"path/filepath"
	"testing"
)

// MkdirAll's durability is shown on a power-cut disk by the validator's
// power-cut test (cmd/internal/rig); this checks what it makes.
func TestMkdirAll(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "b", "c")
	if err := MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() || info.Mode().Perm() != 0o700 {
		t.Fatalf("after MkdirAll: %v, %v", info, err)
	}
	if err := MkdirAll(dir, 0o700); err != nil {
		t.Errorf("again, on an existing directory: %v", err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(file, 0o700); err == nil {
		t.Errorf("MkdirAll over a file succeeded")
	}
	if err := MkdirAll(filepath.Join(file, "sub"), 0o700); err == nil {
		t.Errorf("MkdirAll under a file succeeded")
	}
	if err := SyncDir(filepath.Join(base, "missing")); err == nil {
		t.Errorf("SyncDir of a missing directory succeeded")
	}
}
