package uplink

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/farego/farego/sync/wire"
)

// TestSealHalvesOversizeBatch: a batch whose message would exceed
// wire.MaxMessageSize (incompressible records) is halved until it fits,
// never refused, and what is sent opens and names the first records.
func TestSealHalvesOversizeBatch(t *testing.T) {
	f := newFixture(t, nil)
	u, err := New(f.cfg, f.q, f.state)
	if err != nil {
		t.Fatal(err)
	}
	s := &sender{u: u}
	b := wire.Batch{DeviceID: f.id, Epoch: "e1", SentAt: time.Now()}
	for i := range wire.MaxBatchRecords {
		data := make([]byte, 2000)
		rand.Read(data)
		b.Records = append(b.Records, wire.Record{Seq: uint64(i + 1), Data: data})
	}
	p, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wire.Seal(wire.TypeBatch, p, true, f.dev); !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("whole batch: err %v, want ErrTooLarge (the test needs an oversize batch)", err)
	}
	msg, err := s.seal(&b)
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	if len(msg) > wire.MaxMessageSize {
		t.Fatalf("message of %d bytes, limit %d", len(msg), wire.MaxMessageSize)
	}
	body, err := wire.Open(msg, wire.TypeBatch, pubOf(f.dev))
	if err != nil {
		t.Fatal(err)
	}
	got, err := wire.ParseBatch(body)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Records); n == 0 || n >= wire.MaxBatchRecords || got.Records[0].Seq != 1 || n != len(b.Records) {
		t.Fatalf("sent %d records from seq %d (batch cut to %d), want a first half", n, got.Records[0].Seq, len(b.Records))
	}
	if st := u.Stats(); st.BatchesSplit == 0 {
		t.Fatal("BatchesSplit not counted")
	}
}
