package broker

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/internal/clientaddr"
	"github.com/farego/farego/sync/ratelog"
	"github.com/farego/farego/sync/wire"
)

// serverPasswordContext is the HMAC message the server's own password is
// derived with.
const serverPasswordContext = "farego-mqtt-server-v1"

// ServerPassword returns the MQTT password of the settlement server's own
// clients (username Config.ServerUsername):
// hex(HMAC-SHA256(secret, "farego-mqtt-server-v1")).
func ServerPassword(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(serverPasswordContext))
	return hex.EncodeToString(m.Sum(nil))
}

// sharedGroupContext is the HMAC message the settlement instances'
// shared-subscription group is derived with.
const sharedGroupContext = "farego-mqtt-shared-group-v1"

// SharedGroup returns the default MQTT shared-subscription group of the
// settlement instances: "settlement-" and 16 hex digits of
// HMAC-SHA256(secret, "farego-mqtt-shared-group-v1"). Every instance with
// the same broker secret derives the same group, and nobody without the
// secret can guess it. That matters on Mosquitto 2, whose acl_file does
// not check subscriptions (only deliveries): a device subscribing to
// $share/GROUP/… in the servers' group would be handed a share of the
// batches, denied delivery, and they would be lost to the servers until
// the devices resent them. In a group of its own making it takes nothing
// from anyone. The embedded broker refuses $share to devices outright.
func SharedGroup(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(sharedGroupContext))
	return "settlement-" + hex.EncodeToString(m.Sum(nil))[:16]
}

// DeviceAuthority decides which devices may log in, and with what: the
// settlement server answers from the ledger (each device's random password
// hash, pinned certificate and revocation), so that a credential rotated or
// revoked through any settlement instance stops working on every broker
// within seconds. It must be quick (cache) and safe for concurrent use.
type DeviceAuthority interface {
	// CheckPassword returns nil if device id may log in with password.
	CheckPassword(id string, password []byte) error
	// CheckCertificate returns nil if device id may log in with this
	// verified client certificate (DER).
	CheckCertificate(id string, der []byte) error
}

// hook is the broker's authentication and access-control hook. A client's
// identity (a device id, or the server username) is decided when it
// connects and kept as its MQTT username, which the ACL reads.
type hook struct {
	mqtt.HookBase
	cfg     *Config
	srv     *mqtt.Server
	log     *slog.Logger
	limit   *ratelog.Limiter
	devPfx  string // PREFIX/dev/
	fleet   string // PREFIX/fleet/#
	server  []string
	refused atomic.Uint64
	denied  atomic.Uint64
	// takeovers counts connections closed for a new login with the same
	// client id.
	takeovers atomic.Uint64
	lim       *limiter
	// fetch is each device's allowance of retained messages its
	// SUBSCRIBEs bring (retainedBurst, at its byte rate); beyond it they
	// are charged to lim (OnRetainPublished).
	fetch *limiter
	subs  sync.Map // *mqtt.Client → packets.Subscriptions of the SUBSCRIBE being processed (OnSubscribe)
}

func newHook(cfg *Config, log *slog.Logger) *hook {
	p := cfg.TopicPrefix
	return &hook{
		cfg: cfg, log: log, limit: ratelog.New(cfg.Now, ratelog.DefaultEvery),
		devPfx: p + "/dev/", fleet: p + "/fleet/#",
		// What the server may subscribe to (also in a shared group).
		server: []string{p + "/dev/+/" + wire.KindTaps, p + "/dev/+/" + wire.KindStatus, p + "/fleet/#"},
		lim:    newLimiter(cfg.Limits, cfg.Now),
		// Never flooding: its overflow is charged to lim, which bans. A
		// flood would give the allowance back whole (and after no ban:
		// FloodBan 0), so the throttle bound is one throttled (a
		// time.Duration) cannot pass; 1<<62 was passed with a low
		// DeviceRate (TestRetainedAllowanceNeverRefilledByItsThrottle).
		fetch: newLimiter(Limits{DeviceRate: cfg.Limits.DeviceRate, DeviceBurst: retainedBurst, DeviceMessageRate: -1,
			FloodThrottle: math.MaxInt64}, cfg.Now),
	}
}

func (h *hook) ID() string { return "farego-auth" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnPublish,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnClientExpired,
		mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnRetainPublished, mqtt.OnWill, mqtt.OnPacketEncode:
		return true
	}
	return false
}

// OnConnectAuthenticate decides who a client is: the common name of a
// verified client certificate, or a username with its password. A device
// must have a valid id, be accepted by Config.Devices and use its own
// client id; its last will must be a topic it may publish to; and a client
// id in use by another identity is refused, so that nobody takes over
// another's session.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	id, err := h.identify(cl, pk)
	proven := err == nil // id is who the client is, whatever refuses it below
	if err == nil && id != h.cfg.ServerUsername {
		// A flooding device is refused for a while, and every login
		// (refused or not) costs a message from its budget, so a
		// reconnection loop is a flood too.
		if until := h.lim.banned(id); !until.IsZero() {
			err = bannedErr(until)
		} else if _, flood, until := h.lim.charge(id, 0, 1); flood {
			err = bannedErr(until)
		}
	}
	if err == nil && pk.Connect.WillFlag && !h.allowed(id, pk.Connect.WillTopic, true) {
		err = fmt.Errorf("last will on %q, a topic the client may not publish to", clip(pk.Connect.WillTopic))
	}
	if err == nil && id != h.cfg.ServerUsername && cl.ID != DeviceClientIDPrefix+id {
		// One client id per device, its own: nobody can squat another
		// device's session, and each device has at most one.
		err = fmt.Errorf("client id %q: device %s must use %q", clip(cl.ID), id, DeviceClientIDPrefix+id)
	}
	if err == nil && id == h.cfg.ServerUsername && strings.HasPrefix(cl.ID, DeviceClientIDPrefix) {
		err = fmt.Errorf("client id %q is a device's", clip(cl.ID))
	}
	if err == nil && h.srv != nil {
		if old, ok := h.srv.Clients.Get(cl.ID); ok && string(old.Properties.Username) != id {
			err = fmt.Errorf("client id in use by %q", old.Properties.Username)
		}
	}
	if err == nil && id != h.cfg.ServerUsername && h.cfg.DevicesReady != nil && !h.cfg.DevicesReady() {
		err = errNotReady
	}
	if err != nil {
		h.refused.Add(1)
		user := string(pk.Connect.Username)
		// Once a minute per client address, not per username: a client
		// that has not logged in picks a new username for every try (an
		// attack review: 2,400 made-up device ids a second from one
		// address, 4,096 lines a minute, the limiter's whole table, which
		// then held back every other complaint of the broker). A client
		// that proved who it is (refused as banned, not ready, for its
		// client id) has a line of its own: devices behind one address (a
		// depot's NAT) would otherwise hide each other's refusals, a
		// banned device's reconnections those of a revoked one.
		key := clientaddr.Key(cl.Net.Remote)
		if proven {
			key = "device\x00" + id
		}
		if ok, n := h.limit.Allow("auth\x00" + key); ok {
			// What the client sent is cut short: a username or client id
			// may be 64 KiB, the line must not be.
			h.log.Warn("broker: connection refused", "username", clip(user), "client_id", clip(cl.ID),
				"remote", cl.Net.Remote, "listener", cl.Net.Listener, "reason", err, "suppressed", n)
		}
		return false
	}
	cl.Properties.Username = []byte(id)
	if c, ok := cl.Net.Conn.(*clientConn); ok {
		c.identify(id, id == h.cfg.ServerUsername)
	}
	h.log.Debug("broker: client authenticated", "identity", id, "client_id", cl.ID, "remote", cl.Net.Remote)
	return true
}

// identify returns the identity a client proves: a device, by its
// certificate or its password (as DeviceAuthority says), or the settlement
// server, by its password only — no certificate ever authenticates as the
// server, so no device certificate (whatever its common name) can.
func (h *hook) identify(cl *mqtt.Client, pk packets.Packet) (string, error) {
	user := string(pk.Connect.Username)
	conn := cl.Net.Conn
	if c, ok := conn.(*clientConn); ok {
		conn = c.Conn
	}
	if tc, ok := conn.(*tls.Conn); ok {
		if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
			cn := st.PeerCertificates[0].Subject.CommonName
			if user != "" && user != cn {
				return "", fmt.Errorf("username %q differs from the certificate's common name %q", clip(user), clip(cn))
			}
			if cn == h.cfg.ServerUsername {
				return "", errors.New("the settlement server's identity cannot log in with a certificate")
			}
			if err := record.ValidDeviceID(cn); err != nil {
				return "", errors.New("the certificate's common name is not a valid device id")
			}
			return cn, h.cfg.Devices.CheckCertificate(cn, st.PeerCertificates[0].Raw)
		}
	}
	if user == "" || !pk.Connect.PasswordFlag {
		if _, ok := conn.(*tls.Conn); ok && user == "" {
			// Over TLS with no verified certificate: this listener asks
			// for none (RequireAndVerifyClientCert refuses the handshake
			// otherwise), and a device provisioned with --tls, which
			// has no password, is refused here whatever it holds.
			return "", errors.New("no username and password, and this TLS listener asks for no client certificate (a device provisioned with --tls logs in with one: run the server with --client-ca)")
		}
		return "", errors.New("no username and password")
	}
	if user == h.cfg.ServerUsername {
		if !hmac.Equal(bytes.ToLower(pk.Connect.Password), []byte(ServerPassword(h.cfg.Secret))) {
			return "", errors.New("wrong password")
		}
		return user, nil
	}
	if err := record.ValidDeviceID(user); err != nil {
		return "", errors.New("the username is not a valid device id")
	}
	return user, h.cfg.Devices.CheckPassword(user, pk.Connect.Password)
}

// OnACLCheck applies the access rules to a publication (write) or to a
// subscription filter or delivered topic (read).
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	id := string(cl.Properties.Username)
	if h.allowed(id, topic, write) {
		if write || id == h.cfg.ServerUsername {
			return true
		}
		if sub, ok := h.subscribing(cl, topic); ok {
			return h.subscriptionAllowed(cl, id, sub)
		}
		if h.lim.full(cl) {
			// A delivery to a device that holds too many messages
			// unacknowledged: dropped (retained downlinks come again
			// on its next connection, acks on its next resend). A
			// device that is merely slow to read gets everything: a
			// live deny-list shard dropped would not come again until
			// it reconnects (see clientConn for one that reads nothing).
			h.shedDelivery(id, topic)
			return false
		}
		return true
	}
	h.denied.Add(1)
	if ok, n := h.limit.Allow("acl\x00" + id); ok {
		h.log.Warn("broker: access denied", "identity", id, "client_id", cl.ID, "topic", clip(topic),
			"write", write, "suppressed", n)
	}
	if write && id != h.cfg.ServerUsername && !cl.Net.Inline {
		// A device publishing outside its topics is disconnected, at
		// every QoS and protocol version (mochi drops a refused QoS 0
		// publication silently and answers an MQTT 5 one with a PUBACK,
		// leaving the connection open).
		cl.Stop(errNotAllowed)
	}
	return false
}

// errNotAllowed is the cause recorded when a device that published outside
// its topics is disconnected.
var errNotAllowed = errors.New("broker: device published outside its topics")

// allowed is the access rule set:
//
//   - a device may publish only PREFIX/dev/ITS_ID/taps and …/status, and
//     read only PREFIX/dev/ITS_ID/ack, …/cmd and PREFIX/fleet/#;
//   - the server may publish PREFIX/dev/+/ack, …/cmd and PREFIX/fleet/#,
//     and read PREFIX/dev/+/taps, …/status and PREFIX/fleet/#, also in
//     shared subscriptions ($share/GROUP/…);
//   - nothing else (no $SYS, nothing outside the prefix).
func (h *hook) allowed(id, topic string, write bool) bool {
	if id == "" {
		return false
	}
	if id == h.cfg.ServerUsername {
		if write {
			if strings.HasPrefix(topic, "$") {
				return false
			}
			_, kind, err := wire.Topics{Prefix: h.cfg.TopicPrefix}.ParseDevice(topic)
			return (err == nil && (kind == wire.KindAck || kind == wire.KindCmd)) || covers(h.fleet, topic)
		}
		if rest, ok := strings.CutPrefix(topic, "$share/"); ok {
			group, filter, ok := strings.Cut(rest, "/")
			if !ok || group == "" || strings.ContainsAny(group, "+#") {
				return false
			}
			topic = filter
		}
		for _, f := range h.server {
			if covers(f, topic) {
				return true
			}
		}
		return false
	}
	own := h.devPfx + id + "/"
	if write {
		return topic == own+wire.KindTaps || topic == own+wire.KindStatus
	}
	return topic == own+wire.KindAck || topic == own+wire.KindCmd || covers(h.fleet, topic)
}

// OnPublish keeps tap batches from being retained: a retained batch would
// be delivered again to every new plain subscriber, and held in memory.
//
// A device's publication is charged to its budget (Config.Limits): over
// it, the device is held back, and a device that stays over it is
// disconnected and banned for a while. A device's QoS 0 publication is
// dropped: what the broker holds at QoS 0 is outside its byte bounds
// (mochi queues it for a subscriber that does not read), and devices
// publish at QoS 1. While the settlement server's
// clients hold more than Limits.ServerMaxInflightBytes, devices'
// publications are acknowledged and dropped: the devices send them again
// when no ack comes.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if id := string(cl.Properties.Username); id != h.cfg.ServerUsername && !cl.Net.Inline {
		// Charged to the device's budget as it was read (OnPacketRead).
		if pk.FixedHeader.Qos == 0 {
			// Outside the byte bounds, and no device sends it.
			h.denied.Add(1)
			if ok, n := h.limit.Allow("qos0\x00" + id); ok {
				h.log.Warn("broker: QoS 0 publication from a device dropped", "identity", id,
					"topic", pk.TopicName, "suppressed", n)
			}
			return pk, packets.ErrRejectPacket
		}
		if h.serverOverloaded() {
			h.shedDelivery(id, pk.TopicName)
			return pk, packets.CodeSuccessIgnore
		}
	}
	if pk.FixedHeader.Retain && strings.HasPrefix(pk.TopicName, h.devPfx) && strings.HasSuffix(pk.TopicName, "/"+wire.KindTaps) {
		pk.FixedHeader.Retain = false
	}
	return pk, nil
}

// subscribeCost is what a SUBSCRIBE costs in messages: one, and one more
// for each filter it names again. mochi offers the retained messages a
// filter matches once per filter, a repeated one too, while the bound on
// subscriptions counts distinct filters: a packet naming `farego/fleet/#`
// 1,000 times made it copy every retained fleet document 1,000 times
// (TestAttackRepeatedFilterSubscribe). Charged for every filter, a
// validator whose SUBSCRIBEs of 16 deny shards the bound refused and it
// sent again ran out of budget and was banned
// (TestDenyIndexThroughTheACL, 12 subscriptions).
func subscribeCost(filters packets.Subscriptions) int {
	seen := make(map[string]bool, len(filters))
	for _, f := range filters {
		seen[f.Filter] = true
	}
	return 1 + len(filters) - len(seen)
}

// OnPacketRead charges every packet a device sends to its budget
// (Config.Limits) as it is read, before mochi validates it or the access
// rules refuse it: its bytes (the whole packet, MQTT 5 properties
// included), and a message for a PUBLISH, UNSUBSCRIBE or AUTH, and for
// a SUBSCRIBE subscribeCost, and a message for a PINGREQ, a PUBACK of no
// message in flight and a PUBREC, PUBREL or PUBCOMP (QoS is capped at 1:
// no device sends those), not for the PUBACK a device sends for a
// delivery (TestEmptyPacketsCharged: a flood of empty ones cost nothing,
// and kept a core busy at 370,000 a second). mochi sends the retained messages a filter
// matches for every filter of a SUBSCRIBE, one named again in the same
// packet too, copying each before the access rules see it: a SUBSCRIBE
// of 17 KB charged one message had it copy and offer every retained
// fleet document 1,000 times, a core of the server busy for as long as a
// device sent one a second (TestAttackRepeatedFilterSubscribe).
// Charged anywhere later, a refused or unusual packet cost nothing: an
// attack review sent 94 refused 380 KiB publications a second, 9,500
// PINGREQs with 380 KiB bodies in 5 s, and MQTT 5 acks carrying user
// properties, never held back. A device over its budget for too long is
// disconnected (the packet is refused, which ends the connection).
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	id := string(cl.Properties.Username)
	if id == "" || id == h.cfg.ServerUsername || cl.Net.Inline {
		return pk, nil // not logged in yet (the CONNECT has bounds of its own), or the server's own
	}
	msgs := 0
	switch pk.FixedHeader.Type {
	case packets.Publish, packets.Unsubscribe, packets.Auth:
		msgs = 1
	case packets.Subscribe:
		msgs = subscribeCost(pk.Filters)
	case packets.Pingreq, packets.Pubrec, packets.Pubrel, packets.Pubcomp:
		msgs = 1
	case packets.Puback:
		if _, ok := cl.State.Inflight.Get(pk.PacketID); !ok {
			msgs = 1
		}
	}
	if !h.throttle(cl, id, pk.FixedHeader.Remaining, msgs) {
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnRetainPublished charges a device's budget the bytes of each retained
// message a SUBSCRIBE of its has the broker queue for it beyond its
// allowance for them (fetch: 32 MiB at once, at its byte rate), so that a
// validator's fetch of a full deny list (up to some 16 MiB of shards, on
// its first connection, or at every one for a validator of a release
// that takes every shard) leaves its whole budget to the backlog it
// uploads then (a review: charged from the first byte, a bus's backlog
// above some 6 MB beside 7.5 MB of shards was banned) (mochi calls it
// on the client's read goroutine, as the SUBSCRIBE is processed, for
// each message it queued, not for one the held-message bound refused).
// A SUBSCRIBE costs a message and its own few bytes, but brings every
// retained message its filter matches, again each time a filter is
// subscribed (MQTT requires it): an attack review had a device send
// `farego/fleet/#` 20 times a second, within its message budget, and
// pull 33 MB/s of retained deny-list shards (363 MB in 11 s, 2 MB of
// retained fleet documents), never held back; with a million deny-list
// entries (4.3 MB of shards) one stolen login could fill the server's
// uplink. A validator's own fetches (the shards it lacks, once a
// connection; all of them on its first) are within the allowance
// (TestAttackResubscribeRetained).
func (h *hook) OnRetainPublished(cl *mqtt.Client, pk packets.Packet) {
	id := string(cl.Properties.Username)
	if id == "" || id == h.cfg.ServerUsername || cl.Net.Inline {
		return
	}
	size := len(pk.TopicName) + len(pk.Payload)
	if wait, _, _ := h.fetch.charge(id, size, 0); wait == 0 {
		return
	}
	h.throttle(cl, id, size, 0)
}

// OnWill publishes a device's last will at QoS 1, whatever it asked
// for: a QoS 0 message held for the server's clients would be outside
// the byte bounds. A will on a taps topic is not retained, as OnPublish
// keeps a batch from being retained (mochi sends a will past OnPublish).
func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if string(cl.Properties.Username) != h.cfg.ServerUsername && will.Qos == 0 {
		will.Qos = 1
	}
	if will.Retain && strings.HasPrefix(will.TopicName, h.devPfx) && strings.HasSuffix(will.TopicName, "/"+wire.KindTaps) {
		will.Retain = false
	}
	return will, nil
}

// covers reports whether every topic that filter matches is matched by
// allowed (both MQTT topic filters; a topic name is a filter without
// wildcards).
func covers(allowed, filter string) bool {
	a, f := strings.Split(allowed, "/"), strings.Split(filter, "/")
	for i, al := range a {
		if al == "#" {
			return true
		}
		if i >= len(f) {
			return false
		}
		switch {
		case f[i] == "#":
			return false
		case al == "+":
		case f[i] == "+" || al != f[i]:
			return false
		}
	}
	return len(f) == len(a)
}

// maxLogText bounds what a client sent that goes into a log line.
const maxLogText = 80

// clip cuts s to maxLogText bytes (on a character boundary), saying how
// long it was.
func clip(s string) string {
	if len(s) <= maxLogText {
		return s
	}
	cut := maxLogText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("…(%d bytes)", len(s))
}
