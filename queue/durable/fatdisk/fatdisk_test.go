package fatdisk

import "testing"

// TestMountSkippedUnderQemu: make test-arm runs queue/... under qemu-user
// (FAREGO_QEMU), where forking a multithreaded emulated process can
// deadlock; Mount starts mkfs, mount, losetup and a FUSE driver, so it
// skips there, as every other test that starts programs does, before it
// makes or mounts anything.
func TestMountSkippedUnderQemu(t *testing.T) {
	var skipped bool
	t.Run("qemu", func(t *testing.T) {
		t.Setenv("FAREGO_QEMU", "1")
		defer func() { skipped = t.Skipped() }()
		Mount(t, VFAT)
		t.Error("not skipped")
	})
	if !skipped {
		t.Error("Mount did not skip under FAREGO_QEMU")
	}
}
