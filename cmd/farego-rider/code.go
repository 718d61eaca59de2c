package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
)

func cmdCode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, statePath := flags("code")
	png := fs.String("png", "", "also write the code as a QR PNG to this file (mode 0600: whoever reads it can pay with it)")
	qr := fs.Bool("qr", false, "also draw the code as a QR in the terminal")
	watch := fs.Bool("watch", false, "show a fresh code every minute until interrupted")
	now := fs.String("now", "", "code time: unix seconds or RFC 3339 (default: the clock)")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	return showCode(ctx, *statePath, *png, *qr, *watch, *now, stdout)
}

// nextCode makes the next code at t and saves the advanced counter first, so
// two codes never share a counter even after a crash.
func nextCode(path string, s *state, t time.Time) (string, error) {
	cred, key, err := s.keys()
	if err != nil {
		return "", err
	}
	// A credential damaged in the state file (cut short, another version)
	// was read as all zeros: "the credential expired at 1970", a wrong
	// reason, and the counter was advanced for nothing.
	c, err := paycode.ParseCredential(cred)
	if err != nil {
		return "", fmt.Errorf("state file: credential: %w: run \"farego-rider credential\" while online", err)
	}
	if t.After(c.ValidUntil()) {
		return "", fmt.Errorf("the credential expired at %s: run \"farego-rider credential\" while online", c.ValidUntil().Format(time.RFC3339))
	}
	// The counter is 16 bits: past 65535 it wrapped to 0 and the counters
	// began again at 1; a code of the same second (--now) and counter as
	// one before is that code (paycode.ID), whose second use a validator
	// refuses (code_used) and the server counts as a code used twice (the
	// credential denied). The wallet stops there too ("exhausted"); a new
	// credential begins again at 0.
	if s.Counter == math.MaxUint16 {
		return "", errors.New("this credential made its 65535 codes: run \"farego-rider credential\" while online")
	}
	s.Counter++
	if err := s.save(path); err != nil {
		return "", err
	}
	b, err := paycode.MakeCode(cred, key, t, s.Counter)
	if err != nil {
		return "", err
	}
	return paycode.EncodeText(b), nil
}

func showCode(ctx context.Context, path, png string, qr, watch bool, nowFlag string, stdout io.Writer) error {
	now := time.Now
	if nowFlag != "" {
		t, err := parseTime(nowFlag)
		if err != nil {
			return err
		}
		now = func() time.Time { return t }
	}
	s, err := loadState(path)
	if err != nil {
		return err
	}
	// --watch clears a terminal for each code. Into a file or a pipe (a
	// scanner's feed: farego-rider code --watch >> feed) the escapes and
	// the header went too, each a frame a validator refused: there the
	// codes alone, one a line.
	screen := watch && cli.IsTerminal(stdout)
	for {
		text, err := nextCode(path, s, now())
		if err != nil {
			return err
		}
		// The PNG first: a file that cannot be written fails the command
		// before the code is shown, not after.
		var q *qrcode.QRCode
		if png != "" || qr {
			if q, err = qrcode.New(text, qrcode.Medium); err != nil {
				return err
			}
		}
		if png != "" {
			// The image is the whole code: whoever reads it before it
			// expires can pay with it (a shop's scanner takes it online).
			// So it is the user's alone (0600, as the state file), also
			// over a file that was readable by others, and it is replaced
			// whole (--watch rewrites it every minute under a viewer).
			img, err := q.PNG(-6)
			if err != nil {
				return fmt.Errorf("--png: %w", err)
			}
			if err := writePNG(png, img); err != nil {
				return fmt.Errorf("--png: %w", err)
			}
		}
		if screen {
			fmt.Fprint(stdout, "\x1b[2J\x1b[H") // clear the screen
			fmt.Fprintf(stdout, "account %d — code of %s (refreshes every minute, Ctrl-C to stop)\n\n", s.Account, now().Format("15:04:05"))
		}
		fmt.Fprintln(stdout, text)
		if qr {
			fmt.Fprint(stdout, q.ToSmallString(false))
		}
		if !watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Minute):
		}
	}
}

// writePNG writes a code's image, mode 0600. A file is replaced whole
// (durable.WriteFile: a temporary file renamed over it), whatever mode it
// had; a pipe or device (a FIFO a viewer reads, /dev/stdout) is written
// to, never replaced.
func writePNG(path string, img []byte) error {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return os.WriteFile(path, img, 0o600)
	}
	return durable.WriteFile(path, img, 0o600)
}

func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, cli.UsageError("--now: want unix seconds or RFC 3339, got %q", s)
	}
	return t, nil
}
