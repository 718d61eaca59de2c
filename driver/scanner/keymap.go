package scanner

import (
	"encoding/binary"
	"strconv"

	evdev "github.com/holoplot/go-evdev"
)

// Sizes of a Linux struct input_event: a struct timeval (two longs) then
// type (u16), code (u16) and value (s32), little-endian on every platform
// farego runs on. The kernel uses the size of its own long for the time
// fields, whatever time_t userspace has (even with 64-bit time_t on armhf).
const (
	// EventSize64 is the size on 64-bit kernels (x86-64, arm64).
	EventSize64 = 24
	// EventSize32 is the size on 32-bit kernels and for 32-bit processes on
	// 64-bit kernels (armhf, armel).
	EventSize32 = 16
)

// nativeEventSize is the input_event size this process reads.
var nativeEventSize = map[int]int{64: EventSize64, 32: EventSize32}[strconv.IntSize]

// junk is the byte a key typing no printable ASCII character stands for
// (ASCII SUB): the framer discards any frame holding it as non-printable, so
// a frame with a function key, a Ctrl or Alt combination or lost events in
// it is never delivered.
const junk = 0x1a

// keyUS maps the key codes of a US (QWERTY, ANSI) layout to the character
// typed without and with Shift. Keypad keys type the same with or without
// Shift (keyboard-wedge scanners set to "emulate keypad" assume NumLock on).
var keyUS = map[uint16][2]byte{
	evdev.KEY_1: {'1', '!'}, evdev.KEY_2: {'2', '@'}, evdev.KEY_3: {'3', '#'}, evdev.KEY_4: {'4', '$'},
	evdev.KEY_5: {'5', '%'}, evdev.KEY_6: {'6', '^'}, evdev.KEY_7: {'7', '&'}, evdev.KEY_8: {'8', '*'},
	evdev.KEY_9: {'9', '('}, evdev.KEY_0: {'0', ')'}, evdev.KEY_MINUS: {'-', '_'}, evdev.KEY_EQUAL: {'=', '+'},

	evdev.KEY_Q: {'q', 'Q'}, evdev.KEY_W: {'w', 'W'}, evdev.KEY_E: {'e', 'E'}, evdev.KEY_R: {'r', 'R'},
	evdev.KEY_T: {'t', 'T'}, evdev.KEY_Y: {'y', 'Y'}, evdev.KEY_U: {'u', 'U'}, evdev.KEY_I: {'i', 'I'},
	evdev.KEY_O: {'o', 'O'}, evdev.KEY_P: {'p', 'P'}, evdev.KEY_LEFTBRACE: {'[', '{'}, evdev.KEY_RIGHTBRACE: {']', '}'},
	evdev.KEY_BACKSLASH: {'\\', '|'},

	evdev.KEY_A: {'a', 'A'}, evdev.KEY_S: {'s', 'S'}, evdev.KEY_D: {'d', 'D'}, evdev.KEY_F: {'f', 'F'},
	evdev.KEY_G: {'g', 'G'}, evdev.KEY_H: {'h', 'H'}, evdev.KEY_J: {'j', 'J'}, evdev.KEY_K: {'k', 'K'},
	evdev.KEY_L: {'l', 'L'}, evdev.KEY_SEMICOLON: {';', ':'}, evdev.KEY_APOSTROPHE: {'\'', '"'},
	evdev.KEY_GRAVE: {'`', '~'},

	evdev.KEY_Z: {'z', 'Z'}, evdev.KEY_X: {'x', 'X'}, evdev.KEY_C: {'c', 'C'}, evdev.KEY_V: {'v', 'V'},
	evdev.KEY_B: {'b', 'B'}, evdev.KEY_N: {'n', 'N'}, evdev.KEY_M: {'m', 'M'}, evdev.KEY_COMMA: {',', '<'},
	evdev.KEY_DOT: {'.', '>'}, evdev.KEY_SLASH: {'/', '?'},

	evdev.KEY_SPACE: {' ', ' '},

	evdev.KEY_KP0: {'0', '0'}, evdev.KEY_KP1: {'1', '1'}, evdev.KEY_KP2: {'2', '2'}, evdev.KEY_KP3: {'3', '3'},
	evdev.KEY_KP4: {'4', '4'}, evdev.KEY_KP5: {'5', '5'}, evdev.KEY_KP6: {'6', '6'}, evdev.KEY_KP7: {'7', '7'},
	evdev.KEY_KP8: {'8', '8'}, evdev.KEY_KP9: {'9', '9'}, evdev.KEY_KPDOT: {'.', '.'}, evdev.KEY_KPSLASH: {'/', '/'},
	evdev.KEY_KPASTERISK: {'*', '*'}, evdev.KEY_KPMINUS: {'-', '-'}, evdev.KEY_KPPLUS: {'+', '+'},
	evdev.KEY_KPEQUAL: {'=', '='}, evdev.KEY_KPCOMMA: {',', ','},

	// Enter ends a frame: the framer takes CR as a terminator.
	evdev.KEY_ENTER: {'\r', '\r'}, evdev.KEY_KPENTER: {'\r', '\r'},
}

// Modifier bits held in keyState.mods.
const (
	modLShift = 1 << iota
	modRShift
	modCtrl  // either Ctrl
	modAlt   // either Alt (AltGr included)
	modMeta  // either Meta (Windows, Super)
	modShift = modLShift | modRShift
	modOther = modCtrl | modAlt | modMeta
)

// modifierBits maps modifier keys to their bit; Ctrl, Alt and Meta count left
// and right together (a scanner never holds both).
var modifierBits = map[uint16]uint8{
	evdev.KEY_LEFTSHIFT: modLShift, evdev.KEY_RIGHTSHIFT: modRShift,
	evdev.KEY_LEFTCTRL: modCtrl, evdev.KEY_RIGHTCTRL: modCtrl,
	evdev.KEY_LEFTALT: modAlt, evdev.KEY_RIGHTALT: modAlt,
	evdev.KEY_LEFTMETA: modMeta, evdev.KEY_RIGHTMETA: modMeta,
}

// ignoredKeys type nothing and change nothing (scanners press NumLock to make
// sure the keypad types digits).
var ignoredKeys = map[uint16]bool{evdev.KEY_NUMLOCK: true, evdev.KEY_SCROLLLOCK: true}

// Key event values.
const (
	keyRelease = 0
	keyPress   = 1
	keyRepeat  = 2
)

// eventDecoder turns a stream of raw input_event records from a keyboard
// into the bytes typed on a US layout: printable ASCII, CR for Enter, and
// [junk] for anything else. It keeps the modifier and Caps Lock state
// between calls, and the bytes of an event cut at the end of one call for
// the next. The zero value is not ready: set size.
//
// Events other than key presses and releases are skipped (EV_MSC scan codes,
// EV_SYN reports, LEDs), except SYN_DROPPED: the kernel's buffer overflowed
// and events were lost, so it types junk (the frame under way is incomplete)
// and forgets the modifiers held. Autorepeats are ignored: a scanner that
// stalls long enough for the kernel to repeat a key did not mean to type it
// twice.
type eventDecoder struct {
	size    int // EventSize64 or EventSize32
	partial []byte
	mods    uint8
	caps    bool
}

// decode appends to dst the bytes typed by the events in p and returns it.
// It appends at most one byte per whole event (counting one completed from
// an earlier call's leftover).
func (d *eventDecoder) decode(dst, p []byte) []byte {
	if len(d.partial) > 0 {
		need := d.size - len(d.partial)
		if len(p) < need {
			d.partial = append(d.partial, p...)
			return dst
		}
		d.partial = append(d.partial, p[:need]...)
		dst = d.event(dst, d.partial)
		d.partial = d.partial[:0]
		p = p[need:]
	}
	for len(p) >= d.size {
		dst = d.event(dst, p[:d.size])
		p = p[d.size:]
	}
	if len(p) > 0 {
		d.partial = append(d.partial, p...)
	}
	return dst
}

// event decodes one raw event of d.size bytes.
func (d *eventDecoder) event(dst, raw []byte) []byte {
	t := d.size - 8 // the timeval comes first
	typ := binary.LittleEndian.Uint16(raw[t:])
	code := binary.LittleEndian.Uint16(raw[t+2:])
	value := int32(binary.LittleEndian.Uint32(raw[t+4:]))
	switch typ {
	case evdev.EV_SYN:
		if code == evdev.SYN_DROPPED {
			d.mods = 0
			return append(dst, junk)
		}
		return dst
	case evdev.EV_KEY:
		return d.key(dst, code, value)
	}
	return dst
}

// key handles one EV_KEY event.
func (d *eventDecoder) key(dst []byte, code uint16, value int32) []byte {
	if bit, ok := modifierBits[code]; ok {
		switch value {
		case keyPress:
			d.mods |= bit
		case keyRelease:
			d.mods &^= bit
		}
		return dst
	}
	if value != keyPress {
		return dst // releases and autorepeats
	}
	if code == evdev.KEY_CAPSLOCK {
		d.caps = !d.caps
		return dst
	}
	if ignoredKeys[code] {
		return dst
	}
	chars, ok := keyUS[code]
	if !ok || d.mods&modOther != 0 {
		return append(dst, junk)
	}
	shift := d.mods&modShift != 0
	c := chars[0]
	if c >= 'a' && c <= 'z' && d.caps {
		shift = !shift
	}
	if shift {
		c = chars[1]
	}
	return append(dst, c)
}
