package console

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
)

// TestOverviewTodayIsTheTapsDay: a fare table that moves the service
// day's start later (Berlin from 04:00 to UTC-12 from 23:59, a day and a
// half later) puts no tap made after it on a day before the taps made
// just before it (the ledger's serviceDayAt): for a day and more the taps
// being made are on the old table's day. The overview's "Today" took the
// latest table's own day, the day before: it showed yesterday's revenue
// and not the tap just made; the money and shops pages' last days ended
// the day before too.
func TestOverviewTodayIsTheTapsDay(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	later, err := fare.Parse([]byte(`{"version":2,"currency":"EUR","timezone":"Etc/GMT+12","service_day_start":"23:59",
		"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.PutFareTable(ctx, later); err != nil {
		t.Fatal(err)
	}
	f.device("bus-1")
	acct := f.account(1000)
	seed := sha256.Sum256([]byte(fmt.Sprint("rider", acct)))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	now := time.Now()
	key := paycode.ID{Account: acct, Serial: 1, Time: uint32(now.Unix()), Counter: 1}.Key()
	res, err := f.store.CommitTaps(ctx, []ledger.Tap{{ID: ledger.TapID("bus-1", "e1", 1), DeviceID: "bus-1", Seq: 1, Epoch: "e1",
		Time: now, Account: acct, Serial: 1, RiderKey: pub, CodeKey: key, CodeHash: "0123456789ab",
		BaseFare: 250, Currency: "EUR", FareVersion: 2, Route: "42", Vehicle: "v7", Record: []byte("record")}})
	if err != nil || res[0].Flag != "" || res[0].Charge != 250 {
		t.Fatalf("the tap: %+v, %v; want it charged 250", res, err)
	}
	if _, err := f.store.RefreshSummaries(ctx); err != nil {
		t.Fatal(err)
	}
	rides, err := f.store.Rides(ctx, acct, 0)
	if err != nil || len(rides) != 1 {
		t.Fatalf("rides %+v, %v", rides, err)
	}
	b := f.browser()
	b.signIn(f.opToken)
	_, overview := b.get("/console/")
	m := regexp.MustCompile(`<h2>Today <small>\(service day ([0-9-]+)\)</small></h2>`).FindStringSubmatch(overview)
	if m == nil || m[1] != rides[0].ServiceDay {
		t.Errorf("the overview's Today is %v; the tap made now is on %s", m, rides[0].ServiceDay)
	}
	if r := regexp.MustCompile(`id="today-revenue">([^<]*)<`).FindStringSubmatch(overview); r == nil || strings.TrimSpace(r[1]) != "2.50" {
		t.Errorf("the overview's today's revenue is %v; want 2.50, the tap made now", r)
	}
	// The money and shops pages' last days end at the same day.
	for _, p := range []string{"/console/money", "/console/shops"} {
		if _, body := b.get(p); !strings.Contains(body, " to "+rides[0].ServiceDay) {
			t.Errorf("%s's days do not end at %s, the day of the tap made now", p, rides[0].ServiceDay)
		}
	}
	if _, body := b.get("/console/money"); !strings.Contains(body, `<tr data-day="`+rides[0].ServiceDay+`"><td>`+rides[0].ServiceDay+`</td><td class="num">1</td>`) {
		t.Errorf("the money page does not list the tap made now on %s", rides[0].ServiceDay)
	}
}
