package api

import (
	"errors"
	"net/http"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
)

// voidTap voids a wrongly charged tap (operator only): POST /v1/taps/void
// {"tap": "DEVICE/EPOCH/SEQ", "reason": "..."}. The tap id holds slashes,
// so it goes in the body, not the path. The ledger re-rates the tap's day
// as if it had never been charged and writes the audit entry; a second
// void of the same tap changes nothing and says so (already_void).
func (h *Handler) voidTap(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	var req struct {
		Tap    string `json:"tap"`
		Reason string `json:"reason"`
	}
	if err := decode(r, maxBody, &req); err != nil {
		return nil, 0, err
	}
	if req.Tap == "" || req.Reason == "" {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "tap and reason are required")
	}
	res, err := h.cfg.Ledger.VoidTap(r.Context(), req.Tap, req.Reason, p.actor())
	if errors.Is(err, ledger.ErrNotVoidable) {
		return nil, 0, errorf(http.StatusConflict, "not_voidable", "%v", err)
	}
	if err != nil {
		return nil, 0, err
	}
	if res.Already {
		w.Header().Set("Idempotent-Replayed", "true") // nothing changed, nothing to audit
	} else {
		// The money back may lift a negative_balance entry. (The ledger
		// logs the void.)
		h.cfg.Notifier.Changed(record.DocDenyList)
	}
	return map[string]any{
		"tap":          res.TapID,
		"account":      res.Account,
		"service_day":  res.Day,
		"returned":     res.Returned,
		"already_void": res.Already,
	}, http.StatusOK, nil
}
