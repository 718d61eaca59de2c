package wire

import (
	"fmt"
	"time"

	"github.com/farego/farego/agent/record"
)

const (
	// ackVersion is what MarshalBinary writes: version 1's fields, then the
	// server's time. ParseAck reads both.
	ackVersion   = 2
	ackVersionV1 = 1
	// MaxAckRanges bounds the seq ranges in one ack.
	MaxAckRanges = 4096
	// maxMillis bounds times in messages (JavaScript's safe integers).
	maxMillis = 1 << 53
)

// Range is an inclusive run of sequence numbers.
type Range struct{ From, To uint64 }

// Ack is the server's application-level acknowledgement: these records of
// this device's queue (epoch) are committed to the ledger, and the device may
// delete them. It is signed with the fleet key. An MQTT PUBACK proves only
// that the broker has the message; this proves the ledger has the taps.
//
// Version 2 acks carry the server's clock (Time), from which the device
// measures its own clock's offset; a version 1 ack (from an older server)
// parses with Time zero.
type Ack struct {
	DeviceID string
	Epoch    string
	Ranges   []Range // ascending, non-overlapping
	// Time is the server's clock when it made the ack, to the millisecond.
	// MarshalBinary writes the current time when it is zero, so every ack
	// a server sends carries one; zero after ParseAck means a version 1
	// ack, without time.
	Time time.Time
}

// Seqs returns the number of sequence numbers the ack covers.
func (a *Ack) Seqs() uint64 {
	var n uint64
	for _, r := range a.Ranges {
		n += r.To - r.From + 1
	}
	return n
}

// Ranges compresses sorted, distinct sequence numbers into ranges.
func Ranges(seqs []uint64) []Range {
	var out []Range
	for _, s := range seqs {
		if n := len(out); n > 0 && out[n-1].To+1 == s {
			out[n-1].To = s
			continue
		}
		out = append(out, Range{s, s})
	}
	return out
}

// MarshalBinary encodes the ack payload.
func (a *Ack) MarshalBinary() ([]byte, error) {
	if err := record.ValidDeviceID(a.DeviceID); err != nil {
		return nil, err
	}
	if err := checkRanges(a.Ranges); err != nil {
		return nil, err
	}
	at := a.Time
	if at.IsZero() {
		at = time.Now()
	}
	ms := at.UnixMilli()
	if ms <= 0 || ms > maxMillis {
		return nil, fmt.Errorf("%w: ack time %v out of range", ErrMalformed, at)
	}
	e := record.Encoder{}
	e.U8(ackVersion)
	e.Str(a.DeviceID)
	e.Str(a.Epoch)
	e.Uvar(uint64(len(a.Ranges)))
	for _, r := range a.Ranges {
		e.U64(r.From)
		e.U64(r.To)
	}
	e.U64(uint64(ms))
	return e.B, nil
}

func checkRanges(rs []Range) error {
	if len(rs) == 0 || len(rs) > MaxAckRanges {
		return fmt.Errorf("%w: %d ranges, want 1 to %d", ErrMalformed, len(rs), MaxAckRanges)
	}
	for i, r := range rs {
		if r.From > r.To || (i > 0 && r.From <= rs[i-1].To) {
			return fmt.Errorf("%w: ranges must be ascending and disjoint (%d-%d)", ErrMalformed, r.From, r.To)
		}
	}
	return nil
}

// ParseAck decodes an ack payload strictly.
func ParseAck(p []byte) (*Ack, error) {
	d := record.NewDecoder(p, ErrMalformed)
	v := d.U8("version")
	if d.Err() == nil && v != ackVersion && v != ackVersionV1 {
		return nil, fmt.Errorf("%w: ack version %d", ErrUnsupported, v)
	}
	a := &Ack{DeviceID: d.Str("device id", maxName), Epoch: d.Str("epoch", maxName)}
	n := d.Uvar("range count")
	if d.Err() == nil && (n == 0 || n > MaxAckRanges) {
		return nil, fmt.Errorf("%w: %d ranges, want 1 to %d", ErrMalformed, n, MaxAckRanges)
	}
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		a.Ranges = append(a.Ranges, Range{From: d.U64("from"), To: d.U64("to")})
	}
	if v == ackVersion {
		ms := d.U64("time")
		if d.Err() == nil && (ms == 0 || ms > maxMillis) {
			return nil, fmt.Errorf("%w: ack time %d out of range", ErrMalformed, ms)
		}
		a.Time = time.UnixMilli(int64(ms)).UTC()
	}
	if err := d.End(); err != nil {
		return nil, err
	}
	if err := record.ValidDeviceID(a.DeviceID); err != nil {
		return nil, err
	}
	if err := checkRanges(a.Ranges); err != nil {
		return nil, err
	}
	return a, nil
}

// ReplayWholeArchive is the To of a Replay of a device's whole archive
// (From 1): the highest sequence number a ledger keeps.
const ReplayWholeArchive = ^uint64(0) >> 1

// Replay asks a device to send archived records From..To of its queue
// again, after the server restored an older backup. Signed with the fleet key.
//
// ID names the request: a device carries out a request once, and none
// whose ID is not above the last one it carried out (queue.Replay), so a
// copy of a signed request, kept and sent again, makes it send nothing.
// The server uses its clock's Unix milliseconds. Version 1 requests (from
// a server before IDs, or the copy a server sends for validators before
// IDs: MarshalBinaryV1) parse with ID 0, which devices ignore.
type Replay struct {
	DeviceID string
	Epoch    string
	From, To uint64
	ID       uint64
}

const (
	replayVersion   = 2
	replayVersionV1 = 1
)

// MarshalBinary encodes the replay request.
func (r *Replay) MarshalBinary() ([]byte, error) {
	if err := record.ValidDeviceID(r.DeviceID); err != nil {
		return nil, err
	}
	if r.From == 0 || r.From > r.To {
		return nil, fmt.Errorf("%w: replay range %d-%d", ErrMalformed, r.From, r.To)
	}
	if r.ID == 0 {
		return nil, fmt.Errorf("%w: replay request id 0", ErrMalformed)
	}
	e := record.Encoder{}
	e.U8(replayVersion)
	e.Str(r.DeviceID)
	e.Str(r.Epoch)
	e.U64(r.From)
	e.U64(r.To)
	e.U64(r.ID)
	return e.B, nil
}

// MarshalBinaryV1 encodes the request as version 1, without its ID: the
// copy a server sends for validators from before request IDs, which
// refuse version 2 (they carry out a version 1 request each time it comes;
// validators that know IDs ignore it).
func (r *Replay) MarshalBinaryV1() ([]byte, error) {
	p, err := r.MarshalBinary()
	if err != nil {
		return nil, err
	}
	p = p[:len(p)-8] // the ID, last
	p[0] = replayVersionV1
	return p, nil
}

// ParseReplay decodes a replay request strictly.
func ParseReplay(p []byte) (*Replay, error) {
	d := record.NewDecoder(p, ErrMalformed)
	v := d.U8("version")
	if d.Err() == nil && v != replayVersion && v != replayVersionV1 {
		return nil, fmt.Errorf("%w: replay version %d", ErrUnsupported, v)
	}
	r := &Replay{DeviceID: d.Str("device id", maxName), Epoch: d.Str("epoch", maxName), From: d.U64("from"), To: d.U64("to")}
	if v == replayVersion {
		if r.ID = d.U64("request id"); d.Err() == nil && r.ID == 0 {
			return nil, fmt.Errorf("%w: replay request id 0", ErrMalformed)
		}
	}
	if err := d.End(); err != nil {
		return nil, err
	}
	if err := record.ValidDeviceID(r.DeviceID); err != nil {
		return nil, err
	}
	if r.From == 0 || r.From > r.To {
		return nil, fmt.Errorf("%w: replay range %d-%d", ErrMalformed, r.From, r.To)
	}
	return r, nil
}
