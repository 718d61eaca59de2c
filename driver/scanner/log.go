package scanner

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Frame contents are never logged: a frame is normally a whole payment code.

// discardLogInterval is the minimum time between two "frame discarded" log
// lines of one scanner; the discards in between are counted in the next line.
// A noisy cable must not fill the device's flash with logs.
const discardLogInterval = time.Second

// discardNoop is a logger that writes nothing, used when the caller passes nil.
var discardNoop = slog.New(slog.DiscardHandler)

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return discardNoop
	}
	return log
}

// discardLogger logs discarded frames, at most one line per
// discardLogInterval. It is safe for concurrent use, although the framer calls
// it from one goroutine.
type discardLogger struct {
	log  *slog.Logger
	name string
	// framer, framing and baud, when set, let a logged line carry a hint
	// from the discarded bytes (diagnose).
	framer  *Framer
	framing Framing
	baud    int

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// logDiscard has the signature of the framer's discard hook.
func (d *discardLogger) logDiscard(reason Discard, n int) {
	now := time.Now()
	d.mu.Lock()
	if !d.last.IsZero() && now.Sub(d.last) < discardLogInterval {
		d.suppressed++
		d.mu.Unlock()
		return
	}
	suppressed := d.suppressed
	d.last, d.suppressed = now, 0
	d.mu.Unlock()

	attrs := []slog.Attr{
		slog.String("scanner", d.name),
		slog.String("reason", reason.String()),
		slog.Int("bytes", n),
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	if d.framer != nil {
		if hint := diagnose(d.framer.discarded(), d.framing, d.baud); hint != "" {
			attrs = append(attrs, slog.String("hint", hint))
		}
	}
	d.log.LogAttrs(context.Background(), slog.LevelWarn, "scanner frame discarded", attrs...)
}
