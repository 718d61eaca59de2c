package broker

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestAttackResubscribeRetained: a device with its own login subscribes
// to `farego/fleet/#` again and again, one filter a SUBSCRIBE (within its
// message budget: up to 200 of them, under the burst of 400), reading and
// acknowledging everything. Each SUBSCRIBE costs it a message and some 20
// bytes, and has the broker send it every retained fleet document again
// (here 256 shards of 8 KB, 2 MB): an attack review pulled 363 MB in 11 s
// (33 MB/s) that way, never held back. The retained messages a SUBSCRIBE
// brings beyond an allowance (32 MiB at once) are charged to the
// device's byte budget: it is held back, then disconnected and banned,
// having received at most the allowance, its burst and little more. An honest device's one subscription to the same documents is
// within its allowance for retained messages, not charged to the budget
// its backlog uploads with.
func TestAttackResubscribeRetained(t *testing.T) {
	secret := newSecret(t)
	b := startBroker(t, Config{Secret: secret}) // the default limits
	srv, _ := mustDial(t, b.url(), DefaultServerUsername, ServerPassword(secret), nil)
	const docs, size = 256, 8000
	for i := range docs {
		if err := publish(t, srv, fmt.Sprintf("farego/fleet/denylist/%d", i), strings.Repeat("s", size), true); err != nil {
			t.Fatal(err)
		}
	}

	// The honest device: one subscription, every document once.
	honest, honestLost := mustDial(t, b.url(), "bus-honest", devicePassword(secret, "bus-honest"), nil)
	got := make(chan struct{}, docs)
	if tok := honest.Subscribe("farego/fleet/#", 1, func(mqtt.Client, mqtt.Message) { got <- struct{}{} }); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("honest subscribe: %v", tok.Error())
	}
	for n := range docs {
		select {
		case <-got:
		case <-honestLost:
			t.Fatalf("the honest device was disconnected after %d of the %d retained documents", n, docs)
		case <-time.After(waitTimeout):
			t.Fatalf("%d of the %d retained documents came to the honest device", n, docs)
		}
	}

	// Its fetch took nothing of the budget its backlog uploads with: a
	// bus back after days with its backlog and a new deny list's shards
	// was banned once they came to its burst.
	hb := b.hook.lim.bucket("bus-honest")
	hb.mu.Lock()
	left := hb.bytes
	hb.mu.Unlock()
	if left < DefaultDeviceBurst-64<<10 {
		t.Errorf("the honest device's budget after fetching %d KB of retained documents: %.0f bytes of %d; want them not charged to it",
			docs*size/1000, left, DefaultDeviceBurst)
	}

	id := "bus-pull"
	start := time.Now()
	dev, lost := mustDial(t, b.url(), id, devicePassword(secret, id), nil)
	var received, messages atomic.Int64
	came := make(chan struct{}, 1)
	h := func(_ mqtt.Client, m mqtt.Message) {
		received.Add(int64(len(m.Payload())))
		messages.Add(1)
		select {
		case came <- struct{}{}:
		default:
		}
	}
	// Each SUBSCRIBE once the retained documents the one before brought
	// have come (mochi refuses a SUBSCRIBE whose packet id is one of a
	// delivery still in flight).
	const subscribes = 200
	sent := 0
send:
	for ; sent < subscribes; sent++ {
		tok := dev.Subscribe("farego/fleet/#", 1, h)
		select {
		case <-tok.Done():
		case <-lost:
			break send
		}
		for messages.Load() < int64((sent+1)*docs) {
			select {
			case <-came:
			case <-lost:
				break send
			case <-time.After(waitTimeout):
				t.Fatalf("SUBSCRIBE %d: %d retained documents came in all, want %d", sent+1, messages.Load(), (sent+1)*docs)
			}
		}
	}
	took := time.Since(start)
	st := b.Stats()
	t.Logf("%d SUBSCRIBEs of one filter (%d retained documents, %d KB): %.1f MB received in %v; flooded %d, shed %d",
		sent, docs, docs*size/1000, float64(received.Load())/1e6, took.Round(time.Millisecond), st.Flooded, st.Shed)
	if st.Flooded != 1 {
		t.Errorf("a device re-subscribing to %d retained documents %d times: flooded %d; want it disconnected and banned",
			docs, sent, st.Flooded)
	}
	// At most its allowance for retained messages and its burst, each
	// refilled at its byte rate over the time it pulled, and what came
	// while it was held back (4 SUBSCRIBEs' documents). Without the
	// refill the bound held only while the pull took under some 15 s: on
	// a busy machine it took 20 s to 4 min, 10 to 120 MB of refill, and
	// the test failed (CI's machine, and 13 of 15 runs here under load).
	if limit := int64(retainedBurst+DefaultDeviceBurst+4*docs*size) + int64(2*took.Seconds()*DefaultDeviceRate); received.Load() > limit {
		t.Errorf("the re-subscribing device received %d bytes of retained documents in %v; want at most %d (its allowance and burst, each refilled at %d B/s, and little more)",
			received.Load(), took.Round(time.Millisecond), limit, DefaultDeviceRate)
	}
	select {
	case <-honestLost:
		t.Error("the honest device was disconnected")
	default:
	}
}

// TestRetainedAllowanceNeverRefilledByItsThrottle: the allowance of
// retained bytes (fetch) is a limiter that must never flood: a flood
// starts a limiter's bucket again full, so a device pulling retained
// messages beyond its allowance would get the whole 32 MiB back for free
// (its ban there is FloodBan 0). With a low DeviceRate (here 1 byte a
// second) the throttling it adds up passed the bound it was given (1<<62
// ns) after some 100 MiB-charges: the next 32 came free again.
func TestRetainedAllowanceNeverRefilledByItsThrottle(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	cfg := Config{Limits: Limits{DeviceRate: 1}.withDefaults(), Now: func() time.Time { return at }}
	h := newHook(&cfg, nil)
	free := 0
	for range 200 {
		if wait, _, _ := h.fetch.charge("bus-1", 1<<20, 0); wait == 0 {
			free++
		}
	}
	if free != retainedBurst>>20 {
		t.Errorf("%d of 200 retained MiB (no time passing) within the allowance; want %d, the allowance once", free, retainedBurst>>20)
	}
}
