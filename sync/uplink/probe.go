package uplink

import (
	"context"
	"errors"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/internal/mqttclient"
	"github.com/farego/farego/sync/wire"
)

// DefaultProbeSettle is how long Probe listens for retained downlinks
// once connected.
const DefaultProbeSettle = 2 * time.Second

// ProbeResult is what Probe found.
type ProbeResult struct {
	Broker string // the broker that took the connection
	// Downlinks are the versions of the fleet documents retained on the
	// broker (signed with the fleet key; others are left out), by kind:
	// the newest deny-list shard's under record.DocDenyList.
	Downlinks map[string]uint64
	// Refused counts retained downlinks that failed their checks.
	Refused int
}

// probeAttempts is how many failed connection attempts Probe makes.
const probeAttempts = 2

// errProbeDone ends the probe's session.
var errProbeDone = errors.New("probe done")

// Probe connects once to the broker as the device (cfg's brokers,
// credentials and TLS files), reads the retained fleet downlinks for
// settle (DefaultProbeSettle if 0) and disconnects cleanly. It sets no last
// will, publishes nothing and reads no queue: a technician's check. Note
// that a broker lets one client id in at a time: a validator connected
// with the same id is disconnected while the probe runs (it reconnects).
// It returns the last connection error if no connection worked in two
// attempts or before ctx is done.
func Probe(ctx context.Context, cfg Config, settle time.Duration) (*ProbeResult, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if settle <= 0 {
		settle = DefaultProbeSettle
	}
	tlsConfig, err := cfg.clientTLS()
	if err != nil {
		return nil, err
	}
	t := wire.Topics{Prefix: cfg.TopicPrefix}
	fleet := map[string]string{}
	filters := map[string]byte{t.DenyShards(): 1}
	for _, k := range record.DocKinds {
		fleet[t.Fleet(k)] = k
		filters[t.Fleet(k)] = 1
	}
	res := &ProbeResult{Downlinks: map[string]uint64{}}
	var mu sync.Mutex
	handler := func(_ mqtt.Client, m mqtt.Message) {
		kind, ok := fleet[m.Topic()]
		if !ok {
			if _, shard := t.ParseDenyShard(m.Topic()); !shard {
				return
			}
			kind = record.DocDenyList
		}
		if len(m.Payload()) == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		body, err := wire.Open(m.Payload(), wire.TypeDownlink, cfg.FleetPublicKey)
		var dl *wire.Downlink
		if err == nil {
			dl, err = wire.ParseDownlink(body)
		}
		if err != nil {
			res.Refused++
			return
		}
		res.Downlinks[kind] = max(res.Downlinks[kind], dl.Version)
	}
	mc := cfg.mqttConfig()
	mc.Name = "probe"
	mc.TLS, mc.Filters, mc.Handler = tlsConfig, filters, handler
	c := mqttclient.New(mc)
	// Give up after probeAttempts failed connection attempts.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if c.Stats().ConnectFailures >= probeAttempts {
					cancel()
					return
				}
			}
		}
	}()
	err = c.Run(ctx, func(ctx context.Context, s *mqttclient.Session) error {
		res.Broker = s.Broker()
		timer := time.NewTimer(settle)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return nil
		case err := <-s.Lost():
			return err
		case <-timer.C:
			return mqttclient.Fatal(errProbeDone)
		}
	})
	if !errors.Is(err, errProbeDone) {
		if err == nil {
			err = ctx.Err()
		}
		if last := c.Stats().LastError; last != "" {
			err = errors.New(last)
		}
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	return res, nil
}
