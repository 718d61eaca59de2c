package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// MkdirAll makes dir and any missing parents, like os.MkdirAll, and makes
// them durable: it fsyncs the parent of every directory it makes, and
// dir's own parent even if dir was there already (an earlier run may have
// made it and stopped before syncing). Without that a power cut can take a
// new directory back, with every file in it, however well those files
// were fsynced.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	info, err := os.Stat(dir)
	switch {
	case err == nil && !info.IsDir():
		return fmt.Errorf("%s: not a directory", dir)
	case err == nil:
		return SyncDir(filepath.Dir(dir))
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return SyncDir(parent)
}

// SyncDir fsyncs a directory, making the entries made, renamed or removed
// in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
