package feedback

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/driver/internal/hwtest"
)

// TestChardevGPIOSim drives real character-device lines of a gpio-sim chip
// and reads back what the pins do.
func TestChardevGPIOSim(t *testing.T) {
	sim := hwtest.GPIOSim(t, "farego-green", "farego-red", "farego-buzzer", "spare")
	ctx := context.Background()
	state := func() string {
		return strings.Join([]string{
			string('0' + rune(sim.Value(t, 0))), string('0' + rune(sim.Value(t, 1))), string('0' + rune(sim.Value(t, 2))),
		}, " ")
	}
	check := func(what, want string) {
		t.Helper()
		if got := state(); got != want {
			t.Errorf("%s: green red buzzer = %q, want %q", what, got, want)
		}
	}

	// By offset on a named chip, with hour-long holds so nothing depends on timing.
	cfg := GPIOConfig{
		LineConfig:   LineConfig{Chip: sim.Chip, GreenLine: "0", RedLine: "1", BuzzerLine: "2"},
		Accept:       Pattern{{Green: true, Buzzer: true, Hold: time.Hour}, {}},
		Reject:       Pattern{{Red: true, Buzzer: true, Hold: time.Millisecond}, {Red: true}},
		OutOfService: defaultOutOfService,
	}
	g, err := NewGPIO(cfg, nil)
	if err != nil {
		t.Fatalf("NewGPIO: %v", err)
	}
	check("after NewGPIO", "0 0 0")
	if err := g.Accepted(ctx, Accept{}); err != nil {
		t.Fatal(err)
	}
	check("accept's first step, on return", "1 0 1")

	// While requested, nobody else can drive the lines.
	if _, err := NewGPIO(GPIOConfig{LineConfig: LineConfig{Chip: sim.Chip, GreenLine: "0"}}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("second request of a held line: got %v, want ErrInvalidConfig (busy)", err)
	}

	if err := g.Rejected(ctx, Reject{}); err != nil {
		t.Fatal(err)
	}
	waitPattern(t, g)
	check("reject's last step", "0 1 0")
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check("after Close", "0 0 0")

	// By name, searching every chip, active low, default patterns.
	g, err = NewGPIO(GPIOConfig{LineConfig: LineConfig{
		GreenLine: sim.Names[0], RedLine: sim.Names[1], BuzzerLine: sim.Names[2], ActiveLow: true,
	}}, nil)
	if err != nil {
		t.Fatalf("NewGPIO by name (released lines must be free again): %v", err)
	}
	defer g.Close()
	check("active low, all off", "1 1 1")
	g.OutOfService(ctx, "x")
	waitPattern(t, g)
	check("active low, out of service", "1 0 1")
	g.Accepted(ctx, Accept{})
	waitPattern(t, g)
	check("active low, after the default accept pattern", "1 1 1")
}

// TestChardevFallback: a line that cannot be requested (here: no such chip)
// falls back to the output's file when one is configured, and logs it.
func TestChardevFallback(t *testing.T) {
	p := newPins(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	noChip := "farego-no-such-chip"
	g, err := NewGPIO(GPIOConfig{
		LineConfig: LineConfig{Chip: noChip, GreenLine: "17", RedLine: "27"},
		Green:      p.green, Red: p.red, Buzzer: p.buzzer,
		Accept: Pattern{{Green: true, Buzzer: true}},
	}, log)
	if err != nil {
		t.Fatalf("NewGPIO: %v", err)
	}
	defer g.Close()
	p.check(t, "after NewGPIO", "0 0 0")
	g.Accepted(context.Background(), Accept{})
	p.check(t, "accept on the fallback files", "1 0 1")
	if got := strings.Count(logs.String(), "feedback GPIO line unavailable; using the fallback file"); got != 2 {
		t.Errorf("fallback logged %d times, want 2 (green, red):\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "output=green line="+noChip+":17") {
		t.Errorf("log does not name the line:\n%s", logs.String())
	}
}

func TestChardevInvalid(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "gpiochip0")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  LineConfig
		want string
	}{
		{"offset without chip", LineConfig{GreenLine: "17"}, "needs the chip"},
		{"negative offset", LineConfig{Chip: "gpiochip0", RedLine: "-1"}, "out of range"},
		{"huge offset", LineConfig{Chip: "gpiochip0", RedLine: "65536"}, "out of range"},
		{"chip outside /dev", LineConfig{Chip: plain, BuzzerLine: "3"}, "want a name such as gpiochip0"},
		{"no such chip", LineConfig{Chip: "farego-no-such-chip", BuzzerLine: "3"}, "farego-no-such-chip"},
		{"not a GPIO chip", LineConfig{Chip: "/dev/null", GreenLine: "3"}, "not a character device"},
		{"name on a device that is no chip", LineConfig{Chip: "null", GreenLine: "LED"}, "not a character device"},
		{"unknown name", LineConfig{GreenLine: "farego-no-such-line"}, "farego-no-such-line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewGPIO(GPIOConfig{LineConfig: tt.cfg}, nil)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}
