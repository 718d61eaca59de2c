package scanner

import (
	"bytes"
	"fmt"
	"time"
)

// Framing defaults, used for zero fields of [Framing].
const (
	// DefaultMaxLen is the default maximum frame text length in bytes. A
	// payment code is 295 characters.
	DefaultMaxLen = 1024
	// DefaultInterCharTimeout is the default time after which a frame left
	// without its terminator is discarded. Scanners send a whole code in a
	// few milliseconds even at 9600 baud (about 1 ms per byte).
	DefaultInterCharTimeout = 200 * time.Millisecond
)

// MaxAffixLen is the longest Prefix or Suffix accepted, in bytes.
const MaxAffixLen = 8

// Framing says how a scanner's byte stream is cut into frames. The zero value
// is ready to use: any of CR, LF or CRLF ends a frame, no prefix or suffix,
// frames up to [DefaultMaxLen] bytes, [DefaultInterCharTimeout].
//
// Only CR, LF and the configured prefix and suffix are framing; every other
// byte, spaces included, belongs to the text.
type Framing struct {
	// Terminator is the sequence that ends a frame (default [TermAny]).
	// CR and LF bytes at the start of a frame are always skipped, so blank
	// lines are ignored whatever the setting.
	Terminator Terminator

	// Prefix and Suffix are what the scanner is set to add around each scan
	// (for example "\x02" and "\x03" for STX/ETX, or an AIM symbology
	// identifier such as "]Q1"). They are stripped; a frame without them is
	// discarded as [DiscardUnframed]. At most [MaxAffixLen] bytes each, no
	// CR or LF.
	//
	// A prefix or suffix containing a control byte (such as STX or ETX)
	// cannot occur inside a printable text, so it also frames on its own: the
	// suffix ends a frame without waiting for a terminator (scanners set to
	// STX/ETX often send none), and the prefix starts a new frame, discarding
	// whatever came before it as [DiscardIncomplete]. A printable suffix is
	// only stripped in front of the terminator.
	Prefix string
	Suffix string

	// MaxLen is the maximum text length in bytes, prefix and suffix not
	// counted (0 means [DefaultMaxLen]). Longer frames are discarded as
	// [DiscardOverlong] without being buffered.
	MaxLen int

	// InterCharTimeout is how long a partial frame may wait for its next
	// byte before it is discarded as [DiscardIncomplete] (0 means
	// [DefaultInterCharTimeout]; negative disables the timeout).
	InterCharTimeout time.Duration
}

// withDefaults returns f with its zero fields replaced by the defaults.
func (f Framing) withDefaults() Framing {
	if f.MaxLen == 0 {
		f.MaxLen = DefaultMaxLen
	}
	if f.InterCharTimeout == 0 {
		f.InterCharTimeout = DefaultInterCharTimeout
	}
	return f
}

// validate checks f (after withDefaults).
func (f Framing) validate() error {
	if f.Terminator < TermAny || f.Terminator > TermCRLF {
		return fmt.Errorf("%w: unknown terminator %d", ErrInvalidConfig, int(f.Terminator))
	}
	if f.MaxLen < 0 {
		return fmt.Errorf("%w: negative MaxLen %d", ErrInvalidConfig, f.MaxLen)
	}
	for _, a := range []struct{ name, v string }{{"prefix", f.Prefix}, {"suffix", f.Suffix}} {
		if len(a.v) > MaxAffixLen {
			return fmt.Errorf("%w: %s %q longer than %d bytes", ErrInvalidConfig, a.name, a.v, MaxAffixLen)
		}
		if containsCRLF(a.v) {
			return fmt.Errorf("%w: %s %q contains CR or LF (use Terminator for those)", ErrInvalidConfig, a.name, a.v)
		}
	}
	if f.Prefix != "" && f.Suffix != "" && (hasControl(f.Prefix) || hasControl(f.Suffix)) &&
		(bytes.Contains([]byte(f.Prefix), []byte(f.Suffix)) || bytes.Contains([]byte(f.Suffix), []byte(f.Prefix))) {
		return fmt.Errorf("%w: prefix %q and suffix %q overlap", ErrInvalidConfig, f.Prefix, f.Suffix)
	}
	return nil
}

// Byte classes: bytes that need more than appending.
const (
	clsLine      = 1 << iota // CR or LF
	clsPrefixEnd             // last byte of a control prefix
	clsSuffixEnd             // last byte of a control suffix
)

// Framer cuts a scanner's byte stream into [Frame]s. It is a pure state
// machine: it does no I/O and reads no clock, the caller passes the arrival
// time with each chunk. The serial reader and the line source both use it.
//
// A frame is delivered only when complete, printable and within MaxLen; every
// other non-empty candidate is dropped and counted under exactly one
// [Discard] reason. Chunk boundaries do not matter: feeding the same bytes
// at the same time in one call or split anywhere gives the same result.
//
// A Framer is not safe for concurrent use, except [Framer.Stats], which may
// be called from any goroutine.
type Framer struct {
	name       string
	term       Terminator
	prefix     []byte
	suffix     []byte
	prefixSync bool // prefix holds a control byte: it starts a frame
	suffixEnds bool // suffix holds a control byte: it ends a frame
	maxLen     int  // maximum text length
	maxRaw     int  // maximum buffered candidate: maxLen + prefix + suffix
	gap        time.Duration
	class      [256]uint8
	onDiscard  func(Discard, int)

	buf       []byte    // the candidate so far; only its tail while overlong
	overlong  bool      // the candidate exceeded maxRaw and is being dropped
	dropped   int       // bytes of the overlong candidate so far
	pendingCR bool      // TermCRLF: a CR that may start the terminator
	resync    bool      // drop the first candidate: it may be the tail of a cut frame
	last      time.Time // arrival of the last byte fed
	now       time.Time // arrival of the chunk being fed
	frames    []Frame   // frames completed by the current Feed
	rawDrop   []byte    // the discarded candidate's bytes, during onDiscard only (nil if overlong)
	one       [1]byte   // scratch for single bytes

	c counters
}

// NewFramer returns a framer for the scanner called name (used to tag the
// frames). onDiscard, if not nil, is called for each discarded candidate with
// the reason and its length in bytes; it runs on the caller's goroutine, so it
// must be quick.
func NewFramer(name string, cfg Framing, onDiscard func(reason Discard, n int)) (*Framer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f := &Framer{
		name:      name,
		term:      cfg.Terminator,
		prefix:    []byte(cfg.Prefix),
		suffix:    []byte(cfg.Suffix),
		maxLen:    cfg.MaxLen,
		maxRaw:    cfg.MaxLen + len(cfg.Prefix) + len(cfg.Suffix),
		gap:       cfg.InterCharTimeout,
		onDiscard: onDiscard,
	}
	f.class['\r'] = clsLine
	f.class['\n'] = clsLine
	if len(f.prefix) > 0 && hasControl(cfg.Prefix) {
		f.prefixSync = true
		f.class[f.prefix[len(f.prefix)-1]] |= clsPrefixEnd
	}
	if len(f.suffix) > 0 && hasControl(cfg.Suffix) {
		f.suffixEnds = true
		f.class[f.suffix[len(f.suffix)-1]] |= clsSuffixEnd
	}
	return f, nil
}

// Feed adds bytes that arrived at now and returns the frames they complete,
// or nil. The returned slice is the caller's; p is not retained.
//
// Feed does not apply the inter-character timeout, [Framer.Flush] does: a
// late chunk may just be a reader that was slow to collect bytes already
// waiting in the kernel buffer, and only a read that returns nothing proves
// the line was idle.
func (f *Framer) Feed(p []byte, now time.Time) []Frame {
	if len(p) == 0 {
		return nil
	}
	f.now = now
	for len(p) > 0 {
		// Fast path: append the run of ordinary bytes in one go.
		i := 0
		for i < len(p) && f.class[p[i]] == 0 {
			i++
		}
		if i > 0 {
			f.addRun(p[:i])
		}
		if i == len(p) {
			break
		}
		f.special(p[i])
		p = p[i+1:]
	}
	f.last = now
	out := f.frames
	f.frames = nil
	return out
}

// Flush discards the partial frame, if any, when no byte has been fed for
// longer than the inter-character timeout. Readers call it whenever a read
// returns without data, that is when the line is known to be idle. It also
// ends a Resync: what came before an idle line is discarded, and the next
// byte starts a frame.
func (f *Framer) Flush(now time.Time) {
	if f.resync {
		f.resync = false
		f.Reset()
		return
	}
	if f.gap > 0 && f.partial() && now.Sub(f.last) > f.gap {
		f.Reset()
	}
}

// Resync makes the framer drop the first candidate frame, up to its
// terminator (counted as [DiscardIncomplete]), unless the line is seen
// idle first ([Framer.Flush]) or a control prefix starts a frame. A reader
// calls it when it opens the port: bytes that arrive before the line has
// been idle may be the tail of a scan whose beginning was lost, which
// would otherwise be read as one garbled frame.
func (f *Framer) Resync() {
	f.clear()
	f.resync = true
}

// Reset discards the partial frame, if any, counting it (as
// [DiscardIncomplete], or [DiscardOverlong] if it was already too long).
// Readers call it when the device is lost mid-frame.
func (f *Framer) Reset() {
	switch {
	case f.overlong:
		f.discard(DiscardOverlong, f.dropped, nil)
	case len(f.buf) > 0:
		f.discard(DiscardIncomplete, len(f.buf), f.buf)
	}
	f.clear()
}

// Stats returns a snapshot of the counters. It is safe to call concurrently
// with Feed.
func (f *Framer) Stats() Stats {
	return f.c.snapshot()
}

// partial reports whether a candidate frame has begun.
func (f *Framer) partial() bool {
	return f.overlong || len(f.buf) > 0 || f.pendingCR
}

// clear forgets the current candidate without counting it.
func (f *Framer) clear() {
	f.buf = f.buf[:0]
	f.overlong = false
	f.dropped = 0
	f.pendingCR = false
}

// special handles a byte whose class is not zero.
func (f *Framer) special(b byte) {
	if f.class[b]&clsLine != 0 {
		f.lineByte(b)
		return
	}
	f.addByte(b)
	if f.suffixEnds && b == f.suffix[len(f.suffix)-1] && bytes.HasSuffix(f.buf, f.suffix) {
		f.end()
		return
	}
	if f.prefixSync && b == f.prefix[len(f.prefix)-1] && bytes.HasSuffix(f.buf, f.prefix) {
		// A new frame starts here; what came before it never ended.
		if n := f.size() - len(f.prefix); n > 0 {
			// Overlong, size is the bytes dropped, not the buffer's:
			// no bytes to look at (slicing the buffer by it panicked
			// the reader, FuzzFramer).
			reason, raw := DiscardOverlong, []byte(nil)
			if !f.overlong {
				reason, raw = DiscardIncomplete, f.buf[:n]
			}
			f.discard(reason, n, raw)
		}
		f.clear()
		f.resync = false // a frame demonstrably starts here
		f.buf = append(f.buf, f.prefix...)
	}
}

// lineByte handles CR and LF according to the terminator.
func (f *Framer) lineByte(b byte) {
	switch f.term {
	case TermAny:
		f.end()
	case TermCR:
		if b == '\r' {
			f.end()
		} else {
			f.addByte(b)
		}
	case TermLF:
		if b == '\n' {
			f.end()
		} else {
			f.addByte(b)
		}
	case TermCRLF:
		if b == '\r' {
			f.flushCR() // an earlier CR not followed by LF is text
			f.pendingCR = true
			return
		}
		if f.pendingCR {
			f.end()
			return
		}
		f.addByte(b)
	}
}

// flushCR turns a pending CR (TermCRLF) into text: it was not followed by LF.
func (f *Framer) flushCR() {
	if f.pendingCR {
		f.pendingCR = false
		f.addByte('\r')
	}
}

// addByte appends one byte to the candidate. CR and LF are skipped at the
// start of a candidate (blank lines, or the LF of a CRLF after TermCR).
func (f *Framer) addByte(b byte) {
	f.flushCR()
	if (b == '\r' || b == '\n') && !f.overlong && len(f.buf) == 0 {
		return
	}
	f.one[0] = b
	f.appendRaw(f.one[:])
}

// addRun appends a run of ordinary bytes to the candidate.
func (f *Framer) addRun(run []byte) {
	f.flushCR()
	f.appendRaw(run)
}

// appendRaw appends run to the candidate, switching to overlong mode when it
// grows past maxRaw. While overlong, only the last MaxAffixLen bytes are kept,
// enough to recognise a control prefix or suffix.
func (f *Framer) appendRaw(run []byte) {
	if !f.overlong {
		if len(f.buf)+len(run) <= f.maxRaw {
			f.buf = append(f.buf, run...)
			return
		}
		f.overlong = true
		f.dropped = len(f.buf)
	}
	f.dropped += len(run)
	if len(run) >= MaxAffixLen {
		f.buf = append(f.buf[:0], run[len(run)-MaxAffixLen:]...)
		return
	}
	f.buf = append(f.buf, run...)
	if len(f.buf) > MaxAffixLen {
		f.buf = f.buf[:copy(f.buf, f.buf[len(f.buf)-MaxAffixLen:])]
	}
}

// size is the length of the current candidate in bytes.
func (f *Framer) size() int {
	if f.overlong {
		return f.dropped
	}
	return len(f.buf)
}

// end completes the current candidate: deliver it or count why not.
func (f *Framer) end() {
	defer f.clear()
	if f.resync {
		f.resync = false
		if n := f.size(); n > 0 {
			var raw []byte
			if !f.overlong {
				raw = f.buf
			}
			f.discard(DiscardIncomplete, n, raw)
		}
		return
	}
	if f.overlong {
		f.discard(DiscardOverlong, f.dropped, nil)
		return
	}
	raw := f.buf
	if len(raw) == 0 {
		return
	}
	text := raw
	if len(f.prefix) > 0 {
		if !bytes.HasPrefix(text, f.prefix) {
			f.discard(DiscardUnframed, len(raw), raw)
			return
		}
		text = text[len(f.prefix):]
	}
	if len(f.suffix) > 0 {
		if !bytes.HasSuffix(text, f.suffix) {
			f.discard(DiscardUnframed, len(raw), raw)
			return
		}
		text = text[:len(text)-len(f.suffix)]
	}
	switch {
	case len(text) == 0:
		// Only a prefix and a suffix: nothing was scanned.
		return
	case len(text) > f.maxLen:
		f.discard(DiscardOverlong, len(raw), raw)
		return
	case !printable(text):
		f.discard(DiscardNonPrintable, len(raw), raw)
		return
	}
	f.frames = append(f.frames, Frame{Scanner: f.name, Text: string(text), Time: f.now})
	f.c.frames.Add(1)
}

// discard counts a dropped candidate of n bytes and tells the hook; raw
// is its bytes when they were kept (not while overlong), which
// [Framer.discarded] returns during the hook.
func (f *Framer) discard(reason Discard, n int, raw []byte) {
	f.c.count(reason)
	if f.onDiscard != nil {
		f.rawDrop = raw
		f.onDiscard(reason, n)
		f.rawDrop = nil
	}
}

// discarded returns the bytes of the candidate being discarded, for the
// discard hook's use while it runs (nil for an overlong one): the hook may
// look at them, never keep or log them (a frame is normally a whole code).
func (f *Framer) discarded() []byte { return f.rawDrop }

// printable reports whether every byte of b is in 0x20..0x7E.
func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// hasControl reports whether s holds a byte outside 0x20..0x7E.
func hasControl(s string) bool {
	return !printable([]byte(s))
}

func containsCRLF(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return true
		}
	}
	return false
}
