// Package durable writes files that must survive a power cut: the one home
// of farego's filesystem idioms, used by the validator (keyring, rider
// state), the provisioning tool (keys, bundles), the settlement server (key
// directory) and the queue (moving a damaged file aside).
//
// A file is durable once its bytes and its directory entry are both on the
// medium. WriteFile (replace) writes a temporary file in the same
// directory, fsyncs it, renames it over the target and fsyncs the
// directory; Create (exclusive) does the same but links the temporary file
// to a name that must not exist yet. After a crash at any instant the
// target holds either the old content (or, for Create, does not exist) or
// the whole new content, never a mix or a truncated file; at worst a
// temporary file named ".NAME.tmp…" is left behind.
//
// # Caveats
//
// Durability is what fsync gives: storage that acknowledges writes it has
// not made durable can still lose the last ones. On a filesystem without
// hard links (vfat, some FUSE filesystems) Create falls back to an
// exclusive open of the target itself, which a crash may leave truncated;
// and no file modes: the chmod of every write fails there (Linux vfat:
// EPERM, fusefat: ENOSYS) or is taken and not kept (exfat-fuse: 0777).
// CheckModes tells such a directory apart before anything is written to it
// (farego-provision refuses a USB stick or SD card with it).
// Only regular files on local filesystems are meant: the directory fsync is
// what POSIX filesystems need to persist a rename or a new entry.
package durable
