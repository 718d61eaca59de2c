package server_test

import (
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/servertest"
	"github.com/farego/farego/sync/brokertest"
)

// A request header over 32 KiB is refused (431) by the real server: with
// net/http's default of 1 MiB, 250 slow clients sending 1 MiB headers
// grew the server by 233 MiB.
func TestHTTPHeaderLimit(t *testing.T) {
	a := servertest.Start(t)
	for _, tc := range []struct {
		size int
		want int
	}{{8 << 10, http.StatusOK}, {100 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
		req, _ := http.NewRequest("GET", "http://"+a.HTTP+"/v1/keyring", nil)
		req.Header.Set("X-Pad", strings.Repeat("a", tc.size))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%d-byte header: %v", tc.size, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%d-byte header: status %d, want %d", tc.size, resp.StatusCode, tc.want)
		}
	}
}

// TestIndexPage: a person opening the server's address finds the wallet
// and the console (it was a JSON 404); other unknown paths stay the API's
// JSON 404.
func TestIndexPage(t *testing.T) {
	a := servertest.Start(t)
	resp, err := http.Get("http://" + a.HTTP + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(body), `href="/wallet/"`) || !strings.Contains(string(body), `href="/console/"`) {
		t.Errorf("GET /: %d %s\n%s\nwant a page linking the wallet and the console", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for _, p := range []string{"/wallet/", "/console/"} {
		resp, err := http.Get("http://" + a.HTTP + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s (linked from /): %d", p, resp.StatusCode)
		}
	}
	resp, err = http.Get("http://" + a.HTTP + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
		t.Errorf("GET /nope: %d %s, want the API's JSON 404", resp.StatusCode, body)
	}
}

// With --metrics the fleet's inventory and figures are served on that
// address alone: the HTTP address (the one riders' wallets and shops
// reach) answers /metrics 404 (an attack review read every device's id,
// state and software from it, anonymously). Without it, /metrics is on the
// HTTP address as before.
func TestMetricsOnTheirOwnAddress(t *testing.T) {
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	var log brokertest.SyncBuffer
	a := servertest.RunConfig(t, server.Config{DataDir: dir, MetricsListen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if a.Metrics == "" || a.Metrics == a.HTTP {
		t.Fatalf("metrics address %q (HTTP %q)", a.Metrics, a.HTTP)
	}
	if st, body := get("http://" + a.HTTP + "/metrics"); st != http.StatusNotFound || strings.Contains(body, "farego_") {
		t.Errorf("the HTTP address answered /metrics %d: %.200s", st, body)
	}
	if st, body := get("http://" + a.Metrics + "/metrics"); st != http.StatusOK || !strings.Contains(body, "\nfarego_ledger_taps 0\n") {
		t.Errorf("the metrics address answered %d: %.200s", st, body)
	}
	if st, _ := get("http://" + a.Metrics + "/v1/keyring"); st != http.StatusNotFound {
		t.Errorf("the metrics address serves the API (%d)", st)
	}
	// Ready once the ingest and the downlink publisher are connected to
	// the broker: a moment after the start, longer on a busy machine (a
	// CI run saw 503 at once).
	st := 0
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if st, _ = get("http://" + a.HTTP + "/healthz"); st == http.StatusOK {
			break
		}
	}
	if st != http.StatusOK {
		t.Errorf("healthz on the HTTP address: %d", st)
	}
	if st, body := get("http://" + a.HTTP + "/"); st != http.StatusOK || strings.Contains(body, "/metrics") || !strings.Contains(body, `href="/healthz"`) {
		t.Errorf("the index page (%d) links a /metrics the address does not serve: %s", st, body)
	}
	// Everything on loopback: nothing to warn of (warnExposed).
	if l := log.String(); strings.Contains(l, "level=WARN") && strings.Contains(l, "beyond this machine") {
		t.Errorf("a server on loopback warned of listening beyond it:\n%s", l)
	}
	b := servertest.Start(t)
	if st, body := get("http://" + b.HTTP + "/metrics"); st != http.StatusOK || !strings.Contains(body, "farego_ledger_taps") {
		t.Errorf("without --metrics, /metrics on the HTTP address answered %d", st)
	}
	if st, body := get("http://" + b.HTTP + "/"); st != http.StatusOK || !strings.Contains(body, `<a href="/metrics">`) {
		t.Errorf("without --metrics, the index page (%d) does not link /metrics: %s", st, body)
	}
}
