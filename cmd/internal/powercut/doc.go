// Package powercut is a disk whose power the tests can cut: a FUSE file
// system (github.com/hanwen/go-fuse/v2, raw protocol) in the spirit of
// Jepsen's LazyFS. Killing a process proves little about durability — the
// kernel still writes back what the process wrote — so the power-cut tests
// put a validator's data directory, or a settlement server's ledger and
// keys, on this disk and cut its power instead.
//
// # The model
//
// The disk keeps two views: the live one that programs see, and the
// durable one that a power cut leaves. Only these make something durable:
//
//   - fsync or fdatasync of a file (or a write through an O_SYNC/O_DSYNC
//     handle): its contents and size as they are now; fsync (not
//     fdatasync) also its mode, which a new file has durably as made;
//   - fsync of a directory: its entries (names → inodes) as they are now.
//
// Everything else is volatile: writes, truncation and growth of a file
// since its last fsync, a chmod since its last fsync, and every create, mkdir, rename and unlink since the
// last fsync of the directory that holds the name. A new file whose data
// was fsynced is lost if its directory was not; a file renamed into place
// comes back under its old name; an unlinked file comes back. This is the
// strict POSIX reading, which is what portable software may rely on (ext4
// often persists more, never less, than this).
//
// Cut (power off and on) unmounts the disk, discards the volatile layer,
// and mounts the durable state again. With tear, the page (4 KiB) that the
// last unsynced write ended in keeps a random prefix of its new bytes and
// the rest of its old ones: a write that was reaching the medium when the
// power went. Freeze turns the power off without unmounting: every change
// fails with EIO from then on and reads still work, so a queue opened by
// the test process itself can be closed before the Cut. FreezeAfterSyncs
// turns it off at a given sync to come: called with 0, 1, 2, … before the
// same work, each followed by a Cut, it cuts between every two steps that
// make something durable. FailSyncAfter fails syncs with EIO with the
// power on (failing flash), as Linux handles it: the pages stay in the
// cache, marked clean, and no later sync writes them.
//
// # How it is built
//
// Files live in a backing directory, one data file per inode, holding the
// live bytes; the directory tree is in memory. Before a write or a
// truncation changes a page for the first time since the file's last
// fsync, the page's durable bytes are saved (an undo log); fsync drops the
// saved pages, a cut puts them back and truncates to the durable size.
// Directories keep their live and durable entry tables; a cut keeps what
// the durable tables reach from the root and deletes every other inode.
//
// The page cache is kept across opens (FOPEN_KEEP_CACHE) and the kernel's
// automatic invalidation on mtime changes is off: every change goes through
// the one kernel that caches, so the cache is never stale, and a cut
// remounts, which drops it. No direct I/O: bbolt maps its file read-only
// and writes it with pwrite and fdatasync, SQLite maps its -shm file
// read-write; both work through the page cache (the tests show it). Locks
// (flock, fcntl) are the kernel's own, local to this machine.
//
// The disk is served by a child process (the test binary started again;
// its TestMain calls Main), not by the test process: a Go process that
// faults on memory mapped from a FUSE file system it serves itself can
// deadlock with its own garbage collector.
//
// # Caveats
//
//   - Only regular files, directories and symbolic links. No hard links
//     (EPERM), no extended attributes, no RENAME_EXCHANGE; fallocate only
//     grows a file (no hole punching).
//   - Metadata other than entries and sizes (modes, owners, times) is
//     durable at once.
//   - An inode renamed across directories can come back under both names
//     (as a hard link) if only the target directory was fsynced: each
//     directory's entries are durable on their own.
//   - A cut discards every unsynced change (or tears the last page); it
//     does not keep an arbitrary subset of them, nor reorder them.
//   - It needs /dev/fuse and the right to mount: root (mount(2) directly)
//     or fusermount. Where that is missing, Mount skips the test, and fails
//     it under FAREGO_CI.
//   - The disk models what the software asked for. Storage that
//     acknowledges a flush before the data is on flash breaks the model;
//     see the README (Reliability) for choosing validator storage.
//   - FAREGO_POWERCUT_DEBUG=1 logs every FUSE request to the test's
//     standard error.
package powercut
