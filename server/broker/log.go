package broker

import (
	"context"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
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
	r.Attrs(func(a slog.Attr) bool { nr.AddAttrs(packetSummary(a)); return true })
	return m.h.Handle(ctx, nr)
}

// packetSummary replaces a whole MQTT packet in one of mochi's log lines
// ("error processing packet", pk=…: a client's refused packet, payload,
// properties and CONNECT password included, up to the packet bound, at
// any rate) with its type, packet id, topic (cut) and size: an attack
// review had one device log 1.4 MiB a line, one line a login.
func packetSummary(a slog.Attr) slog.Attr {
	pk, ok := a.Value.Any().(packets.Packet)
	if !ok {
		return a
	}
	return slog.Group(a.Key, "type", packets.PacketNames[pk.FixedHeader.Type], "qos", pk.FixedHeader.Qos,
		"id", pk.PacketID, "topic", clip(pk.TopicName), "remaining", pk.FixedHeader.Remaining)
}

func (m mochiHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return mochiHandler{m.h.WithAttrs(as)}
}

func (m mochiHandler) WithGroup(name string) slog.Handler { return mochiHandler{m.h.WithGroup(name)} }
