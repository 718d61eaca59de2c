package wire

import (
	"fmt"
	"time"
)

// MaxBatchRecords bounds the records in one batch.
const MaxBatchRecords = 1000

const batchVersion = 1

// Record is one queue record in a batch: its sequence number and its bytes
// (an encoded [Tap]).
type Record struct {
	Seq  uint64
	Data []byte
}

// Batch is what a device publishes on its taps topic: a run of queue
// records, signed with the device key.
type Batch struct {
	DeviceID string
	Epoch    string
	SentAt   time.Time
	Records  []Record
}

// MarshalBinary encodes the batch payload.
func (b *Batch) MarshalBinary() ([]byte, error) {
	if err := ValidDeviceID(b.DeviceID); err != nil {
		return nil, err
	}
	if len(b.Records) == 0 || len(b.Records) > MaxBatchRecords {
		return nil, fmt.Errorf("%w: batch of %d records, want 1 to %d", ErrMalformed, len(b.Records), MaxBatchRecords)
	}
	if len(b.Epoch) > maxName {
		return nil, fmt.Errorf("%w: epoch too long", ErrMalformed)
	}
	size := 0
	for _, r := range b.Records {
		if len(r.Data) > MaxRecordSize {
			return nil, fmt.Errorf("%w: record %d is %d bytes, limit %d", ErrTooLarge, r.Seq, len(r.Data), MaxRecordSize)
		}
		size += len(r.Data) + 12
	}
	e := enc{b: make([]byte, 0, size+100)}
	e.u8(batchVersion)
	e.str(b.DeviceID)
	e.str(b.Epoch)
	e.u64(uint64(b.SentAt.UnixMilli()))
	e.uvar(uint64(len(b.Records)))
	for _, r := range b.Records {
		e.u64(r.Seq)
		e.bytes(r.Data)
	}
	return e.b, nil
}

// ParseBatch decodes a batch payload strictly: known version, a valid device
// id, 1 to MaxBatchRecords records with strictly increasing sequence numbers.
func ParseBatch(p []byte) (*Batch, error) {
	d := dec{b: p}
	if v := d.u8("version"); d.err == nil && v != batchVersion {
		return nil, fmt.Errorf("%w: batch version %d", ErrUnsupported, v)
	}
	b := &Batch{}
	b.DeviceID = d.str("device id", maxName)
	b.Epoch = d.str("epoch", maxName)
	b.SentAt = time.UnixMilli(int64(d.u64("sent at") & (1<<62 - 1))).UTC()
	n := d.uvar("record count")
	if d.err == nil && (n == 0 || n > MaxBatchRecords) {
		return nil, fmt.Errorf("%w: batch of %d records, want 1 to %d", ErrMalformed, n, MaxBatchRecords)
	}
	if d.err == nil {
		b.Records = make([]Record, 0, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		r := Record{Seq: d.u64("seq"), Data: d.bytes("record", MaxRecordSize)}
		if d.err == nil && i > 0 && r.Seq <= b.Records[i-1].Seq {
			d.fail("sequence numbers not increasing (%d after %d)", r.Seq, b.Records[i-1].Seq)
		}
		b.Records = append(b.Records, r)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if err := ValidDeviceID(b.DeviceID); err != nil {
		return nil, err
	}
	return b, nil
}
