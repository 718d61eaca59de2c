package console

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/farego/farego/agent/fare"
)

// TestZoneDoesNotParseTheFareTable: every page names times in the fleet's
// zone, the latest fare table's. Reading it parsed that table afresh for
// each page (LatestFareTable: a fresh copy, tens of milliseconds for a
// large table), on the overview, a device's page, the aside list alike,
// and twice on the money page. A page of records kept aside, whose own
// reads do not touch the fare table, must not cost what parsing a large
// one costs: counted in allocations, which a timing on this shared machine
// would not show reliably.
func TestZoneDoesNotParseTheFareTable(t *testing.T) {
	var routes, fares []string
	for i := range 15_000 {
		r := fmt.Sprintf("r%05d", i)
		routes = append(routes, `"`+r+`"`)
		fares = append(fares, fmt.Sprintf(`"%s":{"adult":%d}`, r, 200+i%50))
	}
	body := `{"version":1,"currency":"EUR","timezone":"Europe/Berlin","service_day_start":"04:00","routes":[` + strings.Join(routes, ",") +
		`],"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180},` + strings.Join(fares, ",") + `},"transfer":{"window":"60m","fare":0}}`
	if len(body) > fare.MaxTableSize {
		t.Fatalf("the test's fare table is %d bytes, more than a fare table may be", len(body))
	}
	f := newFixtureIn(t, "EUR", body)
	b := f.browser()
	b.signIn(f.opToken)
	parse := testing.AllocsPerRun(3, func() {
		if _, err := fare.Parse([]byte(body)); err != nil {
			t.Fatal(err)
		}
	})
	page := testing.AllocsPerRun(3, func() {
		if code, body := b.get("/console/aside"); code != http.StatusOK || !strings.Contains(body, "CET") && !strings.Contains(body, "CEST") {
			t.Fatalf("aside page: %d, times not in Europe/Berlin:\n%.300s", code, body)
		}
	})
	if page >= parse/2 {
		t.Errorf("a page of records kept aside takes %.0f allocations, parsing the fare table %.0f: the page parses it", page, parse)
	}
}
