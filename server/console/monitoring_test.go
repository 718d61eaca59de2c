package console_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/servertest"
	"github.com/farego/farego/sync/brokertest"
)

var metricRE = regexp.MustCompile(`\bfarego_[a-z0-9_]*[a-z0-9]\b`)

// serverMetrics starts a real settlement server (embedded broker with a
// TLS listener, SQLite) and returns the metric families its /metrics
// exposes.
func serverMetrics(t *testing.T) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	p := brokertest.NewPKI(t, "")
	a := servertest.RunConfig(t, server.Config{DataDir: dir, MQTTTLSListen: "127.0.0.1:0",
		TLSCertFile: p.ServerCertFile, TLSKeyFile: p.ServerKeyFile})
	resp, err := http.Get("http://" + a.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f[2]+s] = true
				}
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("the server exposes only %v", names)
	}
	return names
}

// validatorMetrics returns the metric families the validator registers
// (the agent's and the validator command's), read from their sources.
func validatorMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := regexp.MustCompile(`\.(Counter|GaugeFunc|Histogram|GaugeVecFunc)\("(farego_[a-z0-9_]+)"`)
	names := map[string]bool{}
	for _, dir := range []string{"../../agent", "../../cmd/farego-validator"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range reg.FindAllSubmatch(b, -1) {
				n := string(m[2])
				names[n] = true
				if string(m[1]) == "Histogram" {
					for _, s := range []string{"_bucket", "_sum", "_count"} {
						names[n+s] = true
					}
				}
			}
		}
	}
	for _, want := range []string{"farego_taps_total", "farego_queue_depth"} {
		if !names[want] {
			t.Fatalf("the validator's sources do not register %s (found %v)", want, names)
		}
	}
	return names
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// The Grafana dashboard parses, every panel queries something, and every
// metric its queries and the alerting rules name is one the settlement
// server or the validator exposes.
func TestMonitoringReferencesRealMetrics(t *testing.T) {
	known := serverMetrics(t)
	for n := range validatorMetrics(t) {
		known[n] = true
	}
	b, err := os.ReadFile("monitoring/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string  `json:"title"`
		UID    string  `json:"uid"`
		Panels []panel `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatal("dashboard.json: trailing data")
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard: %q %q, %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	var exprs []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q queries nothing", p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	walk(dash.Panels)

	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	y, err := os.ReadFile("monitoring/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(y, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			exprs = append(exprs, r.Expr)
		}
	}
	for _, want := range []string{"FaregoDeviceOffline", "FaregoDeviceQueueOld", "FaregoIngestLagHigh", "FaregoClockDrift",
		"FaregoFlaggedTapSpike", "FaregoDenyListNotDelivered", "FaregoDeviceCertEnding", "FaregoDeviceCertEnded",
		"FaregoBrokerCertEnding", "FaregoBrokerCertEnded"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yml has no %s", want)
		}
	}
	used := map[string]bool{}
	for _, e := range exprs {
		if strings.TrimSpace(e) == "" {
			t.Error("an empty query")
		}
		for _, m := range metricRE.FindAllString(e, -1) {
			used[m] = true
			if !known[m] {
				t.Errorf("%s is not a metric farego exposes (in %q)", m, e)
			}
		}
	}
	if len(used) < 20 {
		t.Errorf("the dashboard and rules use only %d metrics", len(used))
	}
}
