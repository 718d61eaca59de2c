package uplink_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/uplink"
	"github.com/farego/farego/sync/wire"
)

// A whole deny list that arrives after one shard of the same version (the
// uplink's deliveries are unordered) still applies to the shards it is
// newer than: the rider it names is refused at once, not only when the
// rider's own shard arrives. Before, the whole list was taken for "already
// applied" because the device's "denylist" version is its newest shard's.
// Real agent and queue file behind the real uplink, an in-process broker.
func TestWholeDenyListAfterAShardOfItsVersion(t *testing.T) {
	const wait = time.Minute
	now := time.Now()
	fleet := brokertest.NewKey(t)
	issuer := paycodetest.NewIssuer(t, 7, now)
	broker := brokertest.Start(t, nil)
	prefix := brokertest.UniqueName("wd-")
	topics := wire.Topics{Prefix: prefix}

	q, err := queue.Open(filepath.Join(t.TempDir(), "validator.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	a, err := agent.New(q, &feedback.Recorder{}, agent.Config{DeviceID: "bus-wd", Route: "42"})
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := issuer.Keyring.MarshalJSON()
	if err := a.Seed(record.DocKeyring, kr); err != nil {
		t.Fatal(err)
	}
	if err := a.Seed(record.DocFares, []byte(`{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`)); err != nil {
		t.Fatal(err)
	}
	u, err := uplink.New(uplink.Config{
		Brokers: []string{broker.URL()}, DeviceID: "bus-wd", DeviceKey: brokertest.NewKey(t),
		FleetPublicKey: fleet.Public().(ed25519.PublicKey),
		TopicPrefix:    prefix, MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
		ConnectTimeout: 20 * time.Second, ShutdownTimeout: 20 * time.Second,
	}, q, a)
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Go(t, wait, u.Run)
	brokertest.WaitFor(t, wait, "the uplink connected", func() bool { return u.Stats().Connected })

	// The deny list at version v names one credential of the rider.
	const rider = 4243
	v := uint64(now.UnixMilli())
	entries := []record.DenyEntry{{Account: rider, Serial: 1, Reason: "lost_phone"}}
	shards := record.DenyShards(entries, now)
	other := (record.DenyShardOf(rider) + 1) % record.DenyShardCount

	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID(brokertest.UniqueName("pub-")).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publisher: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(250) })
	publish := func(topic, kind string, body []byte) {
		t.Helper()
		p, err := (&wire.Downlink{Kind: kind, Version: v, IssuedAt: time.Now(), Body: body}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		msg, err := wire.Seal(wire.TypeDownlink, p, true, fleet)
		if err != nil {
			t.Fatal(err)
		}
		if tok := c.Publish(topic, 1, false, msg); !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}

	// Another shard of version v comes first: the device reports v.
	body, err := shards[other].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the uplink's count too: it counts a downlink after applying
	// it, and the count taken below must not be short of this one.
	start := u.Stats()
	publish(topics.DenyShard(other), record.DocDenyShard, body)
	brokertest.WaitFor(t, wait, "the other shard applied", func() bool {
		return a.Versions()[record.DocDenyList] == v && u.Stats().DownlinksApplied > start.DownlinksApplied
	})

	// Then the whole list of version v (the rider's own shard never comes).
	before := u.Stats()
	whole, err := json.Marshal(record.DenyList{Version: v, Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	publish(topics.Fleet(record.DocDenyList), record.DocDenyList, whole)
	brokertest.WaitFor(t, wait, "the whole list handled", func() bool {
		s := u.Stats()
		return s.DownlinksApplied+s.DownlinksUnchanged+s.DownlinksRefused > before.DownlinksApplied+before.DownlinksUnchanged+before.DownlinksRefused
	})
	if got := a.Versions()[record.DenyShardKey(record.DenyShardOf(rider))]; got != v {
		t.Errorf("the rider's shard is at version %d after the whole list of version %d", got, v)
	}
	code := issuer.Rider(t, rider, time.Now()).Code(t, time.Now())
	if out := a.Tap(context.Background(), scanner.Frame{Scanner: "front", Text: code, Time: time.Now()}); out.Reason != record.ReasonDenied {
		t.Errorf("a credential on the whole deny list the device reports applied: %+v, want refused (%s)", out, record.ReasonDenied)
	}
}
