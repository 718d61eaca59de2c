package ledger

import (
	"context"
	"crypto/ed25519"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// A fleet's replay request is kept for every device not revoked, a day:
// a device sent it at once counts one send; each device is sent it at
// most KeptReplaySends times, KeptReplayGap apart, whichever instance
// claims it (one claim of two at once); a revoked device and a request
// past its day are sent nothing.
func TestKeptReplay(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		now := day0
		s := db.open(t, &Options{Now: func() time.Time { return now }})
		for _, id := range []string{"bus-1", "bus-2", "bus-3"} {
			k, _, _ := ed25519.GenerateKey(nil)
			if err := s.RegisterDevice(ctx, DeviceRegistration{ID: id, PublicKey: k, MQTTHash: "h"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.RevokeDevice(ctx, "bus-3"); err != nil {
			t.Fatal(err)
		}
		if id, err := s.TakeKeptReplay(ctx, "bus-2"); err != nil || id != 0 {
			t.Fatalf("before any request: %d, %v", id, err)
		}
		if err := s.KeepReplay(ctx, 0, nil); err == nil {
			t.Fatal("request id 0 kept")
		}
		const rid = 1_796_000_000_000
		if err := s.KeepReplay(ctx, rid, []string{"bus-1"}); err != nil {
			t.Fatal(err)
		}
		kept, err := s.KeptReplays(ctx)
		if err != nil || !slices.Equal(slices.Sorted(maps.Keys(kept)), []string{"bus-1", "bus-2"}) {
			t.Fatalf("kept for %v, %v; want bus-1 and bus-2", kept, err)
		}
		take := func(dev string) uint64 {
			t.Helper()
			id, err := s.TakeKeptReplay(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		if id := take("bus-1"); id != 0 {
			t.Errorf("bus-1, sent it at once, claimed %d again at once", id)
		}
		if id := take("bus-3"); id != 0 {
			t.Errorf("revoked bus-3 claimed %d", id)
		}
		// Two instances hear bus-2 at once: one sends.
		got := []uint64{take("bus-2"), take("bus-2")}
		if got[0] != rid || got[1] != 0 {
			t.Errorf("two claims at once: %v, want [%d 0]", got, rid)
		}
		sends := 1
		for range 5 {
			now = now.Add(KeptReplayGap)
			if take("bus-2") == rid {
				sends++
			}
		}
		if sends != KeptReplaySends {
			t.Errorf("bus-2 sent the request %d times, want %d", sends, KeptReplaySends)
		}
		if kept, _ := s.KeptReplays(ctx); kept["bus-2"] {
			t.Error("bus-2 still listed after its last send")
		}
		// bus-1 got one send; past the day, none more.
		now = day0.Add(KeptReplayFor + time.Second)
		if id := take("bus-1"); id != 0 {
			t.Errorf("bus-1 claimed %d past the request's day", id)
		}
		if kept, _ := s.KeptReplays(ctx); len(kept) != 0 {
			t.Errorf("kept past the day for %v", kept)
		}
	})
}

// A device revoked after a fleet's replay request, then registered again
// with its revocation lifted, is not sent the kept request: the batches
// it sent while revoked were kept aside, never to be charged, and acked;
// its archive resent unasked would have charged them.
func TestKeptReplayEndsAtRevocation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		k, _, _ := ed25519.GenerateKey(nil)
		reg := DeviceRegistration{ID: "bus-1", PublicKey: k, MQTTHash: "h"}
		if err := s.RegisterDevice(ctx, reg); err != nil {
			t.Fatal(err)
		}
		if err := s.KeepReplay(ctx, 1_796_000_000_000, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeDevice(ctx, "bus-1"); err != nil {
			t.Fatal(err)
		}
		reg.Unrevoke = true
		if err := s.RegisterDevice(ctx, reg); err != nil {
			t.Fatal(err)
		}
		if id, err := s.TakeKeptReplay(ctx, "bus-1"); err != nil || id != 0 {
			t.Errorf("the device revoked after the request, its revocation lifted: claimed %d, %v; want none", id, err)
		}
		if kept, err := s.KeptReplays(ctx); err != nil || len(kept) != 0 {
			t.Errorf("kept for %v, %v after the revocation; want none", kept, err)
		}
	})
}

// Instances sharing the ledger claim a kept request's send at once (two
// stores, several claims each, concurrently): one claim gets it.
func TestKeptReplayOneClaimOfMany(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		a, b := db.open(t, nil), db.open(t, nil)
		k, _, _ := ed25519.GenerateKey(nil)
		if err := a.RegisterDevice(ctx, DeviceRegistration{ID: "bus-1", PublicKey: k, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if err := a.KeepReplay(ctx, 1_796_000_000_000, nil); err != nil {
			t.Fatal(err)
		}
		got := make(chan uint64, 8)
		var wg sync.WaitGroup
		for i := range 8 {
			s := []*Store{a, b}[i%2]
			wg.Go(func() {
				id, err := s.TakeKeptReplay(ctx, "bus-1")
				if err != nil {
					t.Error(err)
				}
				got <- id
			})
		}
		wg.Wait()
		close(got)
		n := 0
		for id := range got {
			if id != 0 {
				n++
			}
		}
		if n != 1 {
			t.Errorf("8 concurrent claims on two instances: %d sends, want 1", n)
		}
	})
}
