package broker

import (
	"context"
	"log/slog"
)

// mochiHandler passes mochi's log records on with a "broker: " prefix.
// mochi logs every connection that ends with an error (a network drop, a
// refused CONNECT) as a warning with an empty message; those become debug
// records, since the auth hook logs refusals itself.
type mochiHandler struct{ h slog.Handler }

func (m mochiHandler) Enabled(ctx context.Context, l slog.Level) bool { return m.h.Enabled(ctx, l) }

func (m mochiHandler) Handle(ctx context.Context, r slog.Record) error {
	msg := r.Message
	level := r.Level
	if msg == "" {
		msg, level = "client connection ended", slog.LevelDebug
		if !m.h.Enabled(ctx, level) {
			return nil
		}
	}
	nr := slog.NewRecord(r.Time, level, "broker: "+msg, r.PC)
	r.Attrs(func(a slog.Attr) bool { nr.AddAttrs(a); return true })
	return m.h.Handle(ctx, nr)
}

func (m mochiHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return mochiHandler{m.h.WithAttrs(as)}
}

func (m mochiHandler) WithGroup(name string) slog.Handler { return mochiHandler{m.h.WithGroup(name)} }
