package durable_test

import (
	"errors"
	"os"
	"testing"

	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/queue/durable/fatdisk"
)

// TestCheckModes: a directory on a filesystem with Unix modes passes; one
// on a real FAT or exFAT image (a technician's USB stick or SD card) is
// ErrNoModes, whichever way its driver fails the chmod (the kernel's vfat
// refuses it, fusefat has none, exfat-fuse takes it and keeps 0777), and
// nothing is left behind in either.
func TestCheckModes(t *testing.T) {
	dir := t.TempDir()
	if err := durable.CheckModes(dir); err != nil {
		t.Fatalf("CheckModes on a local directory: %v", err)
	}
	assertEmpty(t, dir)
	if err := durable.CheckModes(dir + "/missing"); err == nil || errors.Is(err, durable.ErrNoModes) {
		t.Errorf("CheckModes on a missing directory: %v; want the error creating there", err)
	}
	for _, kind := range []fatdisk.Kind{fatdisk.VFAT, fatdisk.ExFAT} {
		t.Run(string(kind), func(t *testing.T) {
			mnt := fatdisk.Mount(t, kind)
			err := durable.CheckModes(mnt)
			if !errors.Is(err, durable.ErrNoModes) {
				t.Fatalf("CheckModes on %s: %v; want ErrNoModes", kind, err)
			}
			t.Logf("%s: %v", kind, err)
			assertEmpty(t, mnt)
		})
	}
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("%s left in %s", e.Name(), dir)
	}
}
