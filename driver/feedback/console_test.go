package feedback

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

var fixedNow = func() time.Time { return time.Date(2026, 1, 1, 8, 0, 5, 0, time.UTC) }

func TestConsolePlain(t *testing.T) {
	var buf bytes.Buffer
	c := NewConsole(&buf, ConsoleConfig{Now: fixedNow})
	ctx := context.Background()
	calls := []func() error{
		func() error {
			return c.Accepted(ctx, Accept{Fare: 250, Currency: "EUR", Message: "Child fare", Scanner: "front"})
		},
		func() error { return c.Accepted(ctx, Accept{Fare: 0, Currency: "EUR"}) },
		func() error {
			return c.Rejected(ctx, Reject{Reason: "code_expired", Message: "Code expired: refresh the app", Scanner: "rear"})
		},
		func() error { return c.Rejected(ctx, Reject{Reason: "denied"}) },
		func() error { return c.OutOfService(ctx, "queue full") },
		func() error { return c.Rejected(ctx, Reject{Message: "evil \x1b[2J\r\nline", Scanner: "x\x07"}) },
	}
	for i, call := range calls {
		if err := call(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	want := "08:00:05 [front] ACCEPTED  2.50 EUR  Child fare\n" +
		"08:00:05 ACCEPTED  0.00 EUR\n" +
		"08:00:05 [rear] REJECTED  Code expired: refresh the app (code_expired)\n" +
		"08:00:05 REJECTED  denied\n" +
		"08:00:05 OUT OF SERVICE  queue full\n" +
		"08:00:05 [x?] REJECTED  evil ?[2J??line\n"
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestConsoleColor(t *testing.T) {
	tests := []struct {
		name  string
		mode  ColorMode
		w     func(tb testing.TB) io.Writer
		color bool
	}{
		{"always", ColorAlways, func(testing.TB) io.Writer { return &bytes.Buffer{} }, true},
		{"auto, buffer", ColorAuto, func(testing.TB) io.Writer { return &bytes.Buffer{} }, false},
		{"auto, terminal", ColorAuto, ptySlave, true},
		{"never, terminal", ColorNever, ptySlave, false},
	}
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "xterm")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConsole(tt.w(t), ConsoleConfig{Color: tt.mode})
			if c.color != tt.color {
				t.Errorf("colour: got %v, want %v", c.color, tt.color)
			}
		})
	}
	t.Run("NO_COLOR", func(t *testing.T) {
		t.Setenv("NO_COLOR", "1")
		if c := NewConsole(ptySlave(t), ConsoleConfig{}); c.color {
			t.Error("coloured despite NO_COLOR")
		}
	})

	var buf bytes.Buffer
	c := NewConsole(&buf, ConsoleConfig{Color: ColorAlways, Now: fixedNow})
	c.Accepted(context.Background(), Accept{Fare: 250, Currency: "EUR", Scanner: "front"})
	c.Rejected(context.Background(), Reject{Reason: "denied"})
	c.OutOfService(context.Background(), "no keys")
	want := "08:00:05 [front] \x1b[1;30;42m ACCEPTED \x1b[0m  2.50 EUR\n" +
		"08:00:05 \x1b[1;97;41m REJECTED \x1b[0m  denied\n" +
		"08:00:05 \x1b[1;30;43m OUT OF SERVICE \x1b[0m  no keys\n"
	if got := buf.String(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// ptySlave returns a real terminal.
func ptySlave(tb testing.TB) io.Writer {
	tb.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		tb.Skipf("no pseudo-terminals here: %v", err)
	}
	tb.Cleanup(func() {
		slave.Close()
		master.Close()
	})
	return slave
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestConsoleWriteError(t *testing.T) {
	c := NewConsole(failWriter{}, ConsoleConfig{})
	if err := c.OutOfService(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("got %v, want the write error", err)
	}
}

func TestFormatAmount(t *testing.T) {
	tests := []struct {
		minor    int64
		currency string
		want     string
	}{
		{250, "EUR", "2.50 EUR"},
		{5, "eur", "0.05 eur"},
		{0, "USD", "0.00 USD"},
		{-120, "EUR", "-1.20 EUR"},
		{250, "JPY", "250 JPY"},
		{1250, "KWD", "1.250 KWD"},
		{250, "", "2.50"},
		{math.MaxInt64, "EUR", "92233720368547758.07 EUR"},
		{math.MinInt64, "EUR", "-92233720368547758.08 EUR"},
		{math.MinInt64, "JPY", "-9223372036854775808 JPY"},
	}
	for _, tt := range tests {
		if got := FormatAmount(tt.minor, tt.currency); got != tt.want {
			t.Errorf("FormatAmount(%d, %q): got %q, want %q", tt.minor, tt.currency, got, tt.want)
		}
	}
}

func TestParseNumber(t *testing.T) {
	for _, c := range []struct {
		text, currency string
		want           int64
	}{
		{"1.20", "EUR", 120}, {"1,2", "EUR", 120}, {" 20 ", "EUR", 2000}, {"0.05", "", 5}, {"250", "JPY", 250},
		{"1.250", "KWD", 1250}, {"999999999999.99", "EUR", 99999999999999},
	} {
		got, err := ParseNumber(c.text, c.currency)
		if err != nil || got != c.want {
			t.Errorf("ParseNumber(%q, %s) = %d, %v; want %d", c.text, c.currency, got, err, c.want)
		}
		if back, err := ParseNumber(FormatNumber(c.want, c.currency), c.currency); err != nil || back != c.want {
			t.Errorf("%d %s does not read back: %d, %v", c.want, c.currency, back, err)
		}
	}
	for _, c := range []struct{ text, currency string }{
		{"", "EUR"}, {"-1", "EUR"}, {"+1", "EUR"}, {"1.", "EUR"}, {"1,", "EUR"}, {".5", "EUR"}, {"1.205", "EUR"},
		{"1.5", "JPY"}, {"1e3", "EUR"}, {"1.2.3", "EUR"}, {"1 000", "EUR"}, {"1234567890123", "EUR"}, {"lots", "EUR"},
	} {
		if v, err := ParseNumber(c.text, c.currency); err == nil {
			t.Errorf("ParseNumber(%q, %s) = %d, want an error", c.text, c.currency, v)
		}
	}
	// Too many decimals is said as such (it read "is not an amount").
	for _, c := range []struct{ text, currency, want string }{
		{"1.805", "EUR", "at most 2 decimals"}, {"1.5", "JPY", "no decimals"}, {"0.0001", "KWD", "at most 3 decimals"},
	} {
		if _, err := ParseNumber(c.text, c.currency); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseNumber(%q, %s): %v, want %q", c.text, c.currency, err, c.want)
		}
	}
}

// FuzzParseNumber: an amount typed into the console parses to a value that
// is never negative and reads back the same from its formatted form, or
// fails.
func FuzzParseNumber(f *testing.F) {
	for _, s := range []string{"1.20", "1,2", "250", "-1", "1.", "9999999999999", "0.001"} {
		f.Add(s, "EUR")
	}
	f.Add("250", "JPY")
	f.Add("1.250", "KWD")
	f.Fuzz(func(t *testing.T, text, currency string) {
		v, err := ParseNumber(text, currency)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseNumber(%q, %q) = %d", text, currency, v)
		}
		if back, err := ParseNumber(FormatNumber(v, currency), currency); err != nil || back != v {
			t.Fatalf("ParseNumber(%q, %q) = %d, which formats as %q and reads back as %d, %v", text, currency, v,
				FormatNumber(v, currency), back, err)
		}
	})
}

// TestConsoleRepeatEvery: with RepeatEvery a refusal of one scanner and
// reason is written once per interval, the next saying how many were not;
// other reasons, other scanners and acceptances are each written.
func TestConsoleRepeatEvery(t *testing.T) {
	var buf bytes.Buffer
	now := fixedNow()
	c := NewConsole(&buf, ConsoleConfig{Now: func() time.Time { return now }, RepeatEvery: time.Second})
	ctx := context.Background()
	for range 50 {
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(c.Rejected(ctx, Reject{Reason: "malformed", Scanner: "front"}))
		must(c.Rejected(ctx, Reject{Reason: "malformed", Scanner: "rear"}))
		must(c.OutOfService(ctx, "clock"))
	}
	if err := c.Rejected(ctx, Reject{Reason: "code_expired", Scanner: "front"}); err != nil {
		t.Fatal(err)
	}
	c.Accepted(ctx, Accept{Fare: 250, Currency: "EUR", Scanner: "front"})
	c.Accepted(ctx, Accept{Fare: 250, Currency: "EUR", Scanner: "front"})
	now = now.Add(time.Second)
	c.Rejected(ctx, Reject{Reason: "malformed", Scanner: "front"})
	want := "08:00:05 [front] REJECTED  malformed\n" +
		"08:00:05 [rear] REJECTED  malformed\n" +
		"08:00:05 OUT OF SERVICE  clock\n" +
		"08:00:05 [front] REJECTED  code_expired\n" +
		"08:00:05 [front] ACCEPTED  2.50 EUR\n" +
		"08:00:05 [front] ACCEPTED  2.50 EUR\n" +
		"08:00:06 [front] REJECTED  malformed  [49 more like it not shown]\n"
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestParseAmount: the rule of the console's refund and the settlement
// CLI's money commands, in currencies of 2, 0 and 3 decimals. A zero was
// asked whether it meant "0.00 or 0.00" (the whole-number question came
// first): it is said to be no amount to move.
func TestParseAmount(t *testing.T) {
	const max = 1_000_000_000_00
	for _, c := range []struct {
		text, currency string
		want           int64
	}{
		{"1.80", "EUR", 180}, {"1.80 eur", "EUR", 180}, {" EUR 1.80 ", "EUR", 180}, {"1,80EUR", "EUR", 180},
		{"1250", "JPY", 1250}, {"1250 jpy", "JPY", 1250}, {"1.5 KWD", "KWD", 1500}, {"0.001", "KWD", 1},
	} {
		if got, err := ParseAmount(c.text, c.currency, max); err != nil || got != c.want {
			t.Errorf("ParseAmount(%q, %s) = %d, %v; want %d", c.text, c.currency, got, err, c.want)
		}
	}
	for _, c := range []struct{ text, currency, want string }{
		{"0", "EUR", "more than zero"}, {"0 EUR", "EUR", "more than zero"}, {"0.00", "EUR", "more than zero"},
		{"0", "JPY", "more than zero"}, {"180", "EUR", "write 180.00 for 180.00 EUR, or 1.80 for 1.80 EUR"},
		{"1250", "KWD", "or 1.250 for 1.250 KWD"}, {"1.80 USD", "EUR", "is in USD"}, {"1.5", "JPY", "no decimals"},
		{"١.٨٠", "EUR", "not an amount"}, {"１.８０", "EUR", "not an amount"}, {"-1.80", "EUR", "not an amount"},
		{"1000000000.01", "EUR", "more than one amount may be (1000000000.00 EUR)"},
		{"1234567890123.00", "EUR", "more than one amount may be"},
	} {
		if v, err := ParseAmount(c.text, c.currency, max); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseAmount(%q, %s) = %d, %v; want an error saying %q", c.text, c.currency, v, err, c.want)
		}
	}
}
