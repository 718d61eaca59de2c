package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/farego/farego/server/release"
	"github.com/farego/farego/sync/wire"
)

// maxRolloutBody bounds a rollout request.
const maxRolloutBody = 256 << 10

// releaseRoutes adds the release endpoints when the server keeps releases.
func (h *Handler) releaseRoutes() {
	if h.cfg.Releases == nil {
		return
	}
	h.route("GET /v1/releases", h.listReleases)
	h.route("PUT /v1/releases/{version}/{arch}", h.addRelease)
	h.route("POST /v1/releases/{version}/rollout", h.rollout)
	// The binaries are public: they hold no secret, and a device installs
	// one only if it matches a manifest signed with the fleet key.
	h.mux.HandleFunc("GET /v1/releases/{version}/{arch}", func(w http.ResponseWriter, r *http.Request) {
		h.cfg.Releases.ServeBinary(w, r, r.PathValue("version"), r.PathValue("arch"))
	})
}

func releaseErr(err error) error {
	switch {
	case errors.Is(err, release.ErrExists):
		return errorf(http.StatusConflict, "exists", "%v", err)
	case errors.Is(err, release.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "%v", err)
	case errors.Is(err, release.ErrInvalid):
		return errorf(http.StatusBadRequest, "invalid", "%v", err)
	}
	return err
}

func (h *Handler) listReleases(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	rels, err := h.cfg.Releases.List()
	if err != nil {
		return nil, 0, err
	}
	ro, err := h.cfg.Releases.Rollout()
	if err != nil {
		return nil, 0, err
	}
	if rels == nil {
		rels = []release.Release{}
	}
	return map[string]any{"releases": rels, "rollout": ro}, http.StatusOK, nil
}

// addRelease stores the request body (the binary, application/octet-stream)
// as release VERSION for ARCH and signs its manifest.
func (h *Handler) addRelease(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
		return nil, 0, errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send the binary as Content-Type: application/octet-stream")
	}
	if r.ContentLength > wire.MaxBinarySize {
		return nil, 0, errorf(http.StatusRequestEntityTooLarge, "too_large", "a binary larger than %d bytes", wire.MaxBinarySize)
	}
	rel, err := h.cfg.Releases.Add(http.MaxBytesReader(w, r.Body, wire.MaxBinarySize+1), r.PathValue("version"), r.PathValue("arch"), h.cfg.Now())
	if err != nil {
		return nil, 0, releaseErr(err)
	}
	h.audit(r, p, "release_add", rel.Version+"/"+rel.Arch, fmt.Sprintf("size %d sha256 %s", rel.Size, rel.SHA256))
	h.log.Info("release added", "version", rel.Version, "arch", rel.Arch, "size", rel.Size)
	return rel, http.StatusCreated, nil
}

func (h *Handler) rollout(w http.ResponseWriter, r *http.Request) (any, int, error) {
	p, err := h.staff(r)
	if err != nil {
		return nil, 0, err
	}
	var req struct {
		Devices        []string `json:"devices"`
		Percent        int      `json:"percent"`
		AllowDowngrade bool     `json:"allow_downgrade"`
	}
	if err := decode(r, maxRolloutBody, &req); err != nil {
		return nil, 0, err
	}
	ro, err := h.cfg.Releases.SetRollout(r.PathValue("version"), req.Devices, req.Percent, req.AllowDowngrade, h.cfg.Now())
	if err != nil {
		return nil, 0, releaseErr(err)
	}
	h.audit(r, p, "release_rollout", ro.Version, fmt.Sprintf("seq %d percent %d devices %d allow_downgrade %t", ro.Seq, ro.Percent, len(ro.Devices), ro.AllowDowngrade))
	h.log.Info("release rollout", "version", ro.Version, "seq", ro.Seq, "percent", ro.Percent, "devices", len(ro.Devices))
	h.cfg.Notifier.Changed(wire.DocRelease)
	return ro, http.StatusOK, nil
}
