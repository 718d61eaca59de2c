package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
)

// Where an assignment came from (Assignment.Source).
const (
	// AssignConfig: the route and vehicle of the configuration file, until
	// the first change at runtime.
	AssignConfig = "config"
	// AssignLocal: set on the device (the onboard computer, through
	// farego-validator ctl).
	AssignLocal = "local"
	// AssignServer: set by the operator through the settlement server (a
	// fleet-signed command).
	AssignServer = "server"
)

// keyAssignment is the device-state key of the assignment (JSON).
var keyAssignment = []byte("assignment")

// Assignment is the route the vehicle serves and the vehicle the validator
// is in: recorded in every tap, reported in the status. It survives
// restarts (in the device state) and changes only between taps.
type Assignment struct {
	Route   string    `json:"route"`
	Vehicle string    `json:"vehicle,omitempty"`
	Source  string    `json:"source"` // AssignConfig, AssignLocal or AssignServer
	At      time.Time `json:"at"`     // when it was applied (device clock); zero from the config
	// ServerVersion is the version of the newest assignment from the
	// server applied (kept through later local changes): an assignment
	// from the server with a version not above it is stale.
	ServerVersion uint64 `json:"server_version,omitempty"`
}

// CheckAssignment returns an error (wrapping ErrInvalidAssignment) unless
// route and vehicle pass record.CheckAssignment.
func CheckAssignment(route, vehicle string) error {
	if err := record.CheckAssignment(route, vehicle); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidAssignment, err)
	}
	return nil
}

// loadAssignment returns the stored assignment, or the config's.
func loadAssignment(q *queue.Queue, cfg *Config) (*Assignment, error) {
	as := &Assignment{Route: cfg.Route, Vehicle: cfg.Vehicle, Source: AssignConfig}
	err := q.ViewState(func(st *queue.State) error {
		v := st.Get(bucketState, keyAssignment)
		if v == nil {
			return nil
		}
		var s Assignment
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("stored assignment: %w", err)
		}
		if err := CheckAssignment(s.Route, s.Vehicle); err != nil {
			return fmt.Errorf("stored assignment: %w", err)
		}
		as = &s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("agent: device state: %w", err)
	}
	return as, nil
}

// DeviceID returns the device's id.
func (a *Agent) DeviceID() string { return a.cfg.DeviceID }

// Assignment returns the current assignment.
func (a *Agent) Assignment() Assignment { return *a.assign.Load() }

// AssignLocal sets the route and vehicle from the device itself (the
// onboard computer). It is stored durably, then applied: a tap under way
// finishes with the old one, the next uses the new one.
func (a *Agent) AssignLocal(route, vehicle string) error {
	return a.assignFrom(AssignLocal, 0, func(*Assignment) (string, string) { return route, vehicle })
}

// AssignLocalRoute sets the route from the device itself, keeping the
// vehicle: read and changed under one lock, so an assignment from the
// server at the same time is not undone by half.
func (a *Agent) AssignLocalRoute(route string) error {
	return a.assignFrom(AssignLocal, 0, func(cur *Assignment) (string, string) { return route, cur.Vehicle })
}

// AssignLocalVehicle sets the vehicle from the device itself, keeping the
// route (as AssignLocalRoute).
func (a *Agent) AssignLocalVehicle(vehicle string) error {
	return a.assignFrom(AssignLocal, 0, func(cur *Assignment) (string, string) { return cur.Route, vehicle })
}

// AssignFromServer sets the route and vehicle as the operator sent them,
// with the server's version of the assignment: one whose version is not
// above the newest applied from the server is refused with
// ErrStaleVersion (a retained command seen again on reconnection, or a
// replayed one), so a later local change is not undone by it.
func (a *Agent) AssignFromServer(version uint64, route, vehicle string) error {
	return a.assignFrom(AssignServer, version, func(*Assignment) (string, string) { return route, vehicle })
}

// assignFrom applies the route and vehicle pick returns from the current
// assignment.
func (a *Agent) assignFrom(source string, version uint64, pick func(cur *Assignment) (route, vehicle string)) error {
	// The retained command comes again with every reconnection, on the
	// uplink's session goroutine: refuse it stale without waiting for the
	// lock, which a large deny list being applied holds for a while.
	if source == AssignServer && version != 0 && version <= a.assign.Load().ServerVersion {
		return fmt.Errorf("%w: assignment version %d, device has %d", ErrStaleVersion, version, a.assign.Load().ServerVersion)
	}
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	cur := a.assign.Load()
	route, vehicle := pick(cur)
	if err := CheckAssignment(route, vehicle); err != nil {
		return err
	}
	next := &Assignment{Route: route, Vehicle: vehicle, Source: source, At: a.now().UTC().Truncate(time.Millisecond),
		ServerVersion: cur.ServerVersion}
	if source == AssignServer {
		if version == 0 {
			return fmt.Errorf("%w: an assignment from the server needs a version", ErrInvalidAssignment)
		}
		if version <= cur.ServerVersion {
			return fmt.Errorf("%w: assignment version %d, device has %d", ErrStaleVersion, version, cur.ServerVersion)
		}
		next.ServerVersion = version
	}
	enc, err := json.Marshal(next)
	if err != nil {
		return err
	}
	if err := a.q.UpdateState(func(st *queue.State) error { return st.Put(bucketState, keyAssignment, enc) }); err != nil {
		return fmt.Errorf("agent: storing the assignment: %w", err)
	}
	a.assign.Store(next)
	a.log.Info("assignment changed", "route", route, "vehicle", vehicle, "source", source, "version", version,
		"previous_route", cur.Route, "previous_vehicle", cur.Vehicle)
	if s := a.state.Load(); s.fares != nil && !s.fares.Covers(route) {
		a.log.Error("the fare table has no fares for the assigned route: out of service until it has or the route changes",
			"route", route, "fares_version", s.fares.Version)
	}
	a.serviceChanged()
	return nil
}

// routeNotCovered returns the out-of-service text when the fare table
// held does not cover the assigned route ("" when it does, or there is no
// table: that is no_fare).
func routeNotCovered(s *snapshot, as *Assignment) string {
	if s.fares == nil || s.fares.Covers(as.Route) {
		return ""
	}
	return fmt.Sprintf("%s: route %q is not among the routes fare table version %d lists", record.ReasonRouteNotInFares,
		as.Route, s.fares.Version)
}

// StateHealth is what a technician's check (farego-validator selftest)
// reads of the device state.
type StateHealth struct {
	Versions        map[string]uint64 // applied document versions, without deny-list shards
	Keys            int               // issuer keys in the keyring
	KeysValidNow    int               // of them, valid at Now
	KeysEnd         time.Time         // when the keys valid at Now, and those renewed after them, end (Keyring.ValidUntil; zero if none)
	Fares           bool              // a fare table is held
	FaresCoverRoute bool              // it covers the assigned route
	DenyEntries     int
}

// StateHealth reports on the device state.
func (a *Agent) StateHealth() StateHealth {
	s := a.state.Load()
	h := StateHealth{Versions: record.DocumentVersions(maps.Clone(s.versions)), DenyEntries: s.deny.entries()}
	now := a.now()
	if s.keyring != nil {
		for _, k := range s.keyring.Keys() {
			h.Keys++
			if !now.Before(k.NotBefore) && !now.After(k.NotAfter) {
				h.KeysValidNow++
			}
		}
		h.KeysEnd = s.keyring.ValidUntil(now)
	}
	if s.fares != nil {
		h.Fares, h.FaresCoverRoute = true, s.fares.Covers(a.assign.Load().Route)
	}
	return h
}
