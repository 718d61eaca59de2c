package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/cmd/internal/fleet"
	"github.com/farego/farego/server/keys"
)

// reportLine returns the numbers of the report line that starts with name.
func reportLine(t *testing.T, out, name string) []int64 {
	t.Helper()
	// The results only: a progress line of the catch-up phase starts
	// with "  catch-up" too ("  catch-up     9s  taps …").
	_, results, ok := strings.Cut(out, "\nresults (")
	if !ok {
		t.Fatalf("no results in the output:\n%s", out)
	}
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + ` +(.*)$`).FindStringSubmatch(results)
	if m == nil {
		t.Fatalf("report lacks %q:\n%s", name, out)
	}
	var ns []int64
	for _, s := range regexp.MustCompile(`\d+`).FindAllString(m[1], -1) {
		n, _ := strconv.ParseInt(s, 10, 64)
		ns = append(ns, n)
	}
	return ns
}

// checkReport checks a successful run's report: every accepted tap is in
// the ledger once, what settled while riders tapped and what caught up
// afterwards add up to it, nothing is left queued, and progress came as
// lines (the output is not a terminal).
func checkReport(t *testing.T, out string) {
	t.Helper()
	if strings.Contains(out, "\r") {
		t.Errorf("progress rewrote a line on output that is not a terminal:\n%q", out)
	}
	taps := reportLine(t, out, "taps") // tapped, accepted, refused, …
	ledger := reportLine(t, out, "ledger")
	during := reportLine(t, out, "while tapping")
	catchUp := reportLine(t, out, "catch-up")
	accepted := taps[1]
	if accepted == 0 || taps[2] != 0 {
		t.Errorf("taps line %v: want some accepted, none refused", taps)
	}
	// "N of M accepted taps, 0 lost, 0 doubled, 0 unexpected; 0 balances wrong"
	if ledger[0] != accepted || ledger[1] != accepted || ledger[2] != 0 || ledger[3] != 0 || ledger[4] != 0 || ledger[5] != 0 {
		t.Errorf("ledger line %v, want all %d accepted taps once and nothing else", ledger, accepted)
	}
	if during[0]+catchUp[0] != accepted {
		t.Errorf("settled while tapping (%d) + backlog at the end (%d) = %d, want the %d accepted", during[0], catchUp[0], during[0]+catchUp[0], accepted)
	}
	if q := reportLine(t, out, "left in queues"); q[0] != 0 {
		t.Errorf("%d taps left in queues", q[0])
	}
}

// A small fleet with outages against the in-process server.
func TestSimulatorSmallFleet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, []string{"--validators", "5", "--riders", "20", "--rate", "5", "--duration", "4s",
		"--outage-every", "2s", "--outage-for", "1s", "--drain", "90s", "--progress", "1s", "--dir", t.TempDir()}, &out, &errb)
	if err != nil {
		t.Fatalf("farego-sim: %v\n%s%s", err, out.String(), errb.String())
	}
	checkReport(t, out.String())
	if !strings.Contains(out.String(), "\n  tapping ") {
		t.Errorf("no progress line while tapping:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "ledger sqlite") {
		t.Errorf("report does not name the in-process ledger:\n%s", out.String())
	}
}

// The simulator drives a running server it did not start: validators log
// in with the passwords their registration returned, the settled taps come
// from the server's /metrics, and --on-registered runs before they connect.
func TestSimulatorExternalServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	p, err := fleet.StartServer(ctx, filepath.Join(dir, "server"), "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(p.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "server", "keys", keys.FleetPubFile)
	marker := filepath.Join(dir, "registered")
	var out, errb bytes.Buffer
	err = run(ctx, []string{"--server", p.API, "--broker", p.Broker, "--token", "@" + tok, "--fleet-pub", pub,
		// More riders than the server's limit on anonymous sign-ups lets
		// through (bursts of 10): the simulator signs them up with the
		// operator's token.
		"--validators", "4", "--riders", "30", "--rate", "4", "--duration", "3s", "--outage-every", "0",
		"--on-registered", "echo registered > " + marker, "--dir", filepath.Join(dir, "sim")}, &out, &errb)
	if err != nil {
		t.Fatalf("farego-sim: %v\n%s%s", err, out.String(), errb.String())
	}
	checkReport(t, out.String())
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("--on-registered did not run: %v", err)
	}
	n, err := p.Count(ctx)
	if err != nil || n != reportLine(t, out.String(), "taps")[1] {
		t.Errorf("the ledger holds %d taps (%v); the report says %d accepted", n, err, reportLine(t, out.String(), "taps")[1])
	}

	// A second simulator on the same server, with ids of its own: the
	// first one's devices are not registered again (both ran as sim-0000…,
	// each taking the other's identities).
	out.Reset()
	errb.Reset()
	err = run(ctx, []string{"--server", p.API, "--broker", p.Broker, "--token", "@" + tok, "--fleet-pub", pub, "--id-prefix", "depot2",
		"--validators", "2", "--riders", "5", "--rate", "4", "--duration", "2s", "--outage-every", "0",
		"--on-registered", "true", "--dir", filepath.Join(dir, "sim2")}, &out, &errb)
	if err != nil {
		t.Fatalf("second farego-sim: %v\n%s%s", err, out.String(), errb.String())
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.API+"/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+p.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var devs struct {
		Devices []struct {
			ID string `json:"id"`
		} `json:"devices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&devs); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range devs.Devices {
		ids = append(ids, d.ID)
	}
	slices.Sort(ids)
	if want := []string{"depot2-0000", "depot2-0001", "sim-0000", "sim-0001", "sim-0002", "sim-0003"}; !slices.Equal(ids, want) {
		t.Errorf("devices %v, want %v", ids, want)
	}
}

// TestSimulatorMetricsApart: a server run with --metrics ADDR, as the
// README advises when riders reach --http, answers /metrics on --http
// 404. farego-sim against it had no way to read the settled taps: it
// registered its riders and validators in the ledger and then stopped with
// "taps in the ledger: … /metrics: 404 Not Found". --metrics names the
// address; without it the run stops before it makes anything, saying so.
func TestSimulatorMetricsApart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	p, err := fleet.StartServer(ctx, filepath.Join(dir, "server"), "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	target, err := url.Parse(p.API)
	if err != nil {
		t.Fatal(err)
	}
	// --http of a server whose /metrics is on an address of its own.
	proxy := httputil.NewSingleHostReverseProxy(target)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			http.NotFound(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer api.Close()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(p.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "server", "keys", keys.FleetPubFile)
	args := []string{"--server", api.URL, "--broker", p.Broker, "--token", "@" + tok, "--fleet-pub", pub,
		"--validators", "2", "--riders", "4", "--rate", "2", "--duration", "2s", "--outage-every", "0"}

	var out, errb bytes.Buffer
	err = run(ctx, append(args, "--dir", filepath.Join(dir, "sim1")), &out, &errb)
	if !errors.Is(err, fleet.ErrNoMetrics) || !strings.Contains(err.Error(), "--metrics http://ADDR") {
		t.Errorf("farego-sim without --metrics: %v; want an error naming --metrics\n%s", err, out.String())
	}
	var devices struct{ Devices []json.RawMessage }
	if err := cli.CallJSON(ctx, "GET", p.API+"/v1/devices", p.Token, nil, &devices); err != nil {
		t.Fatal(err)
	}
	if len(devices.Devices) != 0 {
		t.Errorf("the refused run registered %d validators in the ledger; want none", len(devices.Devices))
	}

	out.Reset()
	errb.Reset()
	err = run(ctx, append(args, "--metrics", p.API, "--dir", filepath.Join(dir, "sim2")), &out, &errb)
	if err != nil {
		t.Fatalf("farego-sim --metrics: %v\n%s%s", err, out.String(), errb.String())
	}
	checkReport(t, out.String())
}

func TestSimulatorRefusesBadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"--validators", "0"}, "--validators"},
		{[]string{"--rate", "-1"}, "--rate"},
		{[]string{"--outage-every", "5s", "--outage-for", "5s"}, "--outage-for"},
		{[]string{"--server", "http://127.0.0.1:1"}, "--broker"},
		{[]string{"--server", "http://127.0.0.1:1", "--broker", "tcp://x:1", "--token", "t", "--fleet-pub", "f", "--db", "sqlite:x"}, "--db"},
		{[]string{"--id-prefix", "a/b"}, "--id-prefix"},
		{[]string{"--id-prefix", "farego"}, "--id-prefix"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), c.args, &out, &errb)
		if err == nil || !strings.Contains(errb.String(), c.flag) {
			t.Errorf("%v: %v, stderr %q; want a usage error naming %s", c.args, err, errb.String(), c.flag)
		}
	}
}

// cancelOn is an output that cancels a run once what it has written
// matches.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	match  *regexp.Regexp
	cancel func()
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.buf.Write(p)
	if c.match.MatchString(c.buf.String()) {
		c.cancel()
	}
	return n, err
}

func (c *cancelOn) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// TestSimulatorInterrupted: Ctrl-C while riders tap ends the run with what
// it did so far and exit status 130. It ended with "taps in the ledger:
// ledger: begin read: context canceled" and status 1.
func TestSimulatorInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sigint, interrupt := context.WithCancel(ctx)
	defer interrupt()
	// Interrupted once a progress line shows taps.
	out := &cancelOn{match: regexp.MustCompile(`\n  tapping +\S+ +taps +[1-9]`), cancel: interrupt}
	var errb bytes.Buffer
	err := run(sigint, []string{"--validators", "3", "--riders", "10", "--rate", "5", "--duration", "90s",
		"--outage-every", "0", "--progress", "500ms", "--dir", t.TempDir()}, out, &errb)
	if !errors.Is(err, cli.ErrInterrupted) {
		t.Fatalf("farego-sim interrupted: %v, want ErrInterrupted\n%s%s", err, out.String(), errb.String())
	}
	if code := cli.Exit("farego-sim", err, io.Discard); code != 130 {
		t.Errorf("exit status %d, want 130", code)
	}
	if ctx.Err() != nil {
		t.Fatal("the run went on until the test's deadline")
	}
	m := regexp.MustCompile(`interrupted after \S+: (\d+) taps \((\d+) accepted, 0 refused\), (\d+) settled, (\d+) still queued`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no summary of the interrupted run:\n%s", out.String())
	}
	if m[1] == "0" || m[1] != m[2] {
		t.Errorf("summary %q: want some taps, all accepted", m[0])
	}
	if strings.Contains(out.String(), "results (") {
		t.Errorf("an interrupted run printed the full results:\n%s", out.String())
	}
}
