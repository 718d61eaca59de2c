package api

import (
	"fmt"
	"net/http"

	"github.com/farego/farego/server/ledger"
)

// Assignment is a route and vehicle the operator assigned a device.
type Assignment struct {
	Device  string `json:"device"`
	Version uint64 `json:"version"`
	Route   string `json:"route"`
	Vehicle string `json:"vehicle,omitempty"`
	At      string `json:"at"`
	By      string `json:"by,omitempty"`
}

func toAssignment(a ledger.Assignment) Assignment {
	return Assignment{Device: a.DeviceID, Version: a.Version, Route: a.Route, Vehicle: a.Vehicle, At: timeOrEmpty(a.At), By: a.By}
}

// assign records a device's route and vehicle in the ledger (numbered per
// device) and sends it to the device as a fleet-signed command, retained
// on the broker so a device offline now gets it when it connects. Operator
// only. The ledger compares the route of the device's later taps with it
// (ledger.NoteRouteMismatch).
func (h *Handler) assign(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	if h.cfg.Assign == nil {
		return nil, 0, errorf(http.StatusServiceUnavailable, "unavailable", "assignments need the MQTT link")
	}
	var req struct {
		Route   string `json:"route"`
		Vehicle string `json:"vehicle"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	d, err := h.cfg.Ledger.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, 0, err
	}
	if !d.Revoked.IsZero() {
		return nil, 0, errorf(http.StatusConflict, "device_revoked", "device %s is revoked", d.ID)
	}
	a, err := h.cfg.Ledger.AssignDevice(r.Context(), d.ID, req.Route, req.Vehicle, p.actor())
	if err != nil {
		return nil, 0, err
	}
	h.audit(r, p, "assign", d.ID, fmt.Sprintf("version %d route %q vehicle %q", a.Version, a.Route, a.Vehicle))
	if err := h.cfg.Assign(r.Context(), d.ID, a.Version, a.Route, a.Vehicle); err != nil {
		h.log.Error("assignment recorded but not sent", "device", d.ID, "version", a.Version, "err", err)
		return nil, 0, errorf(http.StatusServiceUnavailable, "not_sent",
			"assignment version %d recorded but not sent to the device (%v): repeat the request", a.Version, err)
	}
	h.log.Info("assignment sent", "device", d.ID, "version", a.Version, "route", a.Route, "vehicle", a.Vehicle)
	return toAssignment(a), http.StatusAccepted, nil
}

// assignments lists a device's assignments, newest first.
func (h *Handler) assignments(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	d, err := h.cfg.Ledger.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, 0, err
	}
	as, err := h.cfg.Ledger.DeviceAssignments(r.Context(), d.ID)
	if err != nil {
		return nil, 0, err
	}
	out := make([]Assignment, len(as))
	for i, a := range as {
		out[i] = toAssignment(a)
	}
	return map[string]any{"assignments": out}, http.StatusOK, nil
}
