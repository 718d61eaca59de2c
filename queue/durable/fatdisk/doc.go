// Package fatdisk gives tests a real FAT or exFAT filesystem, as on the USB
// sticks and SD cards technicians carry device bundles on: a small image
// made by mkfs.vfat or mkfs.exfat in the test's temporary directory and
// mounted there, by the kernel (mount -o loop) where it has the driver,
// else through FUSE (fusefat; exfat-fuse on a loop device), and unmounted
// when the test ends.
//
// # Caveats
//
// It needs root, the image's mkfs (Debian: dosfstools, exfatprogs) and the
// kernel's driver or the FUSE one (fusefat, exfat-fuse) with /dev/fuse.
// Where it cannot have them the test skips, saying what is missing, also
// under FAREGO_CI: many kernels for small VMs (CI's among them) are built
// without vfat and exfat, and whether FUSE may mount depends on the
// machine. Under qemu-user emulation (FAREGO_QEMU, make test-arm) it
// skips: qemu-user can deadlock forking a multithreaded program. The FUSE
// drivers differ from the kernel's in what they refuse (a chmod: the
// kernel's vfat EPERM, fusefat ENOSYS, exfat-fuse takes it and keeps
// 0777), and each is a filesystem without Unix file modes.
package fatdisk
