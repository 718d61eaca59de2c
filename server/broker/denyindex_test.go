package broker

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/uplink"
)

// shardState is a StateApplier that keeps each deny-list shard's version
// under its record.DenyShardKey, as the agent does.
type shardState struct {
	state
	mu sync.Mutex
	n  int // shards applied
}

func (s *shardState) Apply(kind string, version uint64, body []byte) error {
	if kind != record.DocDenyShard {
		return s.state.Apply(kind, version, body)
	}
	if len(body) < 3 {
		return fmt.Errorf("short shard")
	}
	if err := s.state.Apply(record.DenyShardKey(int(binary.BigEndian.Uint16(body[1:3]))), version, body); err != nil {
		return err
	}
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
	return nil
}

// TestDenyIndexThroughTheACL: through the embedded broker with its access
// rules and its bound of 32 subscriptions a device, a validator that has
// no deny list takes all 256 shards through the shard index (16 shard
// topics subscribed at a time), with nothing denied; reconnecting up to
// date, it receives no shard. With a tighter bound (12 subscriptions) the
// broker refuses some of a group's shard topics; the device takes fewer at
// a time and still gets every shard.
func TestDenyIndexThroughTheACL(t *testing.T) {
	for _, maxSubs := range []int{0, 12} {
		t.Run(fmt.Sprintf("%d subscriptions", maxSubs), func(t *testing.T) {
			secret := newSecret(t)
			b := startBroker(t, Config{Secret: secret, Devices: testDevices{secret: secret}, Limits: Limits{DeviceMaxSubscriptions: maxSubs}})
			s := testDenyIndexThroughTheACL(t, secret, b.url(), func(*uplink.Config) {})
			// Under the default bound nothing stays refused: the broker may
			// refuse a SUBSCRIBE for a moment (mochi refuses one whose packet
			// id is that of its own delivery not yet acked, and an
			// UNSUBSCRIBE refused that way still counts against the bound),
			// and the uplink's retry takes it.
			if bs := b.Stats(); (s.DenyShardRefused != 0) != (maxSubs != 0) || (maxSubs != 0 && bs.Denied == 0) {
				t.Errorf("uplink refused %d shard subscriptions, broker stats %+v; want refusals only under the tighter bound",
					s.DenyShardRefused, bs)
			}
		})
	}
}

// TestDenyIndexMosquittoSample is TestDenyIndexThroughTheACL through a
// Mosquitto with the sample configuration and ACL of testdata/broker: the
// index topic is readable by devices there too.
func TestDenyIndexMosquittoSample(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	secret := newSecret(t)
	id := uniqueName("bus-")
	users := map[string]string{DefaultServerUsername: ServerPassword(secret), id: devicePassword(secret, id)}
	plainURL, _, pwURL := mosquittoSample(t, p, users)
	testDenyIndexThroughTheACL(t, secret, plainURL, func(c *uplink.Config) {
		c.DeviceID, c.Brokers, c.TLS = id, []string{pwURL}, p.ClientTLS(t, "")
	})
}

// testDenyIndexThroughTheACL runs a Publisher with deny-list shards on
// the server's url, and a device (set changes its configuration) through
// a first connection and a reconnection up to date.
func testDenyIndexThroughTheACL(t *testing.T, secret []byte, url string, set func(*uplink.Config)) uplink.Stats {
	f := newFleet(t)
	mc := ingest.MQTTConfig{Brokers: []string{url}, Username: DefaultServerUsername, Password: ServerPassword(secret),
		MaxReconnectInterval: 300 * time.Millisecond}
	const version = 5
	var entries []record.DenyEntry
	for i := range 2000 {
		entries = append(entries, record.DenyEntry{Account: uint64(i+1) * 7919, Reason: "fraud"})
	}
	shards := record.DenyShards(entries, f.now)
	pub, err := ingest.NewPublisher(ingest.PublisherConfig{
		MQTTConfig: mc, FleetKey: f.key, Logger: testLogger(t),
		Source: func(context.Context, string) (uint64, []byte, error) { return 0, nil, nil },
		DenyShards: func(context.Context, uint64) (uint64, []record.DenyShard, error) {
			return version, shards, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "publisher", pub.Run)
	waitFor(t, "the shard index published", func() bool { return pub.Stats().Indexes > 0 })

	st := &shardState{state: state{versions: map[string]uint64{}}}
	_, key, _ := ed25519.GenerateKey(nil)
	cfg := uplink.Config{
		Brokers: []string{url}, DeviceID: uniqueName("bus-"), DeviceKey: key, FleetPublicKey: f.key.Public().(ed25519.PublicKey),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
		ConnectTimeout: 20 * time.Second, ShutdownTimeout: 20 * time.Second, Logger: testLogger(t),
		DenyIndexWait: time.Minute, // far longer than a busy machine takes to deliver the retained index
	}
	set(&cfg)
	cfg.Username, cfg.Password = cfg.DeviceID, devicePassword(secret, cfg.DeviceID)
	connect := func() (*uplink.Uplink, context.CancelFunc, chan error) {
		q, err := queue.Open(filepath.Join(t.TempDir(), "q.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		u, err := uplink.New(cfg, q, st)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- u.Run(ctx) }()
		return u, cancel, done
	}
	stop := func(cancel context.CancelFunc, done chan error) {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("uplink: %v", err)
		}
	}

	u, cancel, done := connect()
	waitFor(t, "every shard applied", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.n == record.DenyShardCount
	})
	s := u.Stats()
	first := s
	t.Logf("first connection: %d shard messages, %d shard subscriptions", s.DenyShardMessages, s.DenyShardSubscriptions)
	if s.DenyShardMessages != record.DenyShardCount || s.DenyShardSubscriptions != record.DenyShardCount || s.DownlinksRefused != 0 ||
		s.DenyIndexFallbacks != 0 {
		t.Errorf("first connection: %d shard messages, %d subscriptions, %d refused, %d index fallbacks; want 256, 256, 0, 0",
			s.DenyShardMessages, s.DenyShardSubscriptions, s.DownlinksRefused, s.DenyIndexFallbacks)
	}
	stop(cancel, done)

	u, cancel, done = connect()
	defer stop(cancel, done)
	waitFor(t, "the index on reconnecting", func() bool { return u.Stats().DenyIndexes > 0 })
	time.Sleep(500 * time.Millisecond)
	if s := u.Stats(); s.DenyShardMessages != 0 || s.DenyShardSubscriptions != 0 {
		t.Errorf("reconnection up to date: %d shard messages, %d subscriptions; want none", s.DenyShardMessages, s.DenyShardSubscriptions)
	}
	return first
}
