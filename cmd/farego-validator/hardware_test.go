package main

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/ridertext"
	"github.com/farego/farego/cmd/internal/sdnotify"
	"github.com/farego/farego/driver/scanner"
)

const hwBase = "device_id = \"d1\"\nroute = \"1\"\ndata_dir = \"x\"\n"

func TestHardwareConfig(t *testing.T) {
	c, err := parseConfig([]byte(hwBase+`language = "zh-CN"
[[scanner]]
name = "front"
type = "evdev"
path = "/dev/input/by-id/usb-Newland_FM430-event-kbd"
[[scanner]]
name = "rear"
path = "/dev/scanner-rear"
[feedback]
gpio_chip = "gpiochip0"
gpio_green_line = 17
gpio_red_line = "LED_RED"
gpio_active_low = true
gpio_buzzer = "/sys/class/gpio/gpio22/value"
`), "/etc/farego")
	if err != nil {
		t.Fatal(err)
	}
	if c.language() != ridertext.SimplifiedChinese {
		t.Errorf("language %q", c.language())
	}
	g, fitted := gpioConfig(c)
	if !fitted || g.Chip != "gpiochip0" || g.GreenLine != "17" || g.RedLine != "LED_RED" || g.BuzzerLine != "" ||
		!g.ActiveLow || g.Buzzer != "/sys/class/gpio/gpio22/value" {
		t.Errorf("gpio config %+v", g)
	}
	srcs, err := buildSources(c, slog.New(slog.DiscardHandler), strings.NewReader(""), newScannerWatch(&sdnotify.Monitor{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := srcs[0].(*scanner.Keyboard); !ok {
		t.Errorf("evdev scanner built as %T", srcs[0])
	}
	if _, ok := srcs[1].(*scanner.Serial); !ok {
		t.Errorf("default scanner built as %T", srcs[1])
	}

	c, err = parseConfig([]byte(hwBase+"[[scanner]]\nname = \"a\"\npath = \"-\"\n"), "/etc/farego")
	if err != nil {
		t.Fatal(err)
	}
	if _, fitted := gpioConfig(c); fitted || c.language() != ridertext.English {
		t.Errorf("defaults: gpio fitted %v, language %q", fitted, c.language())
	}
}

func TestHardwareConfigInvalid(t *testing.T) {
	scan := "[[scanner]]\nname = \"a\"\npath = \"/dev/input/event3\"\n"
	tests := []struct{ name, body, want string }{
		{"language", `language = "fr"` + "\n" + scan, "language"},
		{"scanner type", scan + "type = \"bluetooth\"\n", "type must be serial or evdev"},
		{"evdev stdin", "[[scanner]]\nname = \"a\"\npath = \"-\"\ntype = \"evdev\"\n", "needs a device path"},
		{"evdev baud", scan + "type = \"evdev\"\nbaud = 9600\n", "baud does not apply"},
		{"max_len below a code", scan + "max_len = 200\n", "shorter than a payment code (295 characters)"},
		{"negative max_len", scan + "max_len = -1\n", `scanner "a": max_len -1: want a length`},
		{"baud typo", scan + "baud = 9601\n", `scanner "a": baud 9601 is not a rate a serial port takes`},
		{"evdev lf", scan + "type = \"evdev\"\nterminator = \"lf\"\n", "ends frames with Enter"},
		{"offset without chip", scan + "[feedback]\ngpio_green_line = 17\n", "set feedback.gpio_chip"},
		{"chip without lines", scan + "[feedback]\ngpio_chip = \"gpiochip0\"\n", "no gpio_green_line"},
		{"chip path", scan + "[feedback]\ngpio_chip = \"/tmp/chip\"\ngpio_red_line = 3\n", "gpio_chip"},
		{"negative offset", scan + "[feedback]\ngpio_chip = \"gpiochip0\"\ngpio_red_line = -1\n", "out of range"},
		{"name with space", scan + "[feedback]\ngpio_red_line = \"LED RED\"\n", "without spaces"},
		{"line as float", scan + "[feedback]\ngpio_red_line = 1.5\n", "want an offset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig([]byte(hwBase+tt.body), "/etc/farego")
			if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a config error mentioning %q", err, tt.want)
			}
		})
	}
}

// TestRunLanguage: a validator process set to Simplified Chinese shows the
// riders' texts in it on the console; the reasons stay the same.
func TestRunLanguage(t *testing.T) {
	d := newDevice(t, "", "")
	cfg, _ := os.ReadFile(d.cfgPath)
	must(t, os.WriteFile(d.cfgPath, append([]byte("language = \"zh-Hans\"\n"), cfg...), 0o644))
	d.start()
	now := time.Now()
	r := d.issuer.Rider(t, 4001, now)
	code := r.Code(t, now)
	expectLine(t, d.scan(code), "ACCEPTED  2.50 EUR  支付成功")
	expectLine(t, d.scan(code), "ACCEPTED  0.00 EUR  已支付")
	expectLine(t, d.scan(r.Code(t, now.Add(-10*time.Minute))), "REJECTED  乘车码已过期，请刷新 (code_expired)")
	d.stop()
}
