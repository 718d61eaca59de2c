package agent

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
)

func TestAssignment(t *testing.T) {
	h := newHarness(t, nil)
	rider := func(acct uint64) string { return h.issuer.Rider(t, acct, t0).Code(t, h.clock.Now()) }
	faresFor := func(version int, routes ...string) []byte {
		doc := map[string]any{"version": version, "currency": "EUR", "routes": routes, "fares": map[string]any{
			"*": map[string]int64{"adult": 250, "child": 120, "senior": 120, "student": 180}, "99": map[string]int64{"adult": 500},
			"42": map[string]int64{"adult": 300}}}
		b, _ := json.Marshal(doc)
		return b
	}
	if as := h.a.Assignment(); as.Route != "42" || as.Vehicle != "bus-17" || as.Source != AssignConfig {
		t.Fatalf("assignment = %+v, want the config's", as)
	}
	if out := h.tap(rider(1)); !out.Accepted || out.Fare != 300 {
		t.Fatalf("tap on 42 = %+v, want 300", out)
	}
	// The harness's table lists no routes: the default serves every route.
	if err := h.a.AssignLocal("7", "bus-17"); err != nil || h.a.OutOfService() != "" {
		t.Fatalf("route 7 with a table listing no routes: %v, out of service %q", err, h.a.OutOfService())
	}
	if err := h.a.AssignLocal("42", "bus-17"); err != nil {
		t.Fatal(err)
	}
	if err := h.a.Apply(record.DocFares, 2, faresFor(2, "42")); err == nil {
		t.Fatal("a table whose routes do not list its fares' routes was applied")
	}
	if err := h.a.Apply(record.DocFares, 2, faresFor(2, "42", "99")); err != nil {
		t.Fatal(err)
	}
	if err := h.a.AssignLocal("99", "bus-17"); err != nil {
		t.Fatal(err)
	}

	// Out of service once the table no longer serves the route, nothing recorded.
	if err := h.a.Apply(record.DocFares, 3, faresForOnly42(t)); err != nil {
		t.Fatal(err)
	}
	if oos := h.a.OutOfService(); !strings.HasPrefix(oos, "route_not_in_fares: ") || !strings.Contains(oos, `"99"`) {
		t.Errorf("out of service = %q, want route_not_in_fares naming route 99", oos)
	}
	if out := h.tap(rider(2)); out.Accepted || out.Reason != record.ReasonRouteNotInFares || !record.OutOfService(out.Reason) {
		t.Errorf("tap on 99 = %+v, want out of service (route_not_in_fares)", out)
	}
	// A fare table that serves it puts the validator back in service.
	if err := h.a.Apply(record.DocFares, 4, faresFor(4, "42", "99")); err != nil {
		t.Fatal(err)
	}
	if oos := h.a.OutOfService(); oos != "" {
		t.Errorf("out of service = %q with route 99 in the fare table", oos)
	}
	h.clock.Add(10 * time.Second)
	if out := h.tap(rider(3)); !out.Accepted || out.Fare != 500 {
		t.Errorf("tap on 99 = %+v, want 500", out)
	}

	// From the server: versioned; a version seen before is stale.
	if err := h.a.AssignFromServer(3, "99", "BUS-3"); err != nil {
		t.Fatal(err)
	}
	if err := h.a.AssignFromServer(3, "42", "BUS-3"); !errors.Is(err, ErrStaleVersion) {
		t.Errorf("same version again: %v, want ErrStaleVersion", err)
	}
	if err := h.a.AssignFromServer(0, "42", ""); !errors.Is(err, ErrInvalidAssignment) {
		t.Errorf("version 0: %v, want ErrInvalidAssignment", err)
	}
	for _, bad := range [][2]string{{"", ""}, {"4\x002", ""}, {strings.Repeat("r", 65), ""}, {"42", " v"}, {"\xff", ""}} {
		if err := h.a.AssignLocal(bad[0], bad[1]); !errors.Is(err, ErrInvalidAssignment) {
			t.Errorf("AssignLocal(%q, %q) = %v, want ErrInvalidAssignment", bad[0], bad[1], err)
		}
	}
	if as := h.a.Assignment(); as.Route != "99" || as.Vehicle != "BUS-3" || as.Source != AssignServer || as.ServerVersion != 3 {
		t.Errorf("assignment = %+v after refusals, want 99, BUS-3 from the server (3)", as)
	}
	if err := h.a.AssignLocal("42", "BUS-3"); err != nil {
		t.Fatal(err)
	}

	// A restart keeps it (over the config's) and the server version.
	h.restart()
	if as := h.a.Assignment(); as.Route != "42" || as.Source != AssignLocal || as.ServerVersion != 3 {
		t.Errorf("assignment after restart = %+v, want 42, local, server version 3", as)
	}
	if err := h.a.AssignFromServer(3, "99", "BUS-3"); !errors.Is(err, ErrStaleVersion) {
		t.Errorf("version 3 after restart: %v, want ErrStaleVersion", err)
	}
	h.clock.Add(10 * time.Second)
	if out := h.tap(rider(4)); !out.Accepted || out.Fare != 300 {
		t.Errorf("tap = %+v, want 300 on 42", out)
	}
	recs := h.records()
	want := [][2]string{{"42", "bus-17"}, {"99", "bus-17"}, {"42", "BUS-3"}}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, w := range want {
		if recs[i].Route != w[0] || recs[i].Vehicle != w[1] {
			t.Errorf("record %d: %q %q, want %q %q", i, recs[i].Route, recs[i].Vehicle, w[0], w[1])
		}
	}
}

func faresForOnly42(tb testing.TB) []byte {
	b, err := json.Marshal(map[string]any{"version": 3, "currency": "EUR", "routes": []string{"42"}, "fares": map[string]any{
		"*": map[string]int64{"adult": 250, "child": 120, "senior": 120, "student": 180}, "42": map[string]int64{"adult": 300}}})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestStaleServerAssignmentWithoutTheLock: the retained assignment seen
// again on a reconnection is refused stale at once, also while a document
// is being applied (the apply lock held), so the uplink's session does not
// wait behind a large deny list.
func TestStaleServerAssignmentWithoutTheLock(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.a.AssignFromServer(3, "42", "BUS-3"); err != nil {
		t.Fatal(err)
	}
	h.a.applyMu.Lock()
	defer h.a.applyMu.Unlock()
	done := make(chan error, 1)
	go func() { done <- h.a.AssignFromServer(3, "42", "BUS-3") }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStaleVersion) {
			t.Errorf("the same assignment again: %v, want ErrStaleVersion", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stale assignment waited for the apply lock")
	}
}

// A validator of the release before stored an assignment whose route holds
// bidirectional marks (a Hebrew route name carries them): the upgraded
// validator starts with it, rather than refusing to start until its state
// is wiped.
func TestStoredAssignmentOfTheReleaseBefore(t *testing.T) {
	h := newHarness(t, nil)
	route := "\u202b\u05e7\u05d5 5\u200f\u202c"
	enc, _ := json.Marshal(Assignment{Route: route, Vehicle: "bus-17", Source: AssignServer, ServerVersion: 3})
	if err := h.q.UpdateState(func(st *queue.State) error { return st.Put(bucketState, keyAssignment, enc) }); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if as := h.a.Assignment(); as.Route != route || as.Source != AssignServer {
		t.Errorf("assignment after the upgrade = %+v", as)
	}
}
