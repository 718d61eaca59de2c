package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"go.etcd.io/bbolt"
)

// bbolt's page layout (go.etcd.io/bbolt/internal/common, file format
// version 2, stable across bbolt releases). Integers are in the machine's
// byte order, as bbolt writes them through unsafe pointers.
const (
	pageHeaderSize  = 16 // id uint64, flags uint16, count uint16, overflow uint32
	elementSize     = 16 // branch: pos, ksize uint32, pgid uint64; leaf: flags, pos, ksize, vsize uint32
	bucketHeaderLen = 16 // root pgid uint64, sequence uint64
	branchPageFlag  = 0x01
	leafPageFlag    = 0x02
	bucketLeafFlag  = 0x01
	maxTreeDepth    = 64
)

// verifyPages checks the structure of the bbolt page tree in a file by
// reading the pages itself, bounds-checking every field, before bbolt walks
// it. bbolt trusts page contents: a damaged page can make its checker (or
// its freelist rebuild, run on every read-write open) panic in a goroutine
// of its own, fault on memory outside the file, or loop for billions of
// iterations on a huge overflow count; and when that rebuild finds any
// error it panics, and the file is unmapped while its checker goroutine
// still reads it. This walk cannot crash: it follows every page reachable
// from the root bucket (root, hwm and pageSize come from the meta page
// bbolt chose and validated) and requires each to carry its own id, be a
// branch or leaf, stay below the high-water mark with its overflow, be
// referenced once, hold its elements, keys and values inside itself, and
// keep its keys in the order bbolt's check requires. Inline buckets are
// checked inside their values. What bbolt's check then finds beyond this
// (free-page accounting) it reports as errors, from code that recovers.
func verifyPages(path string, root uint64, hwm uint64, pageSize int) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("queue: verify pages: %w", err)
	}
	defer f.Close()
	v := &pageVerifier{f: f, hwm: hwm, pageSize: uint64(pageSize), seen: make([]uint64, (hwm+63)/64)}
	_, err = v.page(root, 0, nil, nil)
	return err
}

type pageVerifier struct {
	f        *os.File
	hwm      uint64
	pageSize uint64
	seen     []uint64 // bitmap of page ids already reached
	bufs     [][]byte // a page buffer per tree depth, reused

	// A read-ahead window over the file: pages are mostly visited in
	// file order, so one read serves many.
	win      []byte
	winStart uint64 // file offset of win[0]
}

// readAheadSize is the read-ahead window (64 pages of 4 KiB).
const readAheadSize = 256 << 10

// readAt fills buf from the file at off, through the read-ahead window.
func (v *pageVerifier) readAt(buf []byte, off uint64) error {
	n := uint64(len(buf))
	if off >= v.winStart && off+n <= v.winStart+uint64(len(v.win)) {
		copy(buf, v.win[off-v.winStart:])
		return nil
	}
	if n > readAheadSize {
		_, err := v.f.ReadAt(buf, int64(off))
		return err
	}
	if v.win == nil {
		v.win = make([]byte, readAheadSize)
	}
	// Read as much of a window as the file has below the high-water mark.
	end := min(off+readAheadSize, v.hwm*v.pageSize)
	m, err := v.f.ReadAt(v.win[:end-off], int64(off))
	v.win, v.winStart = v.win[:m], off
	if uint64(m) < n {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	copy(buf, v.win)
	return nil
}

var ne = binary.NativeEndian

// page checks the page with id id and everything below it. Its keys must
// be at least minKey (if not nil) and below maxKey (if not nil), the
// bounds bbolt's key-order check applies; it returns the largest key in
// the subtree.
func (v *pageVerifier) page(id uint64, depth int, minKey, maxKey []byte) ([]byte, error) {
	if depth > maxTreeDepth {
		return nil, corruptf("queue: page %d: tree deeper than %d", id, maxTreeDepth)
	}
	if id < 2 || id >= v.hwm {
		return nil, corruptf("queue: page id %d outside [2, %d)", id, v.hwm)
	}
	var hdr [pageHeaderSize]byte
	if err := v.readAt(hdr[:], id*v.pageSize); err != nil {
		return nil, readErr(id, err)
	}
	if got := ne.Uint64(hdr[0:]); got != id {
		return nil, corruptf("queue: page %d identifies as %d", id, got)
	}
	flags, overflow := ne.Uint16(hdr[8:]), uint64(ne.Uint32(hdr[12:]))
	if flags != branchPageFlag && flags != leafPageFlag {
		return nil, corruptf("queue: page %d: type flags %#x, want branch or leaf", id, flags)
	}
	if id+overflow >= v.hwm {
		return nil, corruptf("queue: page %d: %d overflow pages pass the high-water mark %d", id, overflow, v.hwm)
	}
	for p := id; p <= id+overflow; p++ {
		if v.seen[p/64]&(1<<(p%64)) != 0 {
			return nil, corruptf("queue: page %d reached twice", p)
		}
		v.seen[p/64] |= 1 << (p % 64)
	}
	for len(v.bufs) <= depth {
		v.bufs = append(v.bufs, nil)
	}
	n := (overflow + 1) * v.pageSize
	if uint64(cap(v.bufs[depth])) < n {
		v.bufs[depth] = make([]byte, n)
	}
	buf := v.bufs[depth][:n]
	if err := v.readAt(buf, id*v.pageSize); err != nil {
		return nil, readErr(id, err)
	}
	last, err := v.elements(id, buf, depth, minKey, maxKey)
	// buf is reused for the next page at this depth: copy the key out.
	return bytes.Clone(last), err
}

// elements checks the elements of a page held in buf (a whole page with
// its overflow, or an inline bucket's page) and recurses into the pages
// and buckets they point to. Key bounds and result are as for page.
func (v *pageVerifier) elements(id uint64, buf []byte, depth int, minKey, maxKey []byte) ([]byte, error) {
	where := pageName(id)
	flags, count := ne.Uint16(buf[8:]), uint64(ne.Uint16(buf[10:]))
	size := uint64(len(buf))
	if pageHeaderSize+count*elementSize > size {
		return nil, corruptf("queue: %s: %d elements do not fit in %d bytes", where, count, size)
	}
	// key returns element i's key, checking it lies inside buf.
	key := func(i uint64) ([]byte, uint64, error) {
		off := pageHeaderSize + i*elementSize
		e := buf[off : off+elementSize]
		pos, ksize := uint64(ne.Uint32(e[0:])), uint64(ne.Uint32(e[4:]))
		if flags == leafPageFlag {
			pos, ksize = uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:]))
		}
		if off+pos+ksize > size {
			return nil, 0, corruptf("queue: %s: element %d points outside the page", where, i)
		}
		return buf[off+pos : off+pos+ksize], off + pos + ksize, nil
	}
	prev := minKey // bbolt's runningMin
	var last []byte
	for i := range count {
		k, end, err := key(i)
		if err != nil {
			return nil, err
		}
		if err := checkKeyOrder(where, i, k, prev, maxKey); err != nil {
			return nil, err
		}
		e := buf[pageHeaderSize+i*elementSize:][:elementSize]
		if flags == branchPageFlag {
			next := maxKey
			if i+1 < count {
				if next, _, err = key(i + 1); err != nil {
					return nil, err
				}
			}
			if last, err = v.page(ne.Uint64(e[8:]), depth+1, k, next); err != nil {
				return nil, err
			}
			prev = last
			continue
		}
		prev, last = k, k
		vsize := uint64(ne.Uint32(e[12:]))
		if end+vsize > size {
			return nil, corruptf("queue: %s: value of element %d points outside the page", where, i)
		}
		if ne.Uint32(e[0:])&bucketLeafFlag == 0 {
			continue
		}
		val := buf[end : end+vsize]
		if len(val) < bucketHeaderLen {
			return nil, corruptf("queue: %s: bucket element %d has a %d-byte header", where, i, len(val))
		}
		if r := ne.Uint64(val); r != 0 {
			if _, err := v.page(r, depth+1, nil, nil); err != nil {
				return nil, err
			}
			continue
		}
		// An inline bucket: a leaf page stored in the value.
		inline := val[bucketHeaderLen:]
		if len(inline) < pageHeaderSize || ne.Uint16(inline[8:]) != leafPageFlag {
			return nil, corruptf("queue: %s: inline bucket %d is not a leaf page", where, i)
		}
		if depth+1 > maxTreeDepth {
			return nil, corruptf("queue: %s: buckets nested deeper than %d", where, maxTreeDepth)
		}
		if _, err := v.elements(id, inline, depth+1, nil, nil); err != nil {
			return nil, err
		}
	}
	return last, nil
}

// checkKeyOrder applies bbolt's key-order rule (tx_check.go verifyKeyOrder)
// to key i of a page: the first key is at least the ancestor's bound, each
// later key is above the one before, and every key is below the next
// ancestor key.
func checkKeyOrder(where pageName, i uint64, key, prev, maxKey []byte) error {
	switch {
	case i == 0 && prev != nil && bytes.Compare(prev, key) > 0:
		return corruptf("queue: %s: first key %x is below its ancestor's %x", where, key, prev)
	case i > 0 && bytes.Compare(prev, key) >= 0:
		return corruptf("queue: %s: key %d (%x) is not above the one before (%x)", where, i, key, prev)
	case maxKey != nil && bytes.Compare(key, maxKey) >= 0:
		return corruptf("queue: %s: key %d (%x) is not below the next ancestor key %x", where, i, key, maxKey)
	}
	return nil
}

// pageName names a page, or an inline bucket within it, in errors.
type pageName uint64

func (p pageName) String() string { return fmt.Sprintf("page %d", uint64(p)) }

func readErr(id uint64, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return corruptf("queue: page %d lies past the end of the file", id)
	}
	return fmt.Errorf("queue: verify pages: read page %d: %w", id, err)
}

// verifyTx runs verifyPages for the state tx sees.
func verifyTx(path string, db *bbolt.DB, tx *bbolt.Tx) error {
	pageSize := db.Info().PageSize
	root := uint64(tx.Cursor().Bucket().Root())
	return verifyPages(path, root, uint64(tx.Size())/uint64(pageSize), pageSize)
}
