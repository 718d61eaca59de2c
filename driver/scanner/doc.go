// Package scanner reads QR scanners and delivers what they read as text
// frames, one stream for all the scanners of a vehicle.
//
// Validators use 2D imagers (Honeywell, Newland, Zebra-class) in serial or
// USB-CDC mode: each scan arrives as the decoded text followed by a CR, LF
// or CRLF, possibly wrapped in a prefix and suffix the scanner was set to
// add (STX/ETX, an AIM symbology identifier). This package knows nothing
// about fares or payment codes; it only guarantees that what it delivers is a
// complete frame of printable ASCII (0x20..0x7E), spaces included, of
// bounded length.
//
// The parts:
//
//   - [Framer] is the pure framing state machine: bytes and their arrival
//     time in, complete [Frame]s out. Overlong frames, frames holding
//     non-printable bytes, frames missing their prefix or suffix and partial
//     frames left without a terminator for longer than the inter-character
//     timeout are dropped and counted by [Discard] reason in [Stats].
//   - [Serial] reads one scanner through github.com/tarm/serial with a
//     [Framer]. When the device disappears (USB unplugged, cable fault) it
//     logs once, reopens with jittered, capped backoff and logs once again
//     when the scanner is back, without restarting the agent.
//   - [Keyboard] reads a scanner that presents itself as a USB keyboard
//     ("keyboard wedge") through its input event device
//     (/dev/input/eventN), grabbed for exclusive use (EVIOCGRAB). Key events
//     are typed out with a US layout (Shift, Caps Lock, keypad digits),
//     Enter ends a frame, and the text goes through the same [Framer];
//     unplugging is handled as for [Serial].
//   - [LineSource] reads lines from standard input or a file instead, for
//     the bench and demos.
//   - [RunAll] runs several sources (front and rear doors) into one channel;
//     each [Frame] carries its scanner's name.
//
// A typical device wiring:
//
//	front, err := scanner.NewSerial(scanner.Config{Name: "front", Path: "/dev/scanner-front", Baud: 115200}, log)
//	...
//	frames := make(chan scanner.Frame, 16)
//	go scanner.RunAll(ctx, []scanner.Source{front, rear}, frames)
//	for f := range frames {
//		decide(f.Scanner, f.Text)
//	}
//
// # Caveats
//
// Never trim frames: the payment code's Base45 alphabet contains the space,
// and a leading or trailing space is part of the code. Only CR, LF and the
// configured prefix and suffix are framing.
//
// github.com/tarm/serial needs a read timeout (with none, a pending Read and
// even Close block forever); a read that times out returns 0 bytes and
// io.EOF. A hung-up device returns the same at once and forever, so the reader
// takes several immediate zero-length reads in a row, a read error, the path
// vanishing or the path naming another device (os.SameFile) as "device
// lost". Point Config.Path at a udev symlink (/dev/scanner-front) so the same
// scanner keeps the same name when it comes back as another /dev/ttyACMn.
//
// The port is opened in raw mode, 8N1, without flow control; a scanner set to
// other settings needs to be reconfigured (scan its programming barcodes).
// Bytes a scanner sent before the port was opened (or between an unplug and
// the reopen, or while the validator restarted) may still be in the kernel
// buffer, the first half of a scan whose second half is gone. [Serial]
// discards the tty's pending input when it opens the port (tcflush, through
// tarm/serial's Flush), and drops the first frame if it began before the
// line was seen idle (one read timeout of silence): it may be the tail of a
// scan cut by the restart ([Framer.Resync]). A rider scanning within that
// first fraction of a second scans again.
//
// Frame text is never logged: it is normally a whole payment code. Discard
// log lines carry the reason and the length only, at most one per second per
// scanner.
//
// A [LineSource] cannot interrupt a blocked Read of its input; see
// [LineSource.Run].
//
// A [Keyboard] needs the scanner set to a US keyboard layout (other layouts
// type other characters for the same keys: a frame then fails the payment
// code check, or holds junk and is discarded) and to end each scan with
// Enter. The reader opens the device itself with golang.org/x/sys/unix
// rather than through github.com/holoplot/go-evdev (whose key code constants
// it uses): that library's Grab goes through os.File.Fd, which turns the
// descriptor blocking, so a pending read could no longer be bounded or
// interrupted. The read is bounded by ReadTimeout with a deadline instead.
// Event records are 24 bytes on 64-bit kernels and 16 bytes on 32-bit ones
// (armhf); the reader uses its own process's size, which is the kernel's.
package scanner
