package queue

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"sort"
	"strings"
)

// bbolt's meta page (go.etcd.io/bbolt/internal/common/meta.go), after the
// page header: magic, version, page size, flags (uint32 each), the root
// bucket (root pgid, sequence), the freelist pgid, the high-water mark,
// the transaction id (uint64 each) and an FNV-64a checksum of what comes
// before it.
const (
	metaPageFlag    = 0x04
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	metaChecksumEnd = pageHeaderSize + 56 // offset of the checksum
	metaSize        = metaChecksumEnd + 8
	minPageSize     = 512
	maxPageSize     = 64 << 10
)

// boltMeta is a parsed, checksummed meta page.
type boltMeta struct {
	pageSize uint64
	root     uint64
	hwm      uint64
	txid     uint64
}

// parseMeta parses a meta page (at least metaSize bytes) and checks it.
func parseMeta(p []byte) (boltMeta, bool) {
	if len(p) < metaSize || ne.Uint16(p[8:])&metaPageFlag == 0 {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(p[pageHeaderSize:metaChecksumEnd])
	if ne.Uint32(p[16:]) != boltMagic || ne.Uint32(p[20:]) != boltVersion || ne.Uint64(p[metaChecksumEnd:]) != h.Sum64() {
		return boltMeta{}, false
	}
	m := boltMeta{pageSize: uint64(ne.Uint32(p[24:])), root: ne.Uint64(p[32:]), hwm: ne.Uint64(p[56:]), txid: ne.Uint64(p[64:])}
	if m.pageSize < minPageSize || m.pageSize > maxPageSize || m.pageSize&(m.pageSize-1) != 0 || m.root < 2 || m.root >= m.hwm {
		return boltMeta{}, false
	}
	return m, true
}

// ErrUnsalvageable is returned by OpenSalvage for a file in which nothing
// can be found: no valid meta page, or no readable root.
var ErrUnsalvageable = errors.New("queue: nothing can be salvaged from the file")

// KV is one key and value of a caller's bucket found by Salvage.
type KV struct{ Key, Value []byte }

// Salvage is a read of a damaged queue file, to recover what it holds:
// its epoch and last sequence number, the caller's state and (with
// Records) its unacked records, which Adopt can then keep in a new file
// until they are delivered. It reads bbolt's page tree itself, from the
// newest valid meta page, bounds-checking every field as the open check
// does, but skips what it cannot read (a page that is not what its parent
// says it is, elements that point outside their page) instead of failing;
// LostPages counts the pages skipped with everything below them. It never
// writes to the file.
//
// What it returns is what the file says, no more: records in a page that
// is readable but holds damaged bytes come back damaged (the queue has no
// checksums of its own), so the caller should check them (tap records
// carry a hash chain).
type Salvage struct {
	Path string
	// Epoch is the file's epoch (hex), or "" if its meta bucket could not
	// be read.
	Epoch string
	// LastSeq is the last sequence number the file handed out: the meta
	// bucket's, or the highest record found if that is higher or the meta
	// bucket is lost.
	LastSeq uint64
	// Pending is how many unacked records were found; Expected how many
	// the meta bucket counted (-1 if it could not be read).
	Pending, Expected int
	// Archived is how many acked records were found (not returned).
	Archived int
	// Adopted is how many records of earlier files, adopted by this one
	// and not yet delivered, were found.
	Adopted int
	// State holds the caller's buckets (names not starting with
	// BucketPrefix) with their keys and values in key order. Nested
	// buckets are not returned.
	State map[string][]KV
	// LostPages counts the pages that could not be read, with their
	// subtrees: records and state in them are lost.
	LostPages int
	// Scanned: no meta page led into the file's page tree, and the
	// records were found by reading every page (see scanSalvage): among
	// them may be records delivered already and state entries, and State
	// is empty. Archived and Adopted are not counted; Pending counts every
	// distinct record found.
	Scanned bool

	w        *salvager
	root     uint64               // the root bucket's page
	roots    map[string]bucketRef // the queue's record buckets
	adoptedR map[string]bucketRef // adopted records, by epoch
	found    []scanned            // Scanned: the records found
}

// bucketRef locates a bucket's tree: a root page, or an inline page.
type bucketRef struct {
	root   uint64
	inline []byte
}

// OpenSalvage reads what it can of the queue file at path (see Salvage).
// The records are read by Records; Close releases the file. It returns
// ErrUnsalvageable if nothing can be found in the file.
func OpenSalvage(path string) (*Salvage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("queue: salvage: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("queue: salvage: %w", err)
	}
	metas := readMetas(f, info.Size())
	var s *Salvage
	for _, m := range metas {
		w := newSalvager(f, info.Size(), m)
		s = &Salvage{Path: path, Expected: -1, State: map[string][]KV{}, w: w,
			roots: map[string]bucketRef{}, adoptedR: map[string]bucketRef{}}
		if s.scan(m.root) {
			s.root = m.root
			break
		}
		s = nil // the root page is lost: try the older meta page
	}
	if s == nil {
		s = scanSalvage(f, path, info.Size())
	}
	if s == nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: no valid meta page with a readable root, and no page holds a record", ErrUnsalvageable, path)
	}
	return s, nil
}

// readMetas returns the valid meta pages of the file, newest first.
func readMetas(f *os.File, size int64) []boltMeta {
	buf := make([]byte, metaSize)
	var out []boltMeta
	pageSize := uint64(0)
	if _, err := f.ReadAt(buf, 0); err == nil {
		if m, ok := parseMeta(buf); ok {
			out = append(out, m)
			pageSize = m.pageSize
		}
	}
	sizes := []uint64{pageSize}
	if pageSize == 0 {
		// The first meta page is lost, with the page size: try each.
		for ps := uint64(minPageSize); ps <= maxPageSize; ps *= 2 {
			sizes = append(sizes, ps)
		}
	}
	for _, ps := range sizes {
		if ps == 0 || int64(ps)+metaSize > size {
			continue
		}
		if _, err := f.ReadAt(buf, int64(ps)); err != nil {
			continue
		}
		if m, ok := parseMeta(buf); ok && m.pageSize == ps {
			out = append(out, m)
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].txid > out[j].txid })
	return out
}

// scan reads the root bucket: the queue's meta bucket, where the record
// buckets are, and the caller's state. It reports false if the root page
// itself could not be read.
func (s *Salvage) scan(root uint64) bool {
	lost := s.w.lost
	found := false
	s.w.walk(bucketRef{root: root}, 0, func(k, v []byte, bucket bool) {
		found = true
		if !bucket {
			return // the root bucket holds buckets only
		}
		ref, ok := s.w.bucketRef(v)
		if !ok {
			return
		}
		name := string(k)
		switch {
		case name == MetaBucket:
			s.readMeta(ref)
		case name == PendingBucket || name == ArchiveBucket:
			s.roots[name] = ref
		case name == AdoptedBucket:
			s.w.walk(ref, 1, func(k, v []byte, bucket bool) {
				if bucket && len(k) > 0 && len(k) <= maxEpochLen {
					if r, ok := s.w.bucketRef(v); ok {
						s.adoptedR[string(k)] = r
					}
				}
			})
		case strings.HasPrefix(name, BucketPrefix):
		default:
			var kvs []KV
			s.w.walk(ref, 1, func(k, v []byte, bucket bool) {
				if !bucket {
					kvs = append(kvs, KV{Key: bytes.Clone(k), Value: bytes.Clone(v)})
				}
			})
			s.State[name] = kvs
		}
	})
	if !found && s.w.lost > lost {
		return false
	}
	// Count the records and find the highest sequence number.
	for name, ref := range s.roots {
		n := 0
		s.w.walk(ref, 1, func(k, v []byte, bucket bool) {
			if r, ok := salvagedRecord(k, v, bucket); ok {
				n++
				s.LastSeq = max(s.LastSeq, r.Seq)
			}
		})
		if name == PendingBucket {
			s.Pending = n
		} else {
			s.Archived = n
		}
	}
	for _, ref := range s.adoptedR {
		s.w.walk(ref, 2, func(k, v []byte, bucket bool) {
			if _, ok := salvagedRecord(k, v, bucket); ok {
				s.Adopted++
			}
		})
	}
	s.LostPages = s.w.lost
	return true
}

// readMeta takes the epoch, the last sequence number and the unacked count
// from the queue's meta bucket.
func (s *Salvage) readMeta(ref bucketRef) {
	s.w.walk(ref, 1, func(k, v []byte, bucket bool) {
		if bucket {
			return
		}
		switch {
		case bytes.Equal(k, kEpoch) && len(v) == epochLen:
			s.Epoch = hex.EncodeToString(v)
		case bytes.Equal(k, kSeq) && len(v) == 8:
			s.LastSeq = max(s.LastSeq, getUint64(v))
		case bytes.Equal(k, kPendingCount) && len(v) == 8 && getUint64(v) < 1<<31:
			s.Expected = int(getUint64(v))
		}
	})
}

// Records calls fn for every unacked record found, in sequence order, with
// the file's epoch (which may be "" if its meta bucket was lost), then for
// the adopted records of earlier files it held, with theirs. Of a Scanned
// file, it calls fn for every record found, in sequence order, with the
// epoch "": each record must say its own. It stops at
// fn's first error and returns it. Malformed records (a bad key, a value
// shorter than its header) are skipped.
func (s *Salvage) Records(fn func(epoch string, r Record) error) error {
	if s.Scanned {
		return s.scannedRecords(fn)
	}
	each := func(epoch string, ref bucketRef, depth int) error {
		var err error
		s.w.walk(ref, depth, func(k, v []byte, bucket bool) {
			if r, ok := salvagedRecord(k, v, bucket); ok && err == nil {
				r.Data = bytes.Clone(r.Data)
				err = fn(epoch, r)
			}
		})
		return err
	}
	if ref, ok := s.roots[PendingBucket]; ok {
		if err := each(s.Epoch, ref, 1); err != nil {
			return err
		}
	}
	epochs := make([]string, 0, len(s.adoptedR))
	for e := range s.adoptedR {
		epochs = append(epochs, e)
	}
	sort.Strings(epochs)
	for _, e := range epochs {
		if err := each(e, s.adoptedR[e], 2); err != nil {
			return err
		}
	}
	return nil
}

// salvagedRecord decodes a leaf element of a record bucket, or reports
// false for one that is malformed (a nested bucket, a bad key, sequence
// number 0, a value shorter than its header). Records and the counts scan
// makes use it alike, so the counts are what Records returns. r.Data
// aliases v.
func salvagedRecord(k, v []byte, bucket bool) (r Record, ok bool) {
	seq, ok := keySeq(k)
	if bucket || !ok || seq == 0 || len(v) < pendingHeader {
		return Record{}, false
	}
	return Record{Seq: seq, Time: appendTime(v), Data: v[pendingHeader:]}, true
}

// Close releases the file.
func (s *Salvage) Close() error { return s.w.f.Close() }

// salvager walks bbolt pages tolerantly: every field is bounds-checked,
// and a page that fails a check is skipped (counted once) with its
// subtree. Every walk of a Salvage shares its bitmap of damaged pages.
type salvager struct {
	f        *os.File
	pageSize uint64
	hwm      uint64
	lost     int             // pages counted in counted
	bad      map[uint64]bool // pages found unreadable: skipped by every walk
	counted  map[uint64]bool // pages lost in whole or in part (counted once)
	buf      [][]byte        // a page buffer per nesting and tree level
}

func newSalvager(f *os.File, size int64, m boltMeta) *salvager {
	hwm := min(m.hwm, uint64(size)/m.pageSize)
	return &salvager{f: f, pageSize: m.pageSize, hwm: hwm, bad: map[uint64]bool{}, counted: map[uint64]bool{}}
}

// damaged records page id as unreadable: lost, and skipped by every walk.
func (w *salvager) damaged(id uint64) {
	w.bad[id] = true
	w.skipped(id)
}

// skipped counts page id as lost, once, in whole or in part, without
// marking it unreadable: a walk that reached it through a damaged branch,
// or a page some of whose elements could not be read.
func (w *salvager) skipped(id uint64) {
	if !w.counted[id] {
		w.counted[id] = true
		w.lost++
	}
}

// page reads page id (with its overflow) into the buffer for slot and
// checks its header; nil if it is damaged.
func (w *salvager) page(id uint64, slot int) []byte {
	if id < 2 || id >= w.hwm || w.bad[id] {
		w.damaged(id)
		return nil
	}
	var hdr [pageHeaderSize]byte
	if _, err := w.f.ReadAt(hdr[:], int64(id*w.pageSize)); err != nil {
		w.damaged(id)
		return nil
	}
	flags, overflow := ne.Uint16(hdr[8:]), uint64(ne.Uint32(hdr[12:]))
	if ne.Uint64(hdr[0:]) != id || (flags != branchPageFlag && flags != leafPageFlag) || id+overflow >= w.hwm {
		w.damaged(id)
		return nil
	}
	for len(w.buf) <= slot {
		w.buf = append(w.buf, nil)
	}
	n := (overflow + 1) * w.pageSize
	if uint64(cap(w.buf[slot])) < n {
		w.buf[slot] = make([]byte, n)
	}
	buf := w.buf[slot][:n]
	if _, err := w.f.ReadAt(buf, int64(id*w.pageSize)); err != nil {
		w.damaged(id)
		return nil
	}
	return buf
}

// bucketRef decodes a bucket value: its root page, or a copy of its
// inline page.
func (w *salvager) bucketRef(v []byte) (bucketRef, bool) {
	if len(v) < bucketHeaderLen {
		return bucketRef{}, false
	}
	if r := ne.Uint64(v); r != 0 {
		return bucketRef{root: r}, true
	}
	inline := v[bucketHeaderLen:]
	if len(inline) < pageHeaderSize || ne.Uint16(inline[8:]) != leafPageFlag {
		return bucketRef{}, false
	}
	return bucketRef{inline: bytes.Clone(inline)}, true
}

// walk calls fn for every leaf element of the tree at ref, in key order,
// with whether it is a nested bucket. The key and value are valid only
// during the call. nest is the bucket nesting (0 for the root bucket):
// walks at different nestings may run inside each other's callbacks.
func (w *salvager) walk(ref bucketRef, nest int, fn func(k, v []byte, bucket bool)) {
	t := &treeWalk{nest: nest, fn: fn, seen: map[uint64]bool{}}
	if ref.inline != nil {
		w.elements(t, ref.inline, 0)
		return
	}
	w.walkPage(t, ref.root, 0)
}

// treeWalk is one walk of one tree.
type treeWalk struct {
	nest   int
	fn     func(k, v []byte, bucket bool)
	seen   map[uint64]bool // pages reached: a damaged branch may point back
	onLeaf func(id uint64) // called for each leaf page read, if set
}

// walkPage walks the page id at a level of its tree.
func (w *salvager) walkPage(t *treeWalk, id uint64, level int) {
	if level > maxTreeDepth || t.nest > maxSalvageNest || t.seen[id] {
		// Skipped by this walk only: the page may be sound, reached twice
		// or too deep through a damaged branch. Marking it bad would make
		// another walk of the same tree (Records after scan's count) see
		// less than this one did.
		w.skipped(id)
		return
	}
	t.seen[id] = true
	buf := w.page(id, t.nest*(maxTreeDepth+1)+level)
	if buf == nil {
		return
	}
	if t.onLeaf != nil && ne.Uint16(buf[8:]) == leafPageFlag {
		t.onLeaf(id)
	}
	if !w.elements(t, buf, level) {
		w.skipped(id) // read what it has
	}
}

// maxSalvageNest is the deepest bucket nesting the queue's files have
// (root, top-level buckets, adopted epochs).
const maxSalvageNest = 2

// elements walks the elements of a page image; it reports false if the
// page is damaged: its element table does not fit it, or some elements
// point outside it (those are skipped, the others walked).
func (w *salvager) elements(t *treeWalk, buf []byte, level int) bool {
	flags, count := ne.Uint16(buf[8:]), uint64(ne.Uint16(buf[10:]))
	size := uint64(len(buf))
	if pageHeaderSize+count*elementSize > size {
		return false
	}
	if flags == branchPageFlag {
		for i := range count {
			e := buf[pageHeaderSize+i*elementSize:][:elementSize]
			w.walkPage(t, ne.Uint64(e[8:]), level+1)
		}
		return true
	}
	whole := true
	for i := range count {
		off := pageHeaderSize + i*elementSize
		e := buf[off : off+elementSize]
		leafFlags := ne.Uint32(e[0:])
		pos, ksize, vsize := uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		if off+pos+ksize+vsize > size {
			whole = false
			continue
		}
		k := buf[off+pos : off+pos+ksize]
		v := buf[off+pos+ksize : off+pos+ksize+vsize]
		t.fn(k, v, leafFlags&bucketLeafFlag != 0)
	}
	return whole
}

// LeafPages returns the ids of the leaf pages that hold the keys of the
// top-level bucket named bucket in the queue file at path (none if its
// keys are inline in its parent's page), and the file's page size, read
// as Salvage reads: for inspection, and for tests that damage one page of
// a file on purpose.
func LeafPages(path, bucket string) (ids []uint64, pageSize int, err error) {
	s, err := OpenSalvage(path)
	if err != nil {
		return nil, 0, err
	}
	defer s.Close()
	var ref *bucketRef
	s.w.walk(bucketRef{root: s.root}, 0, func(k, v []byte, isBucket bool) {
		if isBucket && string(k) == bucket {
			if r, ok := s.w.bucketRef(v); ok {
				ref = &r
			}
		}
	})
	if ref == nil {
		return nil, 0, fmt.Errorf("queue: %s: no bucket %q", path, bucket)
	}
	if ref.inline == nil {
		t := &treeWalk{nest: 1, fn: func([]byte, []byte, bool) {}, seen: map[uint64]bool{},
			onLeaf: func(id uint64) { ids = append(ids, id) }}
		s.w.walkPage(t, ref.root, 0)
	}
	return ids, int(s.w.pageSize), nil
}
