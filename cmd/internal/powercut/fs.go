package powercut

import (
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// pageSize is the unit in which the volatile layer keeps the durable bytes
// of a file (and the page a torn write mixes).
const pageSize = 4096

// cacheTimeout is how long the kernel may cache entries and attributes.
// Every change goes through the kernel that caches them, and a cut
// remounts (dropping every cache), so the caches are always coherent.
const cacheTimeout = time.Second

// node is one inode: a regular file, a directory or a symbolic link.
type node struct {
	ino      uint64
	mode     uint32 // type and permission bits
	uid, gid uint32
	mtime    time.Time

	// Regular files: the live bytes are the backing file's. saved holds,
	// for each page changed since the last fsync, its bytes as of that
	// fsync (only the part below durSize): the live bytes with saved put
	// back and cut to durSize are the durable contents.
	f       *os.File
	size    int64
	durSize int64
	saved   map[int64][]byte
	// lost holds, for each page whose write-back failed (FailSyncAfter),
	// its durable bytes (nil: zeros, the page lay past the durable size).
	// Linux keeps such a page in the page cache but marks it clean: the
	// live bytes stay what programs read, no later fsync writes them, and
	// a cut gives the durable bytes back, unless the page was written
	// again since (it is dirty again, and saved as any other page).
	lost map[int64][]byte
	// durMode is the mode as of the last fsync (fdatasync leaves it), or
	// as made: a chmod not followed by an fsync of the file is lost.
	durMode uint32

	// Directories: the live entries, and the entries as of the last fsync
	// of the directory.
	live, durable map[string]uint64

	// Symbolic links.
	target string
}

func (n *node) isDir() bool  { return n.mode&syscall.S_IFMT == syscall.S_IFDIR }
func (n *node) isFile() bool { return n.mode&syscall.S_IFMT == syscall.S_IFREG }

// handle is an open file or directory.
type handle struct {
	ino   uint64
	flags uint32
	names []string // directories: the entries when opened, sorted
}

// lastWrite is the page the most recent unsynced write ended in: the
// one a cut may tear.
type lastWrite struct {
	ino   uint64
	page  int64
	valid bool
}

// state is the whole file system: inodes with their live and durable
// views. One mutex serialises every operation (the tests' load is small).
type state struct {
	mu      sync.Mutex
	backing string // directory holding one data file per regular-file inode
	nodes   map[uint64]*node
	nextIno uint64
	handles map[uint64]*handle
	nextFh  uint64
	frozen  bool // the power is off: every change fails with EIO
	// syncsLeft, when not negative, is how many more syncs (fsync,
	// fdatasync, a write through an O_SYNC handle) succeed before the
	// power goes off at the next one (FreezeAfterSyncs).
	syncsLeft int64
	// failLeft, when not negative, is how many more syncs succeed before
	// the next failCount fail with EIO, the power staying on
	// (FailSyncAfter).
	failLeft, failCount int64
	full                bool // the disk is full: growing a file or making one fails with ENOSPC
	last                lastWrite
	rnd                 *rand.Rand
	stats               Stats
}

// rootIno is the inode of the mount's root directory (FUSE_ROOT_ID).
const rootIno = 1

func newState(backing string, seed uint64) *state {
	s := &state{
		backing: backing,
		nodes:   map[uint64]*node{},
		nextIno: rootIno + 1,
		handles: map[uint64]*handle{},
		nextFh:  1,
		rnd:     rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),

		syncsLeft: -1,
		failLeft:  -1,
	}
	s.nodes[rootIno] = &node{ino: rootIno, mode: syscall.S_IFDIR | 0o755, mtime: time.Now(),
		live: map[string]uint64{}, durable: map[string]uint64{}}
	return s
}

func (s *state) dataPath(ino uint64) string {
	return filepath.Join(s.backing, fmt.Sprintf("%d", ino))
}

// newNode makes an inode of the given type; a regular file gets an empty
// backing file.
func (s *state) newNode(mode uint32, owner fuse.Owner) (*node, fuse.Status) {
	if s.full {
		return nil, fuse.Status(syscall.ENOSPC)
	}
	n := &node{ino: s.nextIno, mode: mode, durMode: mode, uid: owner.Uid, gid: owner.Gid, mtime: time.Now()}
	switch {
	case n.isFile():
		f, err := os.OpenFile(s.dataPath(n.ino), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, fuse.ToStatus(err)
		}
		n.f = f
	case n.isDir():
		n.live, n.durable = map[string]uint64{}, map[string]uint64{}
	}
	s.nextIno++
	s.nodes[n.ino] = n
	return n, fuse.OK
}

func (s *state) fillAttr(n *node, a *fuse.Attr) {
	*a = fuse.Attr{Ino: n.ino, Mode: n.mode, Nlink: 1, Owner: fuse.Owner{Uid: n.uid, Gid: n.gid}, Blksize: pageSize}
	switch {
	case n.isFile():
		a.Size = uint64(n.size)
		a.Blocks = (a.Size + 511) / 512
	case n.isDir():
		a.Size, a.Nlink = pageSize, 2
	default:
		a.Size = uint64(len(n.target))
	}
	a.SetTimes(&n.mtime, &n.mtime, &n.mtime)
}

func (s *state) fillEntry(n *node, out *fuse.EntryOut) {
	out.NodeId, out.Generation = n.ino, 0
	out.SetEntryTimeout(cacheTimeout)
	out.SetAttrTimeout(cacheTimeout)
	s.fillAttr(n, &out.Attr)
}

// dir returns the directory inode ino.
func (s *state) dir(ino uint64) (*node, fuse.Status) {
	n := s.nodes[ino]
	switch {
	case n == nil:
		return nil, fuse.ENOENT
	case !n.isDir():
		return nil, fuse.ENOTDIR
	}
	return n, fuse.OK
}

// file returns the regular-file inode ino.
func (s *state) file(ino uint64) (*node, fuse.Status) {
	n := s.nodes[ino]
	switch {
	case n == nil:
		return nil, fuse.ENOENT
	case n.isDir():
		return nil, fuse.EISDIR
	case !n.isFile():
		return nil, fuse.EINVAL
	}
	return n, fuse.OK
}

// preserve saves the durable bytes of every page of n overlapping
// [from, to) that has not been saved since the last fsync. It must run
// before anything changes those live bytes.
func (s *state) preserve(n *node, from, to int64) error {
	s.redirty(n, from, to)
	if n.saved == nil {
		n.saved = map[int64][]byte{}
	}
	to = min(to, n.durSize)
	for p := from / pageSize; p*pageSize < to; p++ {
		if _, ok := n.saved[p]; ok {
			continue
		}
		// Not saved since the last fsync, so not changed since: the live
		// bytes are the durable ones. (Live bytes past the live size were
		// saved when the file shrank.)
		buf := make([]byte, min(pageSize, n.durSize-p*pageSize))
		k, err := n.f.ReadAt(buf, p*pageSize)
		if err != nil && err != io.EOF {
			return err
		}
		clear(buf[k:])
		n.saved[p] = buf
		s.stats.PagesSaved++
	}
	return nil
}

// write is a write of data at off to the regular file n.
func (s *state) write(n *node, data []byte, off int64) fuse.Status {
	if len(data) == 0 {
		return fuse.OK
	}
	if s.full && off+int64(len(data)) > n.size {
		return fuse.Status(syscall.ENOSPC)
	}
	if err := s.preserve(n, off, off+int64(len(data))); err != nil {
		return fuse.ToStatus(err)
	}
	if _, err := n.f.WriteAt(data, off); err != nil {
		return fuse.ToStatus(err)
	}
	n.size = max(n.size, off+int64(len(data)))
	n.mtime = time.Now()
	s.last = lastWrite{ino: n.ino, page: (off + int64(len(data)) - 1) / pageSize, valid: true}
	s.stats.Writes++
	s.stats.BytesWritten += int64(len(data))
	return fuse.OK
}

// truncate sets the live size of the regular file n.
func (s *state) truncate(n *node, size int64) fuse.Status {
	if size == n.size {
		return fuse.OK
	}
	if s.full && size > n.size {
		return fuse.Status(syscall.ENOSPC)
	}
	if err := s.preserve(n, min(size, n.size), max(size, n.size)); err != nil {
		return fuse.ToStatus(err)
	}
	if err := n.f.Truncate(size); err != nil {
		return fuse.ToStatus(err)
	}
	n.size = size
	n.mtime = time.Now()
	return fuse.OK
}

// maySync says whether a sync may make something durable; once the
// syncs FreezeAfterSyncs allowed are used up, it turns the power off and
// says no (the sync fails with EIO, nothing of it durable).
func (s *state) maySync() bool {
	switch {
	case s.syncsLeft < 0:
		return true
	case s.syncsLeft == 0:
		s.frozen = true
		s.syncsLeft = -1
		return false
	}
	s.syncsLeft--
	return true
}

// failSync says whether this sync is the one FailSyncAfter fails.
func (s *state) failSync() bool {
	switch {
	case s.failLeft < 0:
		return false
	case s.failLeft == 0:
		if s.failCount--; s.failCount <= 0 {
			s.failLeft = -1
		}
		s.stats.FailedSyncs++
		return true
	}
	s.failLeft--
	return false
}

// loseFile is a failed write-back of n (fsync, fdatasync returned EIO),
// as Linux handles it: every page changed since the last fsync stays in
// the cache with its new bytes but is marked clean, so neither a later
// fsync nor anything else writes it; its durable bytes stay what they
// were (in lost) until the page is written again. The size stays
// volatile: a later fsync makes it durable, the lost pages in it zeros or
// their old bytes.
func (s *state) loseFile(n *node) error {
	if n.lost == nil {
		n.lost = map[int64][]byte{}
	}
	for p, old := range n.saved {
		n.lost[p] = old
	}
	for p := n.durSize / pageSize; p*pageSize < n.size; p++ {
		if _, ok := n.saved[p]; ok {
			continue
		}
		if _, ok := n.lost[p]; ok {
			continue
		}
		var old []byte
		if p*pageSize < n.durSize { // only its end lies past the durable size: unchanged below it
			old = make([]byte, n.durSize-p*pageSize)
			if _, err := n.f.ReadAt(old, p*pageSize); err != nil && err != io.EOF {
				return err
			}
		}
		n.lost[p] = old
	}
	s.stats.PagesLost += int64(len(n.lost))
	n.saved = nil
	if s.last.ino == n.ino {
		s.last.valid = false
	}
	return nil
}

// redirty moves the pages of n overlapping [from, to) whose write-back
// failed back among the pages changed since the last fsync, with their
// durable bytes: they are about to be written again, so the next fsync
// writes them whole.
func (s *state) redirty(n *node, from, to int64) {
	if len(n.lost) == 0 || to <= from {
		return
	}
	for p := from / pageSize; p*pageSize < to && len(n.lost) > 0; p++ {
		old, ok := n.lost[p]
		if !ok {
			continue
		}
		delete(n.lost, p)
		if p*pageSize >= n.durSize {
			continue // past the durable size: the size's sync writes it
		}
		if _, done := n.saved[p]; done {
			continue
		}
		buf := make([]byte, min(pageSize, n.durSize-p*pageSize))
		copy(buf, old)
		if n.saved == nil {
			n.saved = map[int64][]byte{}
		}
		n.saved[p] = buf
	}
}

// fdatasync is a data sync of n as the disk answers it: EIO at the power
// cut (nothing durable), EIO for a failing one (FailSyncAfter: loseFile),
// else n made durable (syncFile).
func (s *state) fdatasync(n *node) fuse.Status {
	if !s.maySync() {
		return fuse.EIO
	}
	if s.failSync() {
		if err := s.loseFile(n); err != nil {
			return fuse.ToStatus(err)
		}
		return fuse.EIO
	}
	s.syncFile(n)
	return fuse.OK
}

// syncFile makes the live contents and size of n durable (fsync, fdatasync).
func (s *state) syncFile(n *node) {
	n.saved = nil
	n.durSize = n.size
	if s.last.ino == n.ino {
		s.last.valid = false
	}
	s.stats.FileSyncs++
}

// syncDir makes the live entries of the directory n durable (fsync of the
// directory).
func (s *state) syncDir(n *node) {
	n.durable = maps.Clone(n.live)
	s.stats.DirSyncs++
}

// CutReport says what a cut discarded.
type CutReport struct {
	FilesRolledBack  int    `json:"files_rolled_back"` // files that had unsynced changes
	PagesDiscarded   int    `json:"pages_discarded"`   // unsynced 4 KiB pages inside the durable size, put back
	BytesCutOff      int64  `json:"bytes_cut_off"`     // unsynced bytes past the durable size, cut off
	EntriesDiscarded int    `json:"entries_discarded"` // unsynced creates, renames and unlinks undone
	FilesRemoved     int    `json:"files_removed"`     // inodes no durable entry names any more
	ModesRolledBack  int    `json:"modes_rolled_back"` // files whose unsynced chmod was undone
	Torn             bool   `json:"torn"`              // the last unsynced page was torn
	TornBytes        int    `json:"torn_bytes"`        // how many new bytes of it survived
	TornPath         string `json:"torn_path,omitempty"`
}

// Stats counts what the file system has done since it was mounted first.
type Stats struct {
	Writes       int64 `json:"writes"`
	BytesWritten int64 `json:"bytes_written"`
	PagesSaved   int64 `json:"pages_saved"` // pages whose durable bytes the volatile layer kept
	FileSyncs    int64 `json:"file_syncs"`
	DirSyncs     int64 `json:"dir_syncs"`
	Cuts         int64 `json:"cuts"`
	Discarded    int64 `json:"discarded"`    // cuts that discarded something
	FailedSyncs  int64 `json:"failed_syncs"` // syncs failed by FailSyncAfter, the power on
	PagesLost    int64 `json:"pages_lost"`   // pages a failed sync marked clean, not written
	Frozen       bool  `json:"frozen"`       // the power is off now (Freeze, FreezeAfterSyncs)
}

// rollback returns the file system to its durable state: the power came
// back. Directories get their durable entries back; files reachable
// through them get their durable contents back (with the last unsynced page
// torn if tear is set); every other inode is deleted. It runs while
// nothing is mounted.
func (s *state) rollback(tear bool) (CutReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r CutReport
	// What the durable entries reach, and by which path (for the report).
	reach := map[uint64]string{rootIno: ""}
	queue := []uint64{rootIno}
	for len(queue) > 0 {
		d := s.nodes[queue[0]]
		queue = queue[1:]
		for _, name := range slices.Sorted(maps.Keys(d.durable)) {
			ino := d.durable[name]
			if _, seen := reach[ino]; seen {
				continue
			}
			if s.nodes[ino] == nil {
				return r, fmt.Errorf("powercut: durable entry %q names unknown inode %d", name, ino)
			}
			reach[ino] = reach[d.ino] + "/" + name
			if s.nodes[ino].isDir() {
				queue = append(queue, ino)
			}
		}
	}
	for _, ino := range slices.Sorted(maps.Keys(s.nodes)) {
		n := s.nodes[ino]
		path, ok := reach[ino]
		if !ok {
			if n.f != nil {
				n.f.Close()
				if err := os.Remove(s.dataPath(ino)); err != nil {
					return r, err
				}
			}
			delete(s.nodes, ino)
			r.FilesRemoved++
			continue
		}
		switch {
		case n.isDir():
			r.EntriesDiscarded += entryChanges(n.live, n.durable)
			n.live = maps.Clone(n.durable)
		case n.isFile():
			t := tear && s.last.valid && s.last.ino == ino
			pages, cutOff, torn, err := s.rollbackFile(n, t)
			if err != nil {
				return r, fmt.Errorf("powercut: roll back %s: %w", path, err)
			}
			if pages > 0 || cutOff > 0 {
				r.FilesRolledBack++
				r.PagesDiscarded += pages
				r.BytesCutOff += cutOff
			}
			if torn > 0 {
				r.Torn, r.TornBytes, r.TornPath = true, torn, path
			}
			if n.mode != n.durMode {
				n.mode = n.durMode
				r.ModesRolledBack++
			}
		}
	}
	s.handles = map[uint64]*handle{}
	s.last = lastWrite{}
	s.frozen = false
	s.stats.Cuts++
	if r.FilesRolledBack > 0 || r.EntriesDiscarded > 0 || r.FilesRemoved > 0 || r.ModesRolledBack > 0 {
		s.stats.Discarded++
	}
	return r, nil
}

// entryChanges counts the entries in which two directory tables differ.
func entryChanges(live, durable map[string]uint64) int {
	n := 0
	for name, ino := range live {
		if d, ok := durable[name]; !ok || d != ino {
			n++
		}
	}
	for name := range durable {
		if _, ok := live[name]; !ok {
			n++
		}
	}
	return n
}

// rollbackFile gives n its durable contents back. With tear, the page the
// last unsynced write ended in keeps a random prefix of its new bytes (if
// that page lies inside the durable size). It returns how many pages it
// put back, how many bytes past the durable size it cut off and how many
// new bytes the torn page kept.
func (s *state) rollbackFile(n *node, tear bool) (pages int, cutOff int64, torn int, err error) {
	pages, cutOff = len(n.saved), max(0, n.size-n.durSize)
	var tornPage []byte
	tp := s.last.page
	if old, ok := n.saved[tp]; tear && ok && len(old) > 1 && tp*pageSize < n.size {
		tornPage = make([]byte, len(old))
		k, err := n.f.ReadAt(tornPage, tp*pageSize)
		if err != nil && err != io.EOF {
			return 0, 0, 0, err
		}
		clear(tornPage[k:])
	}
	if err := n.f.Truncate(n.durSize); err != nil {
		return 0, 0, 0, err
	}
	for p, old := range n.saved {
		if _, err := n.f.WriteAt(old, p*pageSize); err != nil {
			return 0, 0, 0, err
		}
	}
	if tornPage != nil {
		// A write reaches the medium front to back: a prefix of the new
		// bytes, cut anywhere, then the old ones.
		torn = 1 + s.rnd.IntN(len(tornPage)-1)
		if _, err := n.f.WriteAt(tornPage[:torn], tp*pageSize); err != nil {
			return 0, 0, 0, err
		}
	}
	for p, old := range n.lost {
		if p*pageSize >= n.durSize {
			continue
		}
		buf := make([]byte, min(pageSize, n.durSize-p*pageSize))
		copy(buf, old)
		if _, err := n.f.WriteAt(buf, p*pageSize); err != nil {
			return 0, 0, 0, err
		}
		pages++
	}
	n.size, n.saved, n.lost = n.durSize, nil, nil
	return pages, cutOff, torn, nil
}
