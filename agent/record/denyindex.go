package record

import "fmt"

// DocDenyIndex is the kind of the deny-list shard index (a DenyIndex,
// binary), retained on PREFIX/fleet/denyindex: a device that holds every
// shard at the version the index names has nothing to fetch, and one that
// is behind subscribes to the shards it lacks only. It is not in DocKinds
// and is never applied to the deny list: it only says which shards to
// fetch, and every shard is checked (fleet-signed, of its topic's index,
// newer) as it arrives.
const DocDenyIndex = "denyindex"

const denyIndexFormat = 1

// DenyIndex lists the version of each deny-list shard as published (0: not
// published).
type DenyIndex struct {
	Versions [DenyShardCount]uint64
}

// MaxDenyIndexSize bounds an encoded index: 5 bytes of header and a
// uvarint (at most 10 bytes) per shard.
const MaxDenyIndexSize = 5 + 10*DenyShardCount

// MarshalBinary encodes the index:
//
//	u8 format (1) | u16 shard count | per shard: uvarint version
func (x *DenyIndex) MarshalBinary() ([]byte, error) {
	enc := Encoder{B: make([]byte, 0, 3+6*DenyShardCount)}
	enc.U8(denyIndexFormat)
	enc.U16(DenyShardCount)
	for _, v := range x.Versions {
		enc.Uvar(v)
	}
	return enc.B, nil
}

// ParseDenyIndex decodes an index strictly: the format and shard count
// this program knows, a version per shard, nothing after.
func ParseDenyIndex(b []byte) (*DenyIndex, error) {
	if len(b) > MaxDenyIndexSize {
		return nil, fmt.Errorf("%w: deny index of %d bytes, limit %d", ErrTooLarge, len(b), MaxDenyIndexSize)
	}
	d := NewDecoder(b, ErrMalformed)
	if v := d.U8("format"); d.Err() == nil && v != denyIndexFormat {
		return nil, fmt.Errorf("%w: deny index format %d", ErrUnsupported, v)
	}
	if c := d.U16("shard count"); d.Err() == nil && c != DenyShardCount {
		return nil, fmt.Errorf("%w: deny index of %d shards, this program uses %d", ErrUnsupported, c, DenyShardCount)
	}
	x := &DenyIndex{}
	for i := range x.Versions {
		x.Versions[i] = d.Uvar("version")
	}
	if err := d.End(); err != nil {
		return nil, err
	}
	return x, nil
}
