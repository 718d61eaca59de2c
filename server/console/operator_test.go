package console

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
)

// A bus that went offline with taps in its queue holds them unsettled for
// as long as it stays away: its oldest unsent tap grows older with the
// days. The fleet and device pages showed the age it had when the bus last
// reported (12 s after three days away), called it no problem, and sorted
// it below an online bus with a six-minute-old tap when the operator
// looked for the oldest unsettled money (review: rev-console).
func TestOfflineBusOldestUnsentGrows(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.device("bus-away")
	f.device("bus-slow")
	// bus-away: 3 taps waiting, the oldest 12 s old, then its last will.
	now := time.Now()
	if err := f.store.UpdateDeviceStatus(ctx, "bus-away", ledger.DeviceStatus{Online: true, QueueDepth: 3,
		OldestUnsent: 12 * time.Second, LastSeen: now, Written: now}); err != nil {
		t.Fatal(err)
	}
	if err := f.store.UpdateDeviceStatus(ctx, "bus-away", ledger.DeviceStatus{Online: false, LastSeen: now.Add(-time.Hour),
		Written: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(72 * time.Hour)
	// bus-slow: online now, one tap waiting 6 minutes.
	if err := f.store.UpdateDeviceStatus(ctx, "bus-slow", ledger.DeviceStatus{Online: true, QueueDepth: 1,
		OldestUnsent: 6 * time.Minute, LastSeen: now, Written: now}); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	b.signIn(f.opToken)
	_, dev := b.get("/console/devices/bus-away")
	if !strings.Contains(dev, `data-state="offline"`) {
		t.Fatalf("bus-away is not offline on its page")
	}
	q := regexp.MustCompile(`<dd id="queue">([^<]*)</dd>`).FindStringSubmatch(dev)
	if q == nil || !strings.Contains(q[1], "oldest 3d") {
		t.Errorf("bus-away, offline for 3 days with 3 taps waiting, shows its queue as %q: want its oldest tap at least 3 days old", q)
	}
	if !strings.Contains(dev, "oldest unsent tap 3d") {
		t.Error("bus-away's page does not list its 3-day-old unsent taps among its problems")
	}
	_, fleet := b.get("/console/fleet?sort=oldest&dir=desc")
	order := regexp.MustCompile(`data-device="([^"]+)"`).FindAllStringSubmatch(fleet, -1)
	if len(order) != 2 || order[0][1] != "bus-away" {
		t.Errorf("the fleet sorted by oldest unsent tap, oldest first: %v, want bus-away (3 days) before bus-slow (6 minutes)", order)
	}
}

// A wallet renews its credential twice a day (ledger.MaxLiveCredentials),
// so a rider of a year holds some 730 credentials, and one who asks for
// all it may, thousands. The account page listed every credential ever
// issued, each with its Deny form: the page an operator opens for a
// rider's dispute grew without bound (a rider could make it as large as
// it liked), while its postings page 50 at a time (review: rev-console).
// It lists the newest (every one not yet expired among them) and pages
// back to the first, as the postings do.
func TestAccountCredentialsPaged(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, err := f.store.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult, Name: "rider", SecretHash: []byte("h")})
	if err != nil {
		t.Fatal(err)
	}
	// 200 days of a wallet renewing every 12 hours, through a second
	// Store on the same ledger file whose clock is then.
	var at time.Time
	past, err := ledger.Open(ctx, filepath.Join(filepath.Dir(f.keys.Path()), "ledger.db"),
		&ledger.Options{Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	defer past.Close()
	const issued = 400
	start := time.Now().Add(-time.Duration(issued+4) * 12 * time.Hour)
	for i := range issued {
		at = start.Add(time.Duration(i) * 12 * time.Hour)
		seed := sha256.Sum256(fmt.Append(nil, "rider key ", i))
		if _, err := past.IssueCredentialSerial(ctx, a.ID, at.Add(24*time.Hour), ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)); err != nil {
			t.Fatal(err)
		}
	}
	seed := sha256.Sum256([]byte("rider key now"))
	live, err := f.store.IssueCredentialSerial(ctx, a.ID, time.Now().Add(24*time.Hour), ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	b.signIn(f.opToken)
	rowRE := regexp.MustCompile(`<tr data-serial="(\d+)"><td class="num head" data-label="Serial">`)
	page := fmt.Sprintf("/console/accounts/%d", a.ID)
	_, body := b.get(page)
	rows := rowRE.FindAllStringSubmatch(body, -1)
	if len(rows) == 0 || rows[0][1] != fmt.Sprint(live) {
		t.Fatalf("the account page does not list the live credential %d first: %d rows", live, len(rows))
	}
	if len(rows) > ledger.MaxUnexpiredCredentials {
		t.Errorf("the account page lists %d credentials (%d bytes): want the newest, at most %d, and a link to older ones",
			len(rows), len(body), ledger.MaxUnexpiredCredentials)
	}
	// Paging back reaches the first credential, each once.
	seen := map[string]bool{}
	for range issued {
		for _, r := range rowRE.FindAllStringSubmatch(body, -1) {
			if seen[r[1]] {
				t.Fatalf("credential %s listed twice paging back", r[1])
			}
			seen[r[1]] = true
		}
		m := regexp.MustCompile(`href="([^"]+)" id="older-credentials"`).FindStringSubmatch(body)
		if m == nil {
			break
		}
		_, body = b.get(strings.ReplaceAll(m[1], "&amp;", "&"))
	}
	if len(seen) != issued+1 || !seen["1"] {
		t.Errorf("paging back through the credentials listed %d of %d (the first: %t)", len(seen), issued+1, seen["1"])
	}
}

// The flagged taps are what an operator watches for fraud; their list and
// counts went by the tap time a validator wrote. A validator whose clock
// jumped years ahead (or a stolen one, recording codes it saw with such a
// time: they fail only on time, so are stored flagged under the rider's
// account) put its taps at the top of "Newest flagged taps" for good: 100
// of them, and a code used twice on another bus today was nowhere on the
// page. And taps a bus kept offline for days, flagged when they came in
// today, were not in the overview's "Flagged (24 h)" (review: rev-console).
// The console goes by when the server received them.
func TestFlaggedByWhenReceived(t *testing.T) {
	f := newFixture(t)
	f.device("bus-stolen")
	f.device("bus-1")
	f.device("bus-away")
	acct := f.account(1000)
	ctx := context.Background()
	tap := func(device string, seq uint64, at time.Time) ledger.Tap {
		key := paycode.ID{Account: acct, Serial: 1, Time: uint32(at.Unix()), Counter: uint16(seq)}.Key()
		return ledger.Tap{ID: ledger.TapID(device, "e1", seq), DeviceID: device, Seq: seq, Epoch: "e1", Time: at,
			Account: acct, Serial: 1, RiderKey: make([]byte, 32), CodeKey: key, CodeHash: fmt.Sprintf("%012d", seq),
			BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "7", Flag: ledger.FlagInvalidCode, Record: []byte("record")}
	}
	var junk []ledger.Tap
	future := time.Date(2099, 1, 1, 8, 0, 0, 0, time.UTC)
	for i := range 100 {
		junk = append(junk, tap("bus-stolen", uint64(i+1), future.Add(time.Duration(i)*time.Minute)))
	}
	// Received two days ago (through a second Store on the same ledger
	// file whose clock is then).
	past, err := ledger.Open(ctx, filepath.Join(filepath.Dir(f.keys.Path()), "ledger.db"),
		&ledger.Options{Now: func() time.Time { return time.Now().Add(-48 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer past.Close()
	if _, err := past.CommitTaps(ctx, junk); err != nil {
		t.Fatal(err)
	}
	// Today: an invalid code on bus-1, and bus-away's three flagged
	// taps of three days ago, received now.
	away := time.Now().Add(-72 * time.Hour)
	if _, err := f.store.CommitTaps(ctx, []ledger.Tap{tap("bus-1", 1, time.Now()), tap("bus-away", 1, away),
		tap("bus-away", 2, away.Add(time.Minute)), tap("bus-away", 3, away.Add(2*time.Minute))}); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	b.signIn(f.opToken)
	for _, p := range []string{"/console/flagged", "/console/flagged?flag=invalid_code"} {
		if _, body := b.get(p); !strings.Contains(body, `data-tap="bus-1/e1/1"`) {
			t.Errorf("%s does not list bus-1's flagged tap of today among the newest (%d taps of bus-stolen dated 2099 listed)",
				p, strings.Count(body, `data-tap="bus-stolen/`))
		}
	}
	// A device's page lists its own taps without a Device column (on a
	// phone it pushed the account and the charge out of sight); the
	// flagged page, of every device, keeps it.
	_, dev := b.get("/console/devices/bus-away")
	if !strings.Contains(dev, `data-tap="bus-away/e1/3"`) || strings.Contains(dev, "<th>Device</th>") {
		t.Errorf("bus-away's page: its taps listed %v, a Device column %v; want its taps without the column",
			strings.Contains(dev, `data-tap="bus-away/e1/3"`), strings.Contains(dev, "<th>Device</th>"))
	}
	if _, flagged := b.get("/console/flagged"); !strings.Contains(flagged, "<th>Device</th>") {
		t.Error("the flagged taps of every device are listed without their device")
	}
	_, overview := b.get("/console/")
	m := regexp.MustCompile(`<span class="flag">invalid_code</span> (\d+)`).FindStringSubmatch(overview)
	if m == nil || m[1] != "4" {
		t.Errorf("the overview's Flagged (24 h) counts %v invalid_code taps: want 4, the taps received today (1 of bus-1, 3 of bus-away)", m)
	}
}

// The end of a device's TLS client certificate, as the device reports it
// in its status, reaches the operator before the broker refuses the
// device (only selftest and the validator's own log said it, on the bus):
// the fleet page names the devices within 90 days and the ended ones as
// problems, sorts them soonest first under "Certificate ends", the
// device page shows it, and /metrics gives each device's end for the
// shipped alerts; a device that reports none (of the release before, or
// without a certificate) is left out of all of it.
func TestFleetShowsCertEnds(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := f.clock.now()
	// The console says dates in the fleet's zone (the fixture's fare
	// table's): in UTC this test failed in the hour before midnight UTC.
	berlin := mustZone(t, "Europe/Berlin")
	ends := map[string]time.Time{
		"bus-ended": now.Add(-24 * time.Hour),
		"bus-soon":  now.Add(20 * 24 * time.Hour),
		"bus-later": now.Add(400 * 24 * time.Hour),
		"bus-none":  {},
	}
	for _, id := range []string{"bus-ended", "bus-soon", "bus-later", "bus-none"} {
		f.device(id)
		if err := f.store.UpdateDeviceStatus(ctx, id, ledger.DeviceStatus{Online: true, LastSeen: now, Written: now,
			CertNotAfter: ends[id]}); err != nil {
			t.Fatal(err)
		}
	}
	b := f.browser()
	b.signIn(f.opToken)
	_, fleet := b.get("/console/fleet?sort=cert")
	order := regexp.MustCompile(`data-device="([^"]+)"`).FindAllStringSubmatch(fleet, -1)
	var got []string
	for _, m := range order {
		got = append(got, m[1])
	}
	if fmt.Sprint(got) != "[bus-ended bus-soon bus-later bus-none]" {
		t.Errorf("the fleet sorted by certificate end: %v, want the soonest first, none last", got)
	}
	for _, want := range []string{
		"client certificate ended " + ends["bus-ended"].In(berlin).Format(time.DateOnly),
		"client certificate ends " + ends["bus-soon"].In(berlin).Format(time.DateOnly) + " (in 19d)", // 20 days less the test's time
		`<span class="cert">cert ` + ends["bus-later"].In(berlin).Format(time.DateOnly) + `</span>`,
	} {
		if !strings.Contains(fleet, want) {
			t.Errorf("the fleet page does not say %q", want)
		}
	}
	if strings.Count(fleet, "client certificate end") != 2 {
		t.Errorf("the fleet page names %d certificate problems, want 2 (ended, within 90 days)", strings.Count(fleet, "client certificate end"))
	}
	rows := regexp.MustCompile(`(?s)<tr data-device="([^"]+)".*?</tr>`).FindAllStringSubmatch(fleet, -1)
	for _, r := range rows {
		want := r[1] == "bus-ended" || r[1] == "bus-soon"
		if has := strings.Contains(r[0], "client certificate"); has != want {
			t.Errorf("%s names a certificate problem: %v, want %v", r[1], has, want)
		}
	}
	if len(rows) != 4 {
		t.Errorf("%d rows, want 4", len(rows))
	}
	_, dev := b.get("/console/devices/bus-soon")
	if !strings.Contains(dev, `<dd id="cert">ends `+ends["bus-soon"].In(berlin).Format(time.DateOnly)) {
		t.Error("the device page does not show its certificate's end")
	}

	reg := metrics.NewRegistry()
	New(Config{Ledger: f.store, Keys: f.keys, Now: f.clock.now, Metrics: reg})
	var out strings.Builder
	if _, err := reg.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	gauge := map[string]float64{}
	for _, m := range regexp.MustCompile(`(?m)^farego_device_cert_expiry_timestamp_seconds\{device="([^"]+)"\} (\S+)$`).FindAllStringSubmatch(out.String(), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		gauge[m[1]] = v
	}
	for id, end := range ends {
		v, has := gauge[id]
		if has != !end.IsZero() || (has && v != float64(end.Unix())) {
			t.Errorf("/metrics gives %s's certificate end %v (%v), want %v (%v)", id, v, has, end.Unix(), !end.IsZero())
		}
	}
	if strings.Contains(out.String(), `farego_device_cert_expiry_timestamp_seconds{device="bus-none"}`) {
		t.Error("/metrics gives an end for a device that reports none")
	}
}
