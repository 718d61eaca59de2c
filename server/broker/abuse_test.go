package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// rawDevice logs in as device id over a raw TCP connection with MQTT
// protocol version ver (4 or 5), clean false, and reads (and counts) every
// packet the broker sends until the connection closes.
func rawDevice(tb testing.TB, addr string, secret []byte, id string, ver byte) (net.Conn, *atomic.Int64, <-chan struct{}) {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: ver,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: false, ClientIdentifier: DeviceClientIDPrefix + id,
			UsernameFlag: true, Username: []byte(id), PasswordFlag: true, Password: []byte(devicePassword(secret, id)), Keepalive: 0}}
	if ver == 5 {
		connect.Properties.SessionExpiryInterval = 3600
		connect.Properties.SessionExpiryIntervalFlag = true
	}
	var buf bytes.Buffer
	if err := connect.ConnectEncode(&buf); err != nil {
		tb.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		tb.Fatal(err)
	}
	r := bufio.NewReader(conn)
	fh := make([]byte, 1)
	if _, err := io.ReadFull(r, fh); err != nil || fh[0]>>4 != packets.Connack {
		tb.Fatalf("no CONNACK: %v %x", err, fh)
	}
	n, err := readVarint(r)
	if err != nil {
		tb.Fatal(err)
	}
	ack := make([]byte, n)
	if _, err := io.ReadFull(r, ack); err != nil || ack[1] != 0 {
		tb.Fatalf("CONNACK %x %v", ack, err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, _ := io.Copy(io.Discard, r)
		got.Add(n)
	}()
	return conn, &got, done
}

func readVarint(r *bufio.Reader) (int, error) {
	v, mul := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		v += int(b&127) * mul
		if b&128 == 0 {
			return v, nil
		}
		mul *= 128
	}
}

// publishRaw writes one PUBLISH of protocol version ver.
func publishRaw(tb testing.TB, conn net.Conn, ver, qos byte, pid uint16, topic string, payload []byte, user []packets.UserProperty) bool {
	tb.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: ver,
		PacketID: pid, TopicName: topic, Payload: payload}
	pk.Properties.User = user
	conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := conn.Write(encode(tb, pk))
	return err == nil
}

// bigProperties are MQTT 5 user properties of some 390 KB (the packet
// stays under the 400 KiB bound).
func bigProperties() []packets.UserProperty {
	v := strings.Repeat("u", 65000)
	var out []packets.UserProperty
	for range 6 {
		out = append(out, packets.UserProperty{Key: "k", Val: v})
	}
	return out
}

// TestAttackQoS2UserPropertiesPinMemory: a device with its own login
// publishes QoS 2 messages on its own status topic with a 1-byte payload
// and some 390 KB of MQTT 5 user properties, and never sends PUBREL. Its
// budget is charged the payload and topic (some 30 bytes a message),
// never the properties; mochi keeps every PUBREC, which inherits the
// PUBLISH's properties (and so the packet's buffer), in the device's
// session until PUBREL — up to ReceiveMaximum (65,535) of them, also for
// an hour after the device left.
func TestAttackQoS2UserPropertiesPinMemory(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret}) // the default limits
	const id = "bus-q2"
	before := heapInUse()
	conn, got, _ := rawDevice(t, b.Addr(), secret, id, 5)
	props := bigProperties()
	start := time.Now()
	sent := 0
	// The burst (400 messages), then 20 a second: the message budget's
	// sustained rate, never held back.
	for pid := uint16(1); pid <= 500; pid++ {
		if pid > 400 {
			time.Sleep(50 * time.Millisecond)
		}
		if !publishRaw(t, conn, 5, 2, pid, "farego/dev/"+id+"/status", []byte("x"), props) {
			t.Logf("disconnected after %d publications", sent)
			break
		}
		sent++
	}
	var inflight int
	waitFor(t, "the broker to take every PUBLISH", func() bool {
		cl, ok := b.srv.Clients.Get(DeviceClientIDPrefix + id)
		if ok {
			inflight = cl.State.Inflight.Len()
		}
		return !ok || inflight >= sent || cl.Closed()
	})
	el := time.Since(start)
	conn.Close() // the session stays for an hour
	time.Sleep(500 * time.Millisecond)
	grew := heapInUse() - before
	st := b.Stats()
	t.Logf("%d QoS 2 PUBLISHes of %d B of user properties in %v: PUBRECs held in the session %d; heap grew by %d MiB "+
		"after the device left; %d MiB of PUBRECs echoed to it; flooded %d, shed %d",
		sent, 6*65000, el.Round(time.Millisecond), inflight, grew>>20, got.Load()>>20, st.Flooded, st.Shed)
	if grew > 64<<20 {
		t.Errorf("one device within its budget made the broker hold %d MiB", grew>>20)
	}
}

// TestAttackDeniedPublicationsUncharged: a device publishes, as fast as it
// can, QoS 0 messages of 380 KiB on another device's taps topic (MQTT
// 3.1.1) and QoS 1 ones (MQTT 5). The ACL refuses them before the budget
// is charged: MQTT 3.1.1 QoS 0 and MQTT 5 refusals do not disconnect.
func TestAttackDeniedPublicationsUncharged(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret}) // the default limits
	payload := bytes.Repeat([]byte("d"), 380<<10)
	for _, c := range []struct {
		name     string
		ver, qos byte
	}{{"v4-qos0", 4, 0}, {"v5-qos1", 5, 1}} {
		id := "bus-" + c.name
		conn, _, done := rawDevice(t, b.Addr(), secret, id, c.ver)
		n := sendFor(conn, 5*time.Second, func(n int) []byte {
			return encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: c.qos}, ProtocolVersion: c.ver,
				PacketID: uint16(n%60000 + 1), TopicName: "farego/dev/victim/taps", Payload: payload})
		})
		select {
		case <-done:
			t.Logf("%s: disconnected after %d messages", c.name, n)
		case <-time.After(time.Second):
			t.Logf("%s: %d messages of %d KiB to another device's topic in 5 s (%d MiB, %.0f/s, budget 20/s and 256 KiB/s); still connected; flooded %d",
				c.name, n, len(payload)>>10, n*len(payload)>>20, float64(n)/5, b.Stats().Flooded)
			if n > 400 {
				t.Errorf("%s: %d refused publications not charged to the budget", c.name, n)
			}
		}
		conn.Close()
	}
}

// countingWriter counts the bytes and lines written to it.
type countingWriter struct{ bytes, lines atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.bytes.Add(int64(len(p)))
	w.lines.Add(int64(bytes.Count(p, []byte("\n"))))
	return len(p), nil
}

// TestAttackMalformedPublishLogAmplified: a device with its own login
// sends one PUBLISH that mochi's validation refuses (a wildcard in its
// topic) with a 380 KiB payload, and logs in again, at the login budget's
// sustained rate (20 a second). mochi logs each refusal at WARN with the
// whole packet ("error processing packet" … pk=…), payload included,
// through the server's own logger (text, as farego-settlement writes it),
// with no rate limit; the refused packet is charged nothing.
func TestAttackMalformedPublishLogAmplified(t *testing.T) {
	secret := newSecret(t)
	var w countingWriter
	log := slog.New(slog.NewTextHandler(&w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b := startBroker(t, Config{Secret: secret, Logger: log}) // the default limits
	payload := bytes.Repeat([]byte("d"), 380<<10)
	const id = "bus-log"
	start := time.Now()
	n := 0
	for time.Since(start) < 5*time.Second {
		conn, _, done := rawDevice(t, b.Addr(), secret, id, 4)
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 4,
			PacketID: 1, TopicName: "farego/dev/" + id + "/+", Payload: payload}
		if _, err := conn.Write(encode(t, pk)); err != nil {
			t.Fatal(err)
		}
		<-done // the broker closes the connection
		conn.Close()
		n++
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	t.Logf("%d malformed publications (one a login) in 5 s: %d log lines, %d MiB of log (%.1f MiB/s); flooded %d",
		n, w.lines.Load(), w.bytes.Load()>>20, float64(w.bytes.Load())/(1<<20)/5, b.Stats().Flooded)
	if w.bytes.Load() > 1<<20 {
		t.Errorf("a device made the server write %d MiB of log in 5 s", w.bytes.Load()>>20)
	}
}

// TestAttackQoS2NotHeld: a device's QoS 2 publications (small ones, within
// its budget) leave nothing in its session: mochi would keep each PUBREC
// until a PUBREL the device never sends.
func TestAttackQoS2NotHeld(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret})
	const id = "bus-q2s"
	conn, _, _ := rawDevice(t, b.Addr(), secret, id, 4)
	const n = 300
	for pid := uint16(1); pid <= n; pid++ {
		if !publishRaw(t, conn, 4, 2, pid, "farego/dev/"+id+"/status", []byte("x"), nil) {
			t.Fatal("disconnected")
		}
	}
	// A QoS 1 publication after them: once it is acknowledged, the
	// broker has taken the others.
	publishRaw(t, conn, 4, 1, n+1, "farego/dev/"+id+"/status", []byte("x"), nil)
	var inflight int
	waitFor(t, "the broker to take every PUBLISH", func() bool {
		cl, ok := b.srv.Clients.Get(DeviceClientIDPrefix + id)
		if !ok {
			return false
		}
		inflight = cl.State.Inflight.Len()
		return cl.State.Inflight.Len() == n || cl.State.Inflight.Len() == 0 && atomic.LoadInt64(&b.srv.Info.MessagesReceived) >= n+1
	})
	t.Logf("after %d QoS 2 publications never released: %d held in the device's session", n, inflight)
	if inflight != 0 {
		t.Errorf("%d PUBRECs held", inflight)
	}
}

// TestEveryPacketCharged: packets of some 380 KiB that are not
// publications — UNSUBSCRIBEs and SUBSCRIBEs of long filters, a PINGREQ
// with a body (mochi reads it whole) — sent as fast as a device can, are
// charged to its budget as they are read (before: 284 UNSUBSCRIBEs taken
// in 5 s, and in 3 s 177 SUBSCRIBEs, charged a message and no bytes, and
// 295 PINGREQs, charged nothing; now some 40 of each): it
// is held back to its budget, 8 MiB at once and 256 KiB/s (some 21
// packets, then one every 1.5 s), and disconnected if it keeps on.
func TestEveryPacketCharged(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret})
	var filters packets.Subscriptions
	for i := range 6 {
		filters = append(filters, packets.Subscription{Filter: "farego/dev/bus-x/" + strings.Repeat("f", 65000) + string(rune('a'+i)), Qos: 1})
	}
	body := bytes.Repeat([]byte("p"), 380<<10)
	for _, c := range []struct {
		name   string
		packet func(n int) []byte
	}{
		{"unsubscribe", func(n int) []byte {
			return encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, ProtocolVersion: 4,
				PacketID: uint16(n%60000 + 1), Filters: filters})
		}},
		{"subscribe", func(n int) []byte {
			return encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4,
				PacketID: uint16(n%60000 + 1), Filters: filters})
		}},
		{"pingreq-with-body", func(int) []byte {
			var buf bytes.Buffer
			buf.WriteByte(packets.Pingreq << 4)
			for v := len(body); ; v >>= 7 { // the remaining length, MQTT's varint
				if v < 128 {
					buf.WriteByte(byte(v))
					break
				}
				buf.WriteByte(byte(v&127 | 128))
			}
			buf.Write(body)
			return buf.Bytes()
		}},
	} {
		conn, _, done := rawDevice(t, b.Addr(), secret, "bus-"+c.name, 4)
		read := atomic.LoadInt64(&b.srv.Info.BytesReceived)
		start := time.Now()
		n := sendFor(conn, 3*time.Second, c.packet)
		select {
		case <-done:
			t.Logf("%s: disconnected after %d packets of 380 KiB", c.name, n)
		case <-time.After(time.Second):
			t.Logf("%s: %d packets of 380 KiB sent in 3 s", c.name, n)
		}
		// What the broker read, not what the device wrote (the sockets'
		// buffers, up to tcp_rmem's 32 MiB here, hold the rest: counted
		// from the writes, a busy machine passed a bound of 50 packets):
		// the burst and the rate over the time, and a few packets read
		// before a hold (charged after they are read). Before they were
		// charged, 177 SUBSCRIBEs (65 MiB) were taken in 3 s.
		took := atomic.LoadInt64(&b.srv.Info.BytesReceived) - read
		budget := int64(DefaultDeviceBurst) + int64(time.Since(start).Seconds()*DefaultDeviceRate) + 4*int64(len(c.packet(0)))
		t.Logf("%s: the broker read %d KiB of it (budget %d KiB)", c.name, took>>10, budget>>10)
		if took > budget {
			t.Errorf("%s: the broker read %d KiB in %v: beyond the budget (256 KiB/s, burst 8 MiB: %d KiB)", c.name, took>>10,
				time.Since(start).Round(time.Millisecond), budget>>10)
		}
		conn.Close()
	}
}

// TestEmptyPacketsCharged: packets with no body that a device may send at
// any rate — PINGREQ, a PUBACK of no message in flight, and the QoS 2
// acknowledgements, which a broker capped at QoS 1 never asks for — cost
// a message each: a device's flood of them is held back and banned like
// one of publications. Each was free: a stolen validator's login sent
// 370,000 PINGREQs a second for as long as it liked, never held back,
// and kept a core of a real farego-settlement busy (80 % of one, 15 s;
// 68 % with PUBRELs, each answered; an attack review).
func TestEmptyPacketsCharged(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret, Limits: Limits{
		DeviceMessageRate: 1, DeviceMessageBurst: 10, FloodThrottle: 500 * time.Millisecond, FloodBan: time.Hour,
	}})
	for i, c := range []struct {
		name   string
		packet []byte
	}{
		{"pingreq", []byte{packets.Pingreq << 4, 0}},
		{"puback", []byte{packets.Puback << 4, 2, 0x12, 0x34}},
		{"pubrec", []byte{packets.Pubrec << 4, 2, 0x12, 0x34}},
		{"pubrel", []byte{packets.Pubrel<<4 | 2, 2, 0x12, 0x34}},
		{"pubcomp", []byte{packets.Pubcomp << 4, 2, 0x12, 0x34}},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, _, done := rawDevice(t, b.Addr(), secret, "bus-"+c.name, 4)
			chunk := bytes.Repeat(c.packet, 1000)
			sent := 0
			for range 200 { // 200,000 packets
				conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Write(chunk); err != nil {
					break
				}
				sent += 1000
			}
			select {
			case <-done:
			case <-time.After(waitTimeout):
				t.Fatalf("%d %s packets sent; the device is still connected", sent, c.name)
			}
			if st := b.Stats(); st.Flooded != uint64(i+1) {
				t.Errorf("Flooded = %d, want %d: disconnected for another reason", st.Flooded, i+1)
			}
		})
	}
}

// sendFor writes the packets packet makes (the nth for n = 0, 1, …) as
// fast as conn takes them, for d or until it is closed, and returns how
// many were written.
func sendFor(conn net.Conn, d time.Duration, packet func(n int) []byte) int {
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(packet(n)); err != nil {
			break
		}
		n++
	}
	return n
}

// encode encodes a PUBLISH, SUBSCRIBE or UNSUBSCRIBE.
func encode(t testing.TB, pk packets.Packet) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(&buf)
	default:
		t.Fatalf("encode: packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestQoS2WillRefused: with QoS capped at 1, a CONNECT whose last will asks
// for QoS 2 is refused with a CONNACK that says so (0x9B on MQTT 5), as
// the README tells, on both protocol versions; the same CONNECT with a
// QoS 1 will logs in.
func TestQoS2WillRefused(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret})
	for _, tc := range []struct {
		version, qos byte
		want         byte // the CONNACK's return code (v4) or reason code (v5)
	}{{4, 2, 0x80}, {5, 2, 0x9B}, {4, 1, 0}, {5, 1, 0}} {
		conn, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		id := "bus-w" + strconv.Itoa(int(tc.version)) + strconv.Itoa(int(tc.qos))
		connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: tc.version,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: DeviceClientIDPrefix + id,
				UsernameFlag: true, Username: []byte(id), PasswordFlag: true, Password: []byte(devicePassword(secret, id)),
				WillFlag: true, WillTopic: "farego/dev/" + id + "/status", WillPayload: []byte("gone"), WillQos: tc.qos}}
		var buf bytes.Buffer
		if err := connect.ConnectEncode(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(waitTimeout))
		head := make([]byte, 4)
		if _, err := io.ReadFull(conn, head); err != nil {
			t.Fatalf("v%d will QoS %d: no CONNACK: %v", tc.version, tc.qos, err)
		}
		conn.Close()
		code := head[3]
		switch {
		case head[0]>>4 != packets.Connack:
			t.Errorf("v%d will QoS %d: packet type %d, want CONNACK", tc.version, tc.qos, head[0]>>4)
		case tc.want == 0 && code != 0:
			t.Errorf("v%d will QoS %d: refused with %#x", tc.version, tc.qos, code)
		case tc.want != 0 && tc.version == 5 && code != tc.want:
			t.Errorf("v5 will QoS 2: CONNACK reason %#x, want %#x (QoS not supported)", code, tc.want)
		case tc.want != 0 && code == 0:
			t.Errorf("v%d will QoS 2: logged in", tc.version)
		}
	}
}

// TestAttackRepeatedFilterSubscribe: a device sends one SUBSCRIBE of 17
// KB that names the fleet's filter 1,000 times. mochi sends the retained
// messages a filter matches for each filter of a SUBSCRIBE, a repeated
// one too (copying each message before the access rules see it): a
// SUBSCRIBE charged one message had the broker copy and offer every
// retained fleet document 1,000 times (an attack review, against a real
// farego-settlement with a deny list of 100,000 entries: one SUBSCRIBE a
// second, 17 KB/s, kept a core of the server busy for as long as it went
// on, never held back, and its connections taken over one after another
// kept it busy 15 s after the device had gone). Each filter costs a
// message: the device is over its budget at once, disconnected and
// banned before the broker offers it anything.
func TestAttackRepeatedFilterSubscribe(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret}) // the default limits
	srv, _ := mustDial(t, b.url(), DefaultServerUsername, ServerPassword(secret), nil)
	const docs = 50
	for i := range docs {
		if err := publish(t, srv, fmt.Sprintf("farego/fleet/denylist/%d", i), strings.Repeat("s", 1000), true); err != nil {
			t.Fatal(err)
		}
	}
	conn, _, done := rawDevice(t, b.Addr(), secret, "bus-subs", 4)
	var filters packets.Subscriptions
	for range 1000 {
		filters = append(filters, packets.Subscription{Filter: "farego/fleet/#", Qos: 1})
	}
	pk := encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4,
		PacketID: 1, Filters: filters})
	if _, err := conn.Write(pk); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	st := b.Stats()
	t.Logf("one SUBSCRIBE of %d bytes naming the fleet's filter 1,000 times (%d retained documents): %d deliveries shed; flooded %d",
		len(pk), docs, st.Shed, st.Flooded)
	if st.Flooded != 1 || st.Shed > 0 {
		t.Errorf("a SUBSCRIBE repeating a filter 1,000 times: flooded %d, %d deliveries shed; "+
			"want the device banned before the broker offers it the %d retained documents 1,000 times", st.Flooded, st.Shed, docs)
	}

	// A device's own SUBSCRIBE of its filters (a validator sends 7, and
	// deny-list shards 16 at a time) is within its budget.
	dev, _ := mustDial(t, b.url(), "bus-honest", devicePassword(secret, "bus-honest"), nil)
	m := map[string]byte{"farego/dev/bus-honest/ack": 1, "farego/dev/bus-honest/cmd": 1, "farego/fleet/keyring": 1,
		"farego/fleet/fares": 1, "farego/fleet/denyindex": 1}
	for i := range 16 {
		m[fmt.Sprintf("farego/fleet/denylist/%d", i)] = 1
	}
	retained := make(chan struct{}, docs)
	tok := dev.SubscribeMultiple(m, func(mqtt.Client, mqtt.Message) { retained <- struct{}{} })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	for f, code := range tok.(*mqtt.SubscribeToken).Result() {
		if code != 1 {
			t.Errorf("SUBACK for %s: %#x, want 1", f, code)
		}
	}
	for n := range 16 {
		select {
		case <-retained:
		case <-time.After(waitTimeout):
			t.Fatalf("%d of the 16 shards subscribed came", n)
		}
	}
}
