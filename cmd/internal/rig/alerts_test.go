package rig

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fleetSeries scrapes an instance's /metrics and returns its fleet series
// (farego_device_* and farego_downlink_version) as Prometheus stores them
// from a job named farego-settlement: each with its job and instance labels.
func fleetSeries(ctx context.Context, httpAddr, instance string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	labels := fmt.Sprintf(`job="farego-settlement",instance=%q`, instance)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "farego_device_") && !strings.HasPrefix(line, "farego_downlink_version") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("a /metrics line without a value: %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", line, err)
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j+1] + labels + "," + name[j+1:]
		} else {
			name += "{" + labels + "}"
		}
		out[name] = v
	}
	return out, sc.Err()
}

// promtoolCase writes one promtool unit test of the shipped rules: the
// series held for 30 minutes, what each alert should give at minute 20,
// and the value each query (of the dashboard) should give then, one
// sample without labels.
func promtoolCase(series map[string]float64, alerts map[string]string, exprs map[string]float64) string {
	var b strings.Builder
	b.WriteString("  - interval: 1m\n    input_series:\n")
	for s, v := range series {
		fmt.Fprintf(&b, "      - series: '%s'\n        values: '%sx30'\n", s, strconv.FormatFloat(v, 'f', -1, 64))
	}
	b.WriteString("    alert_rule_test:\n")
	for name, exp := range alerts {
		fmt.Fprintf(&b, "      - eval_time: 20m\n        alertname: %s\n        exp_alerts: %s\n", name, exp)
	}
	if len(exprs) > 0 {
		b.WriteString("    promql_expr_test:\n")
		for e, v := range exprs {
			q, _ := json.Marshal(e) // a JSON string is a YAML string
			fmt.Fprintf(&b, "      - expr: %s\n        eval_time: 20m\n        exp_samples:\n          - labels: '{}'\n            value: %s\n",
				q, strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	return b.String()
}

// dashboardQueries returns the queries of the shipped Grafana dashboard's
// panel title, in order.
func dashboardQueries(t *testing.T, title string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "server", "console", "monitoring", "dashboard.json"))
	must(t, err)
	type panel struct {
		Title   string  `json:"title"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	var dash struct {
		Panels []panel `json:"panels"`
	}
	must(t, json.Unmarshal(b, &dash))
	var out []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Title == title {
				for _, tg := range p.Targets {
					out = append(out, tg.Expr)
				}
			}
		}
	}
	walk(dash.Panels)
	if len(out) == 0 {
		t.Fatalf("the dashboard has no panel %q", title)
	}
	return out
}

// Two settlement instances on one ledger (an external broker, a real
// validator online with the current deny list), scraped as Prometheus
// scrapes them, each series with its instance label, and the shipped
// alerting rules run over those figures by promtool: nothing fires for a
// fleet that is fine, and a deny list the device has not applied (the
// current version one ahead of the device's) fires once for it. The rules
// compared every instance's device figure with every instance's current
// version: many-to-many, an error at each evaluation, and
// FaregoDenyListNotDelivered never fired beside a second instance; the
// fleet's other alerts fired once for each instance. The dashboard's fleet
// panels, over the same figures, count the validator once (they counted
// it once for each instance, and the deny-list panel failed as the rule).
func TestFleetAlertsOverSeveralInstances(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("FAREGO_CI") != "" {
			t.Fatalf("promtool (Debian's package prometheus): %v", err)
		}
		t.Skipf("promtool not installed: %v", err)
	}
	ctx, cancel := newCtx(t)
	defer cancel()
	r := New(t.TempDir(), binDir, nil)
	r.ExternalBroker = true
	t.Cleanup(r.Close)
	must(t, r.Init(ctx, testFares))
	must(t, r.StartBroker(ctx))
	must(t, r.StartServer(ctx))
	b, err := r.Instance(ctx, "server-b")
	must(t, err)
	defer b.Stop(false)
	const dev = "bus-9-front"
	startDevice(t, ctx, r, dev)
	instances := map[string]string{"a": r.HTTP, "b": b.HTTP}
	up := fmt.Sprintf(`farego_device_up{job="farego-settlement",instance=%%q,device=%q}`, dev)
	denied := fmt.Sprintf(`farego_device_downlink_version{job="farego-settlement",instance=%%q,device=%q,kind="denylist"}`, dev)
	const current = `farego_downlink_version{job="farego-settlement",instance=%q,kind="denylist"}`
	series := map[string]float64{}
	err = WaitFor(ctx, 60*time.Second, "both instances see the validator online with the current deny list", func() bool {
		clear(series)
		for name, addr := range instances {
			s, err := fleetSeries(ctx, addr, name)
			if err != nil {
				t.Log(err)
				return false
			}
			if s[fmt.Sprintf(up, name)] != 1 || s[fmt.Sprintf(denied, name)] != s[fmt.Sprintf(current, name)] {
				return false
			}
			for k, v := range s {
				series[k] = v
			}
		}
		return true
	})
	must(t, err)
	// The dashboard's fleet figures: one validator online of one (not one
	// for each instance), none behind the deny list.
	online := dashboardQueries(t, "Devices online")
	deny := dashboardQueries(t, "Deny list delivery")
	if len(online) != 2 || len(deny) != 2 {
		t.Fatalf("the dashboard's fleet panels changed: %q, %q", online, deny)
	}
	fine := promtoolCase(series, map[string]string{
		"FaregoDenyListNotDelivered": "[]", "FaregoDeviceOffline": "[]", "FaregoDeviceQueueOld": "[]",
		"FaregoClockDrift": "[]", "FaregoDeviceOutOfService": "[]", "FaregoDeviceUpdateFailed": "[]",
	}, map[string]float64{online[0]: 1, online[1]: 1, deny[1]: 0})
	// A deny list published since that the validator has not applied: the
	// current version one ahead on both instances.
	behind := map[string]float64{}
	for k, v := range series {
		behind[k] = v
	}
	for name := range instances {
		behind[fmt.Sprintf(current, name)]++
	}
	late := promtoolCase(behind, map[string]string{"FaregoDenyListNotDelivered": fmt.Sprintf(
		"\n          - exp_labels: {severity: critical, job: farego-settlement, device: %s, kind: denylist}\n"+
			"            exp_annotations:\n"+
			"              summary: \"Validator %s is online but has not applied the current deny list for 10 minutes\"\n"+
			"              description: \"It still accepts codes of denied accounts and credentials. Check its log for refused downlinks (signature, version) and its broker subscription.\"",
		dev, dev)}, map[string]float64{deny[1]: 1})
	rules, err := filepath.Abs(filepath.Join("..", "..", "..", "server", "console", "monitoring", "alerts.yml"))
	must(t, err)
	file := filepath.Join(t.TempDir(), "scraped_test.yml")
	must(t, os.WriteFile(file, []byte("rule_files:\n  - "+rules+"\nevaluation_interval: 1m\ntests:\n"+fine+late), 0o644))
	out, err := exec.CommandContext(ctx, promtool, "test", "rules", file).CombinedOutput()
	if err != nil {
		b, _ := os.ReadFile(file)
		t.Fatalf("promtool test rules over the scraped figures: %v\n%s\n%s", err, out, b)
	}
}
