package wire

import (
	"fmt"
	"time"

	"github.com/farego/farego/agent/record"
)

// Downlink is a fleet-wide, versioned document (keyring, deny list or fare
// table), signed with the operator's fleet key and retained on the broker.
// A device applies it only if the signature verifies, the kind matches the
// topic, and the version is newer than the one it has.
type Downlink struct {
	Kind     string // record.DocKeyring, DocDenyList, DocFares, DocDenyShard (one shard of the deny list), DocDenyIndex (the shards' versions) or DocRelease
	Version  uint64
	IssuedAt time.Time
	Body     []byte // the document: keyring JSON, DenyList JSON, fare table JSON, DenyShard binary
}

// MarshalBinary encodes the downlink payload.
func (d *Downlink) MarshalBinary() ([]byte, error) {
	if !validKind(d.Kind) {
		return nil, fmt.Errorf("%w: downlink kind %q", ErrUnsupported, d.Kind)
	}
	if d.Version == 0 {
		return nil, fmt.Errorf("%w: downlink version must be at least 1", ErrMalformed)
	}
	e := record.Encoder{B: make([]byte, 0, len(d.Body)+40)}
	e.U8(1)
	e.Str(d.Kind)
	e.U64(d.Version)
	e.U64(uint64(d.IssuedAt.UnixMilli()))
	e.Bytes(d.Body)
	return e.B, nil
}

func validKind(k string) bool {
	for _, v := range record.DocKinds {
		if k == v {
			return true
		}
	}
	return k == record.DocDenyShard || k == record.DocDenyIndex || k == DocRelease
}

// ParseDownlink decodes a downlink payload strictly.
func ParseDownlink(p []byte) (*Downlink, error) {
	d := record.NewDecoder(p, ErrMalformed)
	if v := d.U8("version"); d.Err() == nil && v != 1 {
		return nil, fmt.Errorf("%w: downlink format %d", ErrUnsupported, v)
	}
	dl := &Downlink{Kind: d.Str("kind", 16), Version: d.U64("version")}
	dl.IssuedAt = time.UnixMilli(int64(d.U64("issued at") & (1<<62 - 1))).UTC()
	dl.Body = d.Bytes("body", MaxPayloadSize)
	if err := d.End(); err != nil {
		return nil, err
	}
	if !validKind(dl.Kind) {
		return nil, fmt.Errorf("%w: downlink kind %q", ErrUnsupported, dl.Kind)
	}
	if dl.Version == 0 {
		return nil, fmt.Errorf("%w: downlink version 0", ErrMalformed)
	}
	return dl, nil
}
