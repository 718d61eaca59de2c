package console

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
)

// Device states.
const (
	StateOnline  = "online"
	StateOffline = "offline"
	StateUnknown = "unknown" // nothing heard since this server started
	StateRevoked = "revoked"
)

// Thresholds beyond which the fleet page calls something a problem (and
// the shipped alerting rules alert).
const (
	QueueAgeProblem    = 5 * time.Minute
	ClockOffsetProblem = 30 * time.Second
	// CertEndProblem is how long before the end of a device's TLS client
	// certificate (as the device reports it) the fleet page names it, as
	// the validator's selftest and log warn: from its end the broker
	// refuses the device, and provisioning it again takes a visit. The
	// shipped rules alert from 30 days (FaregoDeviceCertEnding).
	CertEndProblem = 90 * 24 * time.Hour
)

// versions are the fleet documents' current versions.
type versions struct {
	Keyring, Fares, DenyList uint64
}

// deviceRow is a device as the fleet page shows it.
type deviceRow struct {
	ledger.FleetDevice
	State        string
	LastHeard    time.Time // server time of its last status or acked batch
	OldestUnsent time.Duration
	Keyring      uint64
	Fares        uint64
	DenyList     uint64
	Problems     []string
	score        int
}

// rowOf judges a device against the current versions; its problems name
// dates in loc, the fleet's zone (the zone the pages show every other
// time in: a certificate's end in UTC was a day off the Cert ends column
// in a zone east or west of it).
func (h *Handler) rowOf(d ledger.FleetDevice, cur versions, loc *time.Location) deviceRow {
	r := deviceRow{FleetDevice: d, OldestUnsent: d.Status.OldestUnsent}
	r.LastHeard = d.StatusAt
	if d.LastSync.After(r.LastHeard) {
		r.LastHeard = d.LastSync
	}
	v := d.Status.Versions
	r.Keyring, r.Fares, r.DenyList = v[record.DocKeyring], v[record.DocFares], v[record.DocDenyList]
	switch {
	case !d.Revoked.IsZero():
		r.State = StateRevoked
		return r // a revoked device's problems are over
	case d.StatusAt.IsZero() || d.StatusAt.Before(h.cfg.Started):
		r.State = StateUnknown
	case d.Status.Online:
		r.State = StateOnline
	default:
		r.State = StateOffline
	}
	// A device not online cannot have sent the taps it last reported
	// waiting: the oldest of them is older now by the time since (a bus
	// away for days held them for days, and showed the age they had when
	// it left).
	if r.State != StateOnline && d.Status.QueueDepth > 0 {
		if since := h.cfg.Now().Sub(d.StatusAt); since > 0 {
			r.OldestUnsent += since
		}
	}
	add := func(score int, format string, a ...any) {
		r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
		r.score += score
	}
	switch r.State {
	case StateOffline:
		add(50, "offline")
	case StateUnknown:
		if d.StatusAt.IsZero() {
			add(40, "never heard from")
		} else {
			add(40, "not heard since the server started")
		}
	}
	if d.Status.OutOfService != "" {
		add(60, "out of service: %s", d.Status.OutOfService)
	}
	if r.OldestUnsent > QueueAgeProblem {
		add(30, "oldest unsent tap %s old", fmtDur(r.OldestUnsent))
	}
	if off := d.ClockOffset; off > ClockOffsetProblem || off < -ClockOffsetProblem {
		add(20, "clock %s off", fmtDur(off))
	}
	if end := d.Status.CertNotAfter; !end.IsZero() {
		switch left := end.Sub(h.cfg.Now()); {
		case left <= 0:
			add(55, "client certificate ended %s: the broker refuses it, provision it again", end.In(loc).Format(time.DateOnly))
		case left < CertEndProblem:
			add(10, "client certificate ends %s (in %dd): provision it again before", end.In(loc).Format(time.DateOnly), int(left.Hours()/24))
		}
	}
	if d.UpdateFailed() {
		u := d.Status.Update
		add(35, "update to %s failed: %s", u.Failed, cut(u.FailedReason, 80))
	}
	if !d.StatusAt.IsZero() {
		if r.DenyList < cur.DenyList {
			add(25, "deny list %d behind %d", r.DenyList, cur.DenyList)
		}
		if r.Keyring < cur.Keyring {
			add(15, "keyring %d behind %d", r.Keyring, cur.Keyring)
		}
		if r.Fares < cur.Fares {
			add(15, "fares %d behind %d", r.Fares, cur.Fares)
		}
	}
	return r
}

// cut shortens s to at most n characters, marking the cut.
func cut(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// fmtDur writes a duration for people: "2h 5m", "5m 3s", "3.8s", "850ms".
func fmtDur(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	var s string
	switch {
	case d >= 24*time.Hour:
		s = fmt.Sprintf("%dd %dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		s = fmt.Sprintf("%dh %dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		s = fmt.Sprintf("%dm %ds", d/time.Minute, d%time.Minute/time.Second)
	case d >= time.Second:
		s = strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
		s = strings.Replace(s, ".0s", "s", 1)
	case d == 0:
		return "0s"
	default:
		s = fmt.Sprintf("%dms", d.Milliseconds())
	}
	for _, zero := range []string{" 0h", " 0m", " 0s"} {
		s = strings.TrimSuffix(s, zero)
	}
	return sign + s
}

// currentVersions reads the fleet documents' current versions.
func (h *Handler) currentVersions(ctx context.Context) (versions, error) {
	var v versions
	v.Keyring = h.cfg.Keys.Keyring().Version()
	t, err := h.cfg.Ledger.LatestFareTable(ctx)
	switch {
	case errors.Is(err, ledger.ErrNoFareTable):
	case err != nil:
		return v, err
	default:
		v.Fares = t.Version
	}
	v.DenyList, err = h.cfg.Ledger.DenyVersion(ctx)
	return v, err
}

// fleetReading is the fleet as the metrics read it, at most once a few
// seconds (one scrape reads several families of it): metricsCacheTTL.
type fleetReading struct {
	rows []deviceRow
	cur  versions
	err  error
}

// asideReading is the records kept aside, as the metrics read them.
type asideReading struct {
	quarantined, held int64
	err               error
}

const metricsCacheTTL = 2 * time.Second

func (h *Handler) readFleetForMetrics() fleetReading {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, cur, err := h.readFleet(ctx, false)
	return fleetReading{rows, cur, err}
}

func (h *Handler) readAside() asideReading {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, hd, err := h.cfg.Ledger.AsideCounts(ctx)
	var r asideReading
	for _, c := range q {
		r.quarantined += c.Count
	}
	for _, c := range hd {
		r.held += c.Count
	}
	r.err = err
	return r
}

// readFleet reads every device (with the route and vehicle of its last
// tap, if asked) and judges it.
func (h *Handler) readFleet(ctx context.Context, routes bool) ([]deviceRow, versions, error) {
	cur, err := h.currentVersions(ctx)
	if err != nil {
		return nil, cur, err
	}
	var ds []ledger.FleetDevice
	if routes {
		ds, err = h.cfg.Ledger.Fleet(ctx)
	} else {
		var devs []ledger.Device
		devs, err = h.cfg.Ledger.Devices(ctx)
		for _, d := range devs {
			ds = append(ds, ledger.FleetDevice{Device: d})
		}
	}
	if err != nil {
		return nil, cur, err
	}
	rows := make([]deviceRow, len(ds))
	loc := h.zone(ctx)
	for i, d := range ds {
		rows[i] = h.rowOf(d, cur, loc)
	}
	return rows, cur, nil
}

// fleetQuery is what the fleet page is asked for.
type fleetQuery struct {
	State   string // "", "problems", or a state
	Q       string // substring of id, route or vehicle
	Sort    string // a sort key; "" = problems first
	Desc    bool
	Page    int // from 1
	Refresh int // seconds of the page's auto-refresh, kept by its links (0: none)
}

// descFirst are the sort keys whose first click puts the largest first:
// the latest heard, the longest queue, the oldest unsent tap, the clock
// furthest off (what an operator looks for).
var descFirst = []string{"heard", "queue", "oldest", "clock"}

// fleetPageSize is how many devices one fleet page shows.
const fleetPageSize = 100

var fleetSorts = []string{"problems", "id", "state", "heard", "queue", "oldest", "clock", "route", "software", "cert"}

var fleetStates = []string{"", "problems", StateOnline, StateOffline, StateUnknown, StateRevoked}

// parseFleetQuery reads the fleet page's query; anything it does not know
// falls back to the default.
func parseFleetQuery(v url.Values) fleetQuery {
	q := fleetQuery{State: v.Get("state"), Q: strings.TrimSpace(v.Get("q")), Sort: v.Get("sort"), Desc: v.Get("dir") == "desc", Page: 1}
	if !slices.Contains(fleetStates, q.State) {
		q.State = ""
	}
	if !slices.Contains(fleetSorts, q.Sort) {
		q.Sort = ""
	}
	if len(q.Q) > 64 {
		q.Q = strings.TrimSpace(clipUTF8(q.Q, 64))
	}
	if p, err := strconv.Atoi(v.Get("page")); err == nil && p > 1 && p < 1_000_000 {
		q.Page = p
	}
	q.Refresh = refreshSeconds(v)
	return q
}

// values returns the query with some keys changed, for links.
func (q fleetQuery) values(change ...string) url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("state", q.State)
	set("q", q.Q)
	set("sort", q.Sort)
	if q.Desc {
		v.Set("dir", "desc")
	}
	if q.Page > 1 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if q.Refresh > 0 {
		v.Set("refresh", strconv.Itoa(q.Refresh))
	}
	for i := 0; i+1 < len(change); i += 2 {
		if change[i+1] == "" {
			v.Del(change[i])
		} else {
			v.Set(change[i], change[i+1])
		}
	}
	return v
}

var stateOrder = map[string]int{StateOffline: 0, StateUnknown: 1, StateOnline: 2, StateRevoked: 3}

// apply filters and sorts rows (in place) as the query says.
func (q fleetQuery) apply(rows []deviceRow) []deviceRow {
	out := rows[:0:0]
	for _, r := range rows {
		switch {
		case q.State == "problems" && len(r.Problems) == 0,
			q.State != "" && q.State != "problems" && r.State != q.State:
			continue
		case q.Q != "" && !containsFold(r.ID, q.Q) && !containsFold(r.Route, q.Q) && !containsFold(r.Vehicle, q.Q):
			continue
		}
		out = append(out, r)
	}
	by := func(a, b deviceRow) int {
		switch q.Sort {
		case "id":
			// Compared here, not left to the tie-break below, so that
			// dir=desc turns it round (Z to A showed A to Z).
			return cmp.Compare(a.ID, b.ID)
		case "state":
			return cmp.Compare(stateOrder[a.State], stateOrder[b.State])
		case "heard":
			return a.LastHeard.Compare(b.LastHeard)
		case "queue":
			return cmp.Compare(a.Status.QueueDepth, b.Status.QueueDepth)
		case "oldest":
			return cmp.Compare(a.OldestUnsent, b.OldestUnsent)
		case "clock":
			return cmp.Compare(max(a.ClockOffset, -a.ClockOffset), max(b.ClockOffset, -b.ClockOffset))
		case "route":
			return cmp.Compare(a.Route, b.Route)
		case "software":
			return cmp.Compare(a.Status.Software, b.Status.Software)
		case "cert":
			// The soonest end first; devices that report none last.
			ea, eb := a.Status.CertNotAfter, b.Status.CertNotAfter
			if c := cmp.Compare(b2f(ea.IsZero()), b2f(eb.IsZero())); c != 0 {
				return c
			}
			return ea.Compare(eb)
		}
		// Problems first: the worst first, revoked devices last.
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(b2f(a.State == StateRevoked), b2f(b.State == StateRevoked))
	}
	slices.SortStableFunc(out, func(a, b deviceRow) int {
		c := by(a, b)
		if q.Desc {
			c = -c
		}
		if c == 0 {
			c = cmp.Compare(a.ID, b.ID)
		}
		return c
	})
	return out
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// registerMetrics adds the fleet's gauges to a registry.
func (h *Handler) registerMetrics(reg *metrics.Registry) {
	each := func(fn func(emit func(float64, ...string), rows []deviceRow, cur versions)) func(func(float64, ...string)) {
		return func(emit func(float64, ...string)) {
			f := h.fleet.Get()
			if f.err != nil {
				return
			}
			fn(emit, f.rows, f.cur)
		}
	}
	live := func(emit func(float64, ...string), rows []deviceRow, f func(r deviceRow) (float64, bool)) {
		for _, r := range rows {
			if r.State == StateRevoked {
				continue
			}
			if v, ok := f(r); ok {
				emit(v, r.ID)
			}
		}
	}
	reg.GaugeVecFunc("farego_devices", "Registered devices by state (online, offline, unknown: not heard since the server started, revoked).",
		[]string{"state"}, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			n := map[string]int{}
			for _, r := range rows {
				n[r.State]++
			}
			for _, s := range []string{StateOnline, StateOffline, StateUnknown, StateRevoked} {
				emit(float64(n[s]), s)
			}
		}))
	dev := []string{"device"}
	reg.GaugeVecFunc("farego_device_up", "1 if the device says it is online, 0 if offline or not heard since the server started (revoked devices are left out).",
		dev, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			live(emit, rows, func(r deviceRow) (float64, bool) { return b2f(r.State == StateOnline), true })
		}))
	reg.GaugeVecFunc("farego_device_last_heard_seconds", "Seconds since the server last heard from the device (status or acked batch).",
		dev, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			now := h.cfg.Now()
			live(emit, rows, func(r deviceRow) (float64, bool) { return now.Sub(r.LastHeard).Seconds(), !r.LastHeard.IsZero() })
		}))
	reg.GaugeVecFunc("farego_device_queue_depth", "Taps waiting on the device for the server's ack, as of its last status.",
		dev, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			live(emit, rows, func(r deviceRow) (float64, bool) { return float64(r.Status.QueueDepth), !r.StatusAt.IsZero() })
		}))
	reg.GaugeVecFunc("farego_device_oldest_unsent_seconds", "Age of the device's oldest unacknowledged tap: as of its last status, and older by the time since for a device not online.",
		dev, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			live(emit, rows, func(r deviceRow) (float64, bool) { return r.OldestUnsent.Seconds(), !r.StatusAt.IsZero() })
		}))
	reg.GaugeVecFunc("farego_device_clock_offset_seconds", "The device's clock minus the server's when its last status arrived.",
		dev, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			live(emit, rows, func(r deviceRow) (float64, bool) { return r.ClockOffset.Seconds(), !r.StatusAt.IsZero() })
		}))
	reg.GaugeVecFunc("farego_device_out_of_service", "1 if the device refuses taps (queue full, no fare table, clock unset).",
		dev, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			live(emit, rows, func(r deviceRow) (float64, bool) { return b2f(r.Status.OutOfService != ""), !r.StatusAt.IsZero() })
		}))
	reg.GaugeVecFunc("farego_device_update_failed", "1 if the device's last software update failed and it still runs an older version (the reason is in GET /v1/devices/{id}).",
		dev, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			live(emit, rows, func(r deviceRow) (float64, bool) { return b2f(r.UpdateFailed()), !r.StatusAt.IsZero() })
		}))
	reg.GaugeVecFunc("farego_device_cert_expiry_timestamp_seconds", "When the device's TLS client certificate ends, as the device reports it (Unix seconds; "+
		"devices that report none are left out): the broker refuses it from then on, provision it again before.",
		dev, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			live(emit, rows, func(r deviceRow) (float64, bool) {
				return float64(r.Status.CertNotAfter.Unix()), !r.Status.CertNotAfter.IsZero()
			})
		}))
	reg.GaugeVecFunc("farego_device_downlink_version", "Versions of the fleet documents the device has applied, by kind.",
		[]string{"device", "kind"}, each(func(emit func(float64, ...string), rows []deviceRow, _ versions) {
			for _, r := range rows {
				if r.State == StateRevoked || r.StatusAt.IsZero() {
					continue
				}
				emit(float64(r.Keyring), r.ID, record.DocKeyring)
				emit(float64(r.Fares), r.ID, record.DocFares)
				emit(float64(r.DenyList), r.ID, record.DocDenyList)
			}
		}))
	reg.GaugeVecFunc("farego_downlink_version", "Current versions of the fleet documents, by kind.",
		[]string{"kind"}, each(func(emit func(float64, ...string), _ []deviceRow, cur versions) {
			emit(float64(cur.Keyring), record.DocKeyring)
			emit(float64(cur.Fares), record.DocFares)
			emit(float64(cur.DenyList), record.DocDenyList)
		}))
	aside := func(held bool) func() float64 {
		return func() float64 {
			r := h.aside.Get()
			switch {
			case r.err != nil:
				return -1
			case held:
				return float64(r.held)
			}
			return float64(r.quarantined)
		}
	}
	reg.GaugeFunc("farego_ledger_quarantined", "Device records kept aside as unreadable or from revoked devices.", aside(false))
	reg.GaugeFunc("farego_ledger_held", "Taps held aside until the server can check them (an issuer key it lacks).", aside(true))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// clipUTF8 cuts s to at most n bytes at a character boundary (invalid
// bytes become U+FFFD first, so the result is always valid UTF-8).
func clipUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
