package server_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/server/servertest"
	"github.com/farego/farego/sync/brokertest"
)

// With its ledger out of reach, /healthz answered 503 but /metrics said
// nothing a shipped alert read: on PostgreSQL every farego_ledger_* figure
// went -1, on SQLite (the ledger file removed under the server) they kept
// their last values. A Prometheus scraping the server (the README's
// monitoring) fired nothing while every API write answered 503 and every
// bus kept its taps unacked (an operator's drill: the database refused
// connections, no alert pending after minutes). /metrics says what
// /healthz says, farego_health{check}, which FaregoLedgerFailing reads;
// and the end of the newest issuer key's window, which
// FaregoIssuerKeyEnding reads.
func TestMetricsSayLedgerHealth(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		db := filepath.Join(dir, "ledger.db")
		testMetricsSayLedgerHealth(t, dir, "sqlite:"+db, func() {
			if err := os.Rename(db, db+".moved"); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := ledgertest.PostgresSchema(t)
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		relay := ledgertest.NewRelay(t, u.Host)
		u.Host = relay.Addr()
		testMetricsSayLedgerHealth(t, t.TempDir(), u.String(), relay.Cut)
	})
}

func testMetricsSayLedgerHealth(t *testing.T, dir, dsn string, cut func()) {
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var end time.Time
	for _, k := range kd.Keyring().Keys() {
		if k.NotAfter.After(end) {
			end = k.NotAfter
		}
	}
	a := servertest.RunConfig(t, server.Config{DataDir: dir, DB: dsn, MetricsListen: "127.0.0.1:0"})
	scrape := func() string {
		resp, err := http.Get("http://" + a.Metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	has := func(body, line string) bool { return strings.Contains(body, "\n"+line+"\n") }
	brokertest.WaitFor(t, 60*time.Second, "/metrics to say every part healthy", func() bool {
		b := scrape()
		return has(b, `farego_health{check="ledger"} 1`) && has(b, `farego_health{check="commits"} 1`) &&
			has(b, `farego_health{check="ingest"} 1`) && has(b, `farego_health{check="publisher"} 1`)
	})
	if b, want := scrape(), "farego_issuer_key_end_timestamp_seconds "+strconv.FormatFloat(float64(end.Unix()), 'g', -1, 64); !has(b, want) {
		t.Errorf("/metrics has no %q", want)
	}
	cut()
	brokertest.WaitFor(t, 60*time.Second, "/metrics to say the ledger is unreachable", func() bool {
		return has(scrape(), `farego_health{check="ledger"} 0`)
	})
	if b := scrape(); !has(b, `farego_health{check="ingest"} 1`) {
		t.Errorf("the broker links said down with only the ledger cut:\n%s", b)
	}
}

// /metrics shows the newest fare table's zone and the fingerprint of its
// rules as this instance's time zone database has them, which
// FaregoZoneRulesDiffer compares across instances (two instances reading
// other versions of the database put some rides on other service days;
// agent/fare's TestZoneRulesFollowTheTimeZoneDatabase).
func TestMetricsSayZoneRules(t *testing.T) {
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	tbl, err := fare.Load("../testdata/fare/table.json")
	if err != nil {
		t.Fatal(err)
	}
	dsn := "sqlite:" + filepath.Join(dir, "ledger.db")
	l, err := ledger.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = l.PutFareTable(context.Background(), tbl)
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	a := servertest.RunConfig(t, server.Config{DataDir: dir, DB: dsn, MetricsListen: "127.0.0.1:0"})
	resp, err := http.Get("http://" + a.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	want := `farego_fare_zone_rules_info{zone="Europe/Berlin",rules="` + tbl.ZoneRules(time.Now()) + `"} 1`
	if !strings.Contains(string(body), "\n"+want+"\n") {
		t.Errorf("/metrics has no %s:\n%s", want, body)
	}
}
