// Package cli holds the small pieces the farego commands share.
package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

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
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
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
