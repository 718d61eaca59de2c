package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/ledger"
)

// page is what every template gets.
type page struct {
	Title    string
	Nav      string // the active section
	S        *sess  // nil when signed out
	Prefix   string
	Now      time.Time
	Refresh  int  // seconds; 0: no meta refresh
	Reload   bool // reload the page at once (a meta refresh of 0 s)
	Currency string
	CutOff   []string // what this instance has lost its link to (Config.CutOff)
	Data     any
}

var funcs = template.FuncMap{
	"dur": fmtDur,
	// window is a fare rule's time window as an operator writes it
	// ("60 min", not "1h0m0s").
	"window": func(d fare.Duration) string {
		if v := time.Duration(d); v > 0 && v%time.Minute == 0 {
			return fmt.Sprintf("%d min", v/time.Minute)
		}
		return fmtDur(time.Duration(d))
	},
	// plural is word, with an s unless n is 1.
	"plural": func(n any, word string) string {
		if n == 1 || n == int64(1) {
			return word
		}
		return word + "s"
	},
	"join": strings.Join,
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[fmt.Sprint(kv[i])] = kv[i+1]
		}
		return m
	},
	"pathEscape": url.PathEscape,
	"shown":      shown,
	"editable":   editable,
	"add":        func(a, b int) int { return a + b },
}

// shown is text a device sent (a route, a vehicle) as the console shows
// it (record.Shown): a stolen validator can name a route "\u202e24", which
// a browser shows as "42"; the invisible formatting characters and the
// control characters its records may hold (C1) are shown as their code
// points ("<U+202E>24"), so two routes never look alike.
func shown(s string) string { return record.Shown(s) }

// editable is a device's route or vehicle as an edit box is filled with: as
// it is, or empty if shown writes it otherwise (its
// "<U+202E>" text, sent back, would become the route).
func editable(s string) string {
	if record.Shown(s) != s {
		return ""
	}
	return s
}

// parseTemplates parses the embedded templates: each page template with
// the layout, on its own; money shows amounts in currency's minor units,
// ts and day times in the zone loc.
func parseTemplates(currency string, loc *time.Location) map[string]*template.Template {
	layout, err := fs.ReadFile(templateFS, "templates/layout.html")
	if err != nil {
		panic(err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		body, err := fs.ReadFile(templateFS, n)
		if err != nil {
			panic(err)
		}
		t := template.New(name).Funcs(funcs).Funcs(template.FuncMap{
			// Amounts in the ledger's currency's minor units: 210 yen, 2.10 euros, 0.210 dinars.
			"money": func(v int64) string { return feedback.FormatNumber(v, currency) },
			// ts is a time in the fleet's zone, with the zone's name as
			// it was then ("CET", "CEST"): the times either side of a
			// change to or from summer time read as the clocks did.
			"ts": func(t time.Time) string {
				if t.IsZero() {
					return "—"
				}
				return t.In(loc).Format("2006-01-02 15:04:05 MST")
			},
			// day is a date alone ("—" for none), in the same zone.
			"day": func(t time.Time) string {
				if t.IsZero() {
					return "—"
				}
				return t.In(loc).Format(time.DateOnly)
			},
		})
		template.Must(t.Parse(string(layout)))
		template.Must(t.Parse(string(body)))
		out[name] = t
	}
	return out
}

// render writes a page: the layout with the named page's content.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	// An error page does not ask the ledger (it may be the ledger that
	// failed, and a dead database's connect would hold the page), nor
	// does a page before sign-in (anyone may load it): they show times in
	// the zone read last.
	loc := h.lastZone.Load()
	if loc == nil || (p.S != nil && p.Currency != "-") {
		loc = h.zone(r.Context())
	}
	t := h.pagesIn(loc)[name]
	if t == nil {
		panic("console: no template " + name)
	}
	p.Prefix, p.Now = h.cfg.Prefix, h.cfg.Now().UTC()
	if p.S != nil && h.cfg.CutOff != nil {
		p.CutOff = h.cfg.CutOff()
	}
	if p.Currency == "" {
		p.Currency = h.cfg.Ledger.Currency()
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		h.log.Error("console: rendering a page failed", "page", name, "err", err)
		http.Error(w, "internal error; see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// zone returns the fleet's time zone, the one the console shows times in:
// the latest fare table's (its service days are that zone's), or UTC when
// there is none or the ledger does not say. Times were shown in UTC alone,
// an hour or two off what the operator's clocks said, and the hour moved
// across a change to or from summer time.
//
// It is read for every page: the ledger's cached table (not
// LatestFareTable's fresh copy, a parse of the whole table, tens of
// milliseconds for a large one), and the zone read last again while the
// name is the same (not the zone file loaded again).
func (h *Handler) zone(ctx context.Context) *time.Location {
	_, tbl, err := h.cfg.Ledger.LatestFareTableShared(ctx)
	last := h.lastZone.Load()
	if err != nil && !errors.Is(err, ledger.ErrNoFareTable) {
		if last != nil {
			return last // the ledger did not answer: the zone read last
		}
		return time.UTC
	}
	loc := time.UTC
	if tbl != nil && tbl.TimeZone != "" && tbl.TimeZone != "UTC" {
		if last != nil && last.String() == tbl.TimeZone {
			return last
		}
		if l, err := time.LoadLocation(tbl.TimeZone); err == nil {
			loc = l
		}
	}
	h.lastZone.Store(loc)
	return loc
}

// maxZones bounds the zones whose templates are kept (a fleet has one;
// it changes when a fare table of another zone is published).
const maxZones = 4

// pagesIn returns the templates that show times in loc, parsed the first
// time it is asked for.
func (h *Handler) pagesIn(loc *time.Location) map[string]*template.Template {
	if loc == time.UTC {
		return h.pages
	}
	h.zonesMu.Lock()
	defer h.zonesMu.Unlock()
	if p, ok := h.zones[loc.String()]; ok {
		return p
	}
	if h.zones == nil || len(h.zones) >= maxZones {
		h.zones = map[string]map[string]*template.Template{}
	}
	p := parseTemplates(h.cfg.Ledger.Currency(), loc)
	h.zones[loc.String()] = p
	return p
}

type errorData struct {
	Message string
	// Back is the console page (relative to the prefix) the refused form
	// was on, if known: the error page links back to it.
	Back string
}

// backFrom returns the console page a form was sent from (its Referer,
// which the console's same-origin policy sends), relative to the prefix,
// or "" if it is not one of this console's pages.
func (h *Handler) backFrom(r *http.Request) string {
	u, err := url.Parse(r.Referer())
	if err != nil || u.Host != r.Host || !strings.HasPrefix(u.Path, h.cfg.Prefix) {
		return ""
	}
	back := strings.TrimPrefix(u.Path, h.cfg.Prefix)
	if strings.HasPrefix(back, "act/") {
		return ""
	}
	if u.RawQuery != "" {
		back += "?" + u.RawQuery
	}
	return back
}

// errorPage renders a short page saying what went wrong.
func (h *Handler) errorPage(w http.ResponseWriter, r *http.Request, s *sess, status int, title, msg string) {
	h.render(w, r, status, "error", page{Title: title, S: s, Currency: "-", Data: errorData{Message: msg}})
}

// fail renders a server error (logged).
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, s *sess, err error) {
	if api.ClientGone(r, err) {
		return // nobody to show it to
	}
	h.log.Error("console: page failed", "path", api.ClipPath(r.URL.Path), "err", err)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(r.Context().Err(), context.DeadlineExceeded) {
		h.errorPage(w, r, s, http.StatusServiceUnavailable, "Ledger too slow",
			fmt.Sprintf("The ledger did not answer within %s (locked or overloaded?); try again, and see the server log.", fmtDur(h.cfg.PageTimeout)))
		return
	}
	if h.ledgerDown(w, r, s) {
		return
	}
	h.errorPage(w, r, s, http.StatusInternalServerError, "Server error", "This page could not be read from the ledger; see the server log.")
}

// ledgerPingTimeout bounds the ping that tells a database out of reach
// from a fault of the page.
const ledgerPingTimeout = 3 * time.Second

// ledgerDown answers 503 "Database unreachable" when the ledger's
// database does not answer a ping (PostgreSQL stopped or cut off, a
// SQLite file gone), and reports whether it did. The console said
// "Server error: The session could not be read" or "This page could not
// be read from the ledger" while its database was down, and showed the
// broker's link but never the database's.
func (h *Handler) ledgerDown(w http.ResponseWriter, r *http.Request, s *sess) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), ledgerPingTimeout)
	defer cancel()
	err := h.cfg.Ledger.Ping(ctx)
	if err == nil {
		return false
	}
	h.log.Error("console: the ledger's database is out of reach", "err", err)
	h.errorPage(w, r, s, http.StatusServiceUnavailable, "Database unreachable",
		"This server cannot reach its ledger database ("+h.cfg.Ledger.Backend()+"), so nothing can be shown or changed. "+
			"Check that the database is running and reachable from this server (the --db address), and see the server log; "+
			"the console works again by itself once the database answers.")
	return true
}

// refreshOf reads the ?refresh=N seconds of a page (5 to 600; else none).
func refreshOf(r *http.Request) int { return refreshSeconds(r.URL.Query()) }

func refreshSeconds(v url.Values) int {
	n, err := strconv.Atoi(v.Get("refresh"))
	if err != nil || n < 5 || n > 600 {
		return 0
	}
	return n
}

// --- Overview ----------------------------------------------------------------

type overviewData struct {
	States        map[string]int
	Problems      int
	Devices       int
	Today         string
	TodayRevenue  ledger.DaySummary
	Computed      time.Time
	Flags, Notes  []ledger.ReasonCount
	Quarantined   int64
	Held          int64
	Versions      versions
	DenyEntries   int64
	Audit         []ledger.AuditEntry
	Lag1h         lagFigures
	FlaggedPerDay int64
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request, s *sess) {
	ctx := r.Context()
	rows, cur, err := h.readFleet(ctx, false)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d := overviewData{States: map[string]int{}, Devices: len(rows), Versions: cur}
	for _, row := range rows {
		d.States[row.State]++
		if len(row.Problems) > 0 {
			d.Problems++
		}
	}
	now := h.cfg.Now()
	if day, err := h.cfg.Ledger.ServiceDayAt(ctx, now); err == nil {
		d.Today = day // the day of the taps made now
	}
	// Today's revenue and the last hour's settlement lag, read together:
	// they agree (a tap counted in one is counted in the other).
	rev, lag, err := h.cfg.Ledger.Summaries(ctx, d.Today, d.Today, now.Add(-time.Hour))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	for _, x := range rev {
		d.TodayRevenue.Add(x)
		if x.Computed.After(d.Computed) {
			d.Computed = x.Computed
		}
	}
	if d.Flags, d.Notes, err = h.cfg.Ledger.FlagCounts(ctx, now.Add(-24*time.Hour)); err != nil {
		h.fail(w, r, s, err)
		return
	}
	q, held, err := h.cfg.Ledger.AsideCounts(ctx)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d.Quarantined, d.Held = sumCounts(q), sumCounts(held)
	if _, d.DenyEntries, err = h.cfg.Ledger.DenyListPage(ctx, ledger.DenyEntry{}, 1); err != nil {
		h.fail(w, r, s, err)
		return
	}
	if d.Audit, err = h.cfg.Ledger.AuditLog(ctx, 0, 8); err != nil {
		h.fail(w, r, s, err)
		return
	}
	d.Lag1h = figures(lag)
	h.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", S: s, Refresh: refreshOf(r), Data: d})
}

func sumCounts(rs []ledger.ReasonCount) int64 {
	var n int64
	for _, r := range rs {
		n += r.Count
	}
	return n
}

// --- Fleet -------------------------------------------------------------------

type fleetData struct {
	Q        fleetQuery
	Rows     []deviceRow
	Total    int // devices matching
	All      int
	Page     int
	Pages    int
	Versions versions
	States   []string
	Sorts    []sortLink
	PrevURL  string
	NextURL  string
	// The links that start and stop the page's auto-refresh, keeping its
	// filters and sort (whole URLs: a query string put after "?" in the
	// template is escaped as one value).
	RefreshURL, StopRefreshURL string
}

type sortLink struct {
	Key, Label, URL string
	Active, Desc    bool
}

func (h *Handler) fleetPage(w http.ResponseWriter, r *http.Request, s *sess) {
	rows, cur, err := h.readFleet(r.Context(), true)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	q := parseFleetQuery(r.URL.Query())
	match := q.apply(rows)
	d := fleetData{Q: q, Total: len(match), All: len(rows), Versions: cur, States: fleetStates}
	d.Pages = max(1, (len(match)+fleetPageSize-1)/fleetPageSize)
	d.Page = min(q.Page, d.Pages)
	lo := (d.Page - 1) * fleetPageSize
	d.Rows = match[lo:min(lo+fleetPageSize, len(match))]
	base := h.cfg.Prefix + "fleet?"
	for _, k := range [][2]string{{"id", "Device"}, {"state", "State"}, {"heard", "Last heard"}, {"queue", "Queue"},
		{"oldest", "Oldest unsent"}, {"clock", "Clock offset"}, {"route", "Route / vehicle"}, {"software", "Software"},
		{"cert", "Cert ends"}} {
		l := sortLink{Key: k[0], Label: k[1], Active: q.Sort == k[0], Desc: q.Sort == k[0] && q.Desc}
		// A click on the sorted column turns it round; on another, it
		// sorts that one its natural way (newest, largest first for
		// times and sizes).
		desc := slices.Contains(descFirst, k[0])
		if l.Active {
			desc = !q.Desc
		}
		dir := ""
		if desc {
			dir = "desc"
		}
		l.URL = base + q.values("sort", k[0], "dir", dir, "page", "").Encode()
		d.Sorts = append(d.Sorts, l)
	}
	if d.Page > 1 {
		d.PrevURL = base + q.values("page", strconv.Itoa(d.Page-1)).Encode()
	}
	if d.Page < d.Pages {
		d.NextURL = base + q.values("page", strconv.Itoa(d.Page+1)).Encode()
	}
	d.StopRefreshURL = base + q.values("refresh", "").Encode()
	d.RefreshURL = base + q.values("refresh", "15").Encode()
	h.render(w, r, http.StatusOK, "fleet", page{Title: "Fleet", Nav: "fleet", S: s, Refresh: refreshOf(r), Data: d})
}

type deviceData struct {
	Row      deviceRow
	Versions versions
	Taps     []ledger.TapRow
	History  []ledger.DeviceEvent
	// Assigned is the device's newest assignment (nil: never assigned):
	// the route it is to record, which its last tap may not show yet.
	Assigned *ledger.Assignment
}

func (h *Handler) devicePage(w http.ResponseWriter, r *http.Request, s *sess) {
	ctx := r.Context()
	id := r.PathValue("id")
	dev, err := h.cfg.Ledger.Device(ctx, id)
	if errors.Is(err, ledger.ErrNotFound) || errors.Is(err, ledger.ErrInvalid) {
		h.errorPage(w, r, s, http.StatusNotFound, "No such device", "No device "+id+" is registered.")
		return
	}
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	cur, err := h.currentVersions(ctx)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	taps, err := h.cfg.Ledger.DeviceTaps(ctx, id, 50)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	fd := ledger.FleetDevice{Device: dev}
	if len(taps) > 0 {
		fd.Route, fd.Vehicle, fd.LastTap = taps[0].Route, taps[0].Vehicle, taps[0].Time
	}
	d := deviceData{Row: h.rowOf(fd, cur, h.zone(ctx)), Versions: cur, Taps: taps}
	if d.History, err = h.cfg.Ledger.DeviceHistory(ctx, id); err != nil {
		h.fail(w, r, s, err)
		return
	}
	as, err := h.cfg.Ledger.DeviceAssignments(ctx, id)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	if len(as) > 0 {
		d.Assigned = &as[0]
	}
	h.render(w, r, http.StatusOK, "device", page{Title: "Device " + id, Nav: "fleet", S: s, Refresh: refreshOf(r), Data: d})
}

// --- Money -------------------------------------------------------------------

type moneyData struct {
	Days      int
	From, To  string
	ByDay     []ledger.DaySummary // one per day, oldest first (routes summed)
	ByRoute   []ledger.DaySummary // one per route over the range (Day empty), most charged first
	Total     ledger.DaySummary
	Computed  time.Time
	Revenue   template.HTML // chart
	Routes    template.HTML // chart
	Corr      template.HTML // chart
	LagChart  template.HTML
	RateChart template.HTML
	Lag24h    lagFigures
	Lag1h     lagFigures
	LagHours  []lagHour
	Zone      string // the charts' hours' (the fleet's: zone)
	Flags     []reasonAdvice
	Notes     []reasonAdvice
	Aside     []reasonAdvice
}

// lagFigures are settlement-lag percentiles over some slots.
type lagFigures struct {
	Taps               int64
	P50, P90, P99, Max time.Duration
	Mean               time.Duration
	HasTaps            bool
	Computed           time.Time
}

func figures(slots []ledger.LagSummary) lagFigures {
	var f lagFigures
	var sum time.Duration
	for _, s := range slots {
		f.Taps += s.Taps
		sum += s.Sum
		f.Max = max(f.Max, s.Max)
		if s.Computed.After(f.Computed) {
			f.Computed = s.Computed
		}
	}
	if f.Taps == 0 {
		return f
	}
	f.HasTaps = true
	f.P50, f.P90, f.P99 = ledger.Quantile(slots, 0.5), ledger.Quantile(slots, 0.9), ledger.Quantile(slots, 0.99)
	f.Mean = sum / time.Duration(f.Taps)
	return f
}

type lagHour struct {
	Start time.Time
	lagFigures
}

var dayChoices = []int{7, 30, 60}

func (h *Handler) moneyPage(w http.ResponseWriter, r *http.Request, s *sess) {
	ctx := r.Context()
	days, _ := strconv.Atoi(r.URL.Query().Get("days"))
	if !slices.Contains(dayChoices, days) {
		days = 30
	}
	now := h.cfg.Now()
	d := moneyData{Days: days}
	tbl, err := h.cfg.Ledger.LatestFareTable(ctx)
	if err != nil && !errors.Is(err, ledger.ErrNoFareTable) {
		h.fail(w, r, s, err)
		return
	}
	var dayList []string
	if tbl != nil {
		dayList = h.recentDays(ctx, tbl, now, days)
		d.From, d.To = dayList[0], dayList[len(dayList)-1]
	}
	// The revenue and the settlement lag, read together: they agree.
	since := now.Add(-24 * time.Hour).Truncate(time.Hour)
	rev, lag, err := h.cfg.Ledger.Summaries(ctx, d.From, d.To, since)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	if tbl != nil {
		t := ledger.Totals(rev)
		d.Total, d.Computed, d.ByRoute = t.Total, t.Computed, t.Routes
		byDay := map[string]ledger.DaySummary{}
		for _, x := range t.Days {
			byDay[x.Day] = x
		}
		for _, day := range dayList {
			x, ok := byDay[day]
			if !ok {
				x = ledger.DaySummary{Day: day}
			}
			d.ByDay = append(d.ByDay, x)
		}
		slices.SortFunc(d.ByRoute, func(a, b ledger.DaySummary) int {
			if a.Charged != b.Charged {
				return int(b.Charged - a.Charged)
			}
			return strings.Compare(a.Route, b.Route)
		})
		d.Revenue = revenueChart(d.ByDay, tbl.Currency)
		d.Routes = routeChart(d.ByRoute, tbl.Currency)
		d.Corr = correctionsChart(d.ByDay, tbl.Currency)
	}
	d.Lag24h = figures(lag)
	var lastHour []ledger.LagSummary
	for _, l := range lag {
		if !l.Start.Before(now.Add(-time.Hour)) {
			lastHour = append(lastHour, l)
		}
	}
	d.Lag1h = figures(lastHour)
	for t := since; !t.After(now); t = t.Add(time.Hour) {
		var in []ledger.LagSummary
		for _, l := range lag {
			if !l.Start.Before(t) && l.Start.Before(t.Add(time.Hour)) {
				in = append(in, l)
			}
		}
		d.LagHours = append(d.LagHours, lagHour{Start: t, lagFigures: figures(in)})
	}
	loc := h.zone(ctx)
	d.Zone = loc.String()
	d.LagChart = lagChart(d.LagHours, loc)
	d.RateChart = rateChart(d.LagHours, loc)
	flags, notes, err := h.cfg.Ledger.FlagCounts(ctx, now.AddDate(0, 0, -days))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d.Flags, d.Notes = advise(flags, flagAdvice, unknownAdvice), advise(notes, noteAdvice, unknownNoteAdvice)
	q, held, err := h.cfg.Ledger.AsideCounts(ctx)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	for _, a := range advise(q, quarantineAdvice, defaultQuarantine) {
		a.Kind = "quarantine"
		d.Aside = append(d.Aside, a)
	}
	for _, a := range advise(held, heldAdvice, unknownAdvice) {
		a.Kind = "held"
		d.Aside = append(d.Aside, a)
	}
	h.render(w, r, http.StatusOK, "money", page{Title: "Money", Nav: "money", S: s, Data: d})
}

func currencyOf(t *fare.Table) string {
	if t == nil {
		return ""
	}
	return t.Currency
}

// serviceDays lists the n service days up to the one now is in, oldest
// first.
func serviceDays(t *fare.Table, now time.Time, n int) []string {
	out := make([]string, 0, n)
	seen := map[string]bool{}
	for at := now; len(out) < n; at = at.Add(-12 * time.Hour) {
		d := t.ServiceDay(at)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	slices.Reverse(out)
	return out
}

// recentDays is serviceDays ending at the day of the taps made now
// (ledger.ServiceDayAt): just after a fare change that moves the day's
// start later the latest table alone puts now on the day before.
func (h *Handler) recentDays(ctx context.Context, t *fare.Table, now time.Time, n int) []string {
	days := serviceDays(t, now, n)
	if today, err := h.cfg.Ledger.ServiceDayAt(ctx, now); err == nil && today > days[len(days)-1] {
		days = append(days[1:], today)
	}
	return days
}

// --- Shops -------------------------------------------------------------------

// shopDays is how many service days the shops page sums.
const shopDays = 30

type shopsData struct {
	Days     int
	From, To string
	TimeZone string // and DayStart: the service days'
	DayStart string
	// Merchants are the page's shops, over the days, by merchant id;
	// ByDay their days, by day, then merchant.
	Merchants []ledger.MerchantDay
	ByDay     []ledger.MerchantDay
	// Total is over every shop (or the one Merchant names), Shops how many.
	Total ledger.MerchantDay
	Shops int
	// Merchant is the one shop asked for ("": all); Page of Pages the
	// page shown, PrevURL and NextURL the pages around it ("": none).
	Merchant         string
	Page, Pages      int
	PrevURL, NextURL string
}

// shopsPerPage is how many shops the shops page shows at once (with their
// days: at most shopsPerPage × shopDays rows).
const shopsPerPage = 100

// shopsPage shows what each shop (merchant) took online with riders'
// codes and gave back, per service day of the last shopDays (the money
// page's days), and their totals: what the operator pays each shop out
// (GET /v1/merchants/settlement).
func (h *Handler) shopsPage(w http.ResponseWriter, r *http.Request, s *sess) {
	ctx := r.Context()
	now := h.cfg.Now()
	tbl, err := h.cfg.Ledger.LatestFareTable(ctx)
	if err != nil && !errors.Is(err, ledger.ErrNoFareTable) {
		h.fail(w, r, s, err)
		return
	}
	// The ledger's days without a fare table: UTC dates.
	from, to := now.UTC().AddDate(0, 0, 1-shopDays).Format(time.DateOnly), now.UTC().Format(time.DateOnly)
	if tbl != nil {
		days := h.recentDays(ctx, tbl, now, shopDays)
		from, to = days[0], days[len(days)-1]
	}
	q := r.URL.Query()
	merchant := strings.TrimSpace(q.Get("merchant"))
	pageN := 1
	if v := q.Get("page"); v != "" {
		if pageN, err = strconv.Atoi(v); err != nil || pageN < 1 {
			h.errorPage(w, r, s, http.StatusBadRequest, "Bad request", "?page= is a page number, 1 or more.")
			return
		}
	}
	st, err := h.cfg.Ledger.MerchantSettlement(ctx, from, to, merchant)
	if errors.Is(err, ledger.ErrInvalid) {
		h.errorPage(w, r, s, http.StatusBadRequest, "Bad request", "?merchant= is a shop's merchant id.")
		return
	}
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	all := st.Merchants()
	d := shopsData{Days: shopDays, From: st.From, To: st.To, TimeZone: st.TimeZone, DayStart: st.DayStart,
		Total: st.Total(), Shops: len(all), Merchant: merchant, Pages: max(1, (len(all)+shopsPerPage-1)/shopsPerPage)}
	d.Page = min(pageN, d.Pages)
	d.Merchants = all[min(len(all), (d.Page-1)*shopsPerPage):min(len(all), d.Page*shopsPerPage)]
	shown := map[string]bool{}
	for _, m := range d.Merchants {
		shown[m.MerchantID] = true
	}
	for _, day := range st.Days {
		if shown[day.MerchantID] {
			d.ByDay = append(d.ByDay, day)
		}
	}
	pageURL := func(n int) string {
		return h.cfg.Prefix + "shops?page=" + strconv.Itoa(n)
	}
	if d.Page > 1 {
		d.PrevURL = pageURL(d.Page - 1)
	}
	if d.Page < d.Pages {
		d.NextURL = pageURL(d.Page + 1)
	}
	h.render(w, r, http.StatusOK, "shops", page{Title: "Shops", Nav: "shops", S: s, Data: d})
}

// --- Flagged and aside -------------------------------------------------------

type flaggedData struct {
	Flag, Note   string
	Days         int
	Flags, Notes []reasonAdvice
	Taps         []ledger.TapRow
}

func (h *Handler) flaggedPage(w http.ResponseWriter, r *http.Request, s *sess) {
	ctx := r.Context()
	d := flaggedData{Flag: r.URL.Query().Get("flag"), Note: r.URL.Query().Get("note"), Days: 30}
	since := h.cfg.Now().AddDate(0, 0, -d.Days)
	flags, notes, err := h.cfg.Ledger.FlagCounts(ctx, since)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d.Flags, d.Notes = advise(flags, flagAdvice, unknownAdvice), advise(notes, noteAdvice, unknownNoteAdvice)
	if !validReason(d.Flag) || !validReason(d.Note) {
		h.errorPage(w, r, s, http.StatusBadRequest, "Bad request", "A flag or note is a word of a-z, 0-9 and '_'.")
		return
	}
	if d.Note != "" {
		d.Taps, err = h.cfg.Ledger.NotedTaps(ctx, d.Note, since, 100)
	} else {
		d.Taps, err = h.cfg.Ledger.FlaggedTaps(ctx, d.Flag, 100)
	}
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.render(w, r, http.StatusOK, "flagged", page{Title: "Flagged taps", Nav: "flagged", S: s, Data: d})
}

func validReason(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

type asideData struct {
	Held        bool
	Reason      string
	Quarantined []reasonAdvice
	HeldCounts  []reasonAdvice
	Records     []ledger.AsideRecord
	// NextURL is the page of older records ("": none), FirstURL the
	// newest ("": these are they).
	NextURL, FirstURL string
}

// asidePerPage is how many records kept aside a page lists.
const asidePerPage = 100

func (h *Handler) asidePage(w http.ResponseWriter, r *http.Request, s *sess) {
	ctx := r.Context()
	v := r.URL.Query()
	d := asideData{Held: v.Get("kind") == "held", Reason: v.Get("reason")}
	if len(d.Reason) > 256 {
		d.Reason = ""
	}
	// The page before: older than the last record listed (its time and
	// key: records held in one batch share a time). The list showed the
	// newest 100 alone, with no way to the rest.
	var before ledger.AsideRecord
	if v.Has("before_ns") {
		ns, err1 := strconv.ParseInt(v.Get("before_ns"), 10, 64)
		seq, err2 := strconv.ParseUint(v.Get("before_seq"), 10, 64) // any: a damaged device's quarantined record may be above 2^63-1
		if err1 != nil || err2 != nil || ns <= 0 || len(v.Get("before_device")) > 256 || len(v.Get("before_epoch")) > 256 {
			h.errorPage(w, r, s, http.StatusBadRequest, "Bad request",
				"?before_ns=, before_device=, before_epoch= and before_seq= name the last record of the page before (follow the page's Older link).")
			return
		}
		before = ledger.AsideRecord{Received: time.Unix(0, ns), DeviceID: v.Get("before_device"), Epoch: v.Get("before_epoch"), Seq: seq}
	}
	q, held, err := h.cfg.Ledger.AsideCounts(ctx)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d.Quarantined, d.HeldCounts = advise(q, quarantineAdvice, defaultQuarantine), advise(held, heldAdvice, unknownAdvice)
	if d.Records, err = h.cfg.Ledger.AsideBefore(ctx, d.Held, d.Reason, before, asidePerPage+1); err != nil {
		h.fail(w, r, s, err)
		return
	}
	self := url.Values{}
	if d.Held {
		self.Set("kind", "held")
	}
	if d.Reason != "" {
		self.Set("reason", d.Reason)
	}
	if !before.Received.IsZero() {
		d.FirstURL = h.cfg.Prefix + "aside"
		if len(self) > 0 {
			d.FirstURL += "?" + self.Encode()
		}
	}
	if len(d.Records) > asidePerPage {
		d.Records = d.Records[:asidePerPage]
		last := d.Records[asidePerPage-1]
		self.Set("before_ns", strconv.FormatInt(last.Received.UnixNano(), 10))
		self.Set("before_device", last.DeviceID)
		self.Set("before_epoch", last.Epoch)
		self.Set("before_seq", strconv.FormatUint(last.Seq, 10))
		d.NextURL = h.cfg.Prefix + "aside?" + self.Encode()
	}
	h.render(w, r, http.StatusOK, "aside", page{Title: "Records kept aside", Nav: "flagged", S: s, Data: d})
}

// --- Accounts and the deny list ----------------------------------------------

func (h *Handler) accountSearch(w http.ResponseWriter, r *http.Request, s *sess) {
	q := strings.TrimSpace(r.URL.Query().Get("id"))
	if q == "" {
		h.render(w, r, http.StatusOK, "accounts", page{Title: "Accounts", Nav: "accounts", S: s})
		return
	}
	id, err := strconv.ParseUint(q, 10, 64)
	if err != nil || id == 0 || id > math.MaxInt64 {
		h.render(w, r, http.StatusBadRequest, "accounts", page{Title: "Accounts", Nav: "accounts", S: s, Data: "An account number is a positive integer."})
		return
	}
	http.Redirect(w, r, h.cfg.Prefix+"accounts/"+strconv.FormatUint(id, 10), http.StatusSeeOther)
}

type accountData struct {
	Account     ledger.Account
	Entries     []ledger.DenyEntry
	Credentials []credentialRow
	Postings    []ledger.Posting
	Rides       []ledger.Ride
	// PostingsOlder: the postings shown are a page back, not the newest;
	// OlderPostingsURL the next page back ("" on the last).
	PostingsOlder    bool
	OlderPostingsURL string
	// CredentialsOlder, OlderCredentialsURL: the same for the credentials.
	CredentialsOlder    bool
	OlderCredentialsURL string
}

type credentialRow struct {
	ledger.Credential
	Denied  []ledger.DenyEntry
	Expired bool
}

func (h *Handler) accountPage(w http.ResponseWriter, r *http.Request, s *sess) {
	ctx := r.Context()
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 || id > math.MaxInt64 {
		h.errorPage(w, r, s, http.StatusBadRequest, "Bad account number", "An account number is a positive integer.")
		return
	}
	var d accountData
	d.Account, err = h.cfg.Ledger.Account(ctx, id)
	if errors.Is(err, ledger.ErrNotFound) {
		h.errorPage(w, r, s, http.StatusNotFound, "No such account", fmt.Sprintf("There is no account %d.", id))
		return
	}
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	if d.Entries, err = h.cfg.Ledger.DenyEntries(ctx, id); err != nil {
		h.fail(w, r, s, err)
		return
	}
	// The newest credentials (every one not yet expired among them: a
	// wallet renews twice a day, so an account holds hundreds a year), or
	// those before ?credentials_before=; the link under the table pages
	// back to the first.
	credsPerPage := ledger.MaxUnexpiredCredentials
	credsBefore, _ := strconv.ParseUint(r.URL.Query().Get("credentials_before"), 10, 32)
	creds, err := h.cfg.Ledger.CredentialsBefore(ctx, id, uint32(credsBefore), credsPerPage+1)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d.CredentialsOlder = credsBefore != 0
	if len(creds) > credsPerPage {
		creds = creds[:credsPerPage]
		d.OlderCredentialsURL = fmt.Sprintf("%saccounts/%d?credentials_before=%d#credentials", h.cfg.Prefix, id,
			creds[credsPerPage-1].Serial)
	}
	now := h.cfg.Now()
	for _, c := range creds {
		row := credentialRow{Credential: c, Expired: now.After(c.NotAfter)}
		for _, e := range d.Entries {
			if e.Serial == c.Serial {
				row.Denied = append(row.Denied, e)
			}
		}
		d.Credentials = append(d.Credentials, row)
	}
	// The newest 50 postings, or the 50 before ?postings_before= (the
	// link under the table pages back through the whole statement).
	const perPage = 50
	before, _ := strconv.ParseUint(r.URL.Query().Get("postings_before"), 10, 63)
	if d.Postings, err = h.cfg.Ledger.PostingsBefore(ctx, id, before, perPage+1); err != nil {
		h.fail(w, r, s, err)
		return
	}
	d.PostingsOlder = before != 0
	if len(d.Postings) > perPage {
		d.Postings = d.Postings[:perPage]
		d.OlderPostingsURL = fmt.Sprintf("%saccounts/%d?postings_before=%d#postings", h.cfg.Prefix, id,
			d.Postings[perPage-1].Seq)
	}
	if d.Rides, err = h.cfg.Ledger.Rides(ctx, id, 50); err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.render(w, r, http.StatusOK, "account", page{Title: fmt.Sprintf("Account %d", id), Nav: "accounts", S: s,
		Currency: d.Account.Currency, Data: d})
}

type denyListData struct {
	Version uint64
	Total   int64
	Entries []ledger.DenyEntry
	// NextURL is the next page ("": this is the last), FirstURL the first
	// ("": this is it).
	NextURL, FirstURL string
}

func (h *Handler) denyListPage(w http.ResponseWriter, r *http.Request, s *sess) {
	ctx := r.Context()
	var after ledger.DenyEntry
	q := r.URL.Query()
	after.Account, _ = strconv.ParseUint(q.Get("after"), 10, 64)
	serial, _ := strconv.ParseUint(q.Get("serial"), 10, 32)
	after.Serial, after.Reason = uint32(serial), q.Get("reason")
	if len(after.Reason) > 64 {
		after.Reason = ""
	}
	var d denyListData
	var err error
	if d.Version, err = h.cfg.Ledger.DenyVersion(ctx); err != nil {
		h.fail(w, r, s, err)
		return
	}
	// One more than a page is read: a page of exactly the entries left
	// offered "More", which opened a page saying "The deny list is
	// empty." under its count of them.
	const per = 200
	if d.Entries, d.Total, err = h.cfg.Ledger.DenyListPage(ctx, after, per+1); err != nil {
		h.fail(w, r, s, err)
		return
	}
	if after.Account != 0 || after.Serial != 0 || after.Reason != "" {
		d.FirstURL = h.cfg.Prefix + "denylist"
	}
	if len(d.Entries) > per {
		d.Entries = d.Entries[:per]
		last := d.Entries[len(d.Entries)-1]
		d.NextURL = h.cfg.Prefix + "denylist?" + url.Values{"after": {strconv.FormatUint(last.Account, 10)},
			"serial": {strconv.FormatUint(uint64(last.Serial), 10)}, "reason": {last.Reason}}.Encode()
	}
	h.render(w, r, http.StatusOK, "denylist", page{Title: "Deny list", Nav: "denylist", S: s, Data: d})
}

// --- Fares, keys, tokens, audit ----------------------------------------------

type faresData struct {
	Table  *fare.Table
	JSON   string
	Routes []fareRouteRow
}

type fareRouteRow struct {
	Route string
	Fares []string // by profile: adult, child, senior, student
}

var profiles = []string{"adult", "child", "senior", "student"}

func (h *Handler) faresPage(w http.ResponseWriter, r *http.Request, s *sess) {
	var d faresData
	t, err := h.cfg.Ledger.LatestFareTable(r.Context())
	if err != nil && !errors.Is(err, ledger.ErrNoFareTable) {
		h.fail(w, r, s, err)
		return
	}
	if t != nil {
		d.Table = t
		b, _ := t.Marshal()
		d.JSON = string(b)
		d.Routes = fareRows(t)
	}
	h.render(w, r, http.StatusOK, "fares", page{Title: "Fares", Nav: "fares", S: s, Currency: currencyOf(t), Data: d})
}

func fareRows(t *fare.Table) []fareRouteRow {
	var out []fareRouteRow
	routes := make([]string, 0, len(t.Fares))
	for r := range t.Fares {
		routes = append(routes, r)
	}
	slices.Sort(routes)
	for _, route := range routes {
		row := fareRouteRow{Route: route}
		for _, p := range profiles {
			if v, ok := t.Fares[route][p]; ok {
				row.Fares = append(row.Fares, feedback.FormatNumber(v, t.Currency))
			} else {
				row.Fares = append(row.Fares, "")
			}
		}
		out = append(out, row)
	}
	return out
}

type keysData struct {
	Version uint64
	Keys    []keyRow
}

type keyRow struct {
	ID                  uint32
	Public              string
	NotBefore, NotAfter time.Time
	Current             bool
}

func (h *Handler) keysPage(w http.ResponseWriter, r *http.Request, s *sess) {
	kr := h.cfg.Keys.Keyring()
	d := keysData{Version: kr.Version()}
	signing, _, _ := h.cfg.Keys.SigningKey(h.cfg.Now())
	for _, k := range kr.Keys() {
		d.Keys = append(d.Keys, keyRow{ID: k.ID, Public: fmt.Sprintf("%x", k.Public), NotBefore: k.NotBefore, NotAfter: k.NotAfter,
			Current: k.ID == signing})
	}
	h.render(w, r, http.StatusOK, "keys", page{Title: "Issuer keys", Nav: "keys", S: s, Data: d})
}

type tokensData struct {
	Tokens []ledger.APIToken
	Roles  []string
	// Q is the filter shown (its After unused); FirstURL the filter's
	// first page, NextURL the page after this one ("": none).
	Q                 ledger.TokenFilter
	FirstURL, NextURL string
}

// tokensPerPage is the tokens page's size.
const tokensPerPage = 100

// tokenRoles are the roles the tokens page filters by.
var tokenRoles = []string{ledger.RoleOperator, ledger.RolePayments, ledger.RoleMerchant, ledger.RoleAuditor}

// parseTokensQuery reads the tokens page's query: a known role or none,
// a merchant id and a cursor of bounded length; bad is what is wrong ("":
// nothing).
func parseTokensQuery(q url.Values) (f ledger.TokenFilter, bad string) {
	f = ledger.TokenFilter{After: q.Get("after"), Role: q.Get("role"), Merchant: strings.TrimSpace(q.Get("merchant")),
		InForce: q.Get("in_force") == "1", Limit: tokensPerPage}
	switch {
	case f.Role != "" && !slices.Contains(tokenRoles, f.Role):
		return f, "?role= is one of " + strings.Join(tokenRoles, ", ") + "."
	case len(f.After) > 64:
		return f, "?after= is the id of a token (the last one of the page before)."
	case len(f.Merchant) > 256:
		return f, "?merchant= is a shop's merchant id."
	}
	return f, ""
}

func (h *Handler) tokensPage(w http.ResponseWriter, r *http.Request, s *sess) {
	f, bad := parseTokensQuery(r.URL.Query())
	if bad != "" {
		h.errorPage(w, r, s, http.StatusBadRequest, "Bad request", bad)
		return
	}
	roles := tokenRoles
	ts, more, err := h.cfg.Ledger.TokensPage(r.Context(), f)
	if errors.Is(err, ledger.ErrNotFound) {
		h.errorPage(w, r, s, http.StatusBadRequest, "Bad request", "?after= is the id of a token (the last one of the page before).")
		return
	}
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d := tokensData{Tokens: ts, Roles: roles, Q: f}
	v := url.Values{}
	if f.Role != "" {
		v.Set("role", f.Role)
	}
	if f.Merchant != "" {
		v.Set("merchant", f.Merchant)
	}
	if f.InForce {
		v.Set("in_force", "1")
	}
	self := h.cfg.Prefix + "tokens"
	if f.After != "" {
		d.FirstURL = self
		if len(v) > 0 {
			d.FirstURL += "?" + v.Encode()
		}
	}
	if more {
		v.Set("after", ts[len(ts)-1].ID)
		d.NextURL = self + "?" + v.Encode()
	}
	h.render(w, r, http.StatusOK, "tokens", page{Title: "API tokens", Nav: "tokens", S: s, Data: d})
}

type tokenPaymentsData struct {
	Token    string
	Payments []ledger.PaymentOrder
	NextURL  string
	// Refunds are the refunds it made (a merchant token may refund any of
	// its shop's payments), newest first; RefundsNextURL the older ones.
	Refunds        []ledger.PaymentRefund
	RefundsNextURL string
}

// tokenPaymentsPage lists the online payments a token made and the
// refunds it made: a shop's leaked till token's orders, told from its other
// tills', and what it gave back.
func (h *Handler) tokenPaymentsPage(w http.ResponseWriter, r *http.Request, s *sess) {
	id := r.PathValue("id")
	var before uint64
	if v := r.URL.Query().Get("before"); v != "" {
		var err error
		if before, err = strconv.ParseUint(v, 10, 64); err != nil {
			h.errorPage(w, r, s, http.StatusBadRequest, "Bad request", "?before= is a payment id, a whole number.")
			return
		}
	}
	var refundsBefore int64
	if v := r.URL.Query().Get("refunds_before"); v != "" {
		var err error
		if refundsBefore, err = strconv.ParseInt(v, 10, 64); err != nil || refundsBefore < 0 {
			h.errorPage(w, r, s, http.StatusBadRequest, "Bad request", "?refunds_before= is a time in unix nanoseconds, a whole number.")
			return
		}
	}
	if err := api.KnownToken(r.Context(), h.cfg.Ledger, id); errors.Is(err, ledger.ErrNotFound) {
		h.errorPage(w, r, s, http.StatusNotFound, "No such token", "No API token "+id+" was ever made (the tokens page lists them).")
		return
	} else if err != nil {
		h.fail(w, r, s, err)
		return
	}
	ps, err := h.cfg.Ledger.PaymentsByToken(r.Context(), id, before, ledger.MaxPaymentsPage)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	rs, err := h.cfg.Ledger.RefundsByToken(r.Context(), id, refundsBefore, ledger.MaxPaymentsPage)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d := tokenPaymentsData{Token: id, Payments: ps, Refunds: rs}
	self := h.cfg.Prefix + "tokens/" + url.PathEscape(id) + "/payments"
	if len(ps) == ledger.MaxPaymentsPage {
		d.NextURL = self + "?before=" + strconv.FormatUint(ps[len(ps)-1].ID, 10)
	}
	if len(rs) >= ledger.MaxPaymentsPage {
		d.RefundsNextURL = self + "?refunds_before=" + strconv.FormatInt(rs[len(rs)-1].CreatedAt.UnixNano(), 10) + "#token-refunds"
	}
	h.render(w, r, http.StatusOK, "tokenpayments", page{Title: "Payments and refunds by token " + id, Nav: "tokens", S: s, Data: d})
}

type auditData struct {
	Entries []ledger.AuditEntry
	// NextURL is the older entries ("": none), FirstURL the newest ("":
	// these are they).
	NextURL, FirstURL string
}

func (h *Handler) auditPage(w http.ResponseWriter, r *http.Request, s *sess) {
	before, _ := strconv.ParseUint(r.URL.Query().Get("before"), 10, 64)
	// One more than a page is read, as for the deny list: a last page of
	// exactly 100 offered "Older entries" to a page of none.
	const per = 100
	es, err := h.cfg.Ledger.AuditLog(r.Context(), before, per+1)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d := auditData{Entries: es}
	if before != 0 {
		d.FirstURL = h.cfg.Prefix + "audit"
	}
	if len(es) > per {
		es = es[:per]
		d.Entries = es
		d.NextURL = h.cfg.Prefix + "audit?before=" + strconv.FormatUint(es[len(es)-1].ID, 10)
	}
	h.render(w, r, http.StatusOK, "audit", page{Title: "Audit trail", Nav: "audit", S: s, Data: d})
}
