package fatdisk

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Kind is the filesystem an image is made with.
type Kind string

// The kinds of card a technician meets.
const (
	VFAT  Kind = "vfat"  // FAT16/FAT32, mkfs.vfat: nearly every USB stick and small SD card
	ExFAT Kind = "exfat" // exFAT, mkfs.exfat: SDXC cards (64 GiB and more) as sold
)

// size is the image's size: small, and enough for FAT16 or exFAT.
const size = 64 << 20

// Mount makes a kind image, mounts it on a new directory and returns that
// directory; it is unmounted and the image removed when tb ends. It skips
// tb, saying why, where this machine cannot mount one (see the package's
// Caveats).
func Mount(tb testing.TB, kind Kind) string {
	tb.Helper()
	if os.Getenv("FAREGO_QEMU") != "" {
		// make test-arm runs queue/... under qemu-user, which can deadlock
		// forking a multithreaded emulated process: mkfs, mount, losetup
		// and the FUSE drivers are five such forks.
		tb.Skipf("mounting a %s image starts other programs; skipped under qemu-user emulation", kind)
	}
	if os.Geteuid() != 0 {
		tb.Skipf("mounting a %s image needs root", kind)
	}
	mkfs := "mkfs." + string(kind)
	if _, err := exec.LookPath(mkfs); err != nil {
		tb.Skipf("no %s (Debian: dosfstools, exfatprogs): %v", mkfs, err)
	}
	dir := tb.TempDir()
	img, mnt := filepath.Join(dir, "card.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command(mkfs, img).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v: %s", mkfs, err, out)
	}
	var tried []string
	// The kernel's driver first: what a technician's laptop mounts.
	out, err := exec.Command("mount", "-t", string(kind), "-o", "loop,uid=0,gid=0", img, mnt).CombinedOutput()
	if err == nil {
		tb.Cleanup(func() { unmount(tb, mnt) })
		tb.Logf("%s image mounted by the kernel on %s", kind, mnt)
		return mnt
	}
	tried = append(tried, "mount -o loop: "+strings.TrimSpace(string(out)))
	switch kind {
	case VFAT:
		if _, err := exec.LookPath("fusefat"); err != nil {
			tried = append(tried, "no fusefat (Debian: fusefat)")
			break
		}
		out, err := exec.Command("fusefat", "-o", "rw+", img, mnt).CombinedOutput()
		if err != nil {
			tried = append(tried, "fusefat: "+err.Error()+": "+strings.TrimSpace(string(out)))
			break
		}
		tb.Cleanup(func() { unmount(tb, mnt) })
		tb.Logf("%s image mounted by fusefat on %s", kind, mnt)
		return mnt
	case ExFAT:
		if _, err := exec.LookPath("mount.exfat-fuse"); err != nil {
			tried = append(tried, "no mount.exfat-fuse (Debian: exfat-fuse)")
			break
		}
		// exfat-fuse mounts block devices only.
		out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
		if err != nil {
			tried = append(tried, "losetup: "+err.Error()+": "+strings.TrimSpace(string(out)))
			break
		}
		loop := strings.TrimSpace(string(out))
		if out, err := exec.Command("mount.exfat-fuse", loop, mnt).CombinedOutput(); err != nil {
			tried = append(tried, "exfat-fuse: "+err.Error()+": "+strings.TrimSpace(string(out)))
			_ = exec.Command("losetup", "-d", loop).Run()
			break
		}
		tb.Cleanup(func() {
			unmount(tb, mnt)
			if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
				tb.Errorf("losetup -d %s: %v: %s", loop, err, out)
			}
		})
		tb.Logf("%s image mounted by exfat-fuse (%s) on %s", kind, loop, mnt)
		return mnt
	}
	tb.Skipf("cannot mount a %s image here: %s", kind, strings.Join(tried, "; "))
	return ""
}

// unmount unmounts mnt; a busy mount is retried lazily, so that the test's
// temporary directory can go.
func unmount(tb testing.TB, mnt string) {
	out, err := exec.Command("umount", mnt).CombinedOutput()
	if err == nil {
		return
	}
	if lout, lerr := exec.Command("umount", "-l", mnt).CombinedOutput(); lerr != nil {
		tb.Errorf("umount %s: %v: %s; umount -l: %v: %s", mnt, err, out, lerr, lout)
		return
	}
	tb.Logf("umount %s: %v: %s (unmounted lazily)", mnt, err, out)
}
