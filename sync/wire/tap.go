package wire

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// Field limits of a tap record.
const (
	maxName        = 64
	maxScannerName = 32
	// MaxRecordSize bounds one encoded tap record.
	MaxRecordSize = 2048
	tapVersion    = 1
)

// Tap is the record the validator commits to its queue for every accepted
// tap and the server settles. It carries the whole code (the server
// re-verifies it) and a hash of the device's previous record, so the records
// of a device form a tamper-evident chain.
type Tap struct {
	DeviceID string
	Epoch    string // the device queue's epoch (a replaced queue file has another)
	Seq      uint64
	Time     time.Time // tap time, millisecond precision
	Route    string
	Vehicle  string
	Scanner  string
	Code     []byte // the 194-byte payment code
	Account  uint64
	Serial   uint32
	Profile  paycode.Profile
	Fare     int64 // minor units
	Currency string
	// Versions of the device state that decided the tap.
	FareVersion    uint64
	KeyringVersion uint64
	Software       string
	PrevHash       [sha256.Size]byte // SHA-256 of the previous record's bytes; zero for the first
}

// ID returns the tap id, "device/epoch/seq", unique across the fleet and
// across the queue files of one device.
func (t *Tap) ID() string { return TapID(t.DeviceID, t.Epoch, t.Seq) }

// TapID formats a tap id.
func TapID(device, epoch string, seq uint64) string {
	return device + "/" + epoch + "/" + strconv.FormatUint(seq, 10)
}

// RecordHash returns the hash that the next record's PrevHash holds.
func RecordHash(record []byte) [sha256.Size]byte { return sha256.Sum256(record) }

// MarshalBinary encodes the tap record.
func (t *Tap) MarshalBinary() ([]byte, error) {
	if err := ValidDeviceID(t.DeviceID); err != nil {
		return nil, err
	}
	if len(t.Code) != paycode.CodeSize {
		return nil, fmt.Errorf("%w: code is %d bytes, want %d", ErrMalformed, len(t.Code), paycode.CodeSize)
	}
	if t.Fare < 0 {
		return nil, fmt.Errorf("%w: negative fare %d", ErrMalformed, t.Fare)
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"epoch", t.Epoch, maxName}, {"route", t.Route, maxName}, {"vehicle", t.Vehicle, maxName},
		{"scanner", t.Scanner, maxScannerName}, {"currency", t.Currency, 3}, {"software", t.Software, maxName}} {
		if len(f.v) > f.max {
			return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrMalformed, f.name, len(f.v), f.max)
		}
	}
	e := enc{b: make([]byte, 0, 320)}
	e.u8(tapVersion)
	e.str(t.DeviceID)
	e.str(t.Epoch)
	e.u64(t.Seq)
	e.u64(uint64(t.Time.UnixMilli()))
	e.str(t.Route)
	e.str(t.Vehicle)
	e.str(t.Scanner)
	e.raw(t.Code)
	e.u64(t.Account)
	e.u32(t.Serial)
	e.u8(uint8(t.Profile))
	e.u64(uint64(t.Fare))
	e.str(t.Currency)
	e.u64(t.FareVersion)
	e.u64(t.KeyringVersion)
	e.str(t.Software)
	e.raw(t.PrevHash[:])
	return e.b, nil
}

// ParseTap decodes a tap record strictly. The account, serial and profile
// must match the code's own.
func ParseTap(b []byte) (*Tap, error) {
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("%w: record of %d bytes, limit %d", ErrTooLarge, len(b), MaxRecordSize)
	}
	d := dec{b: b}
	if v := d.u8("version"); d.err == nil && v != tapVersion {
		return nil, fmt.Errorf("%w: tap record version %d", ErrUnsupported, v)
	}
	t := &Tap{}
	t.DeviceID = d.str("device id", maxName)
	t.Epoch = d.str("epoch", maxName)
	t.Seq = d.u64("seq")
	ms := d.u64("time")
	t.Route = d.str("route", maxName)
	t.Vehicle = d.str("vehicle", maxName)
	t.Scanner = d.str("scanner", maxScannerName)
	t.Code = d.take(paycode.CodeSize, "code")
	t.Account = d.u64("account")
	t.Serial = d.u32("serial")
	t.Profile = paycode.Profile(d.u8("profile"))
	fare := d.u64("fare")
	t.Currency = d.str("currency", 3)
	t.FareVersion = d.u64("fare version")
	t.KeyringVersion = d.u64("keyring version")
	t.Software = d.str("software", maxName)
	copy(t.PrevHash[:], d.take(sha256Size, "previous hash"))
	if err := d.end(); err != nil {
		return nil, err
	}
	if err := ValidDeviceID(t.DeviceID); err != nil {
		return nil, err
	}
	if fare > 1<<53 || ms > 1<<53 {
		return nil, fmt.Errorf("%w: fare or time out of range", ErrMalformed)
	}
	t.Fare = int64(fare)
	t.Time = time.UnixMilli(int64(ms)).UTC()
	t.Code = append([]byte(nil), t.Code...)
	c, err := paycode.ParseCode(t.Code)
	if err != nil {
		return nil, fmt.Errorf("%w: code: %v", ErrMalformed, err)
	}
	if c.Account != t.Account || c.Serial != t.Serial || c.Profile != t.Profile {
		return nil, fmt.Errorf("%w: account, serial or profile differ from the code's", ErrMalformed)
	}
	return t, nil
}

const sha256Size = sha256.Size
