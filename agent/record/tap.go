package record

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// MaxScannerName bounds a scanner's name in a tap record (bytes of
// printable UTF-8: CheckScannerName).
const MaxScannerName = 32

// CheckScannerName checks a scanner's name as a tap record carries it: a
// longer one would be cut (two doors' names alike in their first 32 bytes
// would read as one scanner), one with control characters or not UTF-8
// refused by the server (every tap at it quarantined, never charged).
func CheckScannerName(name string) error {
	if name == "" {
		return fmt.Errorf("scanner name is empty")
	}
	return CheckText("scanner name", name, MaxScannerName)
}

// CheckScanners checks a validator's scanners, by name and path, as its
// configuration must have them: each name one a tap record carries
// (CheckScannerName), no name twice, at most one on standard input ("-").
// farego-provision asks it of the bundle it writes, the validator of its
// configuration.
func CheckScanners(names, paths []string) error {
	seen := map[string]bool{}
	stdin := 0
	for i, name := range names {
		if err := CheckScannerName(name); err != nil {
			return fmt.Errorf("scanner %d: %w", i+1, err)
		}
		if seen[name] {
			return fmt.Errorf("scanner name %q appears twice", name)
		}
		seen[name] = true
		if paths[i] == "-" {
			stdin++
		}
	}
	if stdin > 1 {
		return errors.New("only one scanner can read standard input")
	}
	return nil
}

// Field limits of a tap record.
const (
	maxName = 64
	// MaxSize bounds one encoded tap record.
	MaxSize    = 2048
	tapVersion = 1
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

// Hash returns the hash that the next record's PrevHash holds.
func Hash(record []byte) [sha256.Size]byte { return sha256.Sum256(record) }

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
		{"scanner", t.Scanner, MaxScannerName}, {"currency", t.Currency, 3}, {"software", t.Software, maxName}} {
		if len(f.v) > f.max {
			return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrMalformed, f.name, len(f.v), f.max)
		}
	}
	e := Encoder{B: make([]byte, 0, 320)}
	e.U8(tapVersion)
	e.Str(t.DeviceID)
	e.Str(t.Epoch)
	e.U64(t.Seq)
	e.U64(uint64(t.Time.UnixMilli()))
	e.Str(t.Route)
	e.Str(t.Vehicle)
	e.Str(t.Scanner)
	e.Raw(t.Code)
	e.U64(t.Account)
	e.U32(t.Serial)
	e.U8(uint8(t.Profile))
	e.U64(uint64(t.Fare))
	e.Str(t.Currency)
	e.U64(t.FareVersion)
	e.U64(t.KeyringVersion)
	e.Str(t.Software)
	e.Raw(t.PrevHash[:])
	return e.B, nil
}

// ParseTap decodes a tap record strictly. The account, serial and profile
// must match the code's own.
func ParseTap(b []byte) (*Tap, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: record of %d bytes, limit %d", ErrTooLarge, len(b), MaxSize)
	}
	d := NewDecoder(b, ErrMalformed)
	if v := d.U8("version"); d.Err() == nil && v != tapVersion {
		return nil, fmt.Errorf("%w: tap record version %d", ErrUnsupported, v)
	}
	t := &Tap{}
	t.DeviceID = d.Str("device id", maxName)
	t.Epoch = d.Str("epoch", maxName)
	t.Seq = d.U64("seq")
	ms := d.U64("time")
	t.Route = d.Str("route", maxName)
	t.Vehicle = d.Str("vehicle", maxName)
	t.Scanner = d.Str("scanner", MaxScannerName)
	t.Code = d.Take(paycode.CodeSize, "code")
	t.Account = d.U64("account")
	t.Serial = d.U32("serial")
	t.Profile = paycode.Profile(d.U8("profile"))
	fare := d.U64("fare")
	t.Currency = d.Str("currency", 3)
	t.FareVersion = d.U64("fare version")
	t.KeyringVersion = d.U64("keyring version")
	t.Software = d.Str("software", maxName)
	copy(t.PrevHash[:], d.Take(sha256Size, "previous hash"))
	if err := d.End(); err != nil {
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
		return nil, fmt.Errorf("%w: code: %w", ErrMalformed, err)
	}
	if c.Account != t.Account || c.Serial != t.Serial || c.Profile != t.Profile {
		return nil, fmt.Errorf("%w: account, serial or profile differ from the code's", ErrMalformed)
	}
	return t, nil
}

const sha256Size = sha256.Size
