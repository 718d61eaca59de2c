package scanner

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"
)

// lineChunk is the size of one read from a line source's input.
const lineChunk = 4096

// LineSource reads frames as lines of text from standard input, a file or a
// pipe: a stand-in for a scanner on the bench and in demos. It frames with
// the defaults (any of CR, LF or CRLF ends a line, lines longer than
// [DefaultMaxLen] or holding non-printable bytes are discarded and logged)
// except that there is no inter-character timeout, and the end of input
// completes the last line. Spaces are kept.
type LineSource struct {
	name   string
	r      io.Reader
	framer *Framer
	used   atomic.Bool
}

// NewLineSource returns a source that tags its frames with name and reads
// them from r. log may be nil.
func NewLineSource(name string, r io.Reader, log *slog.Logger) *LineSource {
	dl := &discardLogger{log: orDiscard(log), name: name}
	f, err := NewFramer(name, Framing{InterCharTimeout: -1}, dl.logDiscard)
	if err != nil {
		panic(err) // unreachable: the framing above is valid
	}
	return &LineSource{name: name, r: r, framer: f}
}

// Stats returns a snapshot of the source's counters.
func (l *LineSource) Stats() Stats { return l.framer.Stats() }

// Run sends a frame for each line of input to out. It returns nil at the end
// of input or when ctx is done, and the read error otherwise. It does not
// close out. Run can be called only once (it returns [ErrRunning] after).
//
// A Read that blocks (a terminal, a pipe) cannot be interrupted: when ctx is
// done Run returns at once, but a goroutine stays blocked in that Read until
// it returns; its data are then dropped.
func (l *LineSource) Run(ctx context.Context, out chan<- Frame) error {
	if !l.used.CompareAndSwap(false, true) {
		return ErrRunning
	}
	type chunk struct {
		data []byte
		err  error
	}
	chunks := make(chan chunk)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			buf := make([]byte, lineChunk)
			n, err := l.r.Read(buf)
			select {
			case chunks <- chunk{buf[:n], err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	// Only this goroutine frames and sends to out, so nothing is sent after
	// Run returns.
	send := func(frames []Frame) bool {
		for _, fr := range frames {
			select {
			case out <- fr:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-chunks:
			now := time.Now()
			if !send(l.framer.Feed(c.data, now)) {
				return nil
			}
			switch {
			case c.err == io.EOF:
				// The end of input ends the last line.
				send(l.framer.Feed([]byte{'\n'}, now))
				return nil
			case c.err != nil:
				l.framer.Reset()
				return fmt.Errorf("scanner %s: read: %w", l.name, c.err)
			}
		}
	}
}
