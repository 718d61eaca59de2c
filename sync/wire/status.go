package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
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
	// CertNotAfter is when the TLS client certificate the device presents
	// to the broker ends (zero: it has none, or it is of a release that
	// does not say). Informational, as the device says it: from then on
	// the broker refuses the device, and only a visit (provisioning again)
	// mends it, so the operator is told ahead.
	CertNotAfter time.Time `json:"cert_not_after,omitzero"`
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
	File      string    `json:"file"`              // the damaged file as moved aside (base name)
	At        time.Time `json:"at"`                // when it was salvaged (device clock)
	Epoch     string    `json:"epoch"`             // its queue epoch ("" if unreadable)
	Records   int       `json:"records"`           // unsent records recovered, sent under that epoch
	Damaged   int       `json:"damaged"`           // records the hash chain shows damaged: not sent, kept in the file
	LostPages int       `json:"lost_pages"`        // pages that could not be read (records in them are lost)
	State     bool      `json:"state"`             // the device state (seen codes, documents, chain) was recovered
	Scanned   bool      `json:"scanned,omitempty"` // both meta pages were lost: read page by page (delivered records resent too, no state)
}

// MarshalBinary encodes the status payload (JSON).
func (s *Status) MarshalBinary() ([]byte, error) {
	if err := record.ValidDeviceID(s.DeviceID); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// Bounds of a status's text and maps (Check).
const (
	// MaxOutOfService bounds Status.OutOfService (the settlement server
	// keeps 128 bytes).
	MaxOutOfService = 128
	// MaxStatusVersions bounds Status.Versions (the kinds of downlink
	// document, not deny-list shards: record.DocumentVersions).
	MaxStatusVersions = 32
	// maxFileName bounds SalvageStatus.File, a base name.
	maxFileName = 255
)

// ParseStatus decodes a status payload strictly and checks it (Check),
// after making its two free texts (the out-of-service reason and a failed
// update's reason) printable and cutting them to their bounds.
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
	// The device's own error texts are kept as text, made printable and
	// cut, not a reason to refuse its status: validators of the release
	// before the check send them unchecked, and a status (last seen, out
	// of service) matters more than its wording.
	s.OutOfService = record.Printable(s.OutOfService, MaxOutOfService)
	if s.Update != nil {
		s.Update.FailedReason = record.Printable(s.Update.FailedReason, MaxFailedReason)
	}
	if err := s.Check(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Check checks a status as the server takes it (ParseStatus): a valid
// device id; queue and salvage figures not negative; the epoch printable
// text (record.CheckText) of at most 64 bytes, the out-of-service reason
// of at most MaxOutOfService; at most MaxStatusVersions versions, each of
// a kind of 1 to 64 printable bytes and at most math.MaxInt64; the
// salvage report's file a base name, its epoch as the status's and its
// time in range; the software version (ValidSoftwareVersion), the
// assignment (StatusAssignment), the update report (UpdateStatus) and
// the certificate's end (zero, or from 2000 to 2200).
// The device runs it on its own status before sending it (sync/uplink).
// The clock offset and the time are not checked: the server bounds the
// one and the ledger refuses a time it cannot store.
func (s *Status) Check() error {
	if err := record.ValidDeviceID(s.DeviceID); err != nil {
		return err
	}
	if s.QueueDepth < 0 || s.OldestUnsentSec < 0 {
		return fmt.Errorf("%w: status: negative queue figures", ErrMalformed)
	}
	if err := record.CheckText("epoch", s.Epoch, maxName); err != nil {
		return fmt.Errorf("%w: status: %v", ErrMalformed, err)
	}
	if err := record.CheckText("out-of-service reason", s.OutOfService, MaxOutOfService); err != nil {
		return fmt.Errorf("%w: status: %v", ErrMalformed, err)
	}
	if len(s.Versions) > MaxStatusVersions {
		return fmt.Errorf("%w: status: %d versions, limit %d", ErrMalformed, len(s.Versions), MaxStatusVersions)
	}
	for k, v := range s.Versions {
		if err := checkVersion(k, v); err != nil {
			return fmt.Errorf("%w: status: %v", ErrMalformed, err)
		}
	}
	if g := s.Salvage; g != nil {
		if err := g.check(); err != nil {
			return fmt.Errorf("%w: status: salvage: %v", ErrMalformed, err)
		}
	}
	if s.Software != "" {
		if err := ValidSoftwareVersion(s.Software); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	if a := s.Assignment; a != nil {
		if err := a.check(); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	if u := s.Update; u != nil {
		if err := u.check(); err != nil {
			return fmt.Errorf("status: update: %w", err)
		}
	}
	if !s.CertNotAfter.IsZero() && !ValidCertTime(s.CertNotAfter) {
		return fmt.Errorf("%w: status: certificate end %v out of range", ErrMalformed, s.CertNotAfter)
	}
	return nil
}

// ValidCertTime reports whether a reported certificate end is in the
// range the server stores (CertNotAfter): from 2000 to 2200. X.509 dates
// run to 9999 (GeneralizedTime), and the ledger keeps nanoseconds.
func ValidCertTime(t time.Time) bool {
	return !t.Before(minCertTime) && !t.After(maxCertTime)
}

var (
	minCertTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxCertTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// checkVersion checks one entry of Status.Versions.
func checkVersion(kind string, v uint64) error {
	if kind == "" {
		return fmt.Errorf("a version without its kind")
	}
	if err := record.CheckText("version kind", kind, maxName); err != nil {
		return err
	}
	if v > math.MaxInt64 {
		return fmt.Errorf("version %q %d out of range", cut(kind, 80), v)
	}
	return nil
}

// check checks a salvage report as Status.Check describes it.
func (g *SalvageStatus) check() error {
	if g.Records < 0 || g.Damaged < 0 || g.LostPages < 0 {
		return fmt.Errorf("negative figures")
	}
	if err := record.CheckText("file", g.File, maxFileName); err != nil {
		return err
	}
	if g.File == "" || strings.Contains(g.File, "/") {
		return fmt.Errorf("file %q is not a base name", cut(g.File, 80))
	}
	if err := record.CheckText("epoch", g.Epoch, maxName); err != nil {
		return err
	}
	if !validTime(g.At) {
		return fmt.Errorf("time %v out of range", g.At)
	}
	return nil
}

// Sanitize makes a status that Check refuses one it passes, as far as the
// device's own fields allow, so that a device whose status is wrong (a
// bad build's software version, an error text in a reason) still reports
// itself: text is made printable and cut (record.Printable), negative
// figures become 0, versions that fail are left out (and the ones over
// MaxStatusVersions, the last by kind), and the software version, the
// salvage, assignment and update reports that still fail are dropped. A
// device id that fails is not changed: Check still refuses the status.
func (s *Status) Sanitize() {
	s.QueueDepth, s.OldestUnsentSec = max(s.QueueDepth, 0), max(s.OldestUnsentSec, 0)
	s.Epoch = record.Printable(s.Epoch, maxName)
	s.OutOfService = record.Printable(s.OutOfService, MaxOutOfService)
	if len(s.Versions) > 0 {
		kinds := make([]string, 0, len(s.Versions))
		for k, v := range s.Versions {
			if checkVersion(k, v) == nil {
				kinds = append(kinds, k)
			}
		}
		slices.Sort(kinds)
		vs := make(map[string]uint64, len(kinds))
		for _, k := range kinds[:min(len(kinds), MaxStatusVersions)] {
			vs[k] = s.Versions[k]
		}
		s.Versions = vs
	}
	if s.Software != "" && ValidSoftwareVersion(s.Software) != nil {
		s.Software = ""
	}
	if g := s.Salvage; g != nil {
		c := *g
		c.Records, c.Damaged, c.LostPages = max(c.Records, 0), max(c.Damaged, 0), max(c.LostPages, 0)
		c.File = strings.ReplaceAll(record.Printable(c.File, maxFileName), "/", "_")
		c.Epoch = record.Printable(c.Epoch, maxName)
		s.Salvage = &c
		if c.check() != nil {
			s.Salvage = nil
		}
	}
	if a := s.Assignment; a != nil && a.check() != nil {
		s.Assignment = nil
	}
	if u := s.Update; u != nil {
		c := *u
		c.FailedReason = record.Printable(c.FailedReason, MaxFailedReason)
		s.Update = &c
		if c.check() != nil {
			s.Update = nil
		}
	}
	if !s.CertNotAfter.IsZero() && !ValidCertTime(s.CertNotAfter) {
		s.CertNotAfter = time.Time{}
	}
}
