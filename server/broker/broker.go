package broker

import (
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/farego/farego/sync/ratelog"
)

// Listener ids, as mochi reports them in its logs.
const (
	listenerPlain = "mqtt"
	listenerTLS   = "mqtts"
)

// sysTopicInterval is how often mochi refreshes its $SYS topics, in
// seconds (nobody may read them here, but mochi keeps them anyway).
const sysTopicInterval = 60

// Broker is the settlement server's embedded MQTT broker (mochi-mqtt) with
// farego's authentication and access rules. Use New, Start, then Close.
type Broker struct {
	cfg  Config
	log  *slog.Logger
	srv  *mqtt.Server
	hook *hook
	// queues bound the bytes queued for writing to the connections
	queues *sendQueues
	// pending counts the connections not yet logged in by client address.
	pending *pendingAddrs

	plain, tls *listener    // nil when not configured
	open       atomic.Int64 // connections open on them (Config.MaxConnections)

	mu      sync.Mutex
	started bool
	closed  bool
}

// Stats are a Broker's counters.
type Stats struct {
	Clients         int64  // connected clients
	Refused         uint64 // connections refused (credentials, unknown device, will, client id)
	Denied          uint64 // publications, subscriptions and deliveries denied by the ACL
	TakenOver       uint64 // connections closed for a new login with the same client id
	MessagesDropped int64  // messages mochi dropped because a client's write queue was full
	InflightDropped int64  // QoS 1/2 messages mochi dropped because a client had too many in flight
	Retained        int64  // retained messages
	Flooded         uint64 // device disconnections for flooding (each starts a ban)
	Shed            uint64 // messages dropped by the limits (a device or the server holding too much)
	ServerHeld      int64  // payload bytes held for the settlement server's clients now
	Queued          int64  // bytes queued for writing to connections now
	Stalled         uint64 // clients disconnected for not reading (WriteTimeout, or too many bytes queued)
}

// New checks cfg, reads its TLS files and returns a Broker. It does not
// listen: Start does.
func New(cfg Config) (*Broker, error) {
	cfg = cfg.withDefaults()
	tlsConfig, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, log: cfg.Logger}

	caps := mqtt.NewDefaultServerCapabilities()
	// mochi drops QoS 1 messages silently once a client has 8,192 in
	// flight (5-39 % lost in a probe with a large backlog): allow every
	// packet id. Nothing relies on the broker for durability anyway.
	caps.MaximumInflight = math.MaxUint16
	// QoS 1 messages a client may have unacknowledged towards the broker;
	// an MQTT 3.1.1 client going over it is disconnected.
	caps.ReceiveMaximum = math.MaxUint16
	// 0: no forced expiry. With mochi's default (24 h) retained messages
	// older than a day are deleted (a fleet keyring that did not change
	// for a day would vanish for devices connecting afterwards) and
	// messages in flight are dropped after a day.
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumPacketSize = uint32(cfg.MaxPacketSize)
	caps.MaximumClientWritesPending = int32(cfg.MaxPendingWrites)
	// Nothing of farego publishes at QoS 2, and mochi keeps the PUBREC of
	// each QoS 2 publication in the client's session until its PUBREL,
	// uncounted (a device that never sent PUBREL pinned 189 MiB in 500
	// publications: an attack review): a QoS 2 publication is taken at
	// QoS 1.
	caps.MaximumQos = 1
	// mochi copies a publication's MQTT 5 properties (user properties of
	// up to the packet bound) into its acknowledgement: an echo, and held
	// with the ack. Acks carry none.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true

	b.srv = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(mochiHandler{cfg.Logger.Handler()}),
		SysTopicResendInterval: sysTopicInterval,
	})
	b.hook = newHook(&b.cfg, b.log)
	b.hook.srv = b.srv
	if err := b.srv.AddHook(b.hook, nil); err != nil {
		return nil, err
	}
	b.queues = newSendQueues(&b.cfg)
	b.pending = newPendingAddrs(cfg.MaxPendingPerAddress, cfg.MaxConnections)
	limit := ratelog.New(cfg.Now, ratelog.DefaultEvery)
	if !cfg.DisablePlain {
		b.plain = &listener{id: listenerPlain, addr: cfg.Listen, timeout: cfg.ConnectTimeout, write: cfg.WriteTimeout, queues: b.queues,
			maxConns: cfg.MaxConnections, open: &b.open, pending: b.pending, limit: limit}
	}
	if tlsConfig != nil {
		b.tls = &listener{id: listenerTLS, addr: cfg.TLSListen, tls: tlsConfig, timeout: cfg.ConnectTimeout, write: cfg.WriteTimeout, queues: b.queues,
			maxConns: cfg.MaxConnections, open: &b.open, pending: b.pending, limit: limit}
	}
	return b, nil
}

// Start binds the listeners and starts serving. It returns ErrStarted
// if called twice.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return ErrStarted
	}
	b.started = true
	for _, l := range []*listener{b.plain, b.tls} {
		if l == nil {
			continue
		}
		if err := b.srv.AddListener(l); err != nil {
			b.closeLocked()
			return err
		}
	}
	if err := b.srv.Serve(); err != nil {
		b.closeLocked()
		return err
	}
	attrs := []any{}
	if b.plain != nil {
		attrs = append(attrs, "addr", b.plain.Address())
	}
	if b.tls != nil {
		attrs = append(attrs, "tls_addr", b.tls.Address())
	}
	b.log.Info("broker: listening", attrs...)
	b.watchCertificate(b.hook.lim.stop)
	return nil
}

// Addr returns the plain listener's address (the bound one after Start,
// so a port 0 is resolved), or "" without a plain listener.
func (b *Broker) Addr() string {
	if b.plain == nil {
		return ""
	}
	return b.plain.Address()
}

// TLSAddr returns the TLS listener's address, or "" without one.
func (b *Broker) TLSAddr() string {
	if b.tls == nil {
		return ""
	}
	return b.tls.Address()
}

// Close disconnects every client and stops the listeners. Retained
// messages are lost (the downlink publisher publishes them again when the
// server starts). Closing twice does nothing.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closeLocked()
}

func (b *Broker) closeLocked() error {
	if b.closed || !b.started {
		b.closed = true
		return nil
	}
	b.closed = true
	close(b.hook.lim.stop)
	err := b.srv.Close()
	b.log.Info("broker: stopped")
	return err
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	info := b.srv.Info
	return Stats{
		Clients:         atomic.LoadInt64(&info.ClientsConnected),
		Refused:         b.hook.refused.Load(),
		Denied:          b.hook.denied.Load(),
		TakenOver:       b.hook.takeovers.Load(),
		MessagesDropped: atomic.LoadInt64(&info.MessagesDropped),
		InflightDropped: atomic.LoadInt64(&info.InflightDropped),
		Retained:        atomic.LoadInt64(&info.Retained),
		Flooded:         b.hook.lim.flooded.Load(),
		Shed:            b.hook.lim.shed.Load(),
		ServerHeld:      b.hook.lim.server.Load(),
		Queued:          b.queues.queued.Load(),
		Stalled:         b.queues.stalled.Load(),
	}
}

// Devices returns the ids of the devices connected now.
func (b *Broker) Devices() []string {
	var out []string
	for _, cl := range b.srv.Clients.GetAll() {
		id := string(cl.Properties.Username)
		if id != "" && id != b.cfg.ServerUsername && !cl.Closed() {
			out = append(out, id)
		}
	}
	return out
}

// Disconnect closes a device's connection (after its credential was
// revoked or rotated). It reports whether the device was connected.
func (b *Broker) Disconnect(deviceID string) bool {
	cl, ok := b.srv.Clients.Get(DeviceClientIDPrefix + deviceID)
	if !ok || string(cl.Properties.Username) != deviceID || cl.Closed() {
		return false
	}
	if c, ok := cl.Net.Conn.(*clientConn); ok {
		c.abort(nil) // what is queued for it is not sent
	}
	cl.Stop(ErrDisconnected)
	b.log.Warn("broker: device disconnected: its credential is no longer valid", "device", deviceID)
	return true
}
