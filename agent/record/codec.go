package record

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Encoder appends big-endian fields and length-prefixed strings: the binary
// encoding of the tap record, which the link's messages (sync/wire) share.
type Encoder struct{ B []byte }

func (e *Encoder) U8(v uint8)     { e.B = append(e.B, v) }
func (e *Encoder) U16(v uint16)   { e.B = binary.BigEndian.AppendUint16(e.B, v) }
func (e *Encoder) U32(v uint32)   { e.B = binary.BigEndian.AppendUint32(e.B, v) }
func (e *Encoder) U64(v uint64)   { e.B = binary.BigEndian.AppendUint64(e.B, v) }
func (e *Encoder) Uvar(v uint64)  { e.B = binary.AppendUvarint(e.B, v) }
func (e *Encoder) Raw(p []byte)   { e.B = append(e.B, p...) }
func (e *Encoder) Bytes(p []byte) { e.Uvar(uint64(len(p))); e.B = append(e.B, p...) }
func (e *Encoder) Str(s string)   { e.Uvar(uint64(len(s))); e.B = append(e.B, s...) }

// Decoder reads what Encoder wrote, remembering the first error; every read
// is bounds-checked, so a hostile input can only produce an error, which
// wraps the sentinel given to NewDecoder.
type Decoder struct {
	b         []byte
	off       int
	err       error
	malformed error
}

// NewDecoder returns a decoder of b whose errors wrap malformed (the
// caller's sentinel, e.g. ErrMalformed).
func NewDecoder(b []byte, malformed error) *Decoder { return &Decoder{b: b, malformed: malformed} }

// Err returns the first error, or nil.
func (d *Decoder) Err() error { return d.err }

// Fail records a decoding error (the first one wins), with the offset.
func (d *Decoder) Fail(format string, a ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format+" (offset %d)", append([]any{d.malformed}, append(a, d.off)...)...)
	}
}

// Take reads n raw bytes.
func (d *Decoder) Take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.Fail("truncated %s", what)
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

// U8 reads a byte.
func (d *Decoder) U8(what string) uint8 {
	if p := d.Take(1, what); p != nil {
		return p[0]
	}
	return 0
}

// U16 reads a big-endian uint16.
func (d *Decoder) U16(what string) uint16 {
	if p := d.Take(2, what); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

// U32 reads a big-endian uint32.
func (d *Decoder) U32(what string) uint32 {
	if p := d.Take(4, what); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

// U64 reads a big-endian uint64.
func (d *Decoder) U64(what string) uint64 {
	if p := d.Take(8, what); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// Uvar reads an unsigned varint.
func (d *Decoder) Uvar(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.Fail("bad varint %s", what)
		return 0
	}
	d.off += n
	return v
}

// Bytes reads a length-prefixed byte string of at most max bytes.
func (d *Decoder) Bytes(what string, max int) []byte {
	n := d.Uvar(what + " length")
	if d.err == nil && n > uint64(max) {
		d.Fail("%s is %d bytes, limit %d", what, n, max)
		return nil
	}
	return d.Take(int(n), what)
}

// Str reads a length-prefixed string of at most max bytes that passes
// CheckString.
func (d *Decoder) Str(what string, max int) string {
	p := d.Bytes(what, max)
	if d.err != nil {
		return ""
	}
	if err := CheckString(what, string(p), max); err != nil {
		d.Fail("%v", err)
		return ""
	}
	return string(p)
}

// CheckString is the rule of a string field in a record (Decoder.Str): at
// most max bytes of UTF-8 without C0 controls or DEL. It is what the
// ledger holds a tap's record text to: a record the validator wrote
// decodes, so its tap is charged.
func CheckString(what, s string, max int) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("%s is %d bytes, limit %d", what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not UTF-8", what)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("%s holds a control character", what)
		}
	}
	return nil
}

// End fails unless every byte was consumed.
func (d *Decoder) End() error {
	if d.err == nil && d.off != len(d.b) {
		d.Fail("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}
