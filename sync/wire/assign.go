package wire

import (
	"fmt"
	"time"

	"github.com/farego/farego/agent/record"
)

// Assignment tells a device the route it serves and the vehicle it is in,
// as the operator set it. Signed with the fleet key and published retained
// on the device's command topic, so a device offline when it was made gets
// it on its next connection. Version increases with every assignment of the
// device; the device refuses one not newer than the last it applied.
type Assignment struct {
	DeviceID string
	Version  uint64
	Route    string // 1-64 bytes of text
	Vehicle  string // 0-64 bytes of text
	IssuedAt time.Time
}

// MarshalBinary encodes the assignment.
func (a *Assignment) MarshalBinary() ([]byte, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	e := record.Encoder{}
	e.U8(1)
	e.Str(a.DeviceID)
	e.U64(a.Version)
	e.Str(a.Route)
	e.Str(a.Vehicle)
	e.U64(uint64(a.IssuedAt.UnixMilli()))
	return e.B, nil
}

// ParseAssignment decodes an assignment strictly.
func ParseAssignment(p []byte) (*Assignment, error) {
	d := record.NewDecoder(p, ErrMalformed)
	if v := d.U8("version"); d.Err() == nil && v != 1 {
		return nil, fmt.Errorf("%w: assignment format %d", ErrUnsupported, v)
	}
	a := &Assignment{DeviceID: d.Str("device id", maxName), Version: d.U64("assignment version"),
		Route: d.Str("route", maxName), Vehicle: d.Str("vehicle", maxName)}
	a.IssuedAt = time.UnixMilli(int64(d.U64("issued at") & (1<<62 - 1))).UTC()
	if err := d.End(); err != nil {
		return nil, err
	}
	if err := a.check(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Assignment) check() error {
	if err := record.ValidDeviceID(a.DeviceID); err != nil {
		return err
	}
	if a.Version == 0 {
		return fmt.Errorf("%w: assignment version 0", ErrMalformed)
	}
	if err := record.CheckAssignment(a.Route, a.Vehicle); err != nil {
		return fmt.Errorf("%w: assignment: %v", ErrMalformed, err)
	}
	return nil
}
