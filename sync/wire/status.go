package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/farego/farego/agent/record"
)

// MaxStatusSize bounds a status payload.
const MaxStatusSize = 8 << 10

// Status is a device's retained status: published on connect, on change and
// as a heartbeat, and as the MQTT last will (Online false) when the
// connection drops. Signed with the device key.
type Status struct {
	DeviceID        string            `json:"device"`
	Online          bool              `json:"online"`
	Time            time.Time         `json:"time"` // the device clock when sent
	Software        string            `json:"software,omitempty"`
	Epoch           string            `json:"epoch,omitempty"`
	QueueDepth      int               `json:"queue_depth"`
	OldestUnsentSec int64             `json:"oldest_unsent_s"` // age of the oldest unacked tap, seconds
	LastSeq         uint64            `json:"last_seq"`
	Versions        map[string]uint64 `json:"versions,omitempty"` // applied downlink versions by kind
	OutOfService    string            `json:"out_of_service,omitempty"`
	// ClockOffsetMS is the device clock minus the server's, in
	// milliseconds, as the device measured it from the server's acks
	// (absent until it has one).
	ClockOffsetMS *int64 `json:"clock_offset_ms,omitempty"`
	// Salvage reports the last damaged queue file the device salvaged.
	Salvage *SalvageStatus `json:"salvage,omitempty"`
	// Assignment is the route and vehicle the device records in its taps.
	Assignment *StatusAssignment `json:"assignment,omitempty"`
	// Update reports the device's software update, if any (UpdateStatus).
	Update *UpdateStatus `json:"update,omitempty"`
}

// StatusAssignment is a device's route and vehicle (record.CheckAssignment),
// where they came from (AssignSourceConfig, AssignSourceLocal or
// AssignSourceServer) and the version of the newest assignment from the
// server it applied (0: none; at least 1 with AssignSourceServer, at most
// math.MaxInt64 as the ledger numbers them).
type StatusAssignment struct {
	Route         string `json:"route"`
	Vehicle       string `json:"vehicle,omitempty"`
	Source        string `json:"source"`
	ServerVersion uint64 `json:"server_version,omitempty"`
}

// Where a device's assignment came from (StatusAssignment.Source): the
// validator's agent.AssignConfig, AssignLocal and AssignServer.
const (
	AssignSourceConfig = "config"
	AssignSourceLocal  = "local"
	AssignSourceServer = "server"
)

// check checks an assignment report as StatusAssignment describes it.
func (a *StatusAssignment) check() error {
	if err := record.CheckAssignment(a.Route, a.Vehicle); err != nil {
		return fmt.Errorf("%w: assignment: %v", ErrMalformed, err)
	}
	switch a.Source {
	case AssignSourceConfig, AssignSourceLocal, AssignSourceServer:
	default:
		return fmt.Errorf("%w: assignment source %q, want %q, %q or %q", ErrMalformed, cut(a.Source, 80),
			AssignSourceConfig, AssignSourceLocal, AssignSourceServer)
	}
	if a.ServerVersion > math.MaxInt64 {
		return fmt.Errorf("%w: assignment server version %d out of range", ErrMalformed, a.ServerVersion)
	}
	if a.Source == AssignSourceServer && a.ServerVersion == 0 {
		return fmt.Errorf("%w: assignment from the server without its version", ErrMalformed)
	}
	return nil
}

// SalvageStatus tells the operator that the device's queue file was
// damaged, moved aside, and what could be read from it.
type SalvageStatus struct {
	File      string    `json:"file"`       // the damaged file as moved aside (base name)
	At        time.Time `json:"at"`         // when it was salvaged (device clock)
	Epoch     string    `json:"epoch"`      // its queue epoch ("" if unreadable)
	Records   int       `json:"records"`    // unsent records recovered, sent under that epoch
	Damaged   int       `json:"damaged"`    // records the hash chain shows damaged: not sent, kept in the file
	LostPages int       `json:"lost_pages"` // pages that could not be read (records in them are lost)
	State     bool      `json:"state"`      // the device state (seen codes, documents, chain) was recovered
}

// MarshalBinary encodes the status payload (JSON).
func (s *Status) MarshalBinary() ([]byte, error) {
	if err := record.ValidDeviceID(s.DeviceID); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// ParseStatus decodes a status payload strictly and checks what the
// server records of it: the software version (ValidSoftwareVersion), the
// assignment (StatusAssignment) and the update report (UpdateStatus).
func ParseStatus(p []byte) (*Status, error) {
	if len(p) > MaxStatusSize {
		return nil, fmt.Errorf("%w: status of %d bytes", ErrTooLarge, len(p))
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	var s Status
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: status: %w", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: status: trailing data", ErrMalformed)
	}
	if err := record.ValidDeviceID(s.DeviceID); err != nil {
		return nil, err
	}
	if s.QueueDepth < 0 || s.OldestUnsentSec < 0 {
		return nil, fmt.Errorf("%w: status: negative queue figures", ErrMalformed)
	}
	if g := s.Salvage; g != nil && (g.Records < 0 || g.Damaged < 0 || g.LostPages < 0) {
		return nil, fmt.Errorf("%w: status: negative salvage figures", ErrMalformed)
	}
	if s.Software != "" {
		if err := ValidSoftwareVersion(s.Software); err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
	}
	if a := s.Assignment; a != nil {
		if err := a.check(); err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
	}
	if u := s.Update; u != nil {
		if err := u.check(); err != nil {
			return nil, fmt.Errorf("status: update: %w", err)
		}
	}
	return &s, nil
}
