package uplink

import (
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/wire"
)

// An ack is fleet-signed but names no request: a copy of an old ack, kept
// by whoever can read the device's ack topic (the broker, or a login
// allowed to read it), is a valid ack again once the records it names are
// back in flight. A replay request puts archived records back in flight
// (the server restored an older backup and lost them): the old ack,
// published again before the server has them, takes them out of the queue
// for good. Acks made before the last replay request carried out must be
// refused.
func TestAttackOldAckAfterReplay(t *testing.T) {
	f := newFixture(t, nil)
	srv := serverFor(f)

	// The eavesdropper: keeps every ack sent to the device.
	var mu sync.Mutex
	var kept [][]byte
	spy := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(f.broker.URL()).SetClientID(uniqueName("spy-")).
		SetAutoReconnect(false))
	if tok := spy.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("spy connect: %v", tok.Error())
	}
	defer spy.Disconnect(100)
	if tok := spy.Subscribe(f.topic(wire.KindAck), 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		kept = append(kept, append([]byte(nil), m.Payload()...))
		mu.Unlock()
	}); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("spy subscribe: %v", tok.Error())
	}

	appendTaps(t, f.q, f.taps, 20)
	u := f.start()
	waitFor(t, "the queue to drain", func() bool { return queueCount(t, f.q) == 0 })
	waitFor(t, "the acks kept", func() bool { mu.Lock(); defer mu.Unlock(); return len(kept) > 0 })

	// The server restored an older backup: it lost the 20 taps and asks
	// for them again; it is busy (catching up) and acks nothing yet.
	srv.setMute(true)
	time.Sleep(50 * time.Millisecond)
	sent := u.Stats().RecordsSent
	replay := seal(t, wire.TypeReplay, &wire.Replay{DeviceID: f.id, Epoch: f.q.Epoch(), From: 1, To: 20,
		ID: uint64(time.Now().UnixMilli())}, f.fleet)
	if err := f.broker.Publish(f.topic(wire.KindCmd), replay, false, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replay", func() bool { return u.Stats().Replays == 1 })
	waitFor(t, "the replayed taps sent", func() bool { return u.Stats().RecordsSent >= sent+20 })
	if n := queueCount(t, f.q); n != 20 {
		t.Fatalf("queue after the replay: %d, want 20", n)
	}

	// The attacker publishes the old acks again.
	mu.Lock()
	old := append([][]byte(nil), kept...)
	mu.Unlock()
	refused := u.Stats().MessagesRefused
	for _, a := range old {
		if err := f.broker.Publish(f.topic(wire.KindAck), a, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the old acks handled", func() bool {
		return u.Stats().MessagesRefused >= refused+uint64(len(old)) || queueCount(t, f.q) < 20
	})
	time.Sleep(200 * time.Millisecond) // the ack committer
	if n := queueCount(t, f.q); n != 20 {
		t.Errorf("after %d old acks published again: %d taps left in the queue, want 20 (the server never acked them since it lost them)",
			len(old), n)
	}
}
