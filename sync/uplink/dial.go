package uplink

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// dialer opens the network connections of one connection attempt for paho
// (ClientOptions.CustomOpenConnectionFn), so that the attempt ends as soon as
// the uplink's context does: dialling and the TLS handshake use the context,
// and a connection still in its MQTT handshake is closed when the context
// ends. Once the attempt is over, release stops watching the context: from
// then on the session shuts down cleanly (offline status, DISCONNECT).
type dialer struct {
	ctx     context.Context
	tls     *tls.Config
	timeout time.Duration

	mu      sync.Mutex
	watches []func() bool // stop functions of context.AfterFunc
	last    string        // the last broker dialled successfully
}

// open implements mqtt.OpenConnectionFunc.
func (d *dialer) open(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.timeout)
	defer cancel()
	var (
		conn net.Conn
		err  error
	)
	switch {
	case tlsSchemes[u.Scheme]:
		conn, err = (&tls.Dialer{Config: d.tls}).DialContext(ctx, "tcp", u.Host)
	case plainSchemes[u.Scheme]:
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
	default:
		err = errors.New("unsupported broker URL scheme " + u.Scheme)
	}
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(d.ctx, func() { _ = conn.Close() })
	d.mu.Lock()
	d.watches = append(d.watches, stop)
	d.last = u.Redacted()
	d.mu.Unlock()
	return conn, nil
}

// release stops closing the attempt's connections when the context ends.
func (d *dialer) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, stop := range d.watches {
		stop()
	}
	d.watches = nil
}

// broker returns the URL of the broker dialled last.
func (d *dialer) broker() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}
