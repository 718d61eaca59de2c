package record

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CheckText checks a free-text field of a message (and CheckAssignment
// the names it is made of): at most max bytes of valid UTF-8 without control
// characters (C0, DEL or C1). Empty text passes. It does not refuse Hidden
// characters: validators of the release before wrote them into
// assignments, fare tables and statuses, which must go on loading; the
// ledger refuses them in the names and ids it is given new.
func CheckText(field, s string, max int) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("%s is %d bytes, limit %d", field, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", field)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Errorf("%s has control characters", field)
	}
	return nil
}

// Hidden reports whether r changes how the text around it is shown without
// being seen itself, so that a name or a reference shown to the operator
// could read as another ("Trojan Source"): the explicit bidirectional
// embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069)
// and the invisible separators U+200B, U+2060 and U+FEFF. Not the implicit
// marks (U+200E, U+200F, U+061C), which Hebrew and Arabic text carries,
// nor the joiners U+200C and U+200D, which Persian names and emoji need.
func Hidden(r rune) bool {
	switch {
	case r == 0x200b, r == 0x2060, r == 0xfeff:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// Shown is s as it is shown to a person (a web page, a terminal): each
// Hidden or control character written as its code point ("<U+202E>24"),
// invalid UTF-8 as "?". A validator's records keep the rule they have always
// had (no C0 control characters or DEL), so a stolen one can name a route
// "\u202e24", which a browser shows as "42", or put C1 controls in it
// (U+009B is a terminal's CSI): shown this way, two routes never look
// alike and nothing reaches a terminal as a command.
func Shown(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if strings.IndexFunc(s, func(r rune) bool { return Hidden(r) || unicode.IsControl(r) }) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if Hidden(r) || unicode.IsControl(r) {
			fmt.Fprintf(&b, "<U+%04X>", r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Printable makes s text that CheckText(_, _, max) passes, without Hidden
// characters: invalid UTF-8 becomes "?", each control character a space,
// hidden ones are dropped, and the result is cut to at most max bytes on a
// character boundary. For text built from error messages, which may hold
// anything.
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
