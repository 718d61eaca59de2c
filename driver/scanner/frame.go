package scanner

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// Frame is one complete scan: the text a scanner printed, without its
// terminator and without the configured prefix and suffix.
type Frame struct {
	// Scanner is the name of the scanner that read it (Config.Name).
	Scanner string
	// Text is the scanned text: 1 to MaxLen bytes, each 0x20..0x7E. Spaces
	// are kept exactly as received (Base45 uses them).
	Text string
	// Time is when the frame's last byte arrived.
	Time time.Time
}

// Terminator selects the byte sequence that ends a frame.
type Terminator int

const (
	// TermAny ends a frame at CR, at LF or at CRLF (the default, and the
	// right choice unless you want misconfigured scanners to be noticed).
	TermAny Terminator = iota
	// TermCR ends a frame at CR only; a LF inside a frame makes it
	// non-printable.
	TermCR
	// TermLF ends a frame at LF only; a CR inside a frame (a scanner sending
	// CRLF) makes it non-printable.
	TermLF
	// TermCRLF ends a frame at CR immediately followed by LF only; a lone CR
	// or LF inside a frame makes it non-printable.
	TermCRLF
)

var terminatorNames = [...]string{TermAny: "any", TermCR: "cr", TermLF: "lf", TermCRLF: "crlf"}

// String returns "any", "cr", "lf" or "crlf".
func (t Terminator) String() string {
	if t >= 0 && int(t) < len(terminatorNames) {
		return terminatorNames[t]
	}
	return fmt.Sprintf("Terminator(%d)", int(t))
}

// MarshalText implements [encoding.TextMarshaler] for configuration files.
func (t Terminator) MarshalText() ([]byte, error) {
	if t < 0 || int(t) >= len(terminatorNames) {
		return nil, fmt.Errorf("%w: unknown terminator %d", ErrInvalidConfig, int(t))
	}
	return []byte(terminatorNames[t]), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler]: "any" (or empty),
// "cr", "lf" or "crlf", in any case.
func (t *Terminator) UnmarshalText(b []byte) error {
	s := strings.ToLower(string(b))
	if s == "" {
		*t = TermAny
		return nil
	}
	for i, name := range terminatorNames {
		if s == name {
			*t = Terminator(i)
			return nil
		}
	}
	return fmt.Errorf("%w: unknown terminator %q (want any, cr, lf or crlf; a scanner ending each scan with another control byte, such as TAB or ETX, is read with suffix = \"\\t\" or \"\\u0003\" instead)", ErrInvalidConfig, b)
}

// Discard says why a candidate frame was dropped.
type Discard uint8

const (
	// DiscardOverlong: the text was longer than MaxLen.
	DiscardOverlong Discard = iota + 1
	// DiscardNonPrintable: the text held a byte outside 0x20..0x7E.
	DiscardNonPrintable
	// DiscardUnframed: a configured prefix or suffix was missing.
	DiscardUnframed
	// DiscardIncomplete: no terminator came within the inter-character
	// timeout, the next frame's prefix cut it short, or the device was lost
	// mid-frame.
	DiscardIncomplete
)

// String returns the reason as used in logs: "overlong", "non_printable",
// "unframed" or "incomplete".
func (d Discard) String() string {
	switch d {
	case DiscardOverlong:
		return "overlong"
	case DiscardNonPrintable:
		return "non_printable"
	case DiscardUnframed:
		return "unframed"
	case DiscardIncomplete:
		return "incomplete"
	}
	return fmt.Sprintf("Discard(%d)", uint8(d))
}

// Stats is a snapshot of a reader's counters since it was made.
type Stats struct {
	// Frames is the number of frames delivered.
	Frames uint64
	// Overlong, NonPrintable, Unframed and Incomplete count discarded
	// candidate frames by reason (see [Discard]).
	Overlong     uint64
	NonPrintable uint64
	Unframed     uint64
	Incomplete   uint64
	// Reconnects is the number of times a lost serial device came back.
	Reconnects uint64
}

// Discarded is the total number of discarded candidate frames.
func (s Stats) Discarded() uint64 {
	return s.Overlong + s.NonPrintable + s.Unframed + s.Incomplete
}

// counters are the live counters behind [Stats]. They are written by one
// goroutine and may be read by any (atomic.Uint64 is 64-bit aligned on 32-bit
// ARM too).
type counters struct {
	frames       atomic.Uint64
	overlong     atomic.Uint64
	nonPrintable atomic.Uint64
	unframed     atomic.Uint64
	incomplete   atomic.Uint64
	reconnects   atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Frames:       c.frames.Load(),
		Overlong:     c.overlong.Load(),
		NonPrintable: c.nonPrintable.Load(),
		Unframed:     c.unframed.Load(),
		Incomplete:   c.incomplete.Load(),
		Reconnects:   c.reconnects.Load(),
	}
}

func (c *counters) count(d Discard) {
	switch d {
	case DiscardOverlong:
		c.overlong.Add(1)
	case DiscardNonPrintable:
		c.nonPrintable.Add(1)
	case DiscardUnframed:
		c.unframed.Add(1)
	case DiscardIncomplete:
		c.incomplete.Add(1)
	}
}
