package uplink

import (
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// statusMessage returns the device's status, signed: online or not, the
// queue's figures, the applied downlink versions, the clock and the
// software version. A queue that cannot be read leaves its figures zero.
func (u *Uplink) statusMessage(online bool) ([]byte, error) {
	now := u.cfg.Now()
	st := wire.Status{
		DeviceID: u.cfg.DeviceID,
		Online:   online,
		Time:     now.UTC(),
		Software: u.cfg.Software,
		Epoch:    u.q.Epoch(),
		Versions: record.DocumentVersions(u.state.Versions()),
	}
	if qs, err := u.q.Stats(); err == nil {
		st.QueueDepth = qs.Count + qs.Adopted
		st.LastSeq = qs.LastSeq
		if !qs.OldestUnacked.IsZero() {
			st.OldestUnsentSec = max(0, int64(now.Sub(qs.OldestUnacked)/time.Second))
		}
	}
	if c, ok := u.Clock(); ok {
		ms := c.Offset.Milliseconds()
		st.ClockOffsetMS = &ms
	}
	if u.cfg.Status != nil {
		u.cfg.Status(&st)
	}
	payload, err := st.MarshalBinary()
	if err != nil {
		return nil, err
	}
	// Never compressed: it is small, and a technician can then read the
	// JSON with mosquitto_sub.
	return wire.Seal(wire.TypeStatus, payload, false, u.cfg.DeviceKey)
}

// publishStatus publishes the status, retained, at QoS 1, and returns the
// token (nil if the status could not be made).
func (u *Uplink) publishStatus(pub publisher, online bool) mqtt.Token {
	msg, err := u.statusMessage(online)
	if err != nil {
		u.log.Error("uplink: cannot make the status message", "err", err)
		return nil
	}
	u.count(func(s *Stats) { s.StatusSent++ })
	return pub.Publish(u.status, 1, true, msg)
}
