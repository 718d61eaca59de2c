package scanner

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	evdev "github.com/holoplot/go-evdev"
	"github.com/tarm/serial"
	"golang.org/x/sys/unix"

	"github.com/farego/farego/driver/internal/hwtest"
)

// startKeyboard runs a keyboard reader on path until the test ends, like
// startSerial. open, if not nil, replaces the device open (the port is then
// whatever it returns, read with the native event size).
func startKeyboard(tb testing.TB, path string, open func() (*os.File, error)) *harness {
	tb.Helper()
	h := &harness{frames: make(chan Frame, 100), states: make(chan State, 100), logs: &logBuffer{}}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	k, err := NewKeyboard(Config{
		Name: "front", Path: path, OnState: func(s State) { h.states <- s },
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	}, log)
	if err != nil {
		tb.Fatalf("NewKeyboard: %v", err)
	}
	if open != nil {
		k.s.openPort = func(*serial.Config) (io.ReadCloser, error) {
			f, err := open()
			if err != nil {
				return nil, err
			}
			return newEvdevPort(f, k.s.readTimeout, nativeEventSize), nil
		}
	}
	h.s = k.s
	h.run(tb, k.Run)
	return h
}

// nativeCapture reads a recorded stream in this process's event size.
func nativeCapture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(captureFile(name, nativeEventSize))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestKeyboardStream plays recorded streams into the keyboard reader through
// a pipe (reads bounded by deadlines, events cut across reads), unplugs and
// re-plugs the "device", and checks frames, discards and reconnection.
func TestKeyboardStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "event-kbd")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	plugged := make(chan *os.File, 1)
	h := startKeyboard(t, path, func() (*os.File, error) {
		select {
		case r := <-plugged:
			return r, nil
		default:
			return nil, errors.New("not plugged in")
		}
	})
	plug := func() *os.File {
		t.Helper()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		plugged <- r
		h.waitState(t, Connected)
		return w
	}
	play := func(w *os.File, name string) {
		// A pipe holds 64 KiB: write from another goroutine.
		go w.Write(nativeCapture(t, name))
	}

	h.waitState(t, Disconnected) // nothing plugged in yet
	w := plug()
	play(w, "paycode")
	h.expect(t, vectorText(t))
	play(w, "faults")
	h.expect(t, "xy", "OK 1")
	if st := h.s.Stats(); st.NonPrintable != 3 || st.Discarded() != 3 {
		t.Errorf("stats %+v, want 3 non-printable discards", st)
	}

	// Half a frame, then the device goes: the part is counted incomplete.
	half := nativeCapture(t, "capslock")
	if _, err := w.Write(half[:len(half)/4]); err != nil {
		t.Fatal(err)
	}
	w.Close()
	h.waitState(t, Disconnected)
	w = plug()
	play(w, "capslock")
	h.expect(t, "FG1:AbC xyz-09", "FG1:AbC xyz-09")
	st := h.s.Stats()
	if st.Reconnects != 1 || st.Incomplete != 1 {
		t.Errorf("stats %+v, want 1 reconnect and 1 incomplete frame", st)
	}
	if n := h.logs.count("scanner lost; reconnecting"); n != 1 {
		t.Errorf("loss logged %d times, want 1", n)
	}
}

func TestNewKeyboardInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{Path: "/dev/input/event0"}, "without a name"},
		{"no path", Config{Name: "front"}, "no device path"},
		{"baud", Config{Name: "front", Path: "/dev/input/event0", Baud: 9600}, "baud does not apply"},
		{"lf", Config{Name: "front", Path: "/dev/input/event0", Framing: Framing{Terminator: TermLF}}, "terminator is Enter"},
		{"crlf", Config{Name: "front", Path: "/dev/input/event0", Framing: Framing{Terminator: TermCRLF}}, "terminator is Enter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewKeyboard(tt.cfg, nil)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

// TestOpenEvdevNotInput: a path that is not an input event device is
// refused with a clear message, whatever kind of file it is.
func TestOpenEvdevNotInput(t *testing.T) {
	plain := filepath.Join(t.TempDir(), "event0")
	os.WriteFile(plain, nil, 0o644)
	for _, p := range []string{plain, "/dev/null"} {
		f, err := openEvdev(p)
		if err == nil {
			f.Close()
			t.Errorf("%s: opened as an input device", p)
			continue
		}
		if !strings.Contains(err.Error(), "is not an input event device") {
			t.Errorf("%s: got %v", p, err)
		}
	}
	if _, err := openEvdev(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing device: got %v", err)
	}
}

// TestKeyboardUinput types a payment code on a virtual USB keyboard made
// with uinput and reads it through the real evdev node, grab included.
func TestKeyboardUinput(t *testing.T) {
	hwtest.Uinput(t)
	ty := newTypist()
	ty.typeText(t, vectorText(t))
	ty.enter()
	ty.typeText(t, "after grab")
	ty.enter()
	keys := map[evdev.EvCode]bool{}
	for _, e := range ty.events {
		if e.typ == evdev.EV_KEY {
			keys[evdev.EvCode(e.code)] = true
		}
	}
	var codes []evdev.EvCode
	for c := range keys {
		codes = append(codes, c)
	}
	name := fmt.Sprintf("farego test scanner %d", os.Getpid())
	dev, err := evdev.CreateDevice(name, evdev.InputID{BusType: 0x03, Vendor: 0x0c2e, Product: 0x0b61, Version: 1},
		map[evdev.EvType][]evdev.EvCode{evdev.EV_KEY: codes, evdev.EV_MSC: {evdev.MSC_SCAN}})
	if err != nil {
		t.Fatalf("uinput: %v", err)
	}
	defer dev.Close()

	// udev (if any) makes the node a little after the device appears.
	var path string
	deadline := time.Now().Add(waitTimeout)
	for path == "" && time.Now().Before(deadline) {
		paths, _ := evdev.ListDevicePaths()
		for _, p := range paths {
			if p.Name == name {
				path = p.Path
			}
		}
		if path == "" {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if path == "" {
		t.Fatalf("no /dev/input/event* node for %q within %v", name, waitTimeout)
	}

	h := startKeyboard(t, path, nil)
	h.waitState(t, Connected)
	// The reader holds the grab: nobody else can take it.
	if f, err := os.Open(path); err == nil {
		if err := unix.IoctlSetInt(int(f.Fd()), eviocgrab, 1); !errors.Is(err, unix.EBUSY) {
			t.Errorf("second grab: got %v, want EBUSY", err)
		}
		f.Close()
	}
	for _, e := range ty.events {
		if err := dev.WriteOne(&evdev.InputEvent{Type: evdev.EvType(e.typ), Code: evdev.EvCode(e.code), Value: e.value}); err != nil {
			t.Fatalf("uinput write: %v", err)
		}
	}
	h.expect(t, vectorText(t), "after grab")
}

// FuzzEventDecoder: any byte stream, cut anywhere, decodes to the same bytes
// as in one piece, at most one byte per event, each printable ASCII, CR or
// junk.
func FuzzEventDecoder(f *testing.F) {
	for _, name := range []string{"keypad", "faults", "capslock"} {
		for _, size := range []int{EventSize64, EventSize32} {
			b, err := os.ReadFile(captureFile(name, size))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, uint16(len(b)/3), size == EventSize64)
		}
	}
	f.Add([]byte{1, 2, 3}, uint16(1), true)
	f.Fuzz(func(t *testing.T, data []byte, cut uint16, wide bool) {
		size := EventSize32
		if wide {
			size = EventSize64
		}
		whole := (&eventDecoder{size: size}).decode(nil, data)
		d := eventDecoder{size: size}
		c := int(cut) % (len(data) + 1)
		split := d.decode(d.decode(nil, data[:c]), data[c:])
		if string(whole) != string(split) {
			t.Fatalf("cut at %d: %q, in one piece %q", c, split, whole)
		}
		if len(whole) > len(data)/size {
			t.Fatalf("%d bytes from %d events", len(whole), len(data)/size)
		}
		for _, b := range whole {
			if (b < 0x20 || b > 0x7e) && b != '\r' && b != junk {
				t.Fatalf("decoded byte %#x", b)
			}
		}
	})
}
