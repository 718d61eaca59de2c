package record_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/farego/farego/agent/record"
)

func TestDenyIndexRoundTrip(t *testing.T) {
	var x record.DenyIndex
	for i := range x.Versions {
		x.Versions[i] = uint64(i) * 1_700_000_000_123
	}
	x.Versions[3] = ^uint64(0)
	b, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > record.MaxDenyIndexSize {
		t.Fatalf("%d bytes, limit %d", len(b), record.MaxDenyIndexSize)
	}
	y, err := record.ParseDenyIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	if *y != x {
		t.Fatal("decoded index differs")
	}
	for name, bad := range map[string][]byte{
		"empty":     nil,
		"format":    append([]byte{2}, b[1:]...),
		"count":     append([]byte{1, 0, 255}, b[3:]...),
		"short":     b[:len(b)-1],
		"trailing":  append(bytes.Clone(b), 0),
		"too large": make([]byte, record.MaxDenyIndexSize+1),
	} {
		if _, err := record.ParseDenyIndex(bad); err == nil {
			t.Errorf("%s: parsed", name)
		} else if !errors.Is(err, record.ErrMalformed) && !errors.Is(err, record.ErrUnsupported) && !errors.Is(err, record.ErrTooLarge) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDenyIndex feeds arbitrary bytes to the index decoder (outside input:
// a downlink's body): no panics, and whatever decodes re-encodes to an
// index that decodes alike.
func FuzzDenyIndex(f *testing.F) {
	var x record.DenyIndex
	b, _ := x.MarshalBinary()
	f.Add(b)
	x.Versions[0], x.Versions[255] = 1, 1<<63
	b, _ = x.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := record.ParseDenyIndex(b)
		if err != nil {
			return
		}
		again, err := x.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded index does not re-encode: %v", err)
		}
		y, err := record.ParseDenyIndex(again)
		if err != nil || *y != *x {
			t.Fatalf("re-encoded index does not decode alike: %v", err)
		}
	})
}
