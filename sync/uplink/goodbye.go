package uplink

import (
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// goodbye publishes an offline status (retained, in place of the last
// will, which the clean DISCONNECT that follows cancels).
func (u *Uplink) goodbye(c mqtt.Client) {
	if tok := u.publishStatus(c, false); tok != nil {
		if !tok.WaitTimeout(u.cfg.ShutdownTimeout) {
			u.log.Warn("uplink: offline status not confirmed by the broker", "timeout", u.cfg.ShutdownTimeout.String())
		} else if err := tok.Error(); err != nil {
			u.log.Warn("uplink: offline status not sent", "err", err)
		}
	}
}

// tokenFailed returns the error of a token that has already completed with
// one, without waiting for a pending token.
func tokenFailed(tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	default:
		return nil
	}
}
