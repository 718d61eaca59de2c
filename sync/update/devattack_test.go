package update

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A download cut by a stop (the validator restarted, a power cut) is kept
// to be resumed. If the next rollout is of another version (the operator
// replaced 1.1.0 by 1.2.0 meanwhile), the device resumes 1.2.0's download
// from the byte where 1.1.0's stopped: the file is 1.1.0's head and 1.2.0's
// tail, its SHA-256 fails, and the failure is final for that rollout (not
// tried again until the operator rolls it out again). A partial download
// must be resumed only for the binary it is a part of.
func TestAttackStalePartialDownloadPoisonsNextRollout(t *testing.T) {
	old := newRelease("1.1.0")
	next := newRelease("1.2.0")
	started := make(chan struct{}, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rest, _ := strings.CutPrefix(req.URL.Path, "/v1/releases/")
		version, _, _ := strings.Cut(rest, "/")
		switch version {
		case "1.1.0": // half, then nothing until the device stops
			w.Header().Set("Content-Length", strconv.Itoa(len(old.data)))
			w.WriteHeader(http.StatusOK)
			w.Write(old.data[:len(old.data)/2])
			w.(http.Flusher).Flush()
			started <- struct{}{}
			<-req.Context().Done()
		case "1.2.0":
			http.ServeContent(w, req, "bin", time.Time{}, bytes.NewReader(next.data))
		default:
			http.NotFound(w, req)
		}
	}))
	defer ts.Close()

	d := newDevice(t)
	u := d.updater(t, "1.0.0", ts.URL)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.apply(ctx, offer{1, rollout(t, old, nil)}) }()
	<-started
	deadline := time.Now().Add(10 * time.Second)
	for {
		fi, err := os.Stat(u.DownloadFile())
		if err == nil && fi.Size() == int64(len(old.data)/2) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel() // the validator stops mid-download
	if err := <-done; err != nil {
		t.Fatalf("apply of 1.1.0 = %v", err)
	}

	// Restarted; the operator has since rolled out 1.2.0 instead.
	u = d.updater(t, "1.0.0", ts.URL)
	err := u.apply(context.Background(), offer{2, rollout(t, next, nil)})
	if !errors.Is(err, ErrRestart) || !bytes.Equal(d.binary(t), next.data) {
		st := u.Status()
		t.Fatalf("rollout of 1.2.0 after a cut download of 1.1.0: apply = %v, status %+v; want 1.2.0 installed", err, st)
	}
}
