package scanner

// The evdev captures in testdata/scanner/evdev are made by the generator in
// this file and checked in. Regenerate them after changing a scenario with
//
//	go test ./driver/scanner -run TestKeyboardCaptures -update-captures
//
// Each scenario is written twice, as the raw input_event stream a 64-bit
// kernel gives (NAME.ev64, 24-byte events) and a 32-bit one (NAME.ev32,
// 16-byte events): what `cat /dev/input/eventN > NAME.ev64` records from a
// USB keyboard-wedge scanner, with an EV_MSC/MSC_SCAN event before each key
// event and a SYN_REPORT after, as the kernel's HID keyboard driver sends.
// NAME.txt describes the scenario for a reader.
//
// The generator types text with its own table of the US layout, written
// row by row as the keycaps read, not with the reader's keymap, so a wrong
// entry in either shows up as a test failure.

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	evdev "github.com/holoplot/go-evdev"
)

var updateCaptures = flag.Bool("update-captures", false, "rewrite testdata/scanner/evdev from the generator")

const captureDir = "../../testdata/scanner/evdev"

// genRows is the generator's US layout: key codes in keycap order along
// each row, with what each types unshifted and shifted.
var genRows = []struct {
	codes          []uint16
	plain, shifted string
}{
	{codes: []uint16{evdev.KEY_GRAVE, evdev.KEY_1, evdev.KEY_2, evdev.KEY_3, evdev.KEY_4, evdev.KEY_5, evdev.KEY_6,
		evdev.KEY_7, evdev.KEY_8, evdev.KEY_9, evdev.KEY_0, evdev.KEY_MINUS, evdev.KEY_EQUAL},
		plain: "`1234567890-=", shifted: "~!@#$%^&*()_+"},
	{codes: []uint16{evdev.KEY_Q, evdev.KEY_W, evdev.KEY_E, evdev.KEY_R, evdev.KEY_T, evdev.KEY_Y, evdev.KEY_U,
		evdev.KEY_I, evdev.KEY_O, evdev.KEY_P, evdev.KEY_LEFTBRACE, evdev.KEY_RIGHTBRACE, evdev.KEY_BACKSLASH},
		plain: "qwertyuiop[]\\", shifted: "QWERTYUIOP{}|"},
	{codes: []uint16{evdev.KEY_A, evdev.KEY_S, evdev.KEY_D, evdev.KEY_F, evdev.KEY_G, evdev.KEY_H, evdev.KEY_J,
		evdev.KEY_K, evdev.KEY_L, evdev.KEY_SEMICOLON, evdev.KEY_APOSTROPHE},
		plain: "asdfghjkl;'", shifted: "ASDFGHJKL:\""},
	{codes: []uint16{evdev.KEY_Z, evdev.KEY_X, evdev.KEY_C, evdev.KEY_V, evdev.KEY_B, evdev.KEY_N, evdev.KEY_M,
		evdev.KEY_COMMA, evdev.KEY_DOT, evdev.KEY_SLASH},
		plain: "zxcvbnm,./", shifted: "ZXCVBNM<>?"},
	{codes: []uint16{evdev.KEY_SPACE}, plain: " ", shifted: " "},
}

// genKeypad is the numeric keypad, typed with NumLock on.
var genKeypad = map[byte]uint16{
	'0': evdev.KEY_KP0, '1': evdev.KEY_KP1, '2': evdev.KEY_KP2, '3': evdev.KEY_KP3, '4': evdev.KEY_KP4,
	'5': evdev.KEY_KP5, '6': evdev.KEY_KP6, '7': evdev.KEY_KP7, '8': evdev.KEY_KP8, '9': evdev.KEY_KP9,
	'.': evdev.KEY_KPDOT, '/': evdev.KEY_KPSLASH, '*': evdev.KEY_KPASTERISK, '-': evdev.KEY_KPMINUS, '+': evdev.KEY_KPPLUS,
}

// rawEvent is one input_event without its time.
type rawEvent struct {
	typ, code uint16
	value     int32
}

// typist produces the events of a keyboard-wedge scanner typing.
type typist struct {
	events []rawEvent
	caps   bool   // Caps Lock is on: the scanner compensates with Shift
	shift  uint16 // the Shift key it uses
	keypad bool   // digits and + - * / . from the keypad
}

func newTypist() *typist { return &typist{shift: evdev.KEY_LEFTSHIFT} }

// key presses and releases code, with the scan code and report events a HID
// keyboard sends around it.
func (t *typist) keyEvent(code uint16, value int32) {
	t.events = append(t.events,
		rawEvent{evdev.EV_MSC, evdev.MSC_SCAN, 0x70000 + int32(code)},
		rawEvent{evdev.EV_KEY, code, value},
		rawEvent{evdev.EV_SYN, evdev.SYN_REPORT, 0})
}

func (t *typist) tap(code uint16) {
	t.keyEvent(code, keyPress)
	t.keyEvent(code, keyRelease)
}

// shifted taps code with Shift held.
func (t *typist) shifted(code uint16) {
	t.keyEvent(t.shift, keyPress)
	t.tap(code)
	t.keyEvent(t.shift, keyRelease)
}

// typeText types s (printable ASCII only) and no terminator.
func (t *typist) typeText(tb testing.TB, s string) {
	tb.Helper()
	for i := 0; i < len(s); i++ {
		c := s[i]
		if code, ok := genKeypad[c]; ok && t.keypad {
			t.tap(code)
			continue
		}
		found := false
		for _, row := range genRows {
			if j := strings.IndexByte(row.plain, c); j >= 0 {
				found = true
				letter := c >= 'a' && c <= 'z'
				if letter && t.caps {
					t.shifted(row.codes[j])
				} else {
					t.tap(row.codes[j])
				}
				break
			}
			if j := strings.IndexByte(row.shifted, c); j >= 0 {
				found = true
				letter := c >= 'A' && c <= 'Z'
				if letter && t.caps {
					t.tap(row.codes[j])
				} else {
					t.shifted(row.codes[j])
				}
				break
			}
		}
		if !found {
			tb.Fatalf("generator: %q cannot be typed", c)
		}
	}
}

func (t *typist) enter()   { t.tap(evdev.KEY_ENTER) }
func (t *typist) kpEnter() { t.tap(evdev.KEY_KPENTER) }

// capsLock taps Caps Lock (with the LED event the kernel echoes).
func (t *typist) capsLock() {
	t.tap(evdev.KEY_CAPSLOCK)
	t.caps = !t.caps
	v := int32(0)
	if t.caps {
		v = 1
	}
	t.events = append(t.events, rawEvent{evdev.EV_LED, evdev.LED_CAPSL, v}, rawEvent{evdev.EV_SYN, evdev.SYN_REPORT, 0})
}

// encode writes events as raw input_event records of size bytes, 2 ms
// apart from a fixed start, starting a new report's time after each
// SYN_REPORT.
func encode(events []rawEvent, size int) []byte {
	start := time.Date(2026, 1, 1, 8, 0, 5, 0, time.UTC)
	var out []byte
	tick := 0
	for _, e := range events {
		ts := start.Add(time.Duration(tick) * 2 * time.Millisecond)
		sec, usec := ts.Unix(), int64(ts.Nanosecond()/1000)
		if size == EventSize64 {
			out = binary.LittleEndian.AppendUint64(out, uint64(sec))
			out = binary.LittleEndian.AppendUint64(out, uint64(usec))
		} else {
			out = binary.LittleEndian.AppendUint32(out, uint32(sec))
			out = binary.LittleEndian.AppendUint32(out, uint32(usec))
		}
		out = binary.LittleEndian.AppendUint16(out, e.typ)
		out = binary.LittleEndian.AppendUint16(out, e.code)
		out = binary.LittleEndian.AppendUint32(out, uint32(e.value))
		if e.typ == evdev.EV_SYN {
			tick++
		}
	}
	return out
}

// captureScenario is one recorded stream and what reading it must give.
type captureScenario struct {
	name, about string
	gen         func(tb testing.TB, t *typist)
	frames      []string // the frames delivered, in order
	nonPrint    uint64   // frames discarded as non-printable
}

// vectorText is the test vector's payment code (testdata/paycode).
func vectorText(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile("../../testdata/paycode/vector.json")
	if err != nil {
		tb.Fatal(err)
	}
	var v struct{ Text string }
	if err := json.Unmarshal(b, &v); err != nil || v.Text == "" {
		tb.Fatalf("vector.json: %v", err)
	}
	return v.Text
}

var asciiPrintable = func() string {
	var b strings.Builder
	for c := byte(0x20); c <= 0x7e; c++ {
		b.WriteByte(c)
	}
	return b.String()
}()

func captureScenarios(tb testing.TB) []captureScenario {
	code := vectorText(tb)
	return []captureScenario{
		{
			name:  "paycode",
			about: "A rider's payment code (testdata/paycode/vector.json, 295 characters of FG1: + Base45, spaces included), then Enter.",
			gen: func(tb testing.TB, t *typist) {
				t.typeText(tb, code)
				t.enter()
			},
			frames: []string{code},
		},
		{
			name:  "ascii",
			about: "Every printable ASCII character 0x20..0x7E with the left Shift and Enter, then again with the right Shift and the keypad's Enter.",
			gen: func(tb testing.TB, t *typist) {
				t.typeText(tb, asciiPrintable)
				t.enter()
				t.shift = evdev.KEY_RIGHTSHIFT
				t.typeText(tb, asciiPrintable)
				t.kpEnter()
			},
			frames: []string{asciiPrintable, asciiPrintable},
		},
		{
			name: "capslock",
			about: "Caps Lock switched on, a scanner compensating (Shift for lower case letters), then Caps Lock off " +
				"and the same text again.",
			gen: func(tb testing.TB, t *typist) {
				t.capsLock()
				t.typeText(tb, "FG1:AbC xyz-09")
				t.enter()
				t.capsLock()
				t.typeText(tb, "FG1:AbC xyz-09")
				t.enter()
			},
			frames: []string{"FG1:AbC xyz-09", "FG1:AbC xyz-09"},
		},
		{
			name:  "keypad",
			about: "NumLock tapped, digits and + - * / . from the numeric keypad, the keypad's Enter.",
			gen: func(tb testing.TB, t *typist) {
				t.tap(evdev.KEY_NUMLOCK)
				t.keypad = true
				t.typeText(tb, "0123456789+-*/.")
				t.kpEnter()
			},
			frames: []string{"0123456789+-*/."},
		},
		{
			name: "faults",
			about: "A frame with F5 in it, one with Ctrl+J, one cut by SYN_DROPPED (the kernel's buffer overflowed), " +
				"one with autorepeat events (ignored), then a clean frame. Only the last two are delivered.",
			gen: func(tb testing.TB, t *typist) {
				t.typeText(tb, "AB")
				t.tap(evdev.KEY_F5)
				t.typeText(tb, "CD")
				t.enter()
				t.typeText(tb, "AB")
				t.keyEvent(evdev.KEY_LEFTCTRL, keyPress)
				t.tap(evdev.KEY_J)
				t.keyEvent(evdev.KEY_LEFTCTRL, keyRelease)
				t.enter()
				t.typeText(tb, "AB")
				t.events = append(t.events, rawEvent{evdev.EV_SYN, evdev.SYN_DROPPED, 0})
				t.typeText(tb, "CD")
				t.enter()
				t.keyEvent(evdev.KEY_X, keyPress)
				t.keyEvent(evdev.KEY_X, keyRepeat)
				t.keyEvent(evdev.KEY_X, keyRepeat)
				t.keyEvent(evdev.KEY_X, keyRelease)
				t.typeText(tb, "y")
				t.enter()
				t.typeText(tb, "OK 1")
				t.enter()
			},
			frames:   []string{"xy", "OK 1"},
			nonPrint: 3,
		},
	}
}

func captureFile(name string, size int) string {
	bits := map[int]int{EventSize64: 64, EventSize32: 32}[size]
	return filepath.Join(captureDir, fmt.Sprintf("%s.ev%d", name, bits))
}

// TestKeyboardCaptures reads every recorded stream, in both event sizes,
// through the decoder and the framer.
func TestKeyboardCaptures(t *testing.T) {
	for _, sc := range captureScenarios(t) {
		if *updateCaptures {
			ty := newTypist()
			sc.gen(t, ty)
			if err := os.MkdirAll(captureDir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, size := range []int{EventSize64, EventSize32} {
				if err := os.WriteFile(captureFile(sc.name, size), encode(ty.events, size), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			about := sc.about + "\n\nFrames: " + fmt.Sprintf("%q", sc.frames) + "\n"
			if err := os.WriteFile(filepath.Join(captureDir, sc.name+".txt"), []byte(about), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, size := range []int{EventSize64, EventSize32} {
			t.Run(filepath.Base(captureFile(sc.name, size)), func(t *testing.T) {
				raw, err := os.ReadFile(captureFile(sc.name, size))
				if err != nil {
					t.Fatalf("%v (regenerate with -update-captures)", err)
				}
				if len(raw)%size != 0 {
					t.Fatalf("%d bytes: not whole %d-byte events", len(raw), size)
				}
				fr, err := NewFramer("kbd", Framing{}, nil)
				if err != nil {
					t.Fatal(err)
				}
				dec := eventDecoder{size: size}
				// Feed it in odd-sized chunks: events split across reads.
				var got []string
				now := time.Now()
				for p := raw; len(p) > 0; {
					n := min(len(p), 37)
					for _, f := range fr.Feed(dec.decode(nil, p[:n]), now) {
						got = append(got, f.Text)
					}
					p = p[n:]
				}
				if fmt.Sprint(got) != fmt.Sprint(sc.frames) {
					t.Errorf("frames:\n got %q\nwant %q", got, sc.frames)
				}
				if st := fr.Stats(); st.NonPrintable != sc.nonPrint || st.Discarded() != sc.nonPrint {
					t.Errorf("discards: %+v, want %d non-printable and nothing else", st, sc.nonPrint)
				}
			})
		}
	}
}
