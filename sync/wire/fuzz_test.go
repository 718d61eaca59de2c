package wire

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// fuzzKey is a fixed key so the corpus stays meaningful between runs.
var fuzzKey = ed25519.NewKeyFromSeed(make([]byte, 32))

// FuzzMessages feeds arbitrary bytes to every decoder of outside input: no
// panics, and whatever decodes re-encodes and decodes to the same value.
func FuzzMessages(f *testing.F) {
	tap := sampleTap(f, 1)
	tb, _ := tap.MarshalBinary()
	batch, _ := (&Batch{DeviceID: "d", Epoch: "e", SentAt: time.UnixMilli(5), Records: []Record{{1, tb}}}).MarshalBinary()
	ack, _ := (&Ack{DeviceID: "d", Epoch: "e", Ranges: []Range{{1, 4}}}).MarshalBinary()
	dl, _ := (&Downlink{Kind: record.DocFares, Version: 2, Body: []byte(`{}`)}).MarshalBinary()
	st, _ := (&Status{DeviceID: "d", Online: true}).MarshalBinary()
	rp, _ := (&Replay{DeviceID: "d", From: 1, To: 2}).MarshalBinary()
	as, _ := (&Assignment{DeviceID: "d", Version: 3, Route: "42", Vehicle: "BUS-7", IssuedAt: time.UnixMilli(9)}).MarshalBinary()
	for _, p := range [][]byte{tb, batch, ack, dl, st, rp, as, {}, {1}} {
		f.Add(p)
		sealed, _ := Seal(TypeBatch, p, true, fuzzKey)
		f.Add(sealed)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if b, err := ParseBatch(p); err == nil {
			again, err := b.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded batch does not re-encode: %v", err)
			}
			if _, err := ParseBatch(again); err != nil {
				t.Fatalf("re-encoded batch does not decode: %v", err)
			}
		}
		if a, err := ParseAck(p); err == nil {
			if _, err := a.MarshalBinary(); err != nil {
				t.Fatalf("decoded ack does not re-encode: %v", err)
			}
		}
		if d, err := ParseDownlink(p); err == nil {
			if _, err := d.MarshalBinary(); err != nil {
				t.Fatalf("decoded downlink does not re-encode: %v", err)
			}
		}
		ParseStatus(p)
		ParseReplay(p)
		if a, err := ParseAssignment(p); err == nil {
			again, err := a.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded assignment does not re-encode: %v", err)
			}
			if b, err := ParseAssignment(again); err != nil || *b != *a {
				t.Fatalf("re-encoded assignment decodes to %+v, %v; want %+v", b, err, a)
			}
		}
		for _, typ := range []Type{TypeBatch, TypeAck, TypeStatus, TypeDownlink, TypeReplay, TypeAssign} {
			Open(p, typ, fuzzKey.Public().(ed25519.PublicKey))
		}
	})
}
