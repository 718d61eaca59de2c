package feedback

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/warthog618/go-gpiocdev"
)

// DefaultConsumer is the consumer label the lines are requested under when
// [LineConfig].Consumer is empty; gpioinfo shows it next to each line.
const DefaultConsumer = "farego-validator"

// maxLineOffset bounds a configured line offset: no GPIO chip has more lines
// than the uAPI can address in one request (GPIO_MAX_NAME_SIZE aside, the
// kernel limits a chip to 65535 lines).
const maxLineOffset = 65535

// LineConfig selects the lights and the buzzer on a GPIO character device
// (/dev/gpiochipN), the kernel's interface since Linux 4.8 and the only one
// left on kernels built without CONFIG_GPIO_SYSFS.
//
// A line is given as a decimal offset on Chip ("17") or as a line name
// ("LED_GREEN", from the device tree's gpio-line-names). A name can be given
// without a chip: every chip is searched. Empty means not fitted.
//
// Each line is requested as an output, initially inactive, for as long as
// the [GPIO] is open: no other process can drive it meanwhile, and the
// kernel takes the request back when the process dies.
type LineConfig struct {
	// Chip is the chip's name ("gpiochip0") or its device path under /dev
	// ("/dev/gpiochip0"; not a symlink: the library checks the node is the
	// chip's). Required for lines given by offset.
	Chip string
	// GreenLine, RedLine and BuzzerLine are the lines driving each output.
	GreenLine, RedLine, BuzzerLine string
	// ActiveLow says the outputs are on when the line is low (a light wired
	// between the supply and the pin). It applies to all three lines.
	ActiveLow bool
	// Consumer is the label the lines are requested under (default
	// [DefaultConsumer]).
	Consumer string
}

// lineSetter switches one requested line.
type lineSetter interface {
	set(on bool) error
	close() error
}

// cdevLine is a line requested through go-gpiocdev.
type cdevLine struct{ l *gpiocdev.Line }

func (c cdevLine) set(on bool) error {
	v := 0
	if on {
		v = 1
	}
	return c.l.SetValue(v)
}

func (c cdevLine) close() error { return c.l.Close() }

// requestLine requests the line ref (an offset or a name) on chip (empty:
// search every chip for the name) as an inactive output. It returns the
// line and a label such as "gpiochip0:17" for logs.
func requestLine(chip, ref string, activeLow bool, consumer string) (lineSetter, string, error) {
	opts := []gpiocdev.LineReqOption{gpiocdev.AsOutput(0), gpiocdev.WithConsumer(consumer)}
	if activeLow {
		opts = append(opts, gpiocdev.AsActiveLow)
	}
	if chip != "" && strings.Contains(chip, "/") && !strings.HasPrefix(chip, "/dev/") {
		return nil, chip + ":" + ref, fmt.Errorf("chip %q: want a name such as gpiochip0 or a /dev/gpiochipN path", chip)
	}
	offset, err := strconv.Atoi(ref)
	switch {
	case err == nil && (offset < 0 || offset > maxLineOffset):
		return nil, ref, fmt.Errorf("line offset %d out of range", offset)
	case err == nil && chip == "":
		return nil, ref, fmt.Errorf("line %d: a line given by offset needs the chip", offset)
	case err != nil && chip == "":
		// A line name: search every chip.
		c, o, ferr := gpiocdev.FindLine(ref)
		if ferr != nil {
			return nil, ref, fmt.Errorf("line named %q: %w", ref, ferr)
		}
		chip, offset = c, o
	case err != nil:
		c, cerr := gpiocdev.NewChip(chip, gpiocdev.WithConsumer(consumer))
		if cerr != nil {
			return nil, chip + ":" + ref, fmt.Errorf("chip %s: %w", chip, cerr)
		}
		o, ferr := c.FindLine(ref)
		c.Close()
		if ferr != nil {
			return nil, chip + ":" + ref, fmt.Errorf("line named %q on %s: %w", ref, chip, ferr)
		}
		offset = o
	}
	label := chip + ":" + strconv.Itoa(offset)
	if err != nil {
		label += " (" + ref + ")"
	}
	l, err := gpiocdev.RequestLine(chip, offset, opts...)
	if err != nil {
		return nil, label, fmt.Errorf("request %s: %w", label, err)
	}
	return cdevLine{l}, label, nil
}

// openOutputs makes the fitted outputs of cfg: a character-device line where
// one is configured, falling back to the output's sysfs file when the line
// cannot be requested and a file is configured too; the sysfs file where
// only that is configured.
func openOutputs(cfg GPIOConfig, log *slog.Logger) ([]*output, error) {
	consumer := cfg.Consumer
	if consumer == "" {
		consumer = DefaultConsumer
	}
	var outs []*output
	for _, o := range []struct{ name, line, path string }{
		{"green", cfg.GreenLine, cfg.Green},
		{"red", cfg.RedLine, cfg.Red},
		{"buzzer", cfg.BuzzerLine, cfg.Buzzer},
	} {
		if o.line != "" {
			l, label, err := requestLine(cfg.Chip, o.line, cfg.ActiveLow, consumer)
			if err == nil {
				outs = append(outs, &output{name: o.name, path: label, line: l})
				continue
			}
			if o.path == "" {
				closeLines(outs)
				return nil, fmt.Errorf("%w: %s output: %w", ErrInvalidConfig, o.name, err)
			}
			log.Warn("feedback GPIO line unavailable; using the fallback file",
				slog.String("output", o.name), slog.String("line", label), slog.String("path", o.path), slog.Any("err", err))
		}
		if o.path != "" {
			outs = append(outs, &output{name: o.name, path: o.path, on: onValue(o.path), off: []byte("0\n")})
		}
	}
	return outs, nil
}

// closeLines releases the character-device lines among outs.
func closeLines(outs []*output) error {
	var errs []error
	for _, o := range outs {
		if o.line != nil {
			if err := o.line.close(); err != nil && !errors.Is(err, gpiocdev.ErrClosed) {
				errs = append(errs, fmt.Errorf("feedback: %s line: %w", o.name, err))
			}
		}
	}
	return errors.Join(errs...)
}
