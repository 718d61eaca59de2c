package uplink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/internal/mqttdial"
)

// disconnectQuiesce is how long paho may take to send the DISCONNECT.
const disconnectQuiesce = 250 // milliseconds

// subscribeFailure is the SUBACK return code of a refused subscription.
const subscribeFailure = 0x80

// session makes one connection with a fresh paho client and runs it until
// the connection is lost, ctx is done or the queue fails. It returns nil
// when ctx ended it (after the clean disconnect), a *lostError if the
// connection was lost, a *fatalError if the queue failed, and any other
// error for a connection attempt that failed.
//
// A fresh client per connection lets the last will carry the status as of
// the connection, and keeps paho's own reconnection logic (not
// context-aware, without jitter) out of the way.
func (u *Uplink) session(ctx context.Context, s *sender, lk *link) error {
	will, err := u.statusMessage(false)
	if err != nil {
		return &fatalError{fmt.Errorf("last will: %w", err)}
	}
	d := mqttdial.New(ctx, u.tls, u.cfg.ConnectTimeout)
	lost := make(chan error, 1)
	subscribed := make(chan mqtt.Token, 1)

	o := mqtt.NewClientOptions()
	for _, b := range u.cfg.Brokers {
		o.AddBroker(b)
	}
	o.SetClientID(u.cfg.ClientID).
		SetUsername(u.cfg.Username).
		SetPassword(u.cfg.Password).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetCleanSession(true). // subscribed again on every connection below
		SetOrderMatters(false).
		SetStore(mqtt.NewMemoryStore()). // the bbolt queue is the durable store
		SetAutoReconnect(false).         // Run reconnects, with a fresh client
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetKeepAlive(u.cfg.KeepAlive).
		SetConnectTimeout(u.cfg.ConnectTimeout).
		SetBinaryWill(u.status, will, 1, true).
		SetCustomOpenConnectionFn(d.Open).
		SetOnConnectHandler(func(c mqtt.Client) {
			// Runs in a goroutine of its own; the session waits for the
			// token, so this handler never blocks on the network.
			select {
			case subscribed <- c.SubscribeMultiple(u.filters, u.onMessage):
			default:
			}
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	c := mqtt.NewClient(o)

	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		<-tok.Done() // the dialer ends the attempt promptly
	}
	d.Release()
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}

	err = u.awaitSubscribed(ctx, subscribed, lost)
	if err == nil {
		u.up(lk, d.Broker())
		u.connected.Store(true)
		err = s.run(ctx, c, lost)
		u.connected.Store(false)
	}
	if _, ok := errors.AsType[*lostError](err); ok {
		return err
	}
	u.goodbye(c)
	if _, ok := errors.AsType[*fatalError](err); !ok && ctx.Err() != nil {
		return nil
	}
	return err
}

// awaitSubscribed waits for the subscriptions made by the OnConnect handler
// and checks that the broker granted all of them.
func (u *Uplink) awaitSubscribed(ctx context.Context, subscribed <-chan mqtt.Token, lost <-chan error) error {
	timer := time.NewTimer(u.cfg.ConnectTimeout)
	defer timer.Stop()
	var tok mqtt.Token
	select {
	case tok = <-subscribed:
	case err := <-lost:
		return &lostError{err}
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return errors.New("subscribe: not started within the connect timeout")
	}
	select {
	case <-tok.Done():
	case err := <-lost:
		return &lostError{err}
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return errors.New("subscribe: no SUBACK within the connect timeout")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	st, ok := tok.(*mqtt.SubscribeToken)
	if !ok {
		return nil
	}
	var refused []string
	for topic, qos := range st.Result() {
		if qos == subscribeFailure {
			refused = append(refused, topic)
		}
	}
	if len(refused) > 0 {
		slices.Sort(refused)
		return fmt.Errorf("subscribe: the broker refused %s (check its ACL)", strings.Join(refused, ", "))
	}
	return nil
}

// goodbye ends a live connection cleanly: an offline status (retained, in
// place of the last will, which a clean DISCONNECT cancels), then the
// DISCONNECT.
func (u *Uplink) goodbye(c mqtt.Client) {
	if c.IsConnectionOpen() {
		if tok := u.publishStatus(c, false); tok != nil {
			if !tok.WaitTimeout(u.cfg.ShutdownTimeout) {
				u.log.Warn("uplink: offline status not confirmed by the broker", logKeyTimeout, u.cfg.ShutdownTimeout)
			} else if err := tok.Error(); err != nil {
				u.log.Warn("uplink: offline status not sent", logKeyErr, err)
			}
		}
	}
	c.Disconnect(disconnectQuiesce)
	u.log.Info("uplink disconnected")
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
