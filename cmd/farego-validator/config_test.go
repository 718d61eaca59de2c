package main

import (
	"errors"
	"os"
	"path/filepath"
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
