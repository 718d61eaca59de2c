package console

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
)

// A fare table that starts listing the routes it serves puts every
// validator on a route it does not list out of service (each tap refused,
// route_not_in_fares). The preview said "Only the version changes" and the
// fares page did not show the list: the preview must show the route list,
// warn, and name the devices that last tapped on a route left out.
func TestFarePreviewShowsRoutesServed(t *testing.T) {
	f := newFixture(t)
	f.device("bus-42")
	f.device("bus-x1")
	acct := f.account(1000)
	now := time.Now()
	var taps []ledger.Tap
	for i, d := range []struct{ dev, route string }{{"bus-42", "42"}, {"bus-x1", "X1"}} {
		key := paycode.ID{Account: acct, Serial: 1, Time: uint32(now.Unix()), Counter: uint16(i + 1)}.Key()
		taps = append(taps, ledger.Tap{ID: ledger.TapID(d.dev, "e1", 1), DeviceID: d.dev, Seq: 1, Epoch: "e1", Time: now,
			Account: acct, Serial: 1, RiderKey: make([]byte, 32), CodeKey: key, CodeHash: "00000000000" + string(rune('1'+i)),
			BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: d.route, Flag: ledger.FlagInvalidCode, Record: []byte("record")})
	}
	if _, err := f.store.CommitTaps(context.Background(), taps); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	csrf := b.signIn(f.opToken)
	only := strings.Replace(strings.Replace(testFares, `"version":1`, `"version":2`, 1), `"fares":`, `"routes":["X1"],"fares":`, 1)
	resp, body := b.post("/console/act/publish_fares", url.Values{"csrf": {csrf}, "table": {only}})
	if resp.StatusCode != 200 {
		t.Fatalf("preview: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(body, "Only the version changes") {
		t.Error("the preview of a table that starts a route list says only the version changes")
	}
	if !strings.Contains(body, `<tr class="added"><td>routes served</td>`) ||
		!strings.Contains(body, `X1 <strong class="warn">(validators on every other route it does not list go out of service)</strong>`) {
		t.Errorf("the preview does not show the route list added, with a warning:\n%s", body)
	}
	if !strings.Contains(body, "1 device (bus-42) is on route 42") {
		t.Errorf("the preview does not name the device its route list leaves out:\n%s", body)
	}
	if _, body := b.post("/console/act/publish_fares", url.Values{"csrf": {csrf}, "table": {only}, "confirm": {"yes"}}); !strings.Contains(body, "version 2 is published") {
		t.Fatalf("publish: %s", body)
	}
	if _, page := b.get("/console/fares"); !strings.Contains(page, `<dd id="fares-routes">only X1`) {
		t.Errorf("the fares page does not say the table serves only X1")
	}
	// Dropping a route from the list names it.
	both := strings.Replace(strings.Replace(only, `"version":2`, `"version":3`, 1), `"routes":["X1"]`, `"routes":["X1","42"]`, 1)
	if c := diffTables(mustParse(t, both), mustParse(t, only)); len(c) != 2 || c[1].What != "routes served" ||
		c[1].Warn != "validators on route 42 go out of service" {
		t.Errorf("diff of a shortened route list: %+v", c)
	}
}

func mustParse(t *testing.T, s string) *fare.Table {
	t.Helper()
	tb, err := fare.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// The device page shows the device's assignment: one made from the console
// (or the API) for a bus that has not tapped since was nowhere on it (only
// the route of its last tap, which the assign form was also filled with),
// so the operator could not tell it was made.
func TestDevicePageShowsAssignment(t *testing.T) {
	f := newFixture(t)
	f.device("bus-1")
	b := f.browser()
	b.signIn(f.opToken)
	if _, body := b.get("/console/devices/bus-1"); !strings.Contains(body, `<dd id="assigned"><span class="muted">never`) {
		t.Errorf("a device never assigned: the page does not say so")
	}
	if _, err := f.store.AssignDevice(context.Background(), "bus-1", "X1", "BUS-7", "token:init (operator) via console"); err != nil {
		t.Fatal(err)
	}
	_, body := b.get("/console/devices/bus-1")
	if !strings.Contains(body, `<dd id="assigned">route X1 / BUS-7 (version 1,`) ||
		!strings.Contains(body, `no tap with it yet`) {
		t.Errorf("the device page does not show the assignment made:\n%s", body)
	}
	if !strings.Contains(body, `<input name="route" required maxlength="64" value="X1">`) {
		t.Errorf("the assign form is not filled with the assigned route")
	}
}
