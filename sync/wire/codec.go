package wire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// enc appends big-endian fields and length-prefixed strings.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)     { e.b = append(e.b, v) }
func (e *enc) u16(v uint16)   { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32)   { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64)   { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) uvar(v uint64)  { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) raw(p []byte)   { e.b = append(e.b, p...) }
func (e *enc) bytes(p []byte) { e.uvar(uint64(len(p))); e.b = append(e.b, p...) }
func (e *enc) str(s string)   { e.uvar(uint64(len(s))); e.b = append(e.b, s...) }

// dec reads what enc wrote, remembering the first error; every read is
// bounds-checked, so a hostile input can only produce an error.
type dec struct {
	b   []byte
	off int
	err error
}

func (d *dec) fail(format string, a ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format+" (offset %d)", append([]any{ErrMalformed}, append(a, d.off)...)...)
	}
}

func (d *dec) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.fail("truncated %s", what)
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *dec) u8(what string) uint8 {
	if p := d.take(1, what); p != nil {
		return p[0]
	}
	return 0
}

func (d *dec) u16(what string) uint16 {
	if p := d.take(2, what); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *dec) u32(what string) uint32 {
	if p := d.take(4, what); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *dec) u64(what string) uint64 {
	if p := d.take(8, what); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *dec) uvar(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad varint %s", what)
		return 0
	}
	d.off += n
	return v
}

// bytes reads a length-prefixed byte string of at most max bytes.
func (d *dec) bytes(what string, max int) []byte {
	n := d.uvar(what + " length")
	if d.err == nil && n > uint64(max) {
		d.fail("%s is %d bytes, limit %d", what, n, max)
		return nil
	}
	return d.take(int(n), what)
}

// str reads a length-prefixed UTF-8 string of at most max bytes without
// control characters.
func (d *dec) str(what string, max int) string {
	p := d.bytes(what, max)
	if d.err != nil {
		return ""
	}
	if !utf8.Valid(p) {
		d.fail("%s is not UTF-8", what)
		return ""
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			d.fail("%s holds a control character", what)
			return ""
		}
	}
	return string(p)
}

// end fails unless every byte was consumed.
func (d *dec) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}
