package scanner

import (
	"fmt"
	"math/bits"
	"strings"
)

// minDiagnosed is the fewest bytes a discarded frame must have for its
// bytes to say what the scanner is set to (a scan is hundreds of bytes; a
// few bytes of line noise say nothing).
const minDiagnosed = 16

// diagnose says what a discarded frame's bytes show about the scanner's
// settings, and how to fix them, or "" when they show nothing: a scanner
// sending 7 data bits with parity, one at another baud rate, or one adding
// control bytes (STX/ETX, a TAB) that the configuration does not strip.
// Every such scan is dropped with a reason alone ("non_printable",
// "incomplete"), which told the technician nothing of the fix. The hint
// never holds the frame's text: only the control bytes around it.
func diagnose(raw []byte, f Framing, baud int) string {
	if len(raw) < minDiagnosed {
		return ""
	}
	high, even, bad := 0, 0, 0
	text7 := true
	for _, b := range raw {
		if b >= 0x80 {
			high++
		}
		if !printableByte(b) && b != '\r' && b != '\n' {
			bad++
		}
		if bits.OnesCount8(b)%2 == 0 {
			even++
		}
		if c := b & 0x7f; (c < 0x20 || c > 0x7e) && c != '\r' && c != '\n' {
			text7 = false
		}
	}
	if high > 0 && text7 && (even == len(raw) || even == 0) {
		// Every byte is text once its top bit is cleared, and that bit
		// makes every byte's parity the same: a parity bit.
		mode := "7E1"
		if even == 0 {
			mode = "7O1"
		}
		return fmt.Sprintf("the scanner sends 7 data bits with parity (%s): set it to 8 data bits, no parity (8N1), with its programming barcodes; the validator reads 8N1", mode)
	}
	// Control bytes only around printable text: a prefix or suffix the
	// scanner adds that the configuration does not name.
	lead, tail := 0, len(raw)
	for lead < len(raw) && lead < MaxAffixLen && !printableByte(raw[lead]) && raw[lead] < 0x80 {
		lead++
	}
	for tail > lead && len(raw)-tail < MaxAffixLen && !printableByte(raw[tail-1]) && raw[tail-1] < 0x80 {
		tail--
	}
	if (lead > 0 || tail < len(raw)) && tail > lead && printable(raw[lead:tail]) {
		var set []string
		if lead > 0 {
			set = append(set, "prefix = "+tomlString(raw[:lead]))
		}
		if tail < len(raw) {
			set = append(set, "suffix = "+tomlString(raw[tail:]))
		}
		if (lead > 0 && f.Prefix != "") || (tail < len(raw) && f.Suffix != "") {
			return fmt.Sprintf("the scanner adds control bytes around each scan (%s) that [[scanner]] prefix/suffix (%s, %s) do not match: set %s under [[scanner]], or turn them off on the scanner",
				strings.Join(set, ", "), tomlString([]byte(f.Prefix)), tomlString([]byte(f.Suffix)), strings.Join(set, " and "))
		}
		return fmt.Sprintf("the scanner adds control bytes around each scan: set %s under [[scanner]], or turn them off on the scanner (its programming barcodes)", strings.Join(set, " and "))
	}
	// Many bytes that are not text, with no pattern: a line read at
	// another speed than the scanner sends.
	if bad*8 >= len(raw) {
		if baud == 0 {
			return ""
		}
		return fmt.Sprintf("the bytes are not text: the scanner's baud rate is likely not [[scanner]] baud (%d): set baud to the scanner's (its manual or programming barcodes; a USB-CDC scanner ignores it)", baud)
	}
	return ""
}

// printableByte reports whether b is in 0x20..0x7E.
func printableByte(b byte) bool { return b >= 0x20 && b <= 0x7e }

// tomlString writes b as a TOML basic string with every byte outside
// 0x20..0x7E, and the quote and backslash, as \uXXXX: what to paste into
// validator.toml.
func tomlString(b []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, c := range b {
		if printableByte(c) && c != '"' && c != '\\' {
			sb.WriteByte(c)
			continue
		}
		fmt.Fprintf(&sb, "\\u%04X", c)
	}
	sb.WriteByte('"')
	return sb.String()
}
