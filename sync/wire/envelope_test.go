package wire

import (
	"bytes"
	"compress/flate"
	"crypto/ed25519"
	"math/rand/v2"
	"testing"
	"time"
)

// sealFresh is Seal as it was before the writer pool: a new flate.Writer
// for every message. It is the reference for byte-identical output and the
// benchmark's baseline.
func sealFresh(t Type, payload []byte, compress bool, key ed25519.PrivateKey) []byte {
	var flags byte
	body := payload
	if compress && len(payload) >= compressMin {
		var buf bytes.Buffer
		w, _ := flate.NewWriter(&buf, flate.BestSpeed)
		w.Write(payload)
		w.Close()
		if buf.Len() < len(payload) {
			body, flags = buf.Bytes(), flagDeflate
		}
	}
	msg := append([]byte(magic), byte(t), flags)
	msg = append(msg, body...)
	return append(msg, ed25519.Sign(key, signedMessage(t, flags, body))...)
}

// sampleBatch returns a marshalled batch of realistic tap records of at
// least size bytes: sampleTap's, each with its own sequence number, time,
// serial and code signature (64 random bytes), as one rider's taps would be.
func sampleBatch(tb testing.TB, size int) []byte {
	tb.Helper()
	tap := sampleTap(tb, 1)
	rnd := rand.NewChaCha8([32]byte{1})
	b := Batch{DeviceID: tap.DeviceID, Epoch: tap.Epoch, SentAt: time.UnixMilli(1767229250123).UTC()}
	for n := 0; n < size; {
		t := *tap
		t.Seq = uint64(len(b.Records) + 1)
		t.Time = tap.Time.Add(time.Duration(t.Seq) * 7 * time.Second)
		t.Serial += uint32(t.Seq)
		t.Code = bytes.Clone(tap.Code)
		rnd.Read(t.Code[len(t.Code)-ed25519.SignatureSize:])
		rec, err := t.MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		b.Records = append(b.Records, Record{Seq: t.Seq, Data: rec})
		n += len(rec)
	}
	p, err := b.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestSealReusesWritersIdentically: sealing with pooled writers, in any
// order of sizes and from several goroutines, gives the bytes a fresh
// writer gives.
func TestSealReusesWritersIdentically(t *testing.T) {
	k := newKey(t)
	batch := sampleBatch(t, 30<<10)
	payloads := [][]byte{
		batch,
		batch[:300],
		bytes.Repeat([]byte("farego tap "), 100),
		batch[:compressMin-1], // not compressed
		batch[len(batch)/3:],
		make([]byte, 100<<10),
		batch,
	}
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 5 {
				for i, p := range payloads {
					got, err := Seal(TypeBatch, p, true, k)
					if err != nil {
						t.Error(err)
						return
					}
					if want := sealFresh(TypeBatch, p, true, k); !bytes.Equal(got, want) {
						t.Errorf("payload %d (%d bytes): pooled writer's message differs from a fresh writer's", i, len(p))
						return
					}
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// BenchmarkSeal seals a ~30 KB batch of tap records, compressed: with the
// pooled writers (Seal), with a new writer per message as Seal did before,
// and uncompressed (the floor: signing alone).
func BenchmarkSeal(b *testing.B) {
	k := newKey(b)
	p := sampleBatch(b, 30<<10)
	msg, err := Seal(TypeBatch, p, true, k)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("payload %d bytes; sealed and deflated %d bytes", len(p), len(msg))
	b.Run("pooled", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Seal(TypeBatch, p, true, k); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fresh-writer", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			sealFresh(TypeBatch, p, true, k)
		}
	})
	b.Run("uncompressed", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Seal(TypeBatch, p, false, k); err != nil {
				b.Fatal(err)
			}
		}
	})
}
