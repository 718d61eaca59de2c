package feedback

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

const waitTimeout = 20 * time.Second

// pins is a fake sysfs: one plain value file per output in t.TempDir().
type pins struct {
	dir                string
	green, red, buzzer string
}

func newPins(tb testing.TB) *pins {
	tb.Helper()
	dir := tb.TempDir()
	p := &pins{
		dir:    dir,
		green:  filepath.Join(dir, "green"),
		red:    filepath.Join(dir, "red"),
		buzzer: filepath.Join(dir, "buzzer"),
	}
	for _, f := range []string{p.green, p.red, p.buzzer} {
		if err := os.WriteFile(f, []byte("junk\n"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return p
}

// state reads the three files as "green red buzzer", e.g. "1 0 0".
func (p *pins) state(tb testing.TB) string {
	tb.Helper()
	var s []string
	for _, f := range []string{p.green, p.red, p.buzzer} {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		s = append(s, strings.TrimSpace(string(b)))
	}
	return strings.Join(s, " ")
}

func (p *pins) check(tb testing.TB, what, want string) {
	tb.Helper()
	if got := p.state(tb); got != want {
		tb.Errorf("%s: green red buzzer = %q, want %q", what, got, want)
	}
}

// newGPIO makes a GPIO on p and closes it at the end of the test.
func newGPIO(tb testing.TB, p *pins, cfg GPIOConfig, log *slog.Logger) *GPIO {
	tb.Helper()
	cfg.Green, cfg.Red, cfg.Buzzer = p.green, p.red, p.buzzer
	g, err := NewGPIO(cfg, log)
	if err != nil {
		tb.Fatalf("NewGPIO: %v", err)
	}
	tb.Cleanup(func() { g.Close() })
	return g
}

func waitPattern(tb testing.TB, g *GPIO) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := g.Wait(ctx); err != nil {
		tb.Fatalf("pattern did not end: %v", err)
	}
}

// describe summarises a pattern: how long each light is on in total, and how
// many separate beeps it makes.
func describe(p Pattern) (green, red time.Duration, beeps int) {
	prevBuzz := false
	for _, s := range p {
		if s.Green {
			green += s.Hold
		}
		if s.Red {
			red += s.Hold
		}
		if s.Buzzer && !prevBuzz {
			beeps++
		}
		prevBuzz = s.Buzzer
	}
	return green, red, beeps
}

func TestGPIODefaultPatterns(t *testing.T) {
	tests := []struct {
		name       string
		p          Pattern
		green, red time.Duration
		beeps      int
		end        Step
	}{
		{"accept", defaultAccept, 800 * time.Millisecond, 0, 1, Step{}},
		{"reject", defaultReject, 0, time.Second, 2, Step{}},
		{"out of service", defaultOutOfService, 0, 0, 0, Step{Red: true}},
	}
	for _, tt := range tests {
		green, red, beeps := describe(tt.p)
		if green != tt.green || red != tt.red || beeps != tt.beeps || tt.p[len(tt.p)-1] != tt.end {
			t.Errorf("%s: green %v, red %v, %d beeps, ends %+v; want %v, %v, %d, %+v",
				tt.name, green, red, beeps, tt.p[len(tt.p)-1], tt.green, tt.red, tt.beeps, tt.end)
		}
	}

	// Played on files in a synctest bubble: the patterns' timers run on the
	// bubble's clock, so the test takes no wall-clock time and can check
	// that each pattern lasts exactly as long as it says.
	synctest.Test(t, func(t *testing.T) {
		p := newPins(t)
		g := newGPIO(t, p, GPIOConfig{}, nil)
		ctx := context.Background()
		p.check(t, "after NewGPIO", "0 0 0")
		for _, step := range []struct {
			name  string
			play  func() error
			lasts time.Duration
			end   string
		}{
			{"accept", func() error { return g.Accepted(ctx, Accept{Fare: 250}) }, 800 * time.Millisecond, "0 0 0"},
			{"reject", func() error { return g.Rejected(ctx, Reject{Reason: "denied"}) }, time.Second, "0 0 0"},
			{"out of service", func() error { return g.OutOfService(ctx, "queue full") }, 0, "0 1 0"},
		} {
			start := time.Now()
			if err := step.play(); err != nil {
				t.Fatal(err)
			}
			waitPattern(t, g)
			if took := time.Since(start); took != step.lasts {
				t.Errorf("%s played for %v, want %v", step.name, took, step.lasts)
			}
			p.check(t, step.name+", at the end", step.end)
		}
	})
}

// TestGPIOReplace: the first step is written before the call returns, a new
// event cuts the playing pattern short at once, and none of the old
// pattern's writes come after the new one's. Patterns that must be observed
// while playing hold for an hour, so nothing here depends on timing.
func TestGPIOReplace(t *testing.T) {
	p := newPins(t)
	cfg := GPIOConfig{
		Accept:       Pattern{{Green: true, Buzzer: true, Hold: time.Hour}, {Green: true}},
		Reject:       Pattern{{Red: true, Hold: time.Hour}, {}},
		OutOfService: Pattern{{Red: true, Hold: time.Millisecond}, {Red: true, Buzzer: true, Hold: time.Millisecond}, {Red: true}},
	}
	g := newGPIO(t, p, cfg, nil)
	ctx := context.Background()

	if err := g.Accepted(ctx, Accept{}); err != nil {
		t.Fatal(err)
	}
	p.check(t, "accept's first step, on return", "1 0 1")
	if err := g.Rejected(ctx, Reject{}); err != nil {
		t.Fatal(err)
	}
	p.check(t, "reject's first step replaces accept at once", "0 1 0")
	if err := g.OutOfService(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	waitPattern(t, g)
	p.check(t, "a short pattern's last step", "0 1 0")

	// Many events in a row from several goroutines: the lights end in the
	// last pattern's final state whatever the interleaving.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				g.Accepted(ctx, Accept{})
				g.OutOfService(ctx, "x")
			}
		})
	}
	wg.Wait()
	g.OutOfService(ctx, "x")
	waitPattern(t, g)
	p.check(t, "after a storm of events", "0 1 0")

	// Close stops an hour-long pattern and switches everything off.
	g.Accepted(ctx, Accept{})
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	p.check(t, "after Close", "0 0 0")
	if err := g.Accepted(ctx, Accept{}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: got %v, want ErrClosed", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := g.Wait(ctx); err != nil {
		t.Errorf("Wait after Close: %v", err)
	}
}

func TestGPIOPartialOutputs(t *testing.T) {
	p := newPins(t)
	g, err := NewGPIO(GPIOConfig{Red: p.red}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.Accepted(context.Background(), Accept{})
	waitPattern(t, g)
	p.check(t, "only red fitted", "junk 0 junk")
}

func TestGPIOBrightness(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "green")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	brightness := filepath.Join(dir, "brightness")
	os.WriteFile(brightness, []byte("0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "max_brightness"), []byte("255\n"), 0o444)
	g, err := NewGPIO(GPIOConfig{Green: brightness, Accept: Pattern{{Green: true}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.Accepted(context.Background(), Accept{})
	if b, _ := os.ReadFile(brightness); string(b) != "255\n" {
		t.Errorf("brightness: got %q, want max_brightness 255", b)
	}
}

// TestGPIOWriteFailure breaks an output under a running GPIO: the error is
// returned, logged once, and the recovery logged once.
func TestGPIOWriteFailure(t *testing.T) {
	p := newPins(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	g := newGPIO(t, p, GPIOConfig{Accept: Pattern{{Green: true}}, Reject: Pattern{{Red: true}}}, log)
	ctx := context.Background()

	// A directory where the value file was: opening it for writing fails.
	os.Remove(p.green)
	if err := os.Mkdir(p.green, 0o755); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := g.Accepted(ctx, Accept{}); err == nil || !strings.Contains(err.Error(), "green output") {
			t.Fatalf("got %v, want the green output's error", err)
		}
	}
	if b, _ := os.ReadFile(p.red); string(b) != "0\n" {
		t.Errorf("red not written despite green failing: %q", b)
	}
	os.Remove(p.green)
	os.WriteFile(p.green, nil, 0o644)
	if err := g.Rejected(ctx, Reject{}); err != nil {
		t.Fatal(err)
	}
	p.check(t, "after recovery", "0 1 0")
	if got := strings.Count(logs.String(), "feedback output failing"); got != 1 {
		t.Errorf("failure logged %d times, want 1:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), `msg="feedback output recovered" output=green failures=3`) {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

func TestNewGPIOInvalid(t *testing.T) {
	p := newPins(t)
	tests := []struct {
		name string
		cfg  GPIOConfig
	}{
		{"no outputs", GPIOConfig{}},
		{"missing file", GPIOConfig{Green: filepath.Join(p.dir, "nope")}},
		{"negative hold", GPIOConfig{Green: p.green, Reject: Pattern{{Hold: -time.Second}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewGPIO(tt.cfg, nil); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("got %v, want ErrInvalidConfig", err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(p.dir, "nope")); !os.IsNotExist(err) {
		t.Errorf("NewGPIO created a missing output file: %v", err)
	}
}
