package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Downlink is a fleet-wide, versioned document (keyring, deny list or fare
// table), signed with the operator's fleet key and retained on the broker.
// A device applies it only if the signature verifies, the kind matches the
// topic, and the version is newer than the one it has.
type Downlink struct {
	Kind     string // DownlinkKeyring, DownlinkDenyList or DownlinkFares
	Version  uint64
	IssuedAt time.Time
	Body     []byte // the document: keyring JSON, DenyList JSON, fare table JSON
}

// MarshalBinary encodes the downlink payload.
func (d *Downlink) MarshalBinary() ([]byte, error) {
	if !validKind(d.Kind) {
		return nil, fmt.Errorf("%w: downlink kind %q", ErrUnsupported, d.Kind)
	}
	if d.Version == 0 {
		return nil, fmt.Errorf("%w: downlink version must be at least 1", ErrMalformed)
	}
	e := enc{b: make([]byte, 0, len(d.Body)+40)}
	e.u8(1)
	e.str(d.Kind)
	e.u64(d.Version)
	e.u64(uint64(d.IssuedAt.UnixMilli()))
	e.bytes(d.Body)
	return e.b, nil
}

func validKind(k string) bool {
	for _, v := range DownlinkKinds {
		if k == v {
			return true
		}
	}
	return false
}

// ParseDownlink decodes a downlink payload strictly.
func ParseDownlink(p []byte) (*Downlink, error) {
	d := dec{b: p}
	if v := d.u8("version"); d.err == nil && v != 1 {
		return nil, fmt.Errorf("%w: downlink format %d", ErrUnsupported, v)
	}
	dl := &Downlink{Kind: d.str("kind", 16), Version: d.u64("version")}
	dl.IssuedAt = time.UnixMilli(int64(d.u64("issued at") & (1<<62 - 1))).UTC()
	dl.Body = d.bytes("body", MaxPayloadSize)
	if err := d.end(); err != nil {
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

// MaxDenyEntries bounds a deny list.
const MaxDenyEntries = 1_000_000

// DenyList is the deny-list document: accounts (Serial 0) or single
// credentials (account + serial) that validators must refuse.
type DenyList struct {
	Version uint64      `json:"version"`
	Entries []DenyEntry `json:"entries"`
}

// DenyEntry is one deny-list entry.
type DenyEntry struct {
	Account uint64 `json:"account"`
	Serial  uint32 `json:"serial,omitempty"` // 0: the whole account
	Reason  string `json:"reason,omitempty"`
}

// ParseDenyList decodes a deny-list document strictly.
func ParseDenyList(b []byte) (*DenyList, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var dl DenyList
	if err := dec.Decode(&dl); err != nil {
		return nil, fmt.Errorf("%w: deny list: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: deny list: trailing data", ErrMalformed)
	}
	if dl.Version == 0 {
		return nil, fmt.Errorf("%w: deny list version must be at least 1", ErrMalformed)
	}
	if len(dl.Entries) > MaxDenyEntries {
		return nil, fmt.Errorf("%w: deny list of %d entries, limit %d", ErrTooLarge, len(dl.Entries), MaxDenyEntries)
	}
	for i, e := range dl.Entries {
		if e.Account == 0 {
			return nil, fmt.Errorf("%w: deny list entry %d has no account", ErrMalformed, i)
		}
	}
	return &dl, nil
}
