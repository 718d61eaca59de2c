package server

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/sync/wire"
)

// TestStolenDeviceDenyReportsSendNothing: a stolen validator's statuses
// report a deny-list version of its choosing, a millisecond higher each
// time, within the 24 h the ledger follows. Each moved the version of the
// whole deny list the publisher sends (the Source: published again to
// every validator whenever its version is above the last published, every
// poll), so one login had the whole list (up to 256 KB) sent to every bus
// again and again, and every validator written its flash for it. The
// version the publisher reads moves only with the list.
func TestStolenDeviceDenyReportsSendNothing(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			ctx := context.Background()
			l, err := ledger.Open(ctx, dsn, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			pub, _, _ := ed25519.GenerateKey(nil)
			if err := l.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "bus-stolen", PublicKey: pub, MQTTHash: "h"}); err != nil {
				t.Fatal(err)
			}
			a, err := l.CreateAccount(ctx, ledger.AccountSpec{})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Deny(ctx, a.ID, 0, "operator"); err != nil {
				t.Fatal(err)
			}
			s := &Server{ledger: l, log: slog.New(slog.DiscardHandler)}
			v0, body, err := s.document(ctx, record.DocDenyList)
			if err != nil || body == nil {
				t.Fatalf("the whole deny list: version %d, %d bytes, %v", v0, len(body), err)
			}
			for i := range uint64(5) {
				m := &wire.Status{DeviceID: "bus-stolen", Online: true, Time: time.Now(),
					Versions: map[string]uint64{record.DocDenyList: v0 + uint64(time.Hour/time.Millisecond) + i}}
				if err := (*store)(s).Status(ctx, m); err != nil {
					t.Fatal(err)
				}
				if v, _, err := s.document(ctx, record.DocDenyList); err != nil || v != v0 {
					t.Fatalf("after the stolen device's report %d the publisher's deny list is version %d (%v), was %d: sent again to every bus", i, v, err, v0)
				}
			}
		})
	}
}
