package record

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CheckText checks a free-text field of a message (and CheckAssignment
// the names it is made of): at most max bytes of valid UTF-8 without control
// characters (C0, DEL or C1). Empty text passes.
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

// Printable makes s text that CheckText(_, _, max) passes: invalid UTF-8
// becomes "?", each control character a space, and the result is cut to
// at most max bytes on a character boundary. For text built from error
// messages, which may hold anything.
func Printable(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
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
