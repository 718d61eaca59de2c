package feedback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
)

// ColorMode says when a [Console] uses ANSI colours.
type ColorMode int

const (
	// ColorAuto colours when the writer is a terminal, unless the NO_COLOR
	// environment variable is set or TERM is "dumb" (the default).
	ColorAuto ColorMode = iota
	// ColorAlways always colours.
	ColorAlways
	// ColorNever never colours.
	ColorNever
)

// ANSI styles of the status badge.
const (
	styleAccepted     = "\x1b[1;30;42m" // bold black on green
	styleRejected     = "\x1b[1;97;41m" // bold white on red
	styleOutOfService = "\x1b[1;30;43m" // bold black on yellow
	styleReset        = "\x1b[0m"
)

// ConsoleConfig configures a [Console]. The zero value colours on terminals
// and stamps lines with the wall clock.
type ConsoleConfig struct {
	// Color says when to use ANSI colours (default [ColorAuto]).
	Color ColorMode
	// Now is the clock for the time stamp at the start of each line
	// (default time.Now).
	Now func() time.Time
	// RepeatEvery, if positive, writes a refusal or out-of-service line of
	// one scanner and reason at most once per RepeatEvery; the next one
	// written says how many were not ([N more like it not shown]). For a
	// console that is a log (the journal under systemd): a scanner sending
	// garbage made a refusal line per frame, 10,000 in a second, past
	// journald's rate limit, which then dropped the service's other lines
	// too. Acceptances are each written.
	RepeatEvery time.Duration
}

// maxRepeatKeys bounds the refusal kinds a Console remembers (scanners
// times reasons, both few); past it they are forgotten all at once.
const maxRepeatKeys = 256

type repeat struct {
	last time.Time
	held int
}

// Console shows each event as one line of text, for a terminal on the
// bench, a demo or a serial console:
//
//	08:00:05 [front] ACCEPTED  2.50 EUR  Child fare
//	08:00:09 [rear] REJECTED  Code expired: refresh the app (code_expired)
//	08:01:00 OUT OF SERVICE  queue full
//
// On a terminal the status is a coloured badge (green, red, yellow).
// Control characters in the texts are replaced with '?', so a message cannot
// send escape sequences to the terminal. It is safe for concurrent use; lines
// never interleave.
type Console struct {
	mu    sync.Mutex
	w     io.Writer
	color bool
	now   func() time.Time
	every time.Duration
	reps  map[string]*repeat // by scanner and reason, with every > 0
}

var _ Feedback = (*Console)(nil)

// NewConsole returns a console feedback writing to w (os.Stdout, say).
func NewConsole(w io.Writer, cfg ConsoleConfig) *Console {
	c := &Console{w: w, now: cfg.Now, every: cfg.RepeatEvery, reps: map[string]*repeat{}}
	if c.now == nil {
		c.now = time.Now
	}
	switch cfg.Color {
	case ColorAlways:
		c.color = true
	case ColorAuto:
		c.color = isTerminal(w) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
	}
	return c
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && isatty.IsTerminal(f.Fd())
}

// Accepted implements [Feedback]. ctx is not used: writing a line does not
// block for long.
func (c *Console) Accepted(_ context.Context, a Accept) error {
	detail := FormatAmount(a.Fare, a.Currency)
	if a.Message != "" {
		detail += "  " + clean(a.Message)
	}
	return c.line(a.Scanner, "ACCEPTED", styleAccepted, detail)
}

// Rejected implements [Feedback].
func (c *Console) Rejected(_ context.Context, r Reject) error {
	detail := clean(r.Message)
	switch {
	case detail == "":
		detail = clean(r.Reason)
	case r.Reason != "":
		detail += " (" + clean(r.Reason) + ")"
	}
	held, ok := c.allow(r.Scanner + "\x00" + r.Reason + "\x00" + r.Message)
	if !ok {
		return nil
	}
	return c.line(r.Scanner, "REJECTED", styleRejected, detail+moreLikeIt(held))
}

// OutOfService implements [Feedback].
func (c *Console) OutOfService(_ context.Context, msg string) error {
	held, ok := c.allow("\x01" + msg)
	if !ok {
		return nil
	}
	return c.line("", "OUT OF SERVICE", styleOutOfService, clean(msg)+moreLikeIt(held))
}

// allow reports whether a line of key is written now (always, without
// RepeatEvery), and how many of key were held back since the last one.
func (c *Console) allow(key string) (int, bool) {
	if c.every <= 0 {
		return 0, true
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.reps[key]
	if r == nil {
		if len(c.reps) >= maxRepeatKeys {
			clear(c.reps)
		}
		c.reps[key] = &repeat{last: now}
		return 0, true
	}
	if now.Sub(r.last) < c.every && !now.Before(r.last) {
		r.held++
		return 0, false
	}
	held := r.held
	r.last, r.held = now, 0
	return held, true
}

func moreLikeIt(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("  [%d more like it not shown]", n)
}

// line writes one event line.
func (c *Console) line(scanner, status, style, detail string) error {
	var b strings.Builder
	b.WriteString(c.now().Format("15:04:05"))
	b.WriteByte(' ')
	if scanner != "" {
		b.WriteString("[" + clean(scanner) + "] ")
	}
	if c.color {
		b.WriteString(style + " " + status + " " + styleReset)
	} else {
		b.WriteString(status)
	}
	if detail != "" {
		b.WriteString("  " + detail)
	}
	b.WriteByte('\n')

	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.w, b.String()); err != nil {
		return fmt.Errorf("feedback: console: %w", err)
	}
	return nil
}

// clean replaces control characters (C0, DEL, C1) with '?'.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// minorUnits lists the ISO 4217 currencies whose minor unit is not 1/100.
var minorUnits = map[string]int{
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0,
	"KRW": 0, "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0,
	"XAF": 0, "XOF": 0, "XPF": 0,
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	"CLF": 4, "UYW": 4,
}

// CurrencyDigits is the currency's minor-unit decimals in ISO 4217 (2 for
// an unknown or empty one): what every amount of the ledger counts in. A
// browser's Intl data (CLDR) differs for some (HUF, IDR, COP, IQD: 0), so
// the wallet takes the server's.
func CurrencyDigits(currency string) int {
	if d, ok := minorUnits[strings.ToUpper(currency)]; ok {
		return d
	}
	return 2
}

// NonDecimalCurrencies lists the currencies whose minor unit is not 1/100,
// sorted.
func NonDecimalCurrencies() []string {
	out := make([]string, 0, len(minorUnits))
	for c := range minorUnits {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// FormatAmount formats an amount in minor units for display: 250 "EUR" is
// "2.50 EUR", 250 "JPY" is "250 JPY", 1250 "KWD" is "1.250 KWD". Without a
// currency it assumes two decimals and prints the number alone.
func FormatAmount(minor int64, currency string) string {
	s := FormatNumber(minor, currency)
	if currency != "" {
		s += " " + clean(currency)
	}
	return s
}

// FormatNumber is FormatAmount without the currency: 250 "JPY" is "250",
// 250 "EUR" "2.50" (two decimals for an unknown or empty currency).
func FormatNumber(minor int64, currency string) string {
	digits := CurrencyDigits(currency)
	sign := ""
	mag := uint64(minor)
	if minor < 0 {
		sign, mag = "-", -mag // two's complement: right for math.MinInt64 too
	}
	if digits == 0 {
		return sign + fmt.Sprint(mag)
	}
	div := uint64(1)
	for range digits {
		div *= 10
	}
	return fmt.Sprintf("%s%d.%0*d", sign, mag/div, digits, mag%div)
}

// ParseAmount reads an amount an operator typed in currency ("12.50",
// "12,50", "12.50 EUR", "EUR 12.50") into minor units: positive, at most
// max. Another currency's code, a sign or too many decimals are refused,
// and so is a whole number in a currency with decimals ("1250": 1,250.00
// as a person means it, 12.50 as the API's minor units and farego-rider
// --amount read it): asked to say which. The settlement CLI's money
// commands and the console's forms read amounts with it, one rule.
func ParseAmount(text, currency string, max int64) (int64, error) {
	t := strings.TrimSpace(text)
	if m := amountWithCode.FindStringSubmatch(t); m != nil && (m[1] == "") != (m[3] == "") {
		if code := strings.ToUpper(m[1] + m[3]); code != currency {
			return 0, fmt.Errorf("amount %q is in %s: the ledger keeps %s (such as %s)", text, code, currency,
				FormatAmount(1250, currency))
		}
		t = m[2]
	}
	v, err := ParseNumber(t, currency)
	if errors.Is(err, ErrTooLarge) {
		return 0, fmt.Errorf("amount %q: more than one amount may be (%s)", text, FormatAmount(max, currency))
	}
	if err != nil {
		return 0, fmt.Errorf("amount %w", err)
	}
	if v <= 0 {
		// Before the question below, which asked "0" to say "0.00 or
		// 0.00" (the console's refund said "must be a positive amount").
		return 0, fmt.Errorf("amount %q: must be more than zero", text)
	}
	if digits := CurrencyDigits(currency); digits > 0 && !strings.ContainsAny(t, ".,") {
		// "1250": 1,250.00 as the console reads it, 12.50 as the API
		// (minor units) and farego-rider --amount do. Asked to say.
		minor := v
		for range digits {
			minor /= 10
		}
		return 0, fmt.Errorf("amount %q without decimals: amounts here are in %s, not in its minor units as the API's; "+
			"write %s for %s, or %s for %s", text, currency, FormatNumber(v, currency), FormatAmount(v, currency),
			FormatNumber(minor, currency), FormatAmount(minor, currency))
	}
	if v > max {
		return 0, fmt.Errorf("amount %q: more than one amount may be (%s)", text, FormatAmount(max, currency))
	}
	return v, nil
}

// amountWithCode is an amount with its currency's code before or after
// it: "EUR 12.50", "12.50EUR".
var amountWithCode = regexp.MustCompile(`^([A-Za-z]{3})?\s*([^A-Za-z\s]+)\s*([A-Za-z]{3})?$`)

// ErrTooLarge is ParseNumber's error for an amount of more than 12 whole
// digits: more than any amount the ledger takes.
var ErrTooLarge = errors.New("too large")

// ParseNumber reads an amount typed in major units of currency ("1.20",
// "1,2", "250" for JPY) as minor units, or fails: a sign, more decimals
// than the currency has, more than 12 whole digits (ErrTooLarge), anything
// else.
func ParseNumber(text, currency string) (int64, error) {
	digits := CurrencyDigits(currency)
	t := strings.Replace(strings.TrimSpace(text), ",", ".", 1)
	whole, frac, dot := strings.Cut(t, ".")
	if whole == "" || strings.Trim(whole, "0123456789") != "" ||
		strings.Trim(frac, "0123456789") != "" || (dot && frac == "") {
		return 0, fmt.Errorf("%q is not an amount in %s (such as %s)", text, clean(currency), FormatNumber(2050, currency))
	}
	// A number, too long: said as such (it was "not an amount", while
	// one of 11 digits was "more than one amount may be").
	if len(whole) > 12 {
		return 0, fmt.Errorf("%q: %w: more than 12 whole digits", text, ErrTooLarge)
	}
	if len(frac) > digits {
		if digits == 0 {
			return 0, fmt.Errorf("%q: amounts in %s have no decimals (such as %s)", text, clean(currency), FormatNumber(2050, currency))
		}
		return 0, fmt.Errorf("%q: amounts in %s have at most %d decimals (such as %s)", text, clean(currency), digits, FormatNumber(2050, currency))
	}
	var v int64
	for _, c := range whole + frac + strings.Repeat("0", digits-len(frac)) {
		v = v*10 + int64(c-'0')
	}
	return v, nil
}
