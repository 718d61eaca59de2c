package record

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CheckText checks a free-text field of a message (and CheckAssignment
// the names it is made of): at most max bytes of valid UTF-8 without control
// characters (C0, DEL or C1) or hidden ones (Hidden). Empty text passes.
func CheckText(field, s string, max int) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("%s is %d bytes, limit %d", field, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", field)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Errorf("%s has control characters", field)
	case strings.IndexFunc(s, Hidden) >= 0:
		return fmt.Errorf("%s has invisible formatting characters (bidirectional controls or zero-width spaces)", field)
	}
	return nil
}

// Hidden reports whether r changes how the text around it is shown without
// being seen itself, so that a name or a reference shown to the operator
// could read as another ("Trojan Source"): the bidirectional controls
// (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069) and the
// invisible separators U+200B, U+2060 and U+FEFF. The joiners U+200C and
// U+200D are not: Persian names and emoji need them.
func Hidden(r rune) bool {
	switch {
	case r == 0x061c, r == 0x200b, r == 0x200e, r == 0x200f, r == 0x2060, r == 0xfeff:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// Printable makes s text that CheckText(_, _, max) passes: invalid UTF-8
// becomes "?", each control character a space, hidden ones (Hidden) are
// dropped, and the result is cut to at most max bytes on a character
// boundary. For text built from error messages, which may hold anything.
func Printable(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		if Hidden(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
