package rig

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/powercut"
)

// TestSettlementDiskFull: the settlement server's SQLite ledger sits on a
// disk that fills up while validators send taps over MQTT. Batches are not
// acked (every tap a validator holds as acked is in the ledger), /healthz
// says something is wrong (it said "ok": the ledger answered its ping and
// the ingest was connected while no batch was committed), the log does
// not flood, and when space is freed the server takes every tap by itself,
// each once, health is ok again and verify is clean.
func TestSettlementDiskFull(t *testing.T) {
	disk := powercut.Mount(t, &powercut.Options{Seed: 9})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := serverRig(t, ctx, disk.Path("srv", "farego"))
	riders := newRiders(t, ctx, r, 4, 10_000_000)
	d := tappingDevice(t, ctx, r, "srvfull-0")
	c := newCutChecker(t, r, riders, "")
	rides := func() int {
		n := 0
		for _, ids := range c.ledger(ctx) {
			n += len(ids)
		}
		return n
	}
	healthz := func() (int, string) {
		resp, err := http.Get("http://" + r.HTTP + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	green := 0
	scan := func() {
		code := riders[green%len(riders)].Code(time.Now())
		line, err := d.Scan(ctx, code)
		must(t, err)
		if !strings.Contains(line, "ACCEPTED") {
			t.Fatalf("tap refused: %q", line)
		}
		green++
	}
	for range 5 {
		scan()
	}
	must(t, WaitFor(ctx, 30*time.Second, "the first taps in the ledger", func() bool { return rides() == green }))
	if st, body := healthz(); st != http.StatusOK {
		t.Fatalf("healthz before the disk filled: %d %s", st, body)
	}

	must(t, disk.Full(true))
	// Taps go on; the ledger's files must grow sooner or later.
	var st int
	var body string
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		scan()
		time.Sleep(20 * time.Millisecond)
		if green%10 == 0 {
			if st, body = healthz(); st != http.StatusOK {
				break
			}
		}
	}
	if st == http.StatusOK {
		t.Fatalf("healthz after %d taps on a full disk: %d %s; want 503 saying commits fail", green, st, body)
	}
	if !strings.Contains(body, `"commits"`) {
		t.Errorf("healthz on a full disk: %s; want the commits check failing", body)
	}
	t.Logf("healthz on a full disk after %d taps: %d %s", green, st, body)
	for range 20 { // more batches that fail, for the log and the acks
		scan()
	}
	time.Sleep(3 * time.Second)
	checkAcked := func(when string) int {
		v := inspectCopy(t, d.QueueFile())
		inLedger := map[string]bool{}
		for _, ids := range c.ledger(ctx) {
			for _, id := range ids {
				inLedger[id] = true
			}
		}
		acked := 0
		for seq, rec := range v.Records {
			if rec.Archived {
				acked++
				if id := record.TapID(d.ID, v.Epoch, seq); !inLedger[id] {
					t.Errorf("%s: %s acked but not in the ledger", when, id)
				}
			}
		}
		return acked
	}
	// A rider's top-up on the full disk: a 503 to try again later (it was
	// a 500 "internal error"), nothing written.
	if err := r.API(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/topups", riders[0].ID),
		map[string]any{"amount": 100, "reference": "on-a-full-disk"}, nil); err == nil || !strings.HasPrefix(err.Error(), "unavailable") {
		t.Errorf("top-up on a full disk: %v; want unavailable (503)", err)
	}
	full := rides()
	ackedFull := checkAcked("disk full")
	t.Logf("disk full: %d green taps, %d in the ledger, %d acked", green, full, ackedFull)
	if full >= green {
		t.Fatalf("all %d taps in the ledger on a full disk: the test did not fill it", green)
	}

	must(t, disk.Full(false))
	if err := WaitFor(ctx, 90*time.Second, "every tap in the ledger after space was freed", func() bool { return rides() == green }); err != nil {
		t.Fatalf("%v: %d of %d", err, rides(), green)
	}
	must(t, WaitFor(ctx, 30*time.Second, "healthz ok again", func() bool { st, _ := healthz(); return st == http.StatusOK }))
	for code, ids := range c.ledger(ctx) {
		if len(ids) != 1 {
			t.Errorf("code %s charged %d times", code, len(ids))
		}
	}
	checkAcked("after space was freed")
	if out, err := r.Verify(ctx); err != nil {
		t.Errorf("verify after the disk was full: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(r.Dir, "server.log"))
	must(t, err)
	lines, commitLines := strings.Count(string(b), "\n"), strings.Count(string(b), "commit failed")
	t.Logf("server.log: %d lines, %d saying a commit failed", lines, commitLines)
	if commitLines > 20 {
		t.Errorf("server.log says a commit failed %d times: a flood", commitLines)
	}
}

// TestSettlementLedgerRemoved: an operator removes the SQLite ledger (or
// its directory) while the server runs. SQLite goes on writing to the
// unlinked file: every commit succeeded, batches were acked and /healthz
// said "ok", and everything was gone when the server stopped — including
// the acked taps, which the validators no longer send. Now batches are not
// acked once the file is gone, and /healthz says the ledger is unavailable.
func TestSettlementLedgerRemoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := serverRig(t, ctx, "")
	riders := newRiders(t, ctx, r, 2, 10_000_000)
	d := tappingDevice(t, ctx, r, "srvrm-0")
	acked := func() int {
		n := 0
		for _, rec := range inspectCopy(t, d.QueueFile()).Records {
			if rec.Archived {
				n++
			}
		}
		return n
	}
	for i := range 3 {
		_, err := d.Scan(ctx, riders[i%2].Code(time.Now()))
		must(t, err)
	}
	must(t, WaitFor(ctx, 30*time.Second, "the first taps acked", func() bool { return acked() == 3 }))
	for _, f := range []string{"ledger.db", "ledger.db-wal", "ledger.db-shm"} {
		must(t, os.Remove(filepath.Join(r.DataDir(), f)))
	}
	for i := range 5 {
		_, err := d.Scan(ctx, riders[i%2].Code(time.Now()))
		must(t, err)
	}
	time.Sleep(5 * time.Second)
	if n := acked(); n != 3 {
		t.Errorf("%d taps acked after the ledger file was removed; want the 3 from before (the others went to the unlinked file)", n-3)
	}
	resp, err := http.Get("http://" + r.HTTP + "/healthz")
	must(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("healthz with the ledger file removed: %d %s; want 503", resp.StatusCode, b)
	}
}

// serverRig starts a rig's server (its data in data, or the rig's
// directory for ""), closed when the test ends, its log's tail shown if
// the test failed.
func serverRig(t *testing.T, ctx context.Context, data string) *Rig {
	t.Helper()
	r := New(t.TempDir(), binDir, nil)
	if data != "" {
		r.ServerData = data
	}
	t.Cleanup(func() {
		r.Close()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(r.Dir, "server.log")); err == nil {
				t.Logf("server.log (tail):\n%s", tail(string(b), 40))
			}
		}
	})
	must(t, r.Init(ctx, chaosFares))
	must(t, r.StartServer(ctx))
	return r
}

// tappingDevice provisions and starts validator id on route 42, taking a
// rider's codes as fast as they come (no passback window, no risk cap),
// closed when the test ends.
func tappingDevice(t *testing.T, ctx context.Context, r *Rig, id string) *Device {
	t.Helper()
	d, err := r.Provision(ctx, id, "42")
	must(t, err)
	must(t, d.SetPolicy("passback_window", `"-1s"`))
	must(t, d.SetPolicy("risk_cap", "-1"))
	t.Cleanup(func() { d.Close() })
	must(t, d.Start(ctx))
	return d
}
