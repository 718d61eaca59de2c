package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/queue"
)

func TestSampleConfigParses(t *testing.T) {
	c, err := loadConfig(filepath.Join("..", "..", "testdata", "validator", "validator.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceID != "bus-0417-front" || len(c.Scanners) != 2 || time.Duration(c.Policy.PassbackWindow) != 5*time.Second ||
		c.Scanners[0].Baud != 9600 || c.MQTT.Broker == "" || c.Queue.MaxRecords != 1000000 {
		t.Errorf("parsed %+v", c)
	}
	// The values the sample writes out are the defaults.
	if c.Queue.MaxRecords != queue.DefaultMaxRecords || c.Queue.MaxFileSize != queue.DefaultMaxFileSize ||
		time.Duration(c.Policy.MaxAge) != paycode.DefaultMaxAge || time.Duration(c.Policy.Skew) != paycode.DefaultSkew ||
		time.Duration(c.Policy.PassbackWindow) != agent.DefaultPassbackWindow || c.Policy.RiskCap != agent.DefaultRiskCap {
		t.Errorf("the sample's queue or policy values are not the defaults: %+v %+v", c.Queue, c.Policy)
	}
	if got := c.path("keyring.json"); got != filepath.Join("..", "..", "testdata", "validator", "keyring.json") {
		t.Errorf("relative path resolved to %q", got)
	}
}

// TestPolicyBounds: a max_age or skew of hours (a typo for seconds) is
// refused: the validator let riders through on codes the server, which
// re-verifies with its own 2 minutes, then charged nothing.
func TestPolicyBounds(t *testing.T) {
	base := "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n[policy]\n"
	for policy, ok := range map[string]bool{`max_age = "2h"`: false, `skew = "1h"`: false, `max_age = "10m"`: true, `max_age = "120s"`: true} {
		_, err := parseConfig([]byte(base+policy+"\n"), "/etc/farego")
		if (err == nil) != ok {
			t.Errorf("%s: %v", policy, err)
		}
	}
}

// TestConfigTyposRefused: settings a technician can get wrong without a
// word are config errors naming the setting: an [update] server without
// [mqtt] (the device never updated), a negative risk cap, passback window
// or clock offset other than -1 (a typo turned the control off), a queue file size out of
// range (refused by the queue in its own Go names, exit 1).
func TestConfigTyposRefused(t *testing.T) {
	base := "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n"
	for extra, want := range map[string]string{
		"[update]\nserver = \"http://127.0.0.1:18080\"\n": "update.server needs [mqtt]",
		"[policy]\nrisk_cap = -5\n":                       "policy.risk_cap -5",
		"[policy]\npassback_window = \"-3s\"\n":           "policy.passback_window -3s",
		"[queue]\nmax_file_size = 10\n":                   "queue.max_file_size 10 is below the minimum",
		// Names a tap record cuts at 32 bytes (two doors alike in their
		// first 32 read as one) or the server refuses (never charged).
		"[[scanner]]\nname = \"validator-bus-0417-door-scanner-rear\"\npath = \"/dev/x\"\n": "scanner 2: scanner name is 36 bytes, limit 32",
		"[[scanner]]\nname = \"rear\\tdoor\"\npath = \"/dev/x\"\n":                          "scanner 2: scanner name has control characters",
		"[policy]\nmax_clock_offset = \"-30s\"\n":                                           "policy.max_clock_offset -30s",
		"[policy]\nskew = \"-1s\"\n":                                                        "policy.skew -1s must not be negative",
		"[queue]\nmax_records = -2\n":                                                       "queue.max_records -2 must not be negative",
		"[policy]\nrisk_cap = -1\npassback_window = \"-1s\"\nmax_clock_offset = \"-1s\"\n":  "",
	} {
		_, err := parseConfig([]byte(base+extra), "/etc/farego")
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", extra, err)
		case want != "" && (!errors.Is(err, errConfig) || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: %v; want a config error saying %q", extra, err, want)
		}
	}
}

// TestConfigMinClock: policy.min_clock is a TOML date or date-time, or the
// same quoted; a date alone is midnight UTC. A quoted date was refused in
// Go's layout terms.
func TestConfigMinClock(t *testing.T) {
	base := "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n[policy]\n"
	want := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, v := range []string{`2027-01-01`, `"2027-01-01"`, `2027-01-01T00:00:00Z`, `"2027-01-01T00:00:00Z"`, `2027-01-01T00:00:00`,
		`2027-01-01T01:00:00+01:00`} {
		c, err := parseConfig([]byte(base+"min_clock = "+v+"\n"), "/etc/farego")
		if err != nil || !c.Policy.MinClock.Equal(want) {
			t.Errorf("min_clock = %s: %v, %v; want %v", v, c.Policy.MinClock, err, want)
		}
	}
	for _, v := range []string{`"next year"`, `"2027-13-01"`, `5`} {
		_, err := parseConfig([]byte(base+"min_clock = "+v+"\n"), "/etc/farego")
		if err == nil || !strings.Contains(err.Error(), "want a date like 2027-01-01") {
			t.Errorf("min_clock = %s: %v; want a config error asking for a date", v, err)
		}
	}
}

// TestConfigZeroPolicy: a max_age or skew written as "0s" is not one left
// out. Both became the defaults (120 s and 30 s) without a word: a
// technician who wrote skew = "0s" for no tolerance got 30 s.
func TestConfigZeroPolicy(t *testing.T) {
	base := "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n[policy]\n"
	if _, err := parseConfig([]byte(base+"max_age = \"0s\"\n"), "/etc/farego"); !errors.Is(err, errConfig) ||
		!strings.Contains(err.Error(), "policy.max_age 0s would accept no code") {
		t.Errorf("max_age = \"0s\": %v; want a config error", err)
	}
	for extra, want := range map[string]time.Duration{
		"":                 0,  // paycode's default, 30 s
		"skew = \"0s\"\n":  -1, // none
		"skew = \"10s\"\n": 10 * time.Second,
	} {
		c, err := parseConfig([]byte(base+extra), "/etc/farego")
		if err != nil {
			t.Fatalf("%q: %v", extra, err)
		}
		if got := c.agentConfig().Policy.Skew; (got < 0) != (want < 0) || (want >= 0 && got != want) {
			t.Errorf("%q: the agent's skew is %v, want %v", extra, got, want)
		}
	}
}

func FuzzConfig(f *testing.F) {
	sample, err := os.ReadFile(filepath.Join("..", "..", "testdata", "validator", "validator.toml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sample)
	f.Add([]byte("device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n"))
	f.Add([]byte("[policy]\nmax_age = \"-1s\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig(data, "/etc/farego")
		if err != nil {
			if !errors.Is(err, errConfig) {
				t.Fatalf("error not marked as a config error: %v", err)
			}
			return
		}
		// What parses is complete enough to start from.
		if c.DeviceID == "" || c.Route == "" || c.DataDir == "" || len(c.Scanners) == 0 {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
	})
}

// TestConfigWrongTypeSaysHowToWriteIt: the mistakes a technician makes in
// TOML's types are refused saying how to write the value, not in the
// decoder's Go types alone ("TOML value has type int64; destination has
// type string" for a route number written without quotes).
func TestConfigWrongTypeSaysHowToWriteIt(t *testing.T) {
	scanner := "[[scanner]]\nname = \"a\"\npath = \"-\"\n"
	for cfg, want := range map[string]string{
		"device_id = \"d\"\nroute = 42\ndata_dir = \"x\"\n" + scanner:                                        `route is text: write it in quotes, route = "…"`,
		"device_id = \"d\"\nroute = \"1\"\nvehicle = 7\ndata_dir = \"x\"\n" + scanner:                        `vehicle is text: write it in quotes, vehicle = "…"`,
		"device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[scanner]\nname = \"a\"\npath = \"-\"\n":        "write [[scanner]], with two brackets",
		"device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n" + scanner + "baud = \"9600\"\n":               "scanner.baud is a number: write it without quotes",
		"device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n" + scanner + "[feedback]\nconsole = \"yes\"\n": "feedback.console is true or false, without quotes",
	} {
		_, err := parseConfig([]byte(cfg), "/etc/farego")
		if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want a config error saying %q", cfg, err, want)
		}
	}
}
