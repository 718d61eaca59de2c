// The dialer of one connection attempt (ClientOptions.CustomOpenConnectionFn):
// the attempt ends as soon as its context does. Dialling and the TLS
// handshake use the context, and a connection still in its MQTT handshake
// is closed when the context ends. Once the attempt is over, Release stops
// watching the context; from then on the session disconnects cleanly.

package mqttclient

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

// Dialer opens the connections of one attempt.
type Dialer struct {
	ctx     context.Context
	tls     *tls.Config
	timeout time.Duration

	mu      sync.Mutex
	watches []func() bool // stop functions of context.AfterFunc
	last    string        // the broker dialled last, without credentials
}

// newDialer returns a dialer for one attempt bounded by ctx, each dial by timeout.
func newDialer(ctx context.Context, tlsConfig *tls.Config, timeout time.Duration) *Dialer {
	return &Dialer{ctx: ctx, tls: tlsConfig, timeout: timeout}
}

// Open implements mqtt.OpenConnectionFunc.
func (d *Dialer) Open(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.timeout)
	defer cancel()
	var (
		nc  net.Conn
		err error
	)
	switch {
	case tlsSchemes[u.Scheme]:
		nc, err = (&tls.Dialer{Config: d.tls}).DialContext(ctx, "tcp", u.Host)
	case plainSchemes[u.Scheme]:
		nc, err = (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
	default:
		err = errors.New("unsupported broker URL scheme " + u.Scheme)
	}
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(d.ctx, func() { _ = nc.Close() })
	d.mu.Lock()
	defer d.mu.Unlock()
	d.watches = append(d.watches, stop)
	d.last = u.Scheme + "://" + u.Host
	return nc, nil
}

// Release stops closing the attempt's connections when the context ends.
func (d *Dialer) Release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, stop := range d.watches {
		stop()
	}
	d.watches = nil
}

// Broker returns the broker dialled last, without credentials.
func (d *Dialer) Broker() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}
