package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/tarm/serial"
	"golang.org/x/sys/unix"
)

// ioctl requests of the evdev interface (linux/input.h), which
// golang.org/x/sys/unix does not define.
const (
	// eviocgversion is EVIOCGVERSION, _IOR('E', 0x01, int): the evdev
	// protocol version; only an input event device answers it.
	eviocgversion = 0x80044501
	// eviocgrab is EVIOCGRAB, _IOW('E', 0x90, int); its argument is the
	// value itself: 1 grabs, 0 releases.
	eviocgrab = 0x40044590
)

// maxEventsPerRead bounds one read from an input device.
const maxEventsPerRead = 64

// Keyboard reads frames from a QR scanner that presents itself as a USB
// keyboard ("keyboard wedge", USB HID), through its Linux input event device
// (/dev/input/eventN). Make it with [NewKeyboard] and run it with
// [Keyboard.Run].
//
// It grabs the device (EVIOCGRAB) for as long as it is open: the scanner's
// keystrokes reach this reader only, not a console login or another
// program. Key events are turned into text with a US layout (Shift and Caps
// Lock applied, keypad digits typed as digits), Enter ends a frame, and the
// text goes through the same [Framer] as a serial scanner's bytes: a frame
// holding a key that types no printable character (a function key, a Ctrl
// or Alt combination) or cut by lost events is discarded as non-printable.
//
// Unplugging and re-plugging behave as for [Serial]: logged once each way,
// reopened with backoff, the path checked for naming the same device.
type Keyboard struct {
	s *Serial
}

var _ Source = (*Keyboard)(nil)

// NewKeyboard checks cfg and returns a reader for the keyboard-wedge scanner
// at cfg.Path, an input event device: best a stable udev name such as
// /dev/input/by-id/usb-…-event-kbd or a SYMLINK from a udev rule. It does not
// open the device. Baud must be zero; the terminator is Enter, so
// Framing.Terminator must be [TermAny] or [TermCR]. ReadTimeout (default
// [DefaultReadTimeout]) is how often an idle reader wakes to notice
// cancellation, a partial frame's timeout and a vanished path. log may be
// nil.
func NewKeyboard(cfg Config, log *slog.Logger) (*Keyboard, error) {
	if cfg.Baud != 0 {
		return nil, fmt.Errorf("%w: scanner %s: baud does not apply to a keyboard (evdev) scanner", ErrInvalidConfig, cfg.Name)
	}
	if t := cfg.Framing.Terminator; t != TermAny && t != TermCR {
		return nil, fmt.Errorf("%w: scanner %s: a keyboard scanner's terminator is Enter (any or cr), not %v", ErrInvalidConfig, cfg.Name, t)
	}
	s, err := NewSerial(cfg, log)
	if err != nil {
		return nil, err
	}
	s.openPort = func(c *serial.Config) (io.ReadCloser, error) {
		f, err := openEvdev(c.Name)
		if err != nil {
			return nil, err
		}
		return newEvdevPort(f, s.readTimeout, nativeEventSize), nil
	}
	return &Keyboard{s: s}, nil
}

// Name returns the scanner's name.
func (k *Keyboard) Name() string { return k.s.Name() }

// Problem returns why the scanner is not being read now ("" while it is):
// Serial.Problem.
func (k *Keyboard) Problem() string { return k.s.Problem() }

// Stats returns a snapshot of the reader's counters. It is safe to call at
// any time from any goroutine.
func (k *Keyboard) Stats() Stats { return k.s.Stats() }

// Run opens and grabs the device and sends its frames to out until ctx is
// done, then closes it (which releases the grab) and returns nil. It does
// not close out. Like [Serial.Run], it does not give up on a device that is
// absent, unplugged or held by another program's grab: it retries with
// backoff. It returns [ErrRunning] if the reader is already running.
func (k *Keyboard) Run(ctx context.Context, out chan<- Frame) error {
	return k.s.Run(ctx, out)
}

// openEvdev opens an input event device for reading and grabs it.
//
// The descriptor stays in Go's poller (the ioctls go through SyscallConn,
// not File.Fd, which would switch it to blocking mode), so reads honour
// deadlines and Close.
func openEvdev(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var ioErr error
	cerr := rc.Control(func(fd uintptr) {
		if _, err := unix.IoctlGetInt(int(fd), eviocgversion); err != nil {
			ioErr = fmt.Errorf("%s is not an input event device: %w", path, err)
			return
		}
		if err := unix.IoctlSetInt(int(fd), eviocgrab, 1); err != nil {
			if errors.Is(err, unix.EBUSY) {
				err = fmt.Errorf("%w (another program holds it)", err)
			}
			ioErr = fmt.Errorf("grab %s: %w", path, err)
		}
	})
	if err := errors.Join(cerr, ioErr); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: reads cannot be bounded: %w", path, err)
	}
	return f, nil
}

// evdevPort reads an input event stream as the bytes it types, with the
// read semantics the serial reader expects of a port: a read that waits a
// whole timeout without a keystroke returns 0 bytes and io.EOF.
type evdevPort struct {
	f       *os.File
	timeout time.Duration
	dec     eventDecoder
	buf     []byte
}

func newEvdevPort(f *os.File, timeout time.Duration, eventSize int) *evdevPort {
	return &evdevPort{
		f:       f,
		timeout: timeout,
		dec:     eventDecoder{size: eventSize},
		buf:     make([]byte, maxEventsPerRead*eventSize),
	}
}

// Read reads the events available (waiting up to the timeout for the first)
// and returns the bytes they type, which may be none: modifier keys, key
// releases and reports type nothing.
func (p *evdevPort) Read(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, io.ErrShortBuffer
	}
	// Each whole event types at most one byte, plus one for an event
	// completed from the previous read's leftover.
	events := min(len(b)-1, maxEventsPerRead)
	if err := p.f.SetReadDeadline(time.Now().Add(p.timeout)); err != nil {
		return 0, err
	}
	n, err := p.f.Read(p.buf[:events*p.dec.size])
	typed := p.dec.decode(b[:0], p.buf[:n])
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if len(typed) == 0 {
			return 0, io.EOF // idle: "no data yet"
		}
		err = nil
	}
	return len(typed), err
}

// Close closes the device, which releases the grab.
func (p *evdevPort) Close() error { return p.f.Close() }
