package uplink

import (
	"context"
	"fmt"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/wire"
)

// onMessage is paho's handler for every subscription. It never blocks: it
// hands the message to the session (acks, commands) or the downlink
// goroutine (fleet topics) and drops it, logged, if that one is behind.
func (u *Uplink) onMessage(_ mqtt.Client, m mqtt.Message) {
	in := inbound{topic: m.Topic(), payload: m.Payload()}
	ch := u.deviceIn
	if _, ok := u.fleet[in.topic]; ok {
		ch = u.fleetIn
	}
	select {
	case ch <- in:
		if n := u.dropStreak.Swap(0); n > 0 {
			u.log.Info("uplink: taking inbound messages again", "count", n)
		}
	default:
		u.count(func(s *Stats) { s.MessagesDropped++ })
		if u.dropStreak.Add(1) == 1 {
			u.log.Warn("uplink: inbound messages arriving faster than handled; dropping", "topic", in.topic)
		}
	}
}

// refuse logs and counts a message on a device topic that failed its
// checks. The payload itself is not logged.
func (u *Uplink) refuse(topic string, payload []byte, why error) {
	u.count(func(s *Stats) { s.MessagesRefused++ })
	u.log.Warn("uplink: message refused", "topic", topic, "size", len(payload), "reason", why)
}

// downlinks applies fleet downlinks until ctx is done. It runs beside the
// session so that a large document (a deny list) never holds up acks.
func (u *Uplink) downlinks(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-u.fleetIn:
			u.handleDownlink(m.topic, m.payload)
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
	if !ok {
		u.refuseDownlink(topic, payload, fmt.Errorf("not a fleet topic"))
		return
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
	have := u.state.Versions()[kind]
	switch {
	case dl.Version == have:
		u.count(func(s *Stats) { s.DownlinksUnchanged++ })
		u.log.Debug("uplink: downlink already applied", "kind", kind, "version", dl.Version)
		return
	case dl.Version < have:
		u.refuseDownlink(topic, payload, fmt.Errorf("%s version %d is older than the applied %d", kind, dl.Version, have))
		return
	}
	if err := u.state.Apply(kind, dl.Version, dl.Body); err != nil {
		u.refuseDownlink(topic, payload, fmt.Errorf("apply %s version %d: %w", kind, dl.Version, err))
		return
	}
	u.count(func(s *Stats) { s.DownlinksApplied++ })
	u.log.Info("uplink: downlink applied", "kind", kind, "version", dl.Version, "have", have)
	u.statusDirty.Store(true)
	u.Notify()
}

// refuseDownlink logs and counts a refused downlink.
func (u *Uplink) refuseDownlink(topic string, payload []byte, why error) {
	u.count(func(s *Stats) { s.DownlinksRefused++ })
	u.log.Warn("uplink: downlink refused", "topic", topic, "size", len(payload), "reason", why)
}
