package server_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/servertest"
	"github.com/farego/farego/sync/brokertest"
)

// With an external broker, /metrics says whether this instance's ingest
// and downlink publisher are connected to it. Without it, a Prometheus
// scraping only /metrics (run --metrics, the README's advice) saw a
// broker outage only as every validator going offline
// (farego_device_up 0, 300 FaregoDeviceOffline alerts), not as this
// instance's own link to the broker down (a live run: three instances,
// 300 validators, Mosquitto stopped for 40 s).
func TestMetricsSayBrokerLink(t *testing.T) {
	b := brokertest.Start(t, nil)
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	a := servertest.RunConfig(t, server.Config{DataDir: dir, BrokerURL: b.URL()})
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + a.HTTP + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	healthz := func(want int) {
		t.Helper()
		brokertest.WaitFor(t, 60*time.Second, "/healthz to answer "+http.StatusText(want), func() bool {
			st, _ := get("/healthz")
			return st == want
		})
	}
	metrics := func(want string) {
		t.Helper()
		_, body := get("/metrics")
		for _, m := range []string{"farego_ingest_connected", "farego_publisher_connected"} {
			if !strings.Contains(body, "\n"+m+" "+want+"\n") {
				t.Errorf("/metrics has no %s %s", m, want)
			}
		}
	}
	// The console says it on every page too: its fleet figures alone
	// showed every validator offline.
	tok, err := os.ReadFile(filepath.Join(dir, "keys", "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	op := &http.Client{Jar: jar}
	req, _ := http.NewRequest("POST", "http://"+a.HTTP+"/console/signin", strings.NewReader(url.Values{"token": {strings.TrimSpace(string(tok))}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://"+a.HTTP)
	resp, err := op.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	banner := func(want bool) {
		t.Helper()
		for _, page := range []string{"/console/", "/console/fleet"} {
			resp, err := op.Get("http://" + a.HTTP + page)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d", page, resp.StatusCode)
			}
			if got := strings.Contains(string(body), `id="cutoff"`); got != want {
				t.Errorf("%s: the cut-off banner shown %v, want %v", page, got, want)
			}
		}
	}
	healthz(http.StatusOK) // ingest and publisher connected
	metrics("1")
	banner(false)
	b.Stop()
	brokertest.WaitFor(t, 60*time.Second, "/healthz to say both links are down", func() bool {
		_, body := get("/healthz")
		return strings.Count(body, "unavailable") == 2
	})
	metrics("0")
	banner(true)
	b.Restart()
	healthz(http.StatusOK)
	metrics("1")
	banner(false)
}
