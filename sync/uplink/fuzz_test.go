package uplink

import (
	"crypto/ed25519"
	"slices"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// doneToken is a completed paho token.
type doneToken struct{ err error }

func (t doneToken) Wait() bool                     { return true }
func (t doneToken) WaitTimeout(time.Duration) bool { return true }
func (t doneToken) Done() <-chan struct{}          { c := make(chan struct{}); close(c); return c }
func (t doneToken) Error() error                   { return t.err }

var _ mqtt.Token = doneToken{}

// nullPublisher takes every message and drops it.
type nullPublisher struct{ n int }

func (p *nullPublisher) Publish(string, byte, bool, any) mqtt.Token {
	p.n++
	return doneToken{}
}

// FuzzInbound feeds arbitrary payloads to the handlers of every subscribed
// topic (and one that is not): nothing may panic, no record may leave the
// queue unless the payload is a fleet-signed ack for this device and epoch,
// no archived record may come back unless it is a fleet-signed replay, and
// Apply may only see fleet-signed downlinks of the topic's kind that are
// newer than the applied version.
func FuzzInbound(f *testing.F) {
	fleet, dev := newKey(f), newKey(f)
	q := openQueue(f)
	state := newFakeState()
	taps := newTapMaker(f, "bus-fuzz")
	u, err := New(Config{
		Brokers: []string{"tcp://127.0.0.1:1"}, DeviceID: "bus-fuzz",
		DeviceKey: dev, FleetPublicKey: pubOf(fleet), BatchRecords: 8,
	}, q, state)
	if err != nil {
		f.Fatal(err)
	}
	s := newSender(u)
	s.pub = &nullPublisher{}
	topics := []string{u.ack, u.cmd}
	for _, k := range record.DocKinds {
		topics = append(topics, wire.Topics{}.Fleet(k))
	}
	topics = append(topics, "farego/dev/bus-fuzz/status")

	epoch := q.Epoch()
	for _, seed := range []struct {
		topic int
		msg   []byte
	}{
		{0, seal(f, wire.TypeAck, &wire.Ack{DeviceID: "bus-fuzz", Epoch: epoch, Ranges: []wire.Range{{From: 1, To: 3}}}, fleet)},
		{0, seal(f, wire.TypeAck, &wire.Ack{DeviceID: "bus-fuzz", Epoch: epoch, Ranges: []wire.Range{{From: 1, To: 1 << 62}}}, dev)},
		{0, seal(f, wire.TypeAck, &wire.Ack{DeviceID: "bus-other", Epoch: epoch, Ranges: []wire.Range{{From: 4, To: 4}}}, fleet)},
		{1, seal(f, wire.TypeReplay, &wire.Replay{DeviceID: "bus-fuzz", Epoch: epoch, From: 1, To: 2, ID: 7}, fleet)},
		{1, seal(f, wire.TypeReplay, &wire.Replay{DeviceID: "bus-fuzz", Epoch: "other", From: 1, To: 2, ID: 7}, fleet)},
		{2, signedDownlink(f, fleet, record.DocKeyring, 3, `{"keys":[]}`)},
		{3, signedDownlink(f, fleet, record.DocDenyList, 1, `{"version":1,"entries":[]}`)},
		{4, signedDownlink(f, fleet, record.DocFares, 2, `{}`)},
		{2, signedDownlink(f, fleet, record.DocFares, 9, `{}`)},
		{2, signedDownlink(f, dev, record.DocKeyring, 9, `{}`)},
		{5, []byte("FGW1\x03\x00{}")},
		{0, nil},
		{2, []byte{}},
		{1, []byte("FGW1\x05\x01" + string(make([]byte, 80)))},
	} {
		f.Add(seed.topic, seed.msg)
	}

	f.Fuzz(func(t *testing.T, ti int, msg []byte) {
		topic := topics[((ti%len(topics))+len(topics))%len(topics)]
		// Keep records waiting and in flight.
		if queueCount(t, q) < 4 {
			appendTaps(t, q, taps, 12)
		}
		s.reset()
		if err := s.fill(); err != nil {
			t.Fatal(err)
		}
		before, err := q.Stats()
		if err != nil {
			t.Fatal(err)
		}
		versions := state.Versions()
		applied := len(state.appliedList())
		replays := u.Stats().Replays

		if kind, ok := u.fleet[topic]; ok {
			u.handleDownlink(topic, msg)
			if got := state.appliedList(); len(got) != applied {
				dl := openDownlink(msg, pubOf(fleet))
				if dl == nil || dl.Kind != kind || dl.Version <= versions[kind] || !slices.Equal(got[applied:], []string{kind + "/" + strconv.FormatUint(dl.Version, 10)}) {
					t.Fatalf("Apply called for %q on %s (applied %v)", msg, topic, got[applied:])
				}
			}
			return
		}
		if err := s.handleDevice(topic, msg); err != nil {
			t.Fatalf("handleDevice: %v", err)
		}
		u.acks.commit(u.countAcked) // what the committer goroutine does
		if res := u.acks.result(); res.err != nil {
			t.Fatalf("ack commit: %v", res.err)
		}
		after, err := q.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if after.Archived < before.Archived-replayedAtMost(msg, pubOf(fleet)) || (after.Count < before.Count && topic != u.ack) {
			t.Fatalf("records moved on %s by %q: %+v → %+v", topic, msg, before, after)
		}
		if after.Count < before.Count {
			p, err := wire.Open(msg, wire.TypeAck, pubOf(fleet))
			if err != nil {
				t.Fatalf("records deleted by an unsigned ack %q: %v", msg, err)
			}
			a, err := wire.ParseAck(p)
			if err != nil || a.DeviceID != "bus-fuzz" || a.Epoch != epoch {
				t.Fatalf("records deleted by ack %+v (%v)", a, err)
			}
		}
		if u.Stats().Replays != replays && replayedAtMost(msg, pubOf(fleet)) == 0 {
			t.Fatalf("replay carried out for %q", msg)
		}
	})
}

// openDownlink returns the downlink in msg if it is signed by pub.
func openDownlink(msg []byte, pub ed25519.PublicKey) *wire.Downlink {
	p, err := wire.Open(msg, wire.TypeDownlink, pub)
	if err != nil {
		return nil
	}
	dl, err := wire.ParseDownlink(p)
	if err != nil {
		return nil
	}
	return dl
}

// replayedAtMost returns how many records a valid replay request for
// bus-fuzz in msg may move back (0 if msg is none).
func replayedAtMost(msg []byte, pub ed25519.PublicKey) int {
	p, err := wire.Open(msg, wire.TypeReplay, pub)
	if err != nil {
		return 0
	}
	r, err := wire.ParseReplay(p)
	if err != nil || r.DeviceID != "bus-fuzz" {
		return 0
	}
	if r.To-r.From >= 1<<30 {
		return 1 << 30
	}
	return int(r.To - r.From + 1)
}
