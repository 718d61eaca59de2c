package wire

import (
	"fmt"
	"time"

	"github.com/farego/farego/agent/record"
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
	if err := record.ValidDeviceID(b.DeviceID); err != nil {
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
		if len(r.Data) > record.MaxSize {
			return nil, fmt.Errorf("%w: record %d is %d bytes, limit %d", ErrTooLarge, r.Seq, len(r.Data), record.MaxSize)
		}
		size += len(r.Data) + 12
	}
	e := record.Encoder{B: make([]byte, 0, size+100)}
	e.U8(batchVersion)
	e.Str(b.DeviceID)
	e.Str(b.Epoch)
	e.U64(uint64(b.SentAt.UnixMilli()))
	e.Uvar(uint64(len(b.Records)))
	for _, r := range b.Records {
		e.U64(r.Seq)
		e.Bytes(r.Data)
	}
	return e.B, nil
}

// ParseBatch decodes a batch payload strictly: known version, a valid device
// id, 1 to MaxBatchRecords records with strictly increasing sequence numbers.
func ParseBatch(p []byte) (*Batch, error) {
	d := record.NewDecoder(p, ErrMalformed)
	if v := d.U8("version"); d.Err() == nil && v != batchVersion {
		return nil, fmt.Errorf("%w: batch version %d", ErrUnsupported, v)
	}
	b := &Batch{}
	b.DeviceID = d.Str("device id", maxName)
	b.Epoch = d.Str("epoch", maxName)
	b.SentAt = time.UnixMilli(int64(d.U64("sent at") & (1<<62 - 1))).UTC()
	n := d.Uvar("record count")
	if d.Err() == nil && (n == 0 || n > MaxBatchRecords) {
		return nil, fmt.Errorf("%w: batch of %d records, want 1 to %d", ErrMalformed, n, MaxBatchRecords)
	}
	if d.Err() == nil {
		b.Records = make([]Record, 0, n)
	}
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		r := Record{Seq: d.U64("seq"), Data: d.Bytes("record", record.MaxSize)}
		if d.Err() == nil && i > 0 && r.Seq <= b.Records[i-1].Seq {
			d.Fail("sequence numbers not increasing (%d after %d)", r.Seq, b.Records[i-1].Seq)
		}
		b.Records = append(b.Records, r)
	}
	if err := d.End(); err != nil {
		return nil, err
	}
	if err := record.ValidDeviceID(b.DeviceID); err != nil {
		return nil, err
	}
	return b, nil
}
