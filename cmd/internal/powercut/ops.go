package powercut

import (
	"io"
	"maps"
	"slices"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// rawFS serves the state through go-fuse's raw protocol: node ids are the
// state's inode numbers, which are never reused while mounted.
type rawFS struct {
	fuse.RawFileSystem // ENOSYS for what is not here (xattrs, locks, ioctl, …)
	s                  *state
}

func newRawFS(s *state) *rawFS { return &rawFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), s: s} }

func (fs *rawFS) String() string { return "farego-powercut" }

// lock takes the state's lock for an operation that changes nothing.
func (fs *rawFS) lock() func() {
	fs.s.mu.Lock()
	return fs.s.mu.Unlock
}

// change takes the state's lock for an operation that changes something; it
// fails with EIO while the power is off.
func (fs *rawFS) change() (func(), fuse.Status) {
	fs.s.mu.Lock()
	if fs.s.frozen {
		fs.s.mu.Unlock()
		return nil, fuse.EIO
	}
	return fs.s.mu.Unlock, fuse.OK
}

func (fs *rawFS) Lookup(_ <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer fs.lock()()
	d, st := fs.s.dir(h.NodeId)
	if !st.Ok() {
		return st
	}
	ino, ok := d.live[name]
	if !ok {
		return fuse.ENOENT
	}
	fs.s.fillEntry(fs.s.nodes[ino], out)
	return fuse.OK
}

func (fs *rawFS) Forget(uint64, uint64) {}

func (fs *rawFS) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer fs.lock()()
	n := fs.s.nodes[in.NodeId]
	if n == nil {
		return fuse.ENOENT
	}
	out.SetTimeout(cacheTimeout)
	fs.s.fillAttr(n, &out.Attr)
	return fuse.OK
}

func (fs *rawFS) SetAttr(_ <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	unlock, st := fs.change()
	if !st.Ok() {
		return st
	}
	defer unlock()
	n := fs.s.nodes[in.NodeId]
	if n == nil {
		return fuse.ENOENT
	}
	if size, ok := in.GetSize(); ok {
		if !n.isFile() {
			return fuse.EINVAL
		}
		if st := fs.s.truncate(n, int64(size)); !st.Ok() {
			return st
		}
	}
	if mode, ok := in.GetMode(); ok {
		n.mode = n.mode&syscall.S_IFMT | mode&0o7777
	}
	if uid, ok := in.GetUID(); ok {
		n.uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		n.gid = gid
	}
	if mt, ok := in.GetMTime(); ok {
		n.mtime = mt
	}
	out.SetTimeout(cacheTimeout)
	fs.s.fillAttr(n, &out.Attr)
	return fuse.OK
}

// link adds a new inode of mode under name in the directory parent.
func (fs *rawFS) link(parent uint64, name string, mode uint32, owner fuse.Owner) (*node, fuse.Status) {
	d, st := fs.s.dir(parent)
	if !st.Ok() {
		return nil, st
	}
	if _, ok := d.live[name]; ok {
		return nil, fuse.Status(syscall.EEXIST)
	}
	n, st := fs.s.newNode(mode, owner)
	if !st.Ok() {
		return nil, st
	}
	d.live[name] = n.ino
	d.mtime = time.Now()
	return n, fuse.OK
}

func (fs *rawFS) Mknod(_ <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if in.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fuse.EPERM // only regular files, directories and symbolic links
	}
	unlock, st := fs.change()
	if !st.Ok() {
		return st
	}
	defer unlock()
	n, st := fs.link(in.NodeId, name, in.Mode, in.Owner)
	if !st.Ok() {
		return st
	}
	fs.s.fillEntry(n, out)
	return fuse.OK
}

func (fs *rawFS) Mkdir(_ <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	unlock, st := fs.change()
	if !st.Ok() {
		return st
	}
	defer unlock()
	n, st := fs.link(in.NodeId, name, syscall.S_IFDIR|in.Mode&0o7777, in.Owner)
	if !st.Ok() {
		return st
	}
	fs.s.fillEntry(n, out)
	return fuse.OK
}

func (fs *rawFS) Symlink(_ <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	unlock, st := fs.change()
	if !st.Ok() {
		return st
	}
	defer unlock()
	n, st := fs.link(h.NodeId, name, syscall.S_IFLNK|0o777, h.Owner)
	if !st.Ok() {
		return st
	}
	n.target = target
	fs.s.fillEntry(n, out)
	return fuse.OK
}

func (fs *rawFS) Readlink(_ <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	defer fs.lock()()
	n := fs.s.nodes[h.NodeId]
	if n == nil || n.mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil, fuse.EINVAL
	}
	return []byte(n.target), fuse.OK
}

func (fs *rawFS) Link(<-chan struct{}, *fuse.LinkIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.EPERM // hard links are not modelled
}

func (fs *rawFS) Access(<-chan struct{}, *fuse.AccessIn) fuse.Status { return fuse.OK }

// remove takes name out of the live entries of parent; dir says whether it
// must be an (empty) directory or must not be one.
func (fs *rawFS) remove(parent uint64, name string, dir bool) fuse.Status {
	unlock, st := fs.change()
	if !st.Ok() {
		return st
	}
	defer unlock()
	d, st := fs.s.dir(parent)
	if !st.Ok() {
		return st
	}
	ino, ok := d.live[name]
	if !ok {
		return fuse.ENOENT
	}
	n := fs.s.nodes[ino]
	switch {
	case dir && !n.isDir():
		return fuse.ENOTDIR
	case !dir && n.isDir():
		return fuse.EISDIR
	case dir && len(n.live) > 0:
		return fuse.Status(syscall.ENOTEMPTY)
	}
	// The inode stays: a durable entry may still name it, and open
	// handles may still use it.
	delete(d.live, name)
	d.mtime = time.Now()
	return fuse.OK
}

func (fs *rawFS) Unlink(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.remove(h.NodeId, name, false)
}

func (fs *rawFS) Rmdir(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.remove(h.NodeId, name, true)
}

// renameNoReplace is RENAME_NOREPLACE of renameat2.
const renameNoReplace = 1

func (fs *rawFS) Rename(_ <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if in.Flags&^renameNoReplace != 0 {
		return fuse.EINVAL // RENAME_EXCHANGE and RENAME_WHITEOUT are not modelled
	}
	unlock, st := fs.change()
	if !st.Ok() {
		return st
	}
	defer unlock()
	from, st := fs.s.dir(in.NodeId)
	if !st.Ok() {
		return st
	}
	to, st := fs.s.dir(in.Newdir)
	if !st.Ok() {
		return st
	}
	ino, ok := from.live[oldName]
	if !ok {
		return fuse.ENOENT
	}
	src := fs.s.nodes[ino]
	if old, ok := to.live[newName]; ok {
		if old == ino {
			return fuse.OK
		}
		dst := fs.s.nodes[old]
		switch {
		case in.Flags&renameNoReplace != 0:
			return fuse.Status(syscall.EEXIST)
		case src.isDir() && !dst.isDir():
			return fuse.ENOTDIR
		case !src.isDir() && dst.isDir():
			return fuse.EISDIR
		case dst.isDir() && len(dst.live) > 0:
			return fuse.Status(syscall.ENOTEMPTY)
		}
	}
	delete(from.live, oldName)
	to.live[newName] = ino
	from.mtime, to.mtime = time.Now(), time.Now()
	return fuse.OK
}

// open makes a handle; O_TRUNC truncates the file.
func (fs *rawFS) open(n *node, flags uint32, out *fuse.OpenOut) fuse.Status {
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if fs.s.frozen {
			return fuse.EIO
		}
		if st := fs.s.truncate(n, 0); !st.Ok() {
			return st
		}
	}
	fh := fs.s.nextFh
	fs.s.nextFh++
	fs.s.handles[fh] = &handle{ino: n.ino, flags: flags}
	out.Fh = fh
	// Keep the page cache across opens: every change to a file goes
	// through this kernel, so its cache is never stale (and a cut
	// remounts). No direct I/O: bbolt and SQLite mmap their files.
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (fs *rawFS) Create(_ <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	unlock, st := fs.change()
	if !st.Ok() {
		return st
	}
	defer unlock()
	d, st := fs.s.dir(in.NodeId)
	if !st.Ok() {
		return st
	}
	var n *node
	if ino, ok := d.live[name]; ok {
		if in.Flags&syscall.O_EXCL != 0 {
			return fuse.Status(syscall.EEXIST)
		}
		if n, st = fs.s.file(ino); !st.Ok() {
			return st
		}
	} else if n, st = fs.link(in.NodeId, name, syscall.S_IFREG|in.Mode&0o7777, in.Owner); !st.Ok() {
		return st
	}
	if st := fs.open(n, in.Flags, &out.OpenOut); !st.Ok() {
		return st
	}
	fs.s.fillEntry(n, &out.EntryOut)
	return fuse.OK
}

func (fs *rawFS) Open(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer fs.lock()()
	n, st := fs.s.file(in.NodeId)
	if !st.Ok() {
		return st
	}
	return fs.open(n, in.Flags, out)
}

func (fs *rawFS) Read(_ <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer fs.lock()()
	n, st := fs.s.file(in.NodeId)
	if !st.Ok() {
		return nil, st
	}
	k, err := n.f.ReadAt(buf[:min(len(buf), int(in.Size))], int64(in.Offset))
	if err != nil && err != io.EOF {
		return nil, fuse.ToStatus(err)
	}
	return fuse.ReadResultData(buf[:k]), fuse.OK
}

// changeFile runs fn on the regular file ino under the state's lock,
// failing with EIO while the power is off.
func (fs *rawFS) changeFile(ino uint64, fn func(n *node) fuse.Status) fuse.Status {
	unlock, st := fs.change()
	if !st.Ok() {
		return st
	}
	defer unlock()
	n, st := fs.s.file(ino)
	if !st.Ok() {
		return st
	}
	return fn(n)
}

func (fs *rawFS) Write(_ <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	st := fs.changeFile(in.NodeId, func(n *node) fuse.Status {
		if st := fs.s.write(n, data, int64(in.Offset)); !st.Ok() {
			return st
		}
		if h := fs.s.handles[in.Fh]; h != nil && h.flags&(syscall.O_SYNC|syscall.O_DSYNC) != 0 {
			return fs.s.fdatasync(n) // O_SYNC, O_DSYNC: each write is followed by an fdatasync
		}
		return fuse.OK
	})
	if !st.Ok() {
		return 0, st
	}
	return uint32(len(data)), fuse.OK
}

func (fs *rawFS) Fallocate(_ <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	const keepSize = 1 // FALLOC_FL_KEEP_SIZE
	if in.Mode&^keepSize != 0 {
		return fuse.Status(syscall.EOPNOTSUPP) // no hole punching or zeroing
	}
	return fs.changeFile(in.NodeId, func(n *node) fuse.Status {
		if end := int64(in.Offset + in.Length); in.Mode&keepSize == 0 && end > n.size {
			return fs.s.truncate(n, end)
		}
		return fuse.OK
	})
}

func (fs *rawFS) Fsync(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fs.changeFile(in.NodeId, func(n *node) fuse.Status {
		if st := fs.s.fdatasync(n); !st.Ok() {
			return st
		}
		if in.FsyncFlags&1 == 0 { // fsync, not fdatasync: the inode's mode too
			n.durMode = n.mode
		}
		return fuse.OK
	})
}

func (fs *rawFS) FsyncDir(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	unlock, st := fs.change()
	if !st.Ok() {
		return st
	}
	defer unlock()
	d, st := fs.s.dir(in.NodeId)
	if !st.Ok() {
		return st
	}
	if !fs.s.maySync() || fs.s.failSync() { // a failed directory sync: its entries stay volatile
		return fuse.EIO
	}
	fs.s.syncDir(d)
	return fuse.OK
}

func (fs *rawFS) Flush(<-chan struct{}, *fuse.FlushIn) fuse.Status { return fuse.OK }

func (fs *rawFS) Release(_ <-chan struct{}, in *fuse.ReleaseIn) {
	defer fs.lock()()
	delete(fs.s.handles, in.Fh)
}

func (fs *rawFS) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer fs.lock()()
	d, st := fs.s.dir(in.NodeId)
	if !st.Ok() {
		return st
	}
	fh := fs.s.nextFh
	fs.s.nextFh++
	fs.s.handles[fh] = &handle{ino: d.ino, flags: in.Flags, names: slices.Sorted(maps.Keys(d.live))}
	out.Fh = fh
	return fuse.OK
}

func (fs *rawFS) ReadDir(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer fs.lock()()
	h := fs.s.handles[in.Fh]
	if h == nil {
		return fuse.EBADF
	}
	d := fs.s.nodes[h.ino]
	for i := int(in.Offset); i < len(h.names); i++ {
		ino, ok := d.live[h.names[i]]
		if !ok {
			continue // removed since the directory was opened
		}
		e := fuse.DirEntry{Name: h.names[i], Ino: ino, Mode: fs.s.nodes[ino].mode, Off: uint64(i + 1)}
		if !out.AddDirEntry(e) {
			break
		}
	}
	return fuse.OK
}

func (fs *rawFS) ReleaseDir(in *fuse.ReleaseIn) {
	defer fs.lock()()
	delete(fs.s.handles, in.Fh)
}

func (fs *rawFS) StatFs(_ <-chan struct{}, _ *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	var st syscall.Statfs_t
	if err := syscall.Statfs(fs.s.backing, &st); err != nil {
		return fuse.ToStatus(err)
	}
	*out = fuse.StatfsOut{Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail, Files: st.Files, Ffree: st.Ffree,
		Bsize: uint32(st.Bsize), NameLen: 255, Frsize: uint32(st.Frsize)}
	return fuse.OK
}
