package api

import (
	"context"
	"crypto/ed25519"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/server/ledger"
)

// After a restore the ledger's device statuses are the backup's: online,
// and the queue epoch the device had then. A replay request for one device
// made on that status (before the device is heard again) goes to a device
// that is not connected (its session is clean: the request is lost) or
// names an epoch it no longer has (re-flashed since: it refuses it), and
// the taps its archive holds are never charged. POST /v1/devices/replay
// lists such a device offline; POST /v1/devices/{id}/replay (the console's
// "Ask for a replay") answered 202 and sent the request into the void.
func TestReplayOneDeviceNotHeardSinceStart(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	f := newFixture(t, func(c *Config) {
		c.Started = time.Now().Add(time.Hour) // the server (re)started after the device's last status
		c.Replay = func(_ context.Context, id, epoch string, from, to uint64) error {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, id+"/"+epoch)
			return nil
		}
		c.ReplayFleet = func(_ context.Context, sends map[string]string) ([]string, error) {
			mu.Lock()
			defer mu.Unlock()
			for id, epoch := range sends {
				asked = append(asked, id+"/"+epoch)
			}
			return nil, nil
		}
	})
	f.do("POST", "/v1/devices", f.token, `{"id":"bus-1","public_key":"`+devKey(1)+`"}`, 201)
	// The status the backup holds: online, with the epoch of the queue
	// file the device had when the backup was taken.
	if err := f.store.UpdateDeviceStatus(t.Context(), "bus-1", ledger.DeviceStatus{Online: true, Epoch: "backup-epoch", LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	all := f.do("POST", "/v1/devices/replay", f.token, "", 202)
	if off, _ := all["offline"].([]any); len(off) != 1 {
		t.Fatalf("replay of the fleet: %v; want bus-1 listed offline", all)
	}
	out := f.do("POST", "/v1/devices/bus-1/replay", f.token, `{}`, 409)
	if e, _ := out["error"].(map[string]any); e["code"] != "device_offline" {
		t.Errorf("replay of a device not heard since the start: %v; want device_offline", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 0 {
		t.Errorf("replay requests sent on a status from before the start: %v; want none", asked)
	}
}

// TestRotationAboveTheFleetsKeyring: after a restore of both the ledger
// and the key directory, validators hold keyring version 4 from rotations
// made after the backup, the server version 1. A rotation (the README's
// restore step 4) made version 2, which every validator took for older
// than its own and refused: credentials of its new key were refused on
// every bus. It is made above the fleet's version now; a version further
// ahead than any lost rotations (a false report) is not followed.
func TestRotationAboveTheFleetsKeyring(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	report := func(id string, keyring uint64) {
		t.Helper()
		pub, _, _ := ed25519.GenerateKey(nil)
		if err := f.store.RegisterDevice(ctx, ledger.DeviceRegistration{ID: id, PublicKey: pub, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if err := f.store.UpdateDeviceStatus(ctx, id, ledger.DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now(),
			Versions: map[string]uint64{"keyring": keyring}}); err != nil {
			t.Fatal(err)
		}
	}
	report("bus-1", 4)
	if kr := f.do("POST", "/v1/keyring/rotate", f.token, `{"activate_in":"0s"}`, 200); kr["version"].(float64) != 5 {
		t.Errorf("rotated keyring version %v with the fleet at 4, want 5", kr["version"])
	}
	report("bus-evil", 1<<40)
	if kr := f.do("POST", "/v1/keyring/rotate", f.token, `{"activate_in":"0s"}`, 200); kr["version"].(float64) != 6 {
		t.Errorf("rotated keyring version %v with a false report far ahead, want 6", kr["version"])
	}
}

// POST /v1/devices/replay whose sends fail part way (the broker link
// lost) has asked devices and kept the request for the fleet (the ledger
// sends it on their next status): the call fails, and the audit trail
// holds it all the same. Before, a fleet's request was kept and sent
// with nothing in the trail.
func TestReplayFleetFailureAudited(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Started = time.Now().Add(-time.Hour)
		c.Replay = func(context.Context, string, string, uint64, uint64) error { return nil }
		l := c.Ledger
		c.ReplayFleet = func(ctx context.Context, sends map[string]string) ([]string, error) {
			if err := l.KeepReplay(ctx, 1_796_000_000_000, []string{"bus-1"}); err != nil {
				return nil, err
			}
			return []string{"bus-1"}, errors.New("ingest: not connected")
		}
	})
	f.do("POST", "/v1/devices", f.token, `{"id":"bus-1","public_key":"`+devKey(1)+`"}`, 201)
	if err := f.store.UpdateDeviceStatus(t.Context(), "bus-1", ledger.DeviceStatus{Online: true, Epoch: "e", LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	f.do("POST", "/v1/devices/replay", f.token, "", 500)
	entries, err := f.store.AuditLog(t.Context(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Action == "replay_all" {
			return
		}
	}
	t.Errorf("a fleet's replay kept and sent in part, the call failing: audit trail %+v; want a replay_all entry", entries)
}

// With no device online, POST /v1/devices/replay (the request kept for
// the fleet) answers "asked" as an empty list, as before the request was
// kept, not null.
func TestReplayFleetNoneOnlineAskedList(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Replay = func(context.Context, string, string, uint64, uint64) error { return nil }
		c.ReplayFleet = func(ctx context.Context, sends map[string]string) ([]string, error) {
			var asked []string // as Server.replayFleet: none sent
			for id := range sends {
				asked = append(asked, id)
			}
			return asked, nil
		}
	})
	f.do("POST", "/v1/devices", f.token, `{"id":"bus-1","public_key":"`+devKey(1)+`"}`, 201)
	out := f.do("POST", "/v1/devices/replay", f.token, "", 202)
	if a, ok := out["asked"].([]any); !ok || len(a) != 0 {
		t.Errorf("replay with no device online: asked %#v; want []", out["asked"])
	}
}
