package api

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/broker"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/wire"
)

// registerDevice registers a validator: its Ed25519 key and, optionally,
// its client certificate (PEM, common name = the device id). Every
// registration makes a new random broker password, returned once and kept
// only as a hash: the previous password (and certificate) of the device
// stop working at once.
func (h *Handler) registerDevice(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	var req struct {
		ID          string `json:"id"`
		PublicKey   string `json:"public_key"`
		Certificate string `json:"certificate"`
		Replace     bool   `json:"replace"`
		// Unrevoke lifts a revocation: without it a revoked device is
		// refused (409 device_revoked), replace or not.
		Unrevoke bool `json:"unrevoke"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	if err := record.ValidDeviceID(req.ID); err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "%v", err)
	}
	if record.ReservedDeviceID(req.ID) {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "device id %q is reserved for the settlement server and the broker", req.ID)
	}
	pub, certSum, err := CheckDeviceKeys(req.ID, req.PublicKey, req.Certificate)
	if err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "%v", err)
	}
	password := broker.NewPassword()
	done, err := h.cfg.Ledger.RegisterDeviceReport(r.Context(), ledger.DeviceRegistration{ID: req.ID, PublicKey: pub, Replace: req.Replace,
		Unrevoke: req.Unrevoke, MQTTHash: broker.HashPassword(password), CertSHA256: certSum})
	if err != nil {
		return nil, 0, err
	}
	if h.cfg.DeviceChanged != nil {
		h.cfg.DeviceChanged(req.ID)
	}
	resp := map[string]any{"id": req.ID, "public_key": req.PublicKey, "mqtt_username": req.ID, "mqtt_password": password,
		"mqtt_client_id": broker.DeviceClientIDPrefix + req.ID, "key_replaced": done.KeyReplaced, "unrevoked": !done.Unrevoked.IsZero()}
	detail := fmt.Sprintf("replace %t certificate %t", req.Replace, certSum != nil)
	if !done.Unrevoked.IsZero() {
		revokedAt := done.Unrevoked.UTC().Format(time.RFC3339)
		resp["revoked_at"] = revokedAt
		detail += " unrevoked (revoked " + revokedAt + ")"
		h.log.Warn("device registered again: its revocation is lifted", "device", req.ID, "replace", req.Replace, "revoked_at", revokedAt)
	} else {
		h.log.Info("device registered", "device", req.ID, "replace", req.Replace)
	}
	h.audit(r, p, "register_device", req.ID, detail)
	return resp, http.StatusCreated, nil
}

func (h *Handler) revokeDevice(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	id := r.PathValue("id")
	if err := h.cfg.Ledger.RevokeDevice(r.Context(), id); err != nil {
		return nil, 0, err
	}
	if h.cfg.DeviceChanged != nil {
		h.cfg.DeviceChanged(id)
	}
	h.audit(r, p, "revoke_device", id, "")
	resp := map[string]any{"id": id, "revoked": true}
	// The taps its last status had not sent: riders' green taps, never
	// charged while it is revoked (a decommission revoked before its
	// queue drained lost them without a word). The device's word, as of
	// status_at: taps made since are unknown here.
	if d, err := h.cfg.Ledger.Device(r.Context(), id); err == nil && !d.StatusAt.IsZero() {
		resp["status_at"] = d.StatusAt.UTC().Format(time.RFC3339)
		resp["queue_depth"] = d.Status.QueueDepth
	}
	return resp, http.StatusOK, nil
}

// Device is a validator as the operator sees it.
type Device struct {
	ID           string `json:"id"`
	RegisteredAt string `json:"registered_at"`
	// State is online, offline, unknown (nothing heard since this server
	// started: the last status may be stale) or revoked.
	State           string `json:"state"`
	Since           string `json:"since,omitempty"` // with unknown: since when
	Online          bool   `json:"online"`
	StatusAt        string `json:"status_at,omitempty"` // server time of the last status
	QueueDepth      int    `json:"queue_depth"`
	OldestUnsentSec int64  `json:"oldest_unsent_s"`
	ClockOffsetMS   int64  `json:"clock_offset_ms"`
	// Drifting: the device's clock is further from the server's than the
	// drift bound (validators go out of service beyond their own
	// max_clock_offset, 30 s by default).
	Drifting     bool              `json:"drifting"`
	LastSeq      uint64            `json:"last_seq"`
	LastSync     string            `json:"last_sync,omitempty"`
	Software     string            `json:"software,omitempty"`
	OutOfService string            `json:"out_of_service,omitempty"`
	Versions     map[string]uint64 `json:"versions,omitempty"`
	Revoked      string            `json:"revoked,omitempty"`
	// Update is the device's software update as its last status reported
	// it (absent: nothing to report).
	Update *DeviceUpdate `json:"update,omitempty"`
	// CertNotAfter is when the device says its TLS client certificate
	// ends (absent: not reported): the broker refuses it from then on.
	CertNotAfter string `json:"cert_not_after,omitempty"`
}

// DeviceUpdate is a device's software update. State is "failed" while the
// device runs an older version than the one that failed (or one that is
// not a release version), "pending" while a new version waits for its
// health check, "ok" otherwise (an old failure, since overtaken).
type DeviceUpdate struct {
	State    string `json:"state"`
	Pending  string `json:"pending,omitempty"`   // version waiting for its health check
	Failed   string `json:"failed,omitempty"`    // version of the last failed update
	Reason   string `json:"reason,omitempty"`    // why it failed
	FailedAt string `json:"failed_at,omitempty"` // when, by the device's clock
}

func toDeviceUpdate(d ledger.Device) *DeviceUpdate {
	u := d.Status.Update
	if u == (ledger.DeviceUpdate{}) {
		return nil
	}
	out := &DeviceUpdate{State: "ok", Pending: u.Pending, Failed: u.Failed, Reason: u.FailedReason, FailedAt: timeOrEmpty(u.FailedAt)}
	switch {
	case d.UpdateFailed():
		out.State = "failed"
	case u.Pending != "":
		out.State = "pending"
	}
	return out
}

func (h *Handler) toDevice(d ledger.Device) Device {
	out := Device{ID: d.ID, RegisteredAt: timeOrEmpty(d.RegisteredAt), Online: d.Status.Online, StatusAt: timeOrEmpty(d.StatusAt),
		QueueDepth: d.Status.QueueDepth, OldestUnsentSec: int64(d.Status.OldestUnsent / time.Second),
		ClockOffsetMS: d.ClockOffset.Milliseconds(), LastSeq: d.LastSeq, LastSync: timeOrEmpty(d.LastSync),
		Software: d.Status.Software, OutOfService: d.Status.OutOfService, Versions: d.Status.Versions, Revoked: timeOrEmpty(d.Revoked),
		Update: toDeviceUpdate(d), CertNotAfter: timeOrEmpty(d.Status.CertNotAfter)}
	out.Drifting = h.drifting(d)
	switch {
	case !d.Revoked.IsZero():
		out.State, out.Online = "revoked", false
	case d.StatusAt.Before(h.cfg.Started):
		out.State, out.Online, out.Since = "unknown", false, timeOrEmpty(h.cfg.Started)
	case d.Status.Online:
		out.State = "online"
	default:
		out.State = "offline"
	}
	return out
}

// DefaultDriftBound is the default Config.DriftBound: a third of the
// validators' default max_clock_offset, so the operator hears of a
// drifting clock before the validator goes out of service.
const DefaultDriftBound = 10 * time.Second

// drifting reports whether an unrevoked device's last reported clock is
// further from the server's than the drift bound.
func (h *Handler) drifting(d ledger.Device) bool {
	return h.cfg.DriftBound > 0 && d.Revoked.IsZero() && !d.StatusAt.IsZero() && d.ClockOffset.Abs() > h.cfg.DriftBound
}

// driftingDevices counts the drifting devices (the metric), -1 if the
// ledger cannot be read.
func (h *Handler) driftingDevices() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := h.cfg.Ledger.Devices(ctx)
	if err != nil {
		return -1
	}
	n := 0
	for _, d := range ds {
		if h.drifting(d) {
			n++
		}
	}
	return float64(n)
}

func (h *Handler) devices(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	ds, err := h.cfg.Ledger.Devices(r.Context())
	if err != nil {
		return nil, 0, err
	}
	out := make([]Device, len(ds))
	for i, d := range ds {
		out[i] = h.toDevice(d)
	}
	return map[string]any{"devices": out}, http.StatusOK, nil
}

// replay asks a device to resend records from its archive: by default all
// of it (after a restore the gaps may be anywhere — batches commit out of
// order — and a tap the ledger has already changes nothing).
func (h *Handler) replay(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	if h.cfg.Replay == nil {
		return nil, 0, errorf(http.StatusServiceUnavailable, "unavailable", "replay needs the MQTT link")
	}
	var req struct {
		From uint64 `json:"from"`
		To   uint64 `json:"to"`
	}
	body, err := readBody(r, maxBody)
	if err != nil {
		return nil, 0, err
	}
	if len(body) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return nil, 0, err
		}
	}
	d, err := h.cfg.Ledger.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, 0, err
	}
	if d.Status.Epoch == "" || !d.Status.Online || !d.Revoked.IsZero() {
		return nil, 0, errorf(http.StatusConflict, "device_offline", "device %s is not online (a replay request is not kept for an offline device)", d.ID)
	}
	// A status from before this server started (after a restore: the
	// backup's) may name a device that is not connected, or a queue epoch
	// it no longer has: the request would be lost or refused, and the
	// archive never sent. As replayAll, wait until the device is heard.
	if d.StatusAt.Before(h.cfg.Started) {
		return nil, 0, errorf(http.StatusConflict, "device_offline", "device %s has not been heard since this server started (its status is older: ask again once it is online)", d.ID)
	}
	if req.From == 0 {
		req.From = 1
	}
	if req.To == 0 {
		req.To = wire.ReplayWholeArchive
	}
	if req.From > req.To {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "from %d is after to %d", req.From, req.To)
	}
	if err := h.cfg.Replay(r.Context(), d.ID, d.Status.Epoch, req.From, req.To); err != nil {
		return nil, 0, err
	}
	h.audit(r, p, "replay", d.ID, fmt.Sprintf("epoch %s from %d to %d", d.Status.Epoch, req.From, req.To))
	h.log.Info("replay requested", "device", d.ID, "from", req.From, "to", req.To)
	return map[string]any{"device": d.ID, "epoch": d.Status.Epoch, "from": req.From, "to": req.To}, http.StatusAccepted, nil
}

// replayAll asks every online, unrevoked device to resend its whole
// archive, the last step of the restore procedure, through ReplayFleet:
// the request is kept for every device, online or not, and sent again
// when it is next heard online (a device offline now, or whose link
// dropped before the broker noticed, would otherwise never be asked).
func (h *Handler) replayAll(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	if h.cfg.ReplayFleet == nil {
		return nil, 0, errorf(http.StatusServiceUnavailable, "unavailable", "replay needs the MQTT link")
	}
	ds, err := h.cfg.Ledger.Devices(r.Context())
	if err != nil {
		return nil, 0, err
	}
	offline := []string{}
	sends := map[string]string{}
	for _, d := range ds {
		if !d.Revoked.IsZero() {
			continue
		}
		if d.Status.Epoch == "" || !d.Status.Online || d.StatusAt.Before(h.cfg.Started) {
			offline = append(offline, d.ID)
			continue
		}
		sends[d.ID] = d.Status.Epoch
	}
	asked, err := h.cfg.ReplayFleet(r.Context(), sends)
	if err != nil {
		// Devices asked and the request kept before the failure
		// (no broker link): in the trail all the same.
		h.audit(r, p, "replay_all", "", fmt.Sprintf("%d asked, %d offline, then failed: %v", len(asked), len(offline), err))
		return nil, 0, err
	}
	if asked == nil {
		asked = []string{} // a list, not null, when none was online
	}
	slices.Sort(asked)
	h.audit(r, p, "replay_all", "", fmt.Sprintf("%d asked, %d offline", len(asked), len(offline)))
	return map[string]any{"asked": asked, "offline": offline, "kept_until": time.Now().Add(ledger.KeptReplayFor).UTC()},
		http.StatusAccepted, nil
}

// CheckDeviceKeys checks a device's registration as the API does before
// it stores it: the public key (64 hex digits, a valid Ed25519 point) and,
// when given, its broker certificate (one PEM CERTIFICATE block for this
// device id). It returns the key and the certificate's SHA-256 (nil
// without one). The console asks it before its confirmation page.
func CheckDeviceKeys(id, publicKey, certificate string) (pub, certSum []byte, err error) {
	pub, err = hex.DecodeString(publicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, nil, errors.New("public_key must be 64 hex digits (Ed25519)")
	}
	if err := paycode.CheckPublicKey(pub); err != nil {
		return nil, nil, fmt.Errorf("public_key: %w", err)
	}
	if certificate == "" {
		return pub, nil, nil
	}
	block, _ := pem.Decode([]byte(certificate))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, errors.New("certificate must be one PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	if cert.Subject.CommonName != id {
		return nil, nil, fmt.Errorf("the certificate is for device %q, not %q", cert.Subject.CommonName, id)
	}
	sum := sha256.Sum256(cert.Raw)
	return pub, sum[:], nil
}
