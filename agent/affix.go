package agent

import (
	"fmt"
	"strings"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/driver/scanner"
)

// affixHint says, for a frame refused as malformed that is a payment code
// with a few characters around it, what the scanner adds and the
// [[scanner]] setting that strips it, or "" for any other frame. A scanner
// set to send an AIM symbology identifier ("]Q1" before each QR code) had
// every rider's code refused "malformed", "Code not readable", and the log
// said no more. The hint holds only the added characters (at most
// scanner.MaxAffixLen on each side), never the code.
func affixHint(text string) string {
	i := strings.Index(text, paycode.TextPrefix)
	if i < 0 || i > scanner.MaxAffixLen {
		return ""
	}
	after := len(text) - i - paycode.TextSize
	if after < 0 || after > scanner.MaxAffixLen || (i == 0 && after == 0) {
		return ""
	}
	var set []string
	if i > 0 {
		set = append(set, fmt.Sprintf("prefix = %q", text[:i]))
	}
	if after > 0 {
		set = append(set, fmt.Sprintf("suffix = %q", text[len(text)-after:]))
	}
	return "the scanner adds characters around each code (an AIM symbology identifier such as ]Q1?): set " +
		strings.Join(set, " and ") + " under [[scanner]], or turn them off on the scanner (its programming barcodes)"
}
