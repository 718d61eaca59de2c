package uplink

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/sync/wire"
)

func TestConfigValidation(t *testing.T) {
	f := newFixture(t, nil)
	good := f.cfg
	for _, tc := range []struct {
		name string
		set  func(*Config)
	}{
		{"no broker", func(c *Config) { c.Brokers = nil }},
		{"broker without scheme", func(c *Config) { c.Brokers = []string{"127.0.0.1:1883"} }},
		{"websocket broker", func(c *Config) { c.Brokers = []string{"ws://127.0.0.1:80"} }},
		{"broker without port", func(c *Config) { c.Brokers = []string{"tcp://broker.example"} }},
		{"bad URL", func(c *Config) { c.Brokers = []string{"tcp://[::1"} }},
		{"credentials in the URL", func(c *Config) { c.Brokers = []string{"tcp://bus:secret@127.0.0.1:1883"} }},
		{"no device id", func(c *Config) { c.DeviceID = "" }},
		{"device id with a slash", func(c *Config) { c.DeviceID = "bus/1" }},
		{"device id with a wildcard", func(c *Config) { c.DeviceID = "bus+" }},
		{"no device key", func(c *Config) { c.DeviceKey = nil }},
		{"short fleet key", func(c *Config) { c.FleetPublicKey = c.FleetPublicKey[:16] }},
		// The fleet key authenticates the acks that delete queued taps: a
		// key of small order (here the identity) would take a forged ack
		// of S = 0 under some Ed25519 implementations.
		{"fleet key of small order", func(c *Config) {
			c.FleetPublicKey = append([]byte{1}, make([]byte, 31)...)
		}},
		{"prefix with wildcard", func(c *Config) { c.TopicPrefix = "farego/#" }},
		{"prefix with $", func(c *Config) { c.TopicPrefix = "$SYS" }},
		{"too many records per batch", func(c *Config) { c.BatchRecords = wire.MaxBatchRecords + 1 }},
		{"negative batch bytes", func(c *Config) { c.BatchBytes = -1 }},
		{"batch bytes over a message", func(c *Config) { c.BatchBytes = wire.MaxMessageSize }},
		{"negative in flight", func(c *Config) { c.MaxInFlight = -1 }},
		{"negative ack timeout", func(c *Config) { c.AckTimeout = -time.Second }},
		{"negative heartbeat", func(c *Config) { c.Heartbeat = -time.Second }},
		{"backoff upside down", func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }},
		{"keep-alive under a second", func(c *Config) { c.KeepAlive = time.Millisecond }},
		{"password without username", func(c *Config) { c.Password = "x" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			cfg.Brokers = slices.Clone(good.Brokers)
			tc.set(&cfg)
			_, err := New(cfg, f.q, f.state)
			if !errors.Is(err, ErrConfig) {
				t.Errorf("New = %v, want ErrConfig", err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
	t.Run("no queue or state", func(t *testing.T) {
		if _, err := New(good, nil, f.state); !errors.Is(err, ErrConfig) {
			t.Errorf("New without a queue = %v, want ErrConfig", err)
		}
		if _, err := New(good, f.q, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("New without a state = %v, want ErrConfig", err)
		}
	})
}

func TestConfigDefaults(t *testing.T) {
	f := newFixture(t, nil)
	u, err := New(Config{
		Brokers:        []string{"mqtt://127.0.0.1:1883", "mqtts://broker.example:8883"},
		DeviceID:       "bus-17",
		DeviceKey:      f.dev,
		FleetPublicKey: pubOf(f.fleet),
	}, f.q, f.state)
	if err != nil {
		t.Fatal(err)
	}
	c := u.cfg
	if c.ClientID != "farego-dev-bus-17" || c.TopicPrefix != wire.DefaultPrefix || c.BatchRecords != DefaultBatchRecords ||
		c.BatchBytes != DefaultBatchBytes || c.MaxInFlight != DefaultMaxInFlight || c.AckTimeout != DefaultAckTimeout ||
		c.Heartbeat != DefaultHeartbeat || c.PollInterval != DefaultPollInterval || c.SyncInterval != DefaultSyncInterval ||
		c.MinBackoff != DefaultMinBackoff || c.MaxBackoff != DefaultMaxBackoff || c.ConnectTimeout != DefaultConnectTimeout ||
		c.KeepAlive != DefaultKeepAlive || c.ShutdownTimeout != DefaultShutdownTimeout || c.Logger == nil || c.Now == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	if u.tls == nil {
		t.Error("no TLS config for an mqtts:// broker")
	}
	if u.taps != "farego/dev/bus-17/taps" || u.ack != "farego/dev/bus-17/ack" || u.status != "farego/dev/bus-17/status" {
		t.Errorf("topics %s %s %s", u.taps, u.ack, u.status)
	}
	want := []string{"farego/dev/bus-17/ack", "farego/dev/bus-17/cmd", "farego/fleet/denylist", "farego/fleet/denylist/+", "farego/fleet/fares", "farego/fleet/keyring"}
	var got []string
	for topic, qos := range u.filters {
		if qos != 1 {
			t.Errorf("subscription %s at QoS %d, want 1", topic, qos)
		}
		got = append(got, topic)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("subscriptions %v, want %v", got, want)
	}
}

func TestInRanges(t *testing.T) {
	rs := []wire.Range{{From: 2, To: 4}, {From: 9, To: 9}, {From: 20, To: 30}}
	for seq, want := range map[uint64]bool{0: false, 1: false, 2: true, 3: true, 4: true, 5: false, 8: false, 9: true,
		10: false, 19: false, 20: true, 30: true, 31: false, 1 << 63: false} {
		if got := inRanges(rs, seq); got != want {
			t.Errorf("inRanges(%d) = %t, want %t", seq, got, want)
		}
	}
	if inRanges(nil, 1) {
		t.Error("inRanges(nil) = true")
	}
}

func TestWindowAck(t *testing.T) {
	s := &sender{win: []*inflight{
		{seqs: []uint64{1, 2, 3}},
		{seqs: []uint64{4, 5, 6}},
		{seqs: []uint64{9, 12}},
	}}
	rs := []wire.Range{{From: 2, To: 6}, {From: 12, To: 1 << 40}}
	if got, want := s.covered("", rs), []uint64{2, 3, 4, 5, 6, 12}; !slices.Equal(got, want) {
		t.Errorf("covered = %v, want %v", got, want)
	}
	s.remove("", rs)
	var left [][]uint64
	for _, b := range s.win {
		left = append(left, b.seqs)
	}
	if len(left) != 2 || !slices.Equal(left[0], []uint64{1}) || !slices.Equal(left[1], []uint64{9}) {
		t.Errorf("window after remove = %v, want [[1] [9]]", left)
	}
}
