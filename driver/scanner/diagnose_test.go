package scanner

import (
	"math/bits"
	"strings"
	"testing"
)

// withParity gives every byte of s the parity bit a scanner set to 7 data
// bits with even (or odd) parity sends, as an 8N1 port reads it: the top
// bit.
func withParity(s string, odd bool) string {
	b := []byte(s)
	for i, c := range b {
		if (bits.OnesCount8(c)%2 == 1) != odd {
			b[i] = c | 0x80
		}
	}
	return string(b)
}

// TestSerialDiscardHint: a scanner set otherwise than its [[scanner]]
// (parity, baud rate, STX/ETX or TAB around each scan) has every scan
// dropped; the "scanner frame discarded" line, on a real pty, says what the
// bytes show and the fix, never the scan's text. It said the reason and the
// length alone ("non_printable", "incomplete"). Following the hint's
// setting, the same bytes give the code.
func TestSerialDiscardHint(t *testing.T) {
	code := fakeCode(7)
	garbage := strings.Repeat("\x9c\x1f\xe3a\x06\xf0", 40) // the same code at another baud rate: no pattern
	for _, tc := range []struct {
		name, send string
		hint       string
		fixed      Framing // the setting the hint gives; zero: none (the scanner's own settings)
	}{
		{"7E1", withParity(code+"\r", false), `hint="the scanner sends 7 data bits with parity (7E1): set it to 8 data bits, no parity (8N1)`, Framing{}},
		{"7O1", withParity(code+"\r", true), `(7O1)`, Framing{}},
		{"baud", garbage + "\r", `the scanner's baud rate is likely not [[scanner]] baud (9600)`, Framing{}},
		{"STX/ETX and CR", "\x02" + code + "\x03\r", `set prefix = \"\\u0002\" and suffix = \"\\u0003\" under [[scanner]]`, Framing{Prefix: "\x02", Suffix: "\x03"}},
		{"STX/ETX alone", "\x02" + code + "\x03", `set prefix = \"\\u0002\" and suffix = \"\\u0003\"`, Framing{Prefix: "\x02", Suffix: "\x03"}},
		{"TAB alone", code + "\t", `set suffix = \"\\u0009\" under [[scanner]]`, Framing{Suffix: "\t"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPTY(t)
			h := startSerial(t, Config{Path: p.path})
			h.waitState(t, Connected)
			p.write(t, tc.send)
			h.waitStats(t, "a discard", func(s Stats) bool { return s.Discarded() == 1 })
			// The discard is counted before its line is logged: wait for
			// the line (under qemu the check read the log between the two).
			h.waitStats(t, "the discard's log line", func(Stats) bool { return strings.Contains(h.logs.String(), "scanner frame discarded") })
			logs := h.logs.String()
			if !strings.Contains(logs, "scanner frame discarded") || !strings.Contains(logs, tc.hint) {
				t.Errorf("log:\n%s\nwant the discard with %s", logs, tc.hint)
			}
			if strings.Contains(logs, code[5:40]) {
				t.Errorf("the log holds the scan's text:\n%s", logs)
			}
			if tc.fixed == (Framing{}) {
				return
			}
			p2 := newPTY(t)
			h2 := startSerial(t, Config{Path: p2.path, Framing: tc.fixed})
			h2.waitState(t, Connected)
			p2.write(t, tc.send)
			h2.expect(t, code)
		})
	}
}

// TestDiagnoseQuiet: frames that show nothing of the settings (line noise,
// a short reply to a configuration barcode, text with a stray control
// byte inside) get no hint, and an overlong one has no bytes to look at.
func TestDiagnoseQuiet(t *testing.T) {
	for _, raw := range []string{"", "\x06", "232BAD9\x06.", "FG1:ABC\x07DEF GHIJKLMNOPQRSTUVWXYZ"} {
		if h := diagnose([]byte(raw), Framing{}, 9600); h != "" {
			t.Errorf("diagnose(%q) = %q, want none", raw, h)
		}
	}
	// A configured prefix the scanner does not send, with other bytes it does.
	if h := diagnose([]byte("\x01"+fakeCode(1)+"\x04"), Framing{Prefix: "\x02", Suffix: "\x03"}, 9600); !strings.Contains(h, `do not match: set prefix = "\u0001" and suffix = "\u0004"`) {
		t.Errorf("mismatched affixes: %q", h)
	}
}

// TestTerminatorTabSaysSuffix: terminator = "tab" (a scanner ending each
// scan with TAB) is refused with the setting that reads it, suffix = "\t".
func TestTerminatorTabSaysSuffix(t *testing.T) {
	var term Terminator
	err := term.UnmarshalText([]byte("tab"))
	if err == nil || !strings.Contains(err.Error(), `suffix = "\t"`) {
		t.Errorf("terminator tab: %v; want the suffix that reads it", err)
	}
}
