package broker

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Defaults of the device budget (Config.Limits).
const (
	// DefaultDeviceRate is the sustained publication budget of one
	// device, in bytes a second (a bus makes a few hundred bytes of taps a
	// minute; a week of backlog is a few megabytes).
	DefaultDeviceRate = 256 << 10
	// DefaultDeviceBurst is the bytes a device may publish at once above
	// its rate (a catch-up after days offline).
	DefaultDeviceBurst = 8 << 20
	// DefaultDeviceMessageRate is the sustained budget of publications
	// (and connections) a second.
	DefaultDeviceMessageRate = 20
	// DefaultDeviceMessageBurst is the publications a device may make at
	// once above its rate.
	DefaultDeviceMessageBurst = 400
	// DefaultFloodThrottle is how much throttling (time a device's
	// publications were held back because it was over its budget) a
	// device may accumulate before it counts as flooding: it is then
	// disconnected and refused for FloodBan. Throttling drains at a
	// quarter of real time.
	DefaultFloodThrottle = 10 * time.Second
	// DefaultFloodBan is how long a flooding device is refused; it doubles
	// for each flood within an hour of the last, up to 16 times.
	DefaultFloodBan = time.Minute
	// DefaultDeviceMaxInflight bounds the QoS 1 messages the broker holds
	// for one device (sent, not yet acknowledged, or waiting to be sent):
	// beyond it deliveries to the device are dropped (devices resend
	// unacked batches, and downlinks are retained and republished).
	DefaultDeviceMaxInflight = 1024
	// DefaultDeviceMaxInflightBytes bounds those messages' payload bytes
	// (a full deny list in shards is about 16 MiB).
	DefaultDeviceMaxInflightBytes = 32 << 20
	// DefaultDeviceMaxSubscriptions bounds the subscriptions of one device
	// (a validator holds 7: its ack and cmd topics, the fleet's documents,
	// deny-list shards or their index, and releases; with the index, up to
	// 16 shard topics more while it fetches shards).
	DefaultDeviceMaxSubscriptions = 32
	// DefaultServerMaxInflightBytes bounds the payload bytes the broker
	// holds for the settlement server's clients together (in flight or
	// waiting to be written): beyond it devices' publications are
	// acknowledged and dropped, and the devices send them again.
	DefaultServerMaxInflightBytes = 64 << 20
	// DefaultDeviceSendBuffer is how many bytes may be queued for writing
	// to one connection before the broker waits (without holding up any
	// publisher) to queue more: enough to keep a link busy (the kernel's
	// socket buffer comes on top), little enough that thousands of
	// connections downloading at once hold a few hundred MiB.
	DefaultDeviceSendBuffer = 64 << 10
	// DefaultSendBufferTotal bounds the bytes queued for writing to all
	// devices' connections together: a device whose write would go over
	// it is disconnected. A connection that is not read holds at most
	// about DeviceSendBuffer and a packet (64 KiB + 400 KiB), one that is
	// read slowly about DeviceSendBuffer: 256 MiB is some 560 devices
	// that stopped reading, or about 4,000 downloading at once.
	DefaultSendBufferTotal = 256 << 20
	// retainedBurst is the bytes of retained messages SUBSCRIBEs may bring
	// one device at once before they count against its budget
	// (OnRetainPublished): a full deny list in shards (about 16 MiB) twice.
	// They come back at the device's byte rate.
	retainedBurst = 32 << 20
	// maxBanFactor caps the doubling of FloodBan.
	maxBanFactor = 16
	// banMemory is how long a flood counts towards the doubling.
	banMemory = time.Hour
)

// Limits bound what one device can make the broker hold or do. The zero
// value of every field means its Default constant; a negative rate turns
// that budget off.
type Limits struct {
	DeviceRate         int // bytes a second
	DeviceBurst        int // bytes
	DeviceMessageRate  int // publications and connections a second
	DeviceMessageBurst int
	FloodThrottle      time.Duration
	FloodBan           time.Duration

	DeviceMaxInflight      int
	DeviceMaxInflightBytes int
	DeviceMaxSubscriptions int
	ServerMaxInflightBytes int
	DeviceSendBuffer       int // bytes queued for one connection before its writer waits
	SendBufferTotal        int // bytes queued for all devices' connections
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.DeviceRate, DefaultDeviceRate)
	def(&l.DeviceBurst, DefaultDeviceBurst)
	def(&l.DeviceMessageRate, DefaultDeviceMessageRate)
	def(&l.DeviceMessageBurst, DefaultDeviceMessageBurst)
	def(&l.DeviceMaxInflight, DefaultDeviceMaxInflight)
	def(&l.DeviceMaxInflightBytes, DefaultDeviceMaxInflightBytes)
	def(&l.DeviceMaxSubscriptions, DefaultDeviceMaxSubscriptions)
	def(&l.ServerMaxInflightBytes, DefaultServerMaxInflightBytes)
	def(&l.DeviceSendBuffer, DefaultDeviceSendBuffer)
	def(&l.SendBufferTotal, DefaultSendBufferTotal)
	if l.FloodThrottle == 0 {
		l.FloodThrottle = DefaultFloodThrottle
	}
	if l.FloodBan == 0 {
		l.FloodBan = DefaultFloodBan
	}
	return l
}

func (l Limits) validate() error {
	if l.DeviceBurst < 0 || l.DeviceMessageBurst < 0 || l.FloodThrottle < 0 || l.FloodBan < 0 ||
		l.DeviceMaxInflight < 0 || l.DeviceMaxInflightBytes < 0 || l.DeviceMaxSubscriptions < 0 || l.ServerMaxInflightBytes < 0 ||
		l.DeviceSendBuffer < 0 || l.SendBufferTotal < 0 {
		return configErr("negative limit in Limits")
	}
	return nil
}

// errFlooding is the cause recorded when a flooding device is disconnected.
var errFlooding = errors.New("broker: device over its publication budget (flooding)")

// bucket is one device's budget: two token buckets (bytes and messages),
// the throttling it accumulated, and its ban.
type bucket struct {
	mu          sync.Mutex
	bytes, msgs float64
	last        time.Time
	throttled   time.Duration
	bannedUntil time.Time
	lastFlood   time.Time
	floods      int
}

// limiter keeps the devices' budgets and the bytes held for clients.
type limiter struct {
	l   Limits
	now func() time.Time

	mu      sync.Mutex
	devices map[string]*bucket // by device id; idle ones are pruned (prune)
	swept   time.Time          // when prune last ran

	inflight sync.Map // client id → *held
	server   atomic.Int64
	stop     chan struct{}

	flooded atomic.Uint64 // devices disconnected for flooding
	shed    atomic.Uint64 // messages dropped by the limits
}

// held is what the broker holds for one client: payload sizes of its QoS
// 1 messages by packet id.
type held struct {
	mu     sync.Mutex
	sizes  map[uint16]int
	bytes  int64
	server bool
}

func newLimiter(l Limits, now func() time.Time) *limiter {
	return &limiter{l: l, now: now, devices: map[string]*bucket{}, stop: make(chan struct{})}
}

func (lm *limiter) bucket(id string) *bucket {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.prune()
	b := lm.devices[id]
	if b == nil {
		b = &bucket{bytes: float64(lm.l.DeviceBurst), msgs: float64(lm.l.DeviceMessageBurst), last: lm.now()}
		lm.devices[id] = b
	}
	return b
}

// prune drops, at most once per banMemory, the budgets of devices idle
// for longer than banMemory, not banned and without a flood within it: such
// a budget has refilled and its throttling drained (with any sane Limits),
// so a fresh one is the same. Without it the map would keep one entry per
// device that ever connected (revoked and replaced ones included). lm.mu
// is held.
func (lm *limiter) prune() {
	now := lm.now()
	if now.Sub(lm.swept) < banMemory {
		return
	}
	lm.swept = now
	for id, b := range lm.devices {
		b.mu.Lock()
		idle := now.Sub(b.last) > banMemory && !now.Before(b.bannedUntil) && now.Sub(b.lastFlood) > banMemory
		b.mu.Unlock()
		if idle {
			delete(lm.devices, id)
		}
	}
}

// banned returns until when a device is refused (zero: it is not).
func (lm *limiter) banned(id string) time.Time {
	b := lm.bucket(id)
	b.mu.Lock()
	defer b.mu.Unlock()
	if lm.now().Before(b.bannedUntil) {
		return b.bannedUntil
	}
	return time.Time{}
}

// charge takes size bytes and msgs messages from a device's budget. It
// returns how long to hold the device back (0: within budget), or flood
// true when the device has been held back too long: it is then banned.
func (lm *limiter) charge(id string, size, msgs int) (wait time.Duration, flood bool, until time.Time) {
	l := lm.l
	if l.DeviceRate < 0 && l.DeviceMessageRate < 0 {
		return 0, false, time.Time{}
	}
	b := lm.bucket(id)
	b.mu.Lock()
	defer b.mu.Unlock()
	now := lm.now()
	el := now.Sub(b.last)
	if el > 0 {
		b.last = now
		b.throttled = max(0, b.throttled-el/4)
		if l.DeviceRate > 0 {
			b.bytes = min(float64(l.DeviceBurst), b.bytes+el.Seconds()*float64(l.DeviceRate))
		}
		if l.DeviceMessageRate > 0 {
			b.msgs = min(float64(l.DeviceMessageBurst), b.msgs+el.Seconds()*float64(l.DeviceMessageRate))
		}
	}
	if l.DeviceRate > 0 {
		b.bytes -= float64(size)
		if b.bytes < 0 {
			wait = max(wait, time.Duration(-b.bytes/float64(l.DeviceRate)*float64(time.Second)))
		}
	}
	if l.DeviceMessageRate > 0 && msgs > 0 {
		b.msgs -= float64(msgs)
		if b.msgs < 0 {
			wait = max(wait, time.Duration(-b.msgs/float64(l.DeviceMessageRate)*float64(time.Second)))
		}
	}
	if wait == 0 {
		return 0, false, time.Time{}
	}
	b.throttled += wait
	if b.throttled <= l.FloodThrottle {
		return wait, false, time.Time{}
	}
	// Flooding: ban, doubling for repeated floods, and start it again
	// from a full budget afterwards.
	if now.Sub(b.lastFlood) > banMemory {
		b.floods = 0
	}
	b.floods++
	b.lastFlood = now
	ban := l.FloodBan * time.Duration(min(1<<(b.floods-1), maxBanFactor))
	b.bannedUntil = now.Add(ban)
	b.throttled = 0
	b.bytes, b.msgs = float64(l.DeviceBurst), float64(l.DeviceMessageBurst)
	b.last = b.bannedUntil
	lm.flooded.Add(1)
	return wait, true, b.bannedUntil
}

// hold waits d, or until the broker closes.
func (lm *limiter) hold(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-lm.stop:
	}
}

func (lm *limiter) held(cl *mqtt.Client, server bool) *held {
	v, ok := lm.inflight.Load(cl.ID)
	if !ok {
		v, _ = lm.inflight.LoadOrStore(cl.ID, &held{sizes: map[uint16]int{}, server: server})
	}
	return v.(*held)
}

// add records a QoS 1 message held for a client.
func (lm *limiter) add(cl *mqtt.Client, server bool, id uint16, size int) {
	h := lm.held(cl, server)
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.sizes[id]; ok {
		h.bytes -= int64(old)
		if h.server {
			lm.server.Add(-int64(old))
		}
	}
	h.sizes[id] = size
	h.bytes += int64(size)
	if h.server {
		lm.server.Add(int64(size))
	}
}

// done forgets a message acknowledged or dropped.
func (lm *limiter) done(cl *mqtt.Client, id uint16) {
	v, ok := lm.inflight.Load(cl.ID)
	if !ok {
		return
	}
	h := v.(*held)
	h.mu.Lock()
	defer h.mu.Unlock()
	if size, ok := h.sizes[id]; ok {
		delete(h.sizes, id)
		h.bytes -= int64(size)
		if h.server {
			lm.server.Add(-int64(size))
		}
	}
}

// forget drops a client's accounting (its session ended or started clean).
func (lm *limiter) forget(clientID string) {
	v, ok := lm.inflight.LoadAndDelete(clientID)
	if !ok {
		return
	}
	h := v.(*held)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.server {
		lm.server.Add(-h.bytes)
	}
	h.bytes, h.sizes = 0, nil
}

// full reports whether a device may not be given one more message.
func (lm *limiter) full(cl *mqtt.Client) bool {
	if cl.State.Inflight.Len() >= lm.l.DeviceMaxInflight {
		return true
	}
	v, ok := lm.inflight.Load(cl.ID)
	if !ok {
		return false
	}
	h := v.(*held)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bytes >= int64(lm.l.DeviceMaxInflightBytes)
}

// OnQosPublish counts a QoS 1 message the broker now holds for a client.
func (h *hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish || resends > 0 {
		return
	}
	h.lim.add(cl, string(cl.Properties.Username) == h.cfg.ServerUsername, pk.PacketID, len(pk.Payload)+len(pk.TopicName))
}

// OnQosComplete forgets a message the client acknowledged.
func (h *hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) { h.lim.done(cl, pk.PacketID) }

// OnQosDropped forgets a message the broker dropped. A persistent session
// taken over by a new connection reports its messages dropped as it hands
// them to the new one, under the same client id: they are still held.
// (mochi counts them again as it resends them after the CONNACK, but a
// delivery in between found the device's bytes at zero.)
func (h *hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return
	}
	h.lim.done(cl, pk.PacketID)
}

// OnSessionEstablished starts a client's accounting afresh when its
// session is clean (nothing was inherited).
func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if pk.Connect.Clean {
		h.lim.forget(cl.ID)
	}
}

// OnDisconnect forgets what was held for a client whose session ends with
// its connection.
func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	h.subs.Delete(cl)
	if errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		h.tookOver(cl)
	}
	if expire {
		h.lim.forget(cl.ID)
	}
}

// tookOver logs a connection closed for a new login with the same client
// id, at most once a minute per identity, with how many were not logged:
// once after a network cut is normal (the broker had not yet noticed the
// old connection gone); many a minute are two devices with one identity,
// knocking each other off (each sees only "connection lost").
func (h *hook) tookOver(cl *mqtt.Client) {
	h.takeovers.Add(1)
	id := string(cl.Properties.Username)
	if ok, n := h.limit.Allow("takeover\x00" + id); ok {
		h.log.Info("broker: a new login as this client closed its earlier connection (once after a network cut is normal; "+
			"again and again, two devices share this identity: a copied bundle or SD card)",
			"identity", clip(id), "client_id", clip(cl.ID), "earlier_remote", cl.Net.Remote, "suppressed", n)
	}
}

// OnClientExpired forgets an expired session's accounting.
func (h *hook) OnClientExpired(cl *mqtt.Client) { h.lim.forget(cl.ID) }

// throttle charges a packet a device sent to its budget (size bytes, msgs
// messages): within budget it returns at once; over it, it holds the
// device's connection back (nothing more is read from it) until the
// budget allows; a device over its budget for too long is disconnected and
// banned. It reports whether the packet may go on.
func (h *hook) throttle(cl *mqtt.Client, id string, size, msgs int) bool {
	wait, flood, until := h.lim.charge(id, size, msgs)
	if flood {
		h.refused.Add(1)
		h.log.Warn("broker: device flooding; disconnected and refused for a while", "device", id,
			"until", until.UTC().Format(time.RFC3339), "remote", cl.Net.Remote)
		cl.Stop(errFlooding)
		return false
	}
	if wait > 0 {
		h.lim.hold(wait)
	}
	return true
}

// shedDelivery counts a delivery dropped because the client holds too much.
func (h *hook) shedDelivery(id, topic string) {
	h.lim.shed.Add(1)
	if ok, n := h.limit.Allow("shed\x00" + id); ok {
		h.log.Warn("broker: message not delivered: the client holds too many unacknowledged messages",
			"identity", id, "topic", topic, "suppressed", n)
	}
}

// deviceOverload reports whether the server's clients hold so much that a
// device's publication must be dropped (acknowledged, not delivered; the
// device sends it again).
func (h *hook) serverOverloaded() bool {
	return h.lim.server.Load() >= int64(h.lim.l.ServerMaxInflightBytes)
}

// errBanned is returned by identify's caller for a banned device.
func bannedErr(until time.Time) error {
	return fmt.Errorf("flooding: refused until %s", until.UTC().Format(time.RFC3339))
}

// Subscriptions and deliveries. mochi asks OnACLCheck (read) both about
// a SUBSCRIBE's filters and about each message it is about to deliver,
// with nothing to tell them apart: an exact filter is the topic string of
// its deliveries. The held-message bound (full) is for deliveries only: a
// subscription holds no message (the retained ones it brings are
// deliveries, checked one by one), and refusing a device at its bound its
// own ack or cmd topic would wedge it (it treats a refused filter as an
// error, disconnects and comes back to the same backlog). A subscription
// check is told apart by the identity of its string: OnSubscribe keeps the
// packet's filter strings, which processSubscribe then passes to
// OnACLCheck as they are (decoded in place from the packet's own buffer),
// while a delivery's topic is another packet's string; a copy made by a
// later mochi falls back to the delivery rule (bounded, and
// TestFullDeviceResubscribes fails).

// OnSubscribe notes the filters of the SUBSCRIBE being processed (on the
// client's read goroutine, until OnSubscribed).
// (A device's SUBSCRIBE is charged a message from its budget, and one
// more for each filter it names again, as it is read, OnPacketRead: a
// repeated filter has the broker queue the retained messages it matches
// again; subscribeCost.)
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	h.subs.Store(cl, slices.Clone(pk.Filters))
	return pk
}

// OnSubscribed ends what OnSubscribe began.
func (h *hook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) { h.subs.Delete(cl) }

// subscribing returns the subscription of the SUBSCRIBE cl is sending now
// whose filter is topic, the same string (not an equal one), and false if
// there is none.
func (h *hook) subscribing(cl *mqtt.Client, topic string) (packets.Subscription, bool) {
	v, ok := h.subs.Load(cl)
	if !ok {
		return packets.Subscription{}, false
	}
	for _, sub := range v.(packets.Subscriptions) {
		if len(sub.Filter) == len(topic) && unsafe.StringData(sub.Filter) == unsafe.StringData(topic) {
			return sub, true
		}
	}
	return packets.Subscription{}, false
}

// maxFilterTail bounds a device's subscription filter after the topic
// prefix: its own topics take at most 73 bytes ("/dev/", a 64-byte id,
// "/ack"), the fleet's fewer. A filter string keeps its SUBSCRIBE packet's
// buffer (up to MaxPacketSize) for as long as the subscription lasts.
const maxFilterTail = 128

// subscriptionAllowed applies a device's subscription bounds to a
// subscription the access rules allow: QoS 1 (QoS 0 messages are outside
// the held-message bound: mochi would queue them for a device that does
// not read, each retained deny-list shard again for each SUBSCRIBE), at
// most DeviceMaxSubscriptions filters (one it holds already may be
// subscribed again), none longer than it needs. The held-message bound
// does not apply (see above).
func (h *hook) subscriptionAllowed(cl *mqtt.Client, id string, sub packets.Subscription) bool {
	filter := sub.Filter
	_, has := cl.State.Subscriptions.Get(filter)
	switch {
	case sub.Qos == 0:
	case len(filter) > len(h.cfg.TopicPrefix)+maxFilterTail:
	case !has && cl.State.Subscriptions.Len() >= h.lim.l.DeviceMaxSubscriptions:
	default:
		return true
	}
	h.denied.Add(1)
	if ok, n := h.limit.Allow("subs\x00" + id); ok {
		h.log.Warn("broker: subscription refused: QoS 0, too many or too long a filter", "identity", id, "qos", sub.Qos,
			"filter", filter[:min(len(filter), len(h.cfg.TopicPrefix)+maxFilterTail)],
			"subscriptions", cl.State.Subscriptions.Len(), "suppressed", n)
	}
	return false
}
