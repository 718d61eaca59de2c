package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFile replaces path with data atomically and durably: a temporary
// file in the same directory gets data and perm and is fsynced, renamed
// over path, and the directory is fsynced. When it returns nil, the new
// content survives a power cut; when it fails, path is unchanged.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return replace(path, data, perm, -1, -1)
}

// WriteFileKeepOwner is WriteFile for a file another user reads (a
// service's secret replaced by an operator's sudo, Mosquitto's password
// file): when path exists, the new file gets its owner and group before
// the rename, so that a run as root does not leave the service a file
// it cannot read. A new file is the caller's. When the owner cannot be
// kept (a user who is not root replacing another's file, or keeping a
// group it is not in that perm lets read), it fails and path is
// unchanged.
func WriteFileKeepOwner(path string, data []byte, perm fs.FileMode) error {
	uid, gid := -1, -1
	if fi, err := os.Stat(path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("durable: %w", err)
	}
	return replace(path, data, perm, uid, gid)
}

// replace is WriteFile giving the new file to uid:gid (-1, -1: the
// caller's).
func replace(path string, data []byte, perm fs.FileMode, uid, gid int) error {
	tmp, err := writeTempOwned(path, data, perm, uid, gid)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("durable: %w", err)
	}
	return SyncDir(filepath.Dir(path))
}

// Create writes a new file at path that must not exist yet (it fails with
// an error matching fs.ErrExist otherwise), durably: the file appears
// whole or not at all, and when Create returns nil it survives a power cut.
func Create(path string, data []byte, perm fs.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("durable: %s: %w", path, fs.ErrExist)
	}
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	err = os.Link(tmp, path)
	_ = os.Remove(tmp)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("durable: %s: %w", path, fs.ErrExist)
	default:
		// No hard links here: an exclusive open of the target itself.
		if err := createInPlace(path, data, perm); err != nil {
			return err
		}
	}
	return SyncDir(filepath.Dir(path))
}

// Rename renames oldpath to newpath and makes the rename durable by
// fsyncing the directory (both directories when they differ).
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return fmt.Errorf("durable: %w", err)
	}
	if err := SyncDir(filepath.Dir(newpath)); err != nil {
		return err
	}
	if od := filepath.Dir(oldpath); od != filepath.Dir(newpath) {
		return SyncDir(od)
	}
	return nil
}

// syncDir is SyncDir for MkdirAll (a test sees which directories it syncs).
var syncDir = SyncDir

// SyncDir fsyncs a directory, making the entries created, renamed or
// removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("durable: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("durable: fsync %s: %w", dir, err)
	}
	return nil
}

// writeTemp writes data to a new temporary file beside path, with perm,
// fsyncs and closes it, and returns its name. On error nothing is left.
func writeTemp(path string, data []byte, perm fs.FileMode) (string, error) {
	return writeTempOwned(path, data, perm, -1, -1)
}

// writeTempOwned is writeTemp giving the file to uid:gid (-1, -1: the
// caller's) when it is not theirs already.
func writeTempOwned(path string, data []byte, perm fs.FileMode, uid, gid int) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", fmt.Errorf("durable: %w", err)
	}
	name := f.Name()
	if err := chownIfNot(f, path, perm, uid, gid); err != nil {
		f.Close()
		_ = os.Remove(name)
		return "", err
	}
	if err := fill(f, data, perm); err != nil {
		_ = os.Remove(name)
		return "", err
	}
	return name, nil
}

// chownIfNot gives f, path's new content with mode perm, to uid:gid
// unless it is theirs already (a chown to oneself would fail for a user
// who is not root, for nothing). A group perm gives nothing to (0600) need
// not be kept: the owner replacing its own secret, not a member of the
// old file's group, is not refused for it.
func chownIfNot(f *os.File, path string, perm fs.FileMode, uid, gid int) error {
	if uid < 0 {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("durable: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) == uid && int(st.Gid) == gid {
		return nil
	}
	err = f.Chown(uid, gid)
	if err != nil && ok && int(st.Uid) == uid && perm&0o070 == 0 {
		return nil // only the group differs, and it reads nothing
	}
	if err != nil {
		return fmt.Errorf("durable: keep %s's owner %d:%d (run as that user, or as root): %w", path, uid, gid, err)
	}
	return nil
}

// createInPlace is Create without hard links: exclusive open, write,
// fsync; a failed write removes the file again.
func createInPlace(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("durable: %w", err)
	}
	if err := fill(f, data, perm); err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// fill writes data to f, sets perm (not subject to the umask), fsyncs and
// closes f.
func fill(f *os.File, data []byte, perm fs.FileMode) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("durable: %s: %w", f.Name(), err)
	}
	return nil
}

// MkdirAll is os.MkdirAll that also makes each directory it creates
// durable, by fsyncing the directory that holds it — and fsyncs dir's own
// parent even when dir was there already (an earlier run may have made it
// and lost its power before syncing), and, best effort, the parent of
// every directory above (another program may have made one unsynced).
// Without that, a power cut can take a new directory back with every file
// in it, however well those files were fsynced (found by the validator's
// power-cut tests).
func MkdirAll(dir string, perm fs.FileMode) error {
	dir = filepath.Clean(dir)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		// The directories made before the failure (a full disk: the
		// validator waits and calls again) are made durable now: the next
		// call finds them there and syncs only the parent of the first it
		// makes, so a power cut could take them back with the queue file.
		for i := len(missing) - 1; i >= 0; i-- {
			if _, serr := os.Lstat(missing[i]); serr != nil {
				break
			}
			syncDir(filepath.Dir(missing[i])) // best effort: the error returned is the mkdir's
		}
		return fmt.Errorf("durable: %w", err)
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return fmt.Errorf("durable: %s: not a directory", dir)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := syncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	top := dir // the highest directory whose own entry was synced above
	if len(missing) > 0 {
		top = missing[len(missing)-1]
	} else if filepath.Dir(dir) != dir {
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	}
	syncAncestors(top)
	return nil
}

// syncAncestors fsyncs, best effort, the parent of every directory above
// dir up to the root: another program may have made one and synced
// nothing (systemd's StateDirectory= makes /var/lib/farego, a technician
// runs mkdir -p), and a power cut then takes it back with dir and every
// file in it. A parent that cannot be opened or synced is passed over.
func syncAncestors(dir string) {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	for a := filepath.Dir(dir); filepath.Dir(a) != a; a = filepath.Dir(a) {
		_ = syncDir(filepath.Dir(a))
	}
}

// CheckModes makes sure that files made in dir keep the modes they are
// given: it makes a temporary file there, chmods it 0600 and reads its mode
// back, and removes it. A filesystem without Unix modes refuses the chmod
// (Linux vfat: EPERM; fusefat: ENOSYS) or takes it and shows a mode of its
// own (exfat-fuse: 0777): both are ErrNoModes. Nothing is left in dir.
func CheckModes(dir string) error {
	f, err := os.CreateTemp(dir, ".farego-modes.tmp*")
	if err != nil {
		return fmt.Errorf("durable: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("%w (%s): %w", ErrNoModes, dir, err)
	}
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("durable: %w", err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		return fmt.Errorf("%w (%s): a file chmodded 0600 there has mode %#o", ErrNoModes, dir, got)
	}
	return nil
}
