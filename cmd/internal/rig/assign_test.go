package rig

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
)

// routeFares serves routes 42 and X1.
const routeFares = `{"version": 1, "currency": "EUR", "timezone": "Europe/Berlin", "service_day_start": "04:00",
  "routes": ["42", "X1"],
  "fares": {"*": {"adult": 250, "child": 120, "senior": 120, "student": 180},
            "42": {"adult": 250, "child": 120, "senior": 120, "student": 180},
            "X1": {"adult": 400, "child": 200, "senior": 200, "student": 300}}}`

type ctlState struct {
	Route, Vehicle string
	Source         string `json:"assignment_source"`
	Version        uint64 `json:"assignment_server_version"`
	OutOfService   string `json:"out_of_service"`
}

func (d *Device) ctl(t *testing.T, args ...string) ctlState {
	t.Helper()
	out, err := exec.Command(d.rig.bin("farego-validator"), append([]string{"ctl", "--socket",
		filepath.Join(d.Dir, "ctl.sock")}, args...)...).Output()
	if err != nil {
		t.Fatalf("ctl %v: %v", args, err)
	}
	var st ctlState
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("ctl %v: %v", args, err)
	}
	return st
}

// The operator assigns a route through the API: the signed command goes
// through the real embedded broker to a real validator, which charges the
// new route's fare; a tap on another route than the one assigned (the
// onboard computer changed it) settles by its own route and is noted
// route_mismatch.
func TestAssignmentEndToEnd(t *testing.T) {
	ctx, cancel := newCtx(t)
	defer cancel()
	dir := t.TempDir()
	r := New(dir, binDir, testLog{t})
	t.Cleanup(func() {
		r.Close()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "server.log")); err == nil {
				t.Logf("server.log (tail):\n%s", tail(string(b), 60))
			}
		}
	})
	if err := r.Init(ctx, routeFares); err != nil {
		t.Fatal(err)
	}
	if err := r.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := r.Provision(ctx, "bus-5-front", "42")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.AppendConfig("[ctl]\nsocket = \"ctl.sock\""); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Close()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(d.Dir, "validator.log")); err == nil {
				t.Logf("validator.log (tail):\n%s", tail(string(b), 40))
			}
		}
	})

	// Refusals first: nothing recorded.
	var apiErr *cli.APIError
	for _, body := range []any{map[string]any{"route": ""}, map[string]any{"route": "X1", "extra": 1},
		map[string]any{"route": strings.Repeat("x", 65)}} {
		if err := r.API(ctx, "PUT", "/v1/devices/bus-5-front/assignment", body, nil); !errors.As(err, &apiErr) || apiErr.Status != 400 {
			t.Errorf("PUT %v: %v, want 400", body, err)
		}
	}
	if err := r.API(ctx, "PUT", "/v1/devices/bus-404/assignment", map[string]any{"route": "X1"}, nil); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Errorf("PUT for an unknown device: %v, want 404", err)
	}
	if err := cli.CallJSON(ctx, "PUT", "http://"+r.HTTP+"/v1/devices/bus-5-front/assignment", "", map[string]any{"route": "X1"}, nil); !errors.As(err, &apiErr) || apiErr.Status != 401 {
		t.Errorf("PUT without a token: %v, want 401", err)
	}

	var a struct {
		Version uint64 `json:"version"`
		Route   string `json:"route"`
	}
	if err := r.API(ctx, "PUT", "/v1/devices/bus-5-front/assignment", map[string]any{"route": "X1", "vehicle": "BUS-5"}, &a); err != nil || a.Version != 1 {
		t.Fatalf("PUT assignment: %+v, %v; want version 1", a, err)
	}
	if err := WaitFor(ctx, 60*time.Second, "the validator to take the assignment", func() bool {
		return d.ctl(t, "status").Source == "server"
	}); err != nil {
		t.Fatal(err)
	}
	if st := d.ctl(t, "status"); st.Route != "X1" || st.Vehicle != "BUS-5" || st.Version != 1 {
		t.Fatalf("validator status = %+v, want X1, BUS-5, version 1", st)
	}
	tap := func(name string) uint64 {
		t.Helper()
		rd, err := r.NewRider(ctx, name, "adult", 1000)
		if err != nil {
			t.Fatal(err)
		}
		code, err := rd.Code(ctx, filepath.Join(r.Dir, name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		if line, err := d.Scan(ctx, code); err != nil || !strings.Contains(line, "ACCEPTED") {
			t.Fatalf("scan: %q, %v", line, err)
		}
		return rd.ID
	}
	onX1 := tap("ada")
	d.ctl(t, "route", "42") // the onboard computer disagrees
	on42 := tap("bob")

	type ride struct {
		Route  string   `json:"route"`
		Charge int64    `json:"charge"`
		Notes  []string `json:"notes"`
	}
	rides := func(id uint64) []ride {
		var out struct {
			Rides []ride `json:"rides"`
		}
		if err := r.API(ctx, "GET", fmt.Sprintf("/v1/accounts/%d/rides", id), nil, &out); err != nil {
			t.Fatal(err)
		}
		return out.Rides
	}
	if err := WaitFor(ctx, 90*time.Second, "both rides to settle", func() bool {
		return len(rides(onX1)) == 1 && len(rides(on42)) == 1
	}); err != nil {
		t.Fatal(err)
	}
	if rs := rides(onX1); rs[0].Route != "X1" || rs[0].Charge != 400 || len(rs[0].Notes) != 0 {
		t.Errorf("ride on the assigned route = %+v, want X1, 400, no notes", rs[0])
	}
	if rs := rides(on42); rs[0].Route != "42" || rs[0].Charge != 250 || !slices.Contains(rs[0].Notes, "route_mismatch") {
		t.Errorf("ride on another route = %+v, want 42, 250, noted route_mismatch", rs[0])
	}
	var hist struct {
		Assignments []struct {
			Version uint64 `json:"version"`
			Route   string `json:"route"`
		} `json:"assignments"`
	}
	if err := r.API(ctx, "GET", "/v1/devices/bus-5-front/assignment", nil, &hist); err != nil || len(hist.Assignments) != 1 {
		t.Errorf("assignment history = %+v, %v; want one", hist, err)
	}
	var audit struct {
		Entries []struct {
			Action string `json:"action"`
			Target string `json:"target"`
		} `json:"entries"`
	}
	if err := r.API(ctx, "GET", "/v1/audit", nil, &audit); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit.Entries {
		found = found || (e.Action == "assign" && e.Target == "bus-5-front")
	}
	if !found {
		t.Errorf("no audit entry for the assignment in %+v", audit.Entries)
	}
	if out, err := r.Verify(ctx); err != nil {
		t.Errorf("ledger verify: %v\n%s", err, out)
	}
}
