package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/ridertext"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
)

// Scanner types ([[scanner]] type).
const (
	scannerSerial = "serial" // a serial or USB-CDC port (the default)
	scannerEvdev  = "evdev"  // a USB keyboard-wedge scanner's input event device
)

// lineRef is a GPIO line in validator.toml: an offset on gpio_chip
// (gpio_green_line = 17) or a line name (gpio_green_line = "LED_GREEN").
type lineRef string

// UnmarshalTOML implements toml.Unmarshaler: an integer or a string.
func (l *lineRef) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 || v > 65535 {
			return fmt.Errorf("GPIO line offset %d out of range 0..65535", v)
		}
		*l = lineRef(strconv.FormatInt(v, 10))
	case string:
		if v == "" || len(v) > 31 || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r > '~' }) {
			return fmt.Errorf("GPIO line name %q: want 1 to 31 printable ASCII characters without spaces", v)
		}
		*l = lineRef(v)
	default:
		return fmt.Errorf("GPIO line: want an offset (17) or a line name (\"LED_GREEN\"), got %T", v)
	}
	return nil
}

// checkHardware checks the keys of the GPIO character device, the scanner
// types and the language.
func (c *Config) checkHardware() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errConfig}, a...)...)
	}
	if _, err := ridertext.Parse(c.Language); err != nil {
		return bad("language: %v", err)
	}
	f := c.Feedback
	if f.Chip != "" && strings.Contains(f.Chip, "/") && !strings.HasPrefix(f.Chip, "/dev/") {
		return bad("feedback.gpio_chip %q: want a name such as gpiochip0 or a /dev/gpiochipN path", f.Chip)
	}
	for _, l := range []struct {
		key string
		ref lineRef
	}{{"gpio_green_line", f.GreenLine}, {"gpio_red_line", f.RedLine}, {"gpio_buzzer_line", f.BuzzerLine}} {
		if _, err := strconv.Atoi(string(l.ref)); err == nil && f.Chip == "" {
			return bad("feedback.%s = %s is an offset: set feedback.gpio_chip (or give the line's name)", l.key, l.ref)
		}
	}
	if f.Chip != "" && f.GreenLine == "" && f.RedLine == "" && f.BuzzerLine == "" {
		return bad("feedback.gpio_chip is set but no gpio_green_line, gpio_red_line or gpio_buzzer_line")
	}
	// A payment code's text: a shorter max_len drops every code as overlong.
	codeLen := len(paycode.TextPrefix) + paycode.Base45EncodedLen(paycode.CodeSize)
	for i, s := range c.Scanners {
		if s.MaxLen > 0 && s.MaxLen < codeLen {
			return bad("scanner %q: max_len %d is shorter than a payment code (%d characters): every code would be dropped as overlong; leave it out (%d)",
				s.Name, s.MaxLen, codeLen, scanner.DefaultMaxLen)
		}
		if s.MaxLen < 0 {
			return bad("scanner %q: max_len %d: want a length, or leave it out (%d)", s.Name, s.MaxLen, scanner.DefaultMaxLen)
		}
		switch s.Type {
		case "", scannerSerial:
			if !scanner.SupportedBaud(s.Baud) {
				return bad("scanner %q: baud %d is not a rate a serial port takes: the scanner's, usually 9600 or 115200 "+
					"(from 50 to 4000000: 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, …)", s.Name, s.Baud)
			}
		case scannerEvdev:
			if s.Path == "-" {
				return bad("scanner %q: an evdev scanner needs a device path, not \"-\"", s.Name)
			}
			if s.Baud != 0 {
				return bad("scanner %q: baud does not apply to an evdev scanner", s.Name)
			}
			if s.Terminator != scanner.TermAny && s.Terminator != scanner.TermCR {
				return bad("scanner %q: an evdev scanner ends frames with Enter (terminator any or cr)", s.Name)
			}
		default:
			return bad("scanner %d (%q): type must be serial or evdev, got %q", i+1, s.Name, s.Type)
		}
	}
	return nil
}

// language is the riders' language (checked by checkHardware).
func (c *Config) language() ridertext.Language {
	l, _ := ridertext.Parse(c.Language)
	return l
}

// gpioConfig returns the lights' and buzzer's configuration, and whether
// any output is fitted.
func gpioConfig(c *Config) (feedback.GPIOConfig, bool) {
	f := c.Feedback
	g := feedback.GPIOConfig{
		LineConfig: feedback.LineConfig{
			Chip: f.Chip, GreenLine: string(f.GreenLine), RedLine: string(f.RedLine), BuzzerLine: string(f.BuzzerLine),
			ActiveLow: f.ActiveLow,
		},
		Green: f.Green, Red: f.Red, Buzzer: f.Buzzer,
	}
	fitted := g.GreenLine != "" || g.RedLine != "" || g.BuzzerLine != "" || g.Green != "" || g.Red != "" || g.Buzzer != ""
	return g, fitted
}

// newScanner makes the reader for one [[scanner]] of type typ.
func newScanner(typ string, cfg scanner.Config, log *slog.Logger) (scanner.Source, error) {
	if typ == scannerEvdev {
		return scanner.NewKeyboard(cfg, log)
	}
	return scanner.NewSerial(cfg, log)
}
