package server

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/sync/wire"
)

// A status reporting a failed update, as the ingest hands it to the
// server's store, reaches the ledger and GET /v1/devices (the reason made
// printable and bounded); a status with a hostile update report is refused
// and changes nothing. On SQLite and, with FAREGO_TEST_POSTGRES, PostgreSQL.
func TestStatusUpdateReachesAPI(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			testStatusUpdate(t, dsn)
		})
	}
}

func testStatusUpdate(t *testing.T, dsn string) {
	ctx := context.Background()
	l, err := ledger.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	kd, err := keys.Init(filepath.Join(t.TempDir(), "keys"), keys.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := l.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "bus-1", PublicKey: pub, MQTTHash: "h"}); err != nil {
		t.Fatal(err)
	}
	st := (*store)(&Server{ledger: l, log: slog.New(slog.DiscardHandler)})
	at := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	reason := "download: \x1b[31mGet \"http://settlement:8080/v1/releases/1.4.0/armv7\": " + strings.Repeat("é", 300) + "\xff"
	status := &wire.Status{DeviceID: "bus-1", Online: true, Time: time.Now(), Software: "1.3.0",
		Update: &wire.UpdateStatus{Failed: "1.4.0", FailedReason: reason, FailedAt: at}, CertNotAfter: time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)}
	if err := st.Status(ctx, status); err != nil {
		t.Fatal(err)
	}
	// The route and vehicle it reports are kept; a status without them
	// keeps those.
	withRoute := *status
	withRoute.Assignment = &wire.StatusAssignment{Route: "42", Vehicle: "bus-1", Source: wire.AssignSourceLocal, ServerVersion: 3}
	for _, m := range []*wire.Status{&withRoute, status} {
		if err := st.Status(ctx, m); err != nil {
			t.Fatal(err)
		}
		if d, err := l.Device(ctx, "bus-1"); err != nil || d.Status.Route != "42" || d.Status.Vehicle != "bus-1" || d.Status.ServerVersion != 3 {
			t.Fatalf("the reported assignment: %+v, %v; want route 42, vehicle bus-1, server version 3", d.Status, err)
		}
	}
	hostile := *status
	hostile.Update = &wire.UpdateStatus{Pending: "<script>", Failed: "1.4.0"}
	if err := st.Status(ctx, &hostile); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("hostile update report: %v, want ErrInvalid", err)
	}

	tok, err := api.CreateToken(ctx, l, "auditor", "", "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Config{Ledger: l, Keys: kd}))
	defer srv.Close()
	get := func(path string, v any) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
	var list struct {
		Devices []api.Device `json:"devices"`
	}
	get("/v1/devices", &list)
	if len(list.Devices) != 1 {
		t.Fatalf("devices: %+v", list)
	}
	for _, d := range list.Devices {
		if d.CertNotAfter != "2031-03-04T05:06:07Z" {
			t.Errorf("cert_not_after %q, want the device's 2031-03-04T05:06:07Z", d.CertNotAfter)
		}
		u := d.Update
		if u == nil || u.State != "failed" || u.Failed != "1.4.0" || u.Pending != "" || u.FailedAt != "2026-03-10T09:00:00Z" {
			t.Fatalf("update %+v", u)
		}
		if len(u.Reason) > ledger.MaxUpdateReason || !strings.HasPrefix(u.Reason, "download:  [31mGet \"http://settlement") ||
			!strings.HasSuffix(u.Reason, "é") {
			t.Errorf("reason %q: want it printable, cut to %d bytes on a character", u.Reason, ledger.MaxUpdateReason)
		}
	}
}
