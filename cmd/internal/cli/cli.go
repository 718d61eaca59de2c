// Package cli holds the small pieces the farego commands share.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/mattn/go-isatty"
)

// NewLogger returns a structured logger writing text (default) or JSON (for
// journald and log shippers) at the given level (debug, info, warn, error).
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if level == "" {
		level = "info"
	}
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	var handler func(io.Writer) slog.Handler
	switch format {
	case "", "text":
		handler = func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) }
	case "json":
		handler = func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, opts) }
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
	if !IsJournal(w) {
		return slog.New(handler(w)), nil
	}
	// Under systemd every line of a service's stream is priority info
	// unless it starts with "<N>" (SyslogLevelPrefix=, on by default,
	// which journald strips): without it journalctl -p warning showed
	// nothing, not a lost scanner nor a tap that could not be recorded.
	var j journalHandler
	for i, p := range journalPriorities {
		j.hs[i] = handler(&prefixWriter{w: w, prefix: []byte(p)})
	}
	return slog.New(j), nil
}

// journalPriorities are the syslog priorities, as journald's stream
// prefixes, of the levels debug, info, warn and error.
var journalPriorities = [4]string{"<7>", "<6>", "<4>", "<3>"}

// journalHandler writes each record with its level's priority prefix
// through one of four handlers (same options, attributes and groups).
type journalHandler struct{ hs [4]slog.Handler }

func (j journalHandler) pick(l slog.Level) slog.Handler {
	switch {
	case l < slog.LevelInfo:
		return j.hs[0]
	case l < slog.LevelWarn:
		return j.hs[1]
	case l < slog.LevelError:
		return j.hs[2]
	}
	return j.hs[3]
}

func (j journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return j.pick(l).Enabled(ctx, l)
}

func (j journalHandler) Handle(ctx context.Context, r slog.Record) error {
	return j.pick(r.Level).Handle(ctx, r)
}

func (j journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for i, h := range j.hs {
		j.hs[i] = h.WithAttrs(as)
	}
	return j
}

func (j journalHandler) WithGroup(name string) slog.Handler {
	for i, h := range j.hs {
		j.hs[i] = h.WithGroup(name)
	}
	return j
}

// prefixWriter writes each record (one Write of a whole line, as slog's
// handlers do) after its prefix, in one Write: the journal stream takes a
// line per entry, and the handlers of several levels share it.
type prefixWriter struct {
	w      io.Writer
	prefix []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	buf := make([]byte, 0, len(p.prefix)+len(b))
	buf = append(append(buf, p.prefix...), b...)
	if _, err := p.w.Write(buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

// ErrorPrefix is what starts a line of w that says why a command failed:
// "<3>" (priority err, which journald takes and strips) when w is the
// journal's stream (IsJournal), else "". The log's lines carry their
// priority (NewLogger); without it the line saying why a service stopped
// or could not start was info, out of journalctl -p err.
func ErrorPrefix(w io.Writer) string {
	if IsJournal(w) {
		return journalPriorities[3]
	}
	return ""
}

// IsJournal reports whether w is the systemd journal's stream: systemd
// sets $JOURNAL_STREAM to its device and inode ("DEV:INO") for a unit
// whose standard output or error goes to the journal.
func IsJournal(w io.Writer) bool {
	f, ok := w.(*os.File)
	env := os.Getenv("JOURNAL_STREAM")
	if !ok || env == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return env == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// Token returns the token a flag such as --operator-token gives: as given,
// or read from the file named after "@" (a token in a file stays out of
// the shell's history and the process list). An error names the flag.
func Token(flagName, value string) (string, error) {
	if !strings.HasPrefix(value, "@") {
		return value, nil
	}
	b, err := os.ReadFile(value[1:])
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// IsTerminal reports whether w is a terminal, not a file or a pipe:
// progress may rewrite a line and text may be bold there, not elsewhere.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}
