package queue

import (
	"bytes"
	"encoding/hex"
	"hash/fnv"
	"os"
	"sort"
	"time"
)

// A file whose meta pages are both lost (the first pages of the file
// destroyed: a worn SD card loses a whole erase block) has no way into its
// page tree. The scan reads every page instead: each leaf page that is what
// it says it is (its id is its place in the file) gives up its elements,
// whichever bucket it belonged to, live or freed. What looks like a record
// (an 8-byte sequence key, a value with an append time) is returned, except
// what the archive's ack time shows was delivered already; the file's epoch
// and last sequence number come from copies of the meta bucket's page.
// Freed pages hold older copies of records that may have been delivered
// since, so records are returned that the server has (it settles a resent
// record once), and the caller's state is lost (not returned: no page says
// which bucket it belonged to). The caller must check each record: state
// entries with 8-byte keys come back as records too.

// maxScanVariants bounds the distinct records the scan keeps (an index
// entry each, some 80 bytes with its map entry, not the data): 40 MiB at
// most on a validator. A file of 300-byte tap records holds that many
// records in 150 MiB.
const maxScanVariants = 1 << 19

// freelistPageFlag marks bbolt's freelist page.
const freelistPageFlag = 0x10

// scanned is one distinct record the scan found: its sequence number and
// where its value is (the page, the offset within the page image, length),
// and on how many pages it was found.
type scanned struct {
	seq      uint64
	page     uint64
	off, len uint32
	copies   int
}

// scanSalvage is OpenSalvage's last resort (see above). It returns nil if
// no page of the file can be read as a bbolt page.
func scanSalvage(f *os.File, path string, size int64) *Salvage {
	ps := scanPageSize(f, size)
	if ps == 0 {
		return nil
	}
	s := &Salvage{Path: path, Expected: -1, State: map[string][]KV{}, Scanned: true,
		w: &salvager{f: f, pageSize: ps, hwm: uint64(size) / ps, bad: map[uint64]bool{}, counted: map[uint64]bool{}}}
	sc := &pageScan{s: s, epochs: map[string]int{}, index: map[[2]uint64]int{}}
	buf := make([]byte, ps)
	for id := uint64(2); id < s.w.hwm; id++ {
		if _, err := f.ReadAt(buf, int64(id*ps)); err != nil {
			break
		}
		flags, overflow := ne.Uint16(buf[8:]), uint64(ne.Uint32(buf[12:]))
		if ne.Uint64(buf) != id || flags&^(branchPageFlag|leafPageFlag|freelistPageFlag) != 0 || flags == 0 || id+overflow >= s.w.hwm {
			if !allZero(buf) {
				s.LostPages++ // neither a page nor never written
			}
			continue
		}
		if flags != leafPageFlag {
			id += overflow
			continue
		}
		img := s.w.page(id, 0)
		if img == nil {
			s.LostPages++
			continue
		}
		if !sc.elements(img, 0, id, 0) {
			s.LostPages++
		}
		id += overflow
	}
	if len(s.found) == 0 && len(sc.epochs) == 0 {
		return nil
	}
	// Sequence order; of several versions of one number (a torn copy,
	// or records of two epochs), the one found most often first.
	sort.Slice(s.found, func(i, j int) bool {
		a, b := s.found[i], s.found[j]
		if a.seq != b.seq {
			return a.seq < b.seq
		}
		return a.copies > b.copies
	})
	best := 0
	for e, n := range sc.epochs {
		if n > best || n == best && e < s.Epoch {
			s.Epoch, best = e, n
		}
	}
	s.LastSeq = sc.metaSeq
	if sc.metaSeq == 0 && len(s.found) > 0 {
		s.LastSeq = s.found[len(s.found)-1].seq
	}
	s.Pending = len(s.found)
	return s
}

// pageScan is the state of one scan: what the pages said so far.
type pageScan struct {
	s       *Salvage
	epochs  map[string]int    // epochs found in copies of the meta bucket, and how often
	metaSeq uint64            // the highest last sequence number they hold
	index   map[[2]uint64]int // (seq, hash of the value) → s.found
}

// elements takes what the leaf page (or inline bucket page) at start in
// the image img of page id holds; depth counts the inline pages it is
// inside. It reports false if some elements point outside the image.
func (sc *pageScan) elements(img []byte, start uint64, id uint64, depth int) bool {
	if start+pageHeaderSize > uint64(len(img)) || ne.Uint16(img[start+8:]) != leafPageFlag {
		return false
	}
	count := uint64(ne.Uint16(img[start+10:]))
	if start+pageHeaderSize+count*elementSize > uint64(len(img)) {
		return false
	}
	whole := true
	for i := range count {
		off := start + pageHeaderSize + i*elementSize
		e := img[off : off+elementSize]
		pos, ksize, vsize := uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		if off+pos+ksize+vsize > uint64(len(img)) {
			whole = false
			continue
		}
		at := off + pos + ksize
		k, v := img[off+pos:at], img[at:at+vsize]
		if ne.Uint32(e[0:])&bucketLeafFlag != 0 {
			// A small bucket lives inside its parent's page (the queue's
			// meta bucket does): root page 0, then its page.
			if depth < maxSalvageNest && len(v) >= bucketHeaderLen+pageHeaderSize && ne.Uint64(v) == 0 {
				sc.elements(img, at+bucketHeaderLen, id, depth+1)
			}
			continue
		}
		switch seq, ok := keySeq(k); {
		case bytes.Equal(k, kEpoch) && len(v) == epochLen:
			sc.epochs[hex.EncodeToString(v)]++
		case bytes.Equal(k, kSeq) && len(v) == 8:
			sc.metaSeq = max(sc.metaSeq, getUint64(v))
		case ok && seq > 0 && len(v) >= pendingHeader && !delivered(v):
			h := fnv.New64a()
			h.Write(v)
			key := [2]uint64{seq, h.Sum64()}
			if i, ok := sc.index[key]; ok {
				sc.s.found[i].copies++
				continue
			}
			if len(sc.s.found) >= maxScanVariants {
				continue
			}
			sc.index[key] = len(sc.s.found)
			sc.s.found = append(sc.s.found, scanned{seq: seq, page: id, off: uint32(at), len: uint32(vsize), copies: 1})
		}
	}
	return whole
}

// delivered reports whether the value v of a record element is an
// archive entry (append time, then an ack time not before it and within
// years of it): that record was delivered. A pending value's data does not
// start with such a time (a tap record starts with its version byte, far
// below any time since 2000).
func delivered(v []byte) bool {
	if len(v) < archiveHeader {
		return false
	}
	appended, acked := int64(getUint64(v)), int64(getUint64(v[pendingHeader:]))
	const years = 20 * 365 * 24 * int64(time.Hour)
	return appended > 0 && acked >= appended && acked-appended < years
}

// scanPageSize returns the page size at which the most pages of the file
// carry their own id (0 if none does): meta page 0, with the page size, is
// lost.
func scanPageSize(f *os.File, size int64) uint64 {
	best, bestN := uint64(0), 0
	var hdr [pageHeaderSize]byte
	for ps := uint64(minPageSize); ps <= maxPageSize; ps *= 2 {
		n := 0
		for id := uint64(2); id < uint64(size)/ps && id < 2+4096; id++ {
			if _, err := f.ReadAt(hdr[:], int64(id*ps)); err != nil {
				break
			}
			if flags := ne.Uint16(hdr[8:]); ne.Uint64(hdr[:]) == id && (flags == leafPageFlag || flags == branchPageFlag || flags == freelistPageFlag) {
				n++
			}
		}
		if n > bestN {
			best, bestN = ps, n
		}
	}
	return best
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// scannedRecords is Records for a scanned file: every record found, in
// sequence order, with the epoch "" (the caller reads each record's own).
func (s *Salvage) scannedRecords(fn func(epoch string, r Record) error) error {
	for _, sc := range s.found {
		img := s.w.page(sc.page, 0)
		if img == nil || uint64(sc.off)+uint64(sc.len) > uint64(len(img)) {
			continue
		}
		v := img[sc.off : sc.off+sc.len]
		if err := fn("", Record{Seq: sc.seq, Time: appendTime(v), Data: bytes.Clone(v[pendingHeader:])}); err != nil {
			return err
		}
	}
	return nil
}
