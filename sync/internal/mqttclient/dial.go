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
	return &limitConn{Conn: nc, max: MaxInboundPacket}, nil
}

// MaxInboundPacket bounds the remaining length of an MQTT packet the
// client reads (1 MiB: farego's largest message, wire.MaxMessageSize, is
// 384 KiB, and a topic at most 64 KiB). paho allocates a packet whole from
// the length in its header, up to 256 MiB, before reading it: a broker
// (or anyone in the path of a plain connection) could make a device
// allocate that much with a few bytes. A larger packet ends the
// connection before paho reads its length.
const MaxInboundPacket = 1 << 20

// errPacketTooLarge ends a connection whose broker announced a packet
// over MaxInboundPacket.
var errPacketTooLarge = errors.New("mqtt: the broker sent a packet larger than the client takes")

// limitConn follows the MQTT packets read from a connection (fixed header:
// a type byte and a variable-length remaining length, then the body) and
// fails the read that completes a remaining length over max.
type limitConn struct {
	net.Conn
	max int

	state int // 0: type byte next; 1: in the remaining length; 2: in the body
	n     int // the remaining length read so far (state 1), the body left (state 2)
	shift uint
	err   error
}

func (c *limitConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	for i := 0; i < n; i++ {
		switch c.state {
		case 0:
			c.state, c.n, c.shift = 1, 0, 0
		case 1:
			b := p[i]
			c.n |= int(b&127) << c.shift
			c.shift += 7
			if c.n > c.max || (b&128 != 0 && c.shift >= 28) {
				c.err = errPacketTooLarge
				_ = c.Conn.Close()
				return 0, c.err
			}
			if b&128 == 0 {
				c.state = 2
				if c.n == 0 {
					c.state = 0
				}
			}
		case 2:
			k := min(c.n, n-i)
			c.n -= k
			i += k - 1
			if c.n == 0 {
				c.state = 0
			}
		}
	}
	return n, err
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
