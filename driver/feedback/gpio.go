package feedback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Step sets every fitted output and holds that state for Hold.
type Step struct {
	Green, Red, Buzzer bool
	Hold               time.Duration
}

// Pattern is a sequence of steps played in order. When the last step's Hold
// is over nothing changes any more: a pattern that should end dark ends with
// an all-off step.
type Pattern []Step

// The default patterns.
var (
	// Green for 800 ms with one short beep.
	defaultAccept = Pattern{
		{Green: true, Buzzer: true, Hold: 100 * time.Millisecond},
		{Green: true, Hold: 700 * time.Millisecond},
		{},
	}
	// Red for a second with two short beeps.
	defaultReject = Pattern{
		{Red: true, Buzzer: true, Hold: 100 * time.Millisecond},
		{Red: true, Hold: 100 * time.Millisecond},
		{Red: true, Buzzer: true, Hold: 100 * time.Millisecond},
		{Red: true, Hold: 700 * time.Millisecond},
		{},
	}
	// Red, steady, until the next event.
	defaultOutOfService = Pattern{{Red: true}}
)

// GPIOConfig configures a [GPIO]. At least one output (a line or a path) is
// required.
type GPIOConfig struct {
	// Chip, GreenLine, RedLine, BuzzerLine, ActiveLow and Consumer select
	// GPIO lines on the character device (see [LineConfig]); they are the
	// preferred way. A line's output path below, if also given, is used
	// only when the line cannot be requested.
	LineConfig

	// Green, Red and Buzzer are the sysfs files that switch each output,
	// for example /sys/class/gpio/gpio17/value or
	// /sys/class/leds/green/brightness. Empty means not fitted. The files
	// must exist (export the GPIO and set its direction to "out" first).
	Green, Red, Buzzer string

	// Accept, Reject and OutOfService are the patterns played for each
	// event. Empty means the default: accept is green for 800 ms with one
	// 100 ms beep; reject is red for a second with two 100 ms beeps; out of
	// service is steady red until the next event.
	Accept, Reject, OutOfService Pattern
}

// output is one sysfs value file or one requested character-device line.
type output struct {
	name     string // green, red, buzzer
	path     string // the file, or chip:offset for a line (for logs)
	on, off  []byte
	line     lineSetter // not nil: a chardev line, path is only a label
	failures int        // consecutive failed writes, for logging once
}

// GPIO drives a green light, a red light and a buzzer through GPIO
// character-device lines or Linux sysfs files, playing a timed [Pattern] for
// each event.
//
// Calls do not block for the pattern: the first step is written before the
// call returns (so the light is on, and a failed write is reported, when
// Accepted returns), the rest plays in a goroutine. A new event stops the
// pattern still playing and starts its own. A failing output is logged once,
// and its recovery once.
type GPIO struct {
	log          *slog.Logger
	outs         []*output
	accept       Pattern
	reject       Pattern
	outOfService Pattern

	mu     sync.Mutex
	stop   chan struct{} // closed to stop the playing pattern; nil if none
	done   chan struct{} // closed when the playing pattern has stopped
	closed bool
}

var _ Feedback = (*GPIO)(nil)

// NewGPIO checks cfg, switches every output off and returns the feedback.
// log may be nil.
func NewGPIO(cfg GPIOConfig, log *slog.Logger) (*GPIO, error) {
	g := &GPIO{log: orDiscard(log)}
	outs, err := openOutputs(cfg, g.log)
	if err != nil {
		return nil, err
	}
	g.outs = outs
	if len(g.outs) == 0 {
		return nil, fmt.Errorf("%w: no green, red or buzzer line or path", ErrInvalidConfig)
	}
	fail := func(err error) (*GPIO, error) {
		closeLines(g.outs)
		return nil, err
	}
	for _, p := range []struct {
		name string
		p    *Pattern
		cfg  Pattern
		def  Pattern
	}{
		{"accept", &g.accept, cfg.Accept, defaultAccept},
		{"reject", &g.reject, cfg.Reject, defaultReject},
		{"out of service", &g.outOfService, cfg.OutOfService, defaultOutOfService},
	} {
		*p.p = slices.Clone(p.cfg)
		if len(p.cfg) == 0 {
			*p.p = p.def
		}
		for i, s := range *p.p {
			if s.Hold < 0 {
				return fail(fmt.Errorf("%w: %s pattern step %d: negative hold %v", ErrInvalidConfig, p.name, i, s.Hold))
			}
		}
	}
	for _, o := range g.outs {
		if err := o.write(false); err != nil {
			return fail(fmt.Errorf("%w: %s output: %w", ErrInvalidConfig, o.name, err))
		}
	}
	return g, nil
}

// onValue is what switches the output at path on: "1", or for a LED class
// brightness file the LED's max_brightness (1 would be dim on a PWM LED).
func onValue(path string) []byte {
	if filepath.Base(path) == "brightness" {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(path), "max_brightness"))
		if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && n > 0 {
			return []byte(strconv.Itoa(n) + "\n")
		}
	}
	return []byte("1\n")
}

// Accepted implements [Feedback]: it starts the accept pattern. ctx is not
// used; the pattern plays on after the call.
func (g *GPIO) Accepted(_ context.Context, _ Accept) error {
	return g.play(g.accept)
}

// Rejected implements [Feedback]: it starts the reject pattern.
func (g *GPIO) Rejected(_ context.Context, _ Reject) error {
	return g.play(g.reject)
}

// OutOfService implements [Feedback]: it starts the out-of-service pattern.
func (g *GPIO) OutOfService(_ context.Context, _ string) error {
	return g.play(g.outOfService)
}

// Wait blocks until the pattern playing when it was called has ended (or
// was replaced by a new event), or until ctx is done.
func (g *GPIO) Wait(ctx context.Context) error {
	g.mu.Lock()
	done := g.done
	g.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the playing pattern, switches every output off and releases
// the character-device lines. Later calls return [ErrClosed]; Close itself
// can be called again.
func (g *GPIO) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	g.stopLocked()
	return errors.Join(g.apply(Step{}), closeLines(g.outs))
}

// play stops the current pattern, writes the first step of p and plays the
// rest in a goroutine.
func (g *GPIO) play(p Pattern) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	// Wait for the old pattern to stop, so none of its writes can come after
	// ours. It only ever waits on a timer or writes a few bytes, so this is
	// quick.
	g.stopLocked()
	err := g.apply(p[0])
	if len(p) > 1 {
		stop, done := make(chan struct{}), make(chan struct{})
		g.stop, g.done = stop, done
		go g.run(p, stop, done)
	}
	return err
}

// run plays p from its second step until the end or until stop is closed.
func (g *GPIO) run(p Pattern, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTimer(p[0].Hold)
	defer t.Stop()
	for _, s := range p[1:] {
		select {
		case <-t.C:
		case <-stop:
			return
		}
		g.apply(s) // errors are logged by apply
		t.Reset(s.Hold)
	}
}

// stopLocked stops the playing pattern, if any, and waits for it.
func (g *GPIO) stopLocked() {
	if g.stop == nil {
		return
	}
	close(g.stop)
	<-g.done
	g.stop, g.done = nil, nil
}

// apply writes every fitted output for s. Only one goroutine applies at a
// time: the caller of play (holding mu, with no pattern running) or the
// pattern's goroutine.
func (g *GPIO) apply(s Step) error {
	var errs []error
	for _, o := range g.outs {
		var on bool
		switch o.name {
		case "green":
			on = s.Green
		case "red":
			on = s.Red
		case "buzzer":
			on = s.Buzzer
		}
		err := o.write(on)
		switch {
		case err != nil && o.failures == 0:
			g.log.Warn("feedback output failing", slog.String("output", o.name), slog.String("path", o.path), slog.Any("err", err))
		case err == nil && o.failures > 0:
			g.log.Info("feedback output recovered", slog.String("output", o.name), slog.Int("failures", o.failures))
		}
		if err != nil {
			o.failures++
			errs = append(errs, fmt.Errorf("feedback: %s output: %w", o.name, err))
		} else {
			o.failures = 0
		}
	}
	return errors.Join(errs...)
}

// write switches the output on or off.
func (o *output) write(on bool) error {
	if o.line != nil {
		return o.line.set(on)
	}
	v := o.off
	if on {
		v = o.on
	}
	// O_TRUNC is what a shell's "echo 1 > value" does; sysfs ignores it,
	// plain files (tests) need it. No O_CREATE: a wrong path must fail.
	f, err := os.OpenFile(o.path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
