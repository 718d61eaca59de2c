package uplink

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// onMessage is paho's handler for every subscription (paho runs each in a
// goroutine of its own: delivery is unordered). It hands the message to
// the session (acks, commands) without blocking, dropping it, logged, if
// the session is behind; a fleet downlink goes to the downlink goroutine,
// waiting up to fleetInboxWait for room: a connection brings every
// retained downlink at once (256 deny-list shards), and a dropped one
// would only come again at the next connection.
func (u *Uplink) onMessage(c mqtt.Client, m mqtt.Message) {
	in := inbound{topic: m.Topic(), payload: m.Payload(), client: c}
	ch, wait := u.deviceIn, time.Duration(0)
	if _, ok := u.fleet[in.topic]; ok {
		ch, wait = u.fleetIn, fleetInboxWait
	} else if _, ok := u.topics.ParseDenyShard(in.topic); ok {
		ch, wait = u.fleetIn, fleetInboxWait
		u.count(func(s *Stats) { s.DenyShardMessages++; s.DenyShardBytes += uint64(len(in.payload)) })
	} else if in.topic == u.topics.DenyIndex() && u.cfg.DenyIndexWait > 0 {
		ch, wait = u.fleetIn, fleetInboxWait
	}
	sent := false
	select {
	case ch <- in:
		sent = true
	default:
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case ch <- in:
				sent = true
			case <-t.C:
			}
			t.Stop()
		}
	}
	if sent {
		if n := u.dropStreak.Swap(0); n > 0 {
			u.log.Info("uplink: taking inbound messages again", "count", n)
		}
		return
	}
	u.count(func(s *Stats) { s.MessagesDropped++ })
	if u.dropStreak.Add(1) == 1 {
		u.log.Warn("uplink: inbound messages arriving faster than handled; dropping", "topic", in.topic)
	}
}

// fleetInboxWait bounds how long a fleet downlink waits for the downlink
// goroutine before it is dropped.
const fleetInboxWait = 30 * time.Second

// refuse logs and counts a message on a device topic that failed its
// checks. The payload itself is not logged.
func (u *Uplink) refuse(topic string, payload []byte, why error) {
	u.count(func(s *Stats) { s.MessagesRefused++ })
	u.log.Warn("uplink: message refused", "topic", topic, "size", len(payload), "reason", why)
}

// downlinks applies fleet downlinks until ctx is done. It runs beside the
// session so that a large document (a deny list) never holds up acks.
func (u *Uplink) downlinks(ctx context.Context) {
	var d denySync
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Stop()
		if at, ok := u.denyDeadline(&d); ok {
			timer.Reset(max(time.Until(at), 0))
		}
		select {
		case <-ctx.Done():
			return
		case c := <-u.sessions:
			u.denyConnection(&d, c)
		case <-timer.C:
			u.denyTimer(&d)
		case m := <-u.fleetIn:
			if m.topic == u.topics.DenyIndex() {
				u.handleDenyIndex(&d, m)
				continue
			}
			u.handleDownlink(m.topic, m.payload)
			if n, ok := u.topics.ParseDenyShard(m.topic); ok && d.client != nil {
				u.denyShardCame(&d, m, n)
			}
		}
	}
}

// handleDownlink applies a fleet downlink if it is signed with the fleet
// key, well formed, of the topic's kind and newer than the applied
// version. Anything else is refused, logged and counted; the version
// already applied (a retained message seen again on every connection) is
// only counted.
func (u *Uplink) handleDownlink(topic string, payload []byte) {
	kind, ok := u.fleet[topic]
	versionKey, shard := kind, -1
	if !ok {
		if shard, ok = u.topics.ParseDenyShard(topic); !ok {
			u.refuseDownlink(topic, payload, fmt.Errorf("not a fleet topic"))
			return
		}
		kind, versionKey = record.DocDenyShard, record.DenyShardKey(shard)
	}
	if len(payload) == 0 {
		u.log.Debug("uplink: retained downlink cleared on the broker", "topic", topic)
		return
	}
	body, err := wire.Open(payload, wire.TypeDownlink, u.cfg.FleetPublicKey)
	if err != nil {
		u.refuseDownlink(topic, payload, err)
		return
	}
	dl, err := wire.ParseDownlink(body)
	if err != nil {
		u.refuseDownlink(topic, payload, err)
		return
	}
	if dl.Kind != kind {
		u.refuseDownlink(topic, payload, fmt.Errorf("a %s downlink on the %s topic", dl.Kind, kind))
		return
	}
	if kind == wire.DocRelease {
		// The updater keeps its own state: it gets every signed rollout.
		u.log.Debug("uplink: software rollout", "version", dl.Version)
		u.cfg.OnRelease(dl.Version, dl.Body)
		return
	}
	// A shard names its index (after its format byte): it must be the topic's.
	if shard >= 0 && (len(dl.Body) < 3 || int(binary.BigEndian.Uint16(dl.Body[1:3])) != shard) {
		u.refuseDownlink(topic, payload, fmt.Errorf("not deny-list shard %d", shard))
		return
	}
	have := appliedVersion(u.state.Versions(), versionKey)
	switch {
	case dl.Version == have:
		u.count(func(s *Stats) { s.DownlinksUnchanged++ })
		u.log.Debug("uplink: downlink already applied", "kind", versionKey, "version", dl.Version)
		return
	case dl.Version < have:
		u.refuseDownlink(topic, payload, fmt.Errorf("%s version %d is older than the applied %d", versionKey, dl.Version, have))
		return
	}
	if err := u.state.Apply(kind, dl.Version, dl.Body); err != nil {
		u.refuseDownlink(topic, payload, fmt.Errorf("apply %s version %d: %w", kind, dl.Version, err))
		return
	}
	u.count(func(s *Stats) { s.DownlinksApplied++ })
	if shard >= 0 {
		u.log.Debug("uplink: deny-list shard applied", "shard", shard, "version", dl.Version, "have", have)
	} else {
		u.log.Info("uplink: downlink applied", "kind", kind, "version", dl.Version, "have", have)
		u.statusNow.Store(true) // a key set, fare table or assignment the operator sent: shown at once
	}
	u.statusDirty.Store(true)
	u.Notify()
}

// refuseDownlink logs and counts a refused downlink.
func (u *Uplink) refuseDownlink(topic string, payload []byte, why error) {
	u.count(func(s *Stats) { s.DownlinksRefused++ })
	u.log.Warn("uplink: downlink refused", "topic", topic, "size", len(payload), "reason", why)
}

// appliedVersion returns the version of a fleet document the device holds
// in full. For the whole deny list that is its oldest shard's (a missing
// shard counts as 0), not the "denylist" version, which is the newest
// shard's: after one shard of version V, a whole list of version V still
// carries the others (their downlinks are delivered in any order), so it
// must be applied; the agent replaces only the shards it is newer than. A
// device that reports no shards has its "denylist" version.
func appliedVersion(v map[string]uint64, key string) uint64 {
	if key != record.DocDenyList {
		return v[key]
	}
	oldest, shards := uint64(0), false
	for i := range record.DenyShardCount {
		x, ok := v[record.DenyShardKey(i)]
		shards = shards || ok
		if i == 0 || x < oldest {
			oldest = x
		}
	}
	if !shards {
		return v[key]
	}
	return oldest
}
