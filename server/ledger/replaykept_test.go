package ledger

import (
	"context"
	"crypto/ed25519"
	"maps"
	"slices"
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
