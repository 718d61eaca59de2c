package uplink

import (
	"fmt"
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
		// The client certificate's end: the operator sees which devices
		// the broker will refuse before it does.
		CertNotAfter: u.certEnd,
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
	if err := u.checkStatus(&st); err != nil {
		return nil, err
	}
	payload, err := st.MarshalBinary()
	if err != nil {
		return nil, err
	}
	// Never compressed: it is small, and a technician can then read the
	// JSON with mosquitto_sub.
	return wire.Seal(wire.TypeStatus, payload, false, u.cfg.DeviceKey)
}

// statusLogEvery is how often a status that keeps failing wire's check is
// logged again with the same reason.
const statusLogEvery = time.Hour

// checkStatus runs the server's check (wire's Status.Check) on the status
// about to be sent. One that fails, say a badly built binary's software
// version, is sanitized (Status.Sanitize) and sent rather than refused by
// the server unseen: the error is logged, once per reason and hour, and
// counted in Stats (StatusSanitized, StatusProblem). It returns an error
// only when the status cannot be made to pass (a bad device id).
func (u *Uplink) checkStatus(st *wire.Status) error {
	err := st.Check()
	u.mu.Lock()
	if err == nil {
		u.stats.StatusProblem = ""
		u.mu.Unlock()
		return nil
	}
	u.stats.StatusSanitized++
	u.stats.StatusProblem = err.Error()
	u.mu.Unlock()
	if ok, n := u.statusLimit.Allow(err.Error()); ok {
		u.log.Error("uplink: this device's status fails the server's check: sending it sanitized (the fields at fault "+
			"cleaned or left out); this build or its configuration needs fixing", "err", err, "suppressed", n)
	}
	st.Sanitize()
	if err := st.Check(); err != nil {
		return fmt.Errorf("uplink: status fails the server's check even sanitized: %w", err)
	}
	return nil
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
