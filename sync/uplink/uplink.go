package uplink

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/record"

	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/internal/mqttclient"
	"github.com/farego/farego/sync/ratelog"
	"github.com/farego/farego/sync/wire"
)

// StateApplier is the part of the validator agent that the uplink drives
// (the agent's *Agent satisfies it). Its methods are called from several
// goroutines and must be safe for concurrent use.
type StateApplier interface {
	// Apply installs a new version of a fleet document (kind is
	// record.DocKeyring, DownlinkDenyList or DownlinkFares; body is the
	// document) atomically, refusing a version that is not newer.
	Apply(kind string, version uint64, body []byte) error
	// Versions returns the applied document versions by kind; the map is
	// the caller's.
	Versions() map[string]uint64
	// SyncSucceeded tells the agent that the server has acked every
	// queued tap.
	SyncSucceeded() error
}

// publisher is the part of the MQTT client that sends (an mqtt.Client).
type publisher interface {
	Publish(topic string, qos byte, retained bool, payload any) mqtt.Token
}

// Inbound buffers between paho's message handlers and the goroutines that
// process the messages. A full buffer drops the message (and logs it):
// acks and commands come again, retained downlinks on the next connection.
const (
	deviceInboxSize = 256
	fleetInboxSize  = 64
)

// Uplink is the device side of the MQTT link: it drains the queue to the
// server and applies the server's downlinks. Use New, then Run.
type Uplink struct {
	cfg   Config
	q     *queue.Queue
	state StateApplier
	log   *slog.Logger
	mqtt  *mqttclient.Client
	tls   *tls.Config // for TLS brokers; nil without one
	// certEnd is when the client certificate presented to the broker
	// ends (zero: none), reported in the status (wire.Status.CertNotAfter).
	certEnd time.Time

	taps, ack, cmd, status string            // this device's topics
	fleet                  map[string]string // fleet topic → downlink kind
	topics                 wire.Topics
	filters                map[string]byte // subscriptions, all QoS 1

	deviceIn chan inbound     // acks and commands, for the session goroutine
	fleetIn  chan inbound     // downlinks, for the downlink goroutine
	sessions chan mqtt.Client // new connections, for the downlink goroutine (DenyIndexWait)
	wake     chan struct{}    // Notify, downlink applied
	acks     *ackCommitter    // writes acks to the queue beside the session

	clock       atomic.Pointer[ClockSample] // the last clock sample
	dropStreak  atomic.Int64                // inbound messages dropped since the last accepted
	statusDirty atomic.Bool                 // something the status shows has changed
	statusNow   atomic.Bool                 // and an operator waits to see it (not held by StatusMinInterval)
	running     atomic.Bool

	mu          sync.Mutex
	stats       Stats
	statusLimit *ratelog.Limiter // a status failing wire's check: logged once per reason per statusLogEvery
}

// inbound is one message received from the broker.
type inbound struct {
	topic   string
	payload []byte
	client  mqtt.Client // the connection it came on
}

// Stats are the uplink's counters since New.
type Stats struct {
	mqttclient.Stats // connected and subscribed now, connections, failed attempts, the last error

	BatchesSent  uint64 // batch messages published (including resends)
	RecordsSent  uint64 // records in them
	BytesSent    uint64 // their size on the wire
	InFlight     int    // batches published and not yet acked
	Acks         uint64 // valid acks received
	RecordsAcked uint64 // records acked in the queue (deleted, or archived)
	AckTimeouts  uint64 // times no ack came in time and the window was sent again
	Replays      uint64 // replay requests carried out
	Assignments  uint64 // assignments handed to Config.Assign
	Unsendable   uint64 // records too large for a batch (left in the queue)
	BatchesSplit uint64 // batches halved to fit a wire message (wire.MaxMessageSize)
	SyncCalls    uint64 // SyncSucceeded calls
	StatusSent   uint64 // status messages published

	// AckTimeoutsInRow counts the ack timeouts since the last ack on this
	// connection (0 once one comes): connected, with no ack for several
	// sends, the server refuses the device's batches (a device key that
	// is not the one registered for its id: it says nothing back) or the
	// device refuses its acks (another fleet's key).
	AckTimeoutsInRow int

	// StatusSanitized counts status messages that failed wire's check
	// (Status.Check) and were sent sanitized; StatusProblem is why the
	// last status failed it ("" when the last one passed).
	StatusSanitized uint64
	StatusProblem   string

	DownlinksApplied   uint64 // downlinks applied
	DownlinksUnchanged uint64 // downlinks of the version already applied (retained ones, on every connect)
	DownlinksRefused   uint64 // downlinks refused: bad signature, malformed, wrong kind, older, or Apply failed
	MessagesRefused    uint64 // acks and commands refused: bad signature, malformed, another device or epoch
	MessagesDropped    uint64 // inbound messages dropped because the inbox was full

	DenyShardMessages      uint64 // messages received on deny-list shard topics
	DenyShardBytes         uint64 // their payload bytes
	DenyIndexes            uint64 // deny-list shard indexes accepted (DenyIndexWait)
	DenyShardSubscriptions uint64 // shard topics subscribed because an index had them newer
	DenyShardRefused       uint64 // shard subscriptions the broker still refused after retries (its bound: taken fewer at a time)
	DenyIndexFallbacks     uint64 // connections on which no index came and every shard was subscribed
}

// New checks cfg and returns an Uplink for queue q that applies downlinks to
// st. It reads the TLS files named in cfg. It does not connect: Run does.
func New(cfg Config, q *queue.Queue, st StateApplier) (*Uplink, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if q == nil || st == nil {
		return nil, fmt.Errorf("%w: a queue and a StateApplier are required", ErrConfig)
	}
	u := &Uplink{
		cfg:      cfg,
		q:        q,
		state:    st,
		log:      cfg.Logger,
		fleet:    map[string]string{},
		filters:  map[string]byte{},
		deviceIn: make(chan inbound, deviceInboxSize),
		fleetIn:  make(chan inbound, fleetInboxSize),
		sessions: make(chan mqtt.Client, 1),
		wake:     make(chan struct{}, 1),
		acks:     newAckCommitter(q, cfg.OnAcked),

		statusLimit: ratelog.New(cfg.Now, statusLogEvery),
	}
	tlsConfig, err := cfg.clientTLS()
	if err != nil {
		return nil, err
	}
	t := wire.Topics{Prefix: cfg.TopicPrefix}
	u.taps = t.Device(cfg.DeviceID, wire.KindTaps)
	u.ack = t.Device(cfg.DeviceID, wire.KindAck)
	u.cmd = t.Device(cfg.DeviceID, wire.KindCmd)
	u.status = t.Device(cfg.DeviceID, wire.KindStatus)
	u.filters[u.ack] = 1
	u.filters[u.cmd] = 1
	for _, k := range record.DocKinds {
		u.fleet[t.Fleet(k)] = k
		u.filters[t.Fleet(k)] = 1
	}
	if cfg.DenyIndexWait > 0 {
		// The shards the index names are subscribed to as needed; the
		// whole list (for older validators, while small: the shards
		// carry it too) only without an index.
		u.filters[t.DenyIndex()] = 1
		delete(u.filters, t.Fleet(record.DocDenyList))
	} else {
		u.filters[t.DenyShards()] = 1
	}
	if cfg.OnRelease != nil {
		u.fleet[t.Fleet(wire.DocRelease)] = wire.DocRelease
		u.filters[t.Fleet(wire.DocRelease)] = 1
	}
	u.topics = t
	mc := cfg.mqttConfig()
	u.tls = tlsConfig
	u.certEnd = clientCertEnd(tlsConfig)
	mc.TLS, mc.Filters, mc.Handler, mc.Goodbye = tlsConfig, u.filters, u.onMessage, u.goodbye
	mc.Will = func() (string, []byte, error) {
		will, err := u.statusMessage(false)
		return u.status, will, err
	}
	u.mqtt = mqttclient.New(mc)
	return u, nil
}

// Run keeps the device connected to the broker until ctx is done: it drains
// the queue in signed batches, deletes records when the server acks them,
// publishes the device status and applies downlinks. It reconnects with
// jittered, capped backoff, logging a run of failures once and the recovery
// once. When ctx is done it publishes an offline status, disconnects and
// returns nil.
//
// Run returns an error only if the queue fails for good (closed or
// corrupt), after disconnecting the same way, and ErrRunning if the uplink
// is already running.
func (u *Uplink) Run(ctx context.Context) error {
	if !u.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer u.running.Store(false)

	dctx, cancel := context.WithCancel(ctx)
	stopAcks := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { u.downlinks(dctx) })
	wg.Go(func() { u.acks.loop(stopAcks, u.countAcked) })
	defer func() {
		cancel()
		close(stopAcks) // the committer writes what is pending, then stops
		wg.Wait()
	}()

	s := newSender(u)
	err := u.mqtt.Run(ctx, func(ctx context.Context, ss *mqttclient.Session) error {
		if u.cfg.DenyIndexWait > 0 {
			u.onSession(ss.Client())
		}
		return s.run(ctx, ss.Client(), ss.Lost())
	})
	if err != nil {
		u.log.Error("uplink: stopped: the queue failed", "err", err)
		return fmt.Errorf("uplink: %w", err)
	}
	return nil
}

// Notify tells the uplink that records were appended, so that it sends
// them now rather than at its next poll. It never blocks.
func (u *Uplink) Notify() { signal(u.wake) }

// StatusChanged tells the uplink that something the status shows through
// Config.Status has changed (the device went out of service or back), so
// that it publishes the status now rather than at the next heartbeat. It
// never blocks.
func (u *Uplink) StatusChanged() {
	u.statusNow.Store(true)
	u.statusDirty.Store(true)
	u.Notify()
}

// Connected reports whether the uplink is connected and subscribed.
func (u *Uplink) Connected() bool { return u.mqtt.Connected() }

// Stats returns a snapshot of the uplink's counters.
func (u *Uplink) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.stats
	s.Stats = u.mqtt.Stats()
	return s
}

// countAcked counts records acked in the queue.
func (u *Uplink) countAcked(n int) { u.count(func(s *Stats) { s.RecordsAcked += uint64(n) }) }

// count updates the counters.
func (u *Uplink) count(f func(*Stats)) {
	u.mu.Lock()
	f(&u.stats)
	u.mu.Unlock()
}
