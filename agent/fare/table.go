package fare

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	_ "time/tzdata" // validators often ship without /usr/share/zoneinfo

	"github.com/farego/farego/agent/jsonstrict"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
)

// MaxTableSize bounds a fare table document.
const MaxTableSize = 1 << 20

// DefaultRoute is the route key whose fares apply to routes without their own.
const DefaultRoute = "*"

// Table is a versioned fare table. It is immutable once parsed and safe for
// concurrent use.
type Table struct {
	Version  uint64 `json:"version"`
	Currency string `json:"currency"` // ISO 4217, e.g. "EUR"
	// TimeZone (IANA name) and ServiceDayStart ("HH:MM") define the service day.
	TimeZone        string `json:"timezone"`
	ServiceDayStart string `json:"service_day_start"`
	// Fares maps route → profile name → fare in minor units; route "*" is the default.
	Fares map[string]map[string]int64 `json:"fares"`
	// Routes, if set, lists every route the table serves (those in Fares
	// with their own fares, and those the default route's fares apply
	// to): a validator assigned a route not listed is out of service
	// rather than charging the default fare. Empty: the default applies
	// to every route.
	Routes []string `json:"routes,omitempty"`
	// Transfer: a ride starting within Window after the last full-fare ride costs Fare.
	Transfer *Transfer `json:"transfer,omitempty"`
	// DailyCap maps profile name → the most one account pays in a service day.
	DailyCap map[string]int64 `json:"daily_cap,omitempty"`

	loc      *time.Location
	dayStart time.Duration
	// zoneDefaulted: the document named no timezone and Parse took UTC.
	zoneDefaulted bool
}

// Transfer is the transfer rule.
type Transfer struct {
	Window Duration `json:"window"` // e.g. "60m"
	Fare   int64    `json:"fare"`   // what a transfer costs; 0 = free
}

// Duration is a time.Duration that reads and writes Go duration strings ("60m").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// String is the duration as Go writes it ("1h0m0s"), not its nanoseconds
// (a page printing a table's transfer window showed 3600000000000).
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"60m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

var (
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
	hhmmRE     = regexp.MustCompile(`^([01][0-9]|2[0-3]):([0-5][0-9])$`)
)

// ValidCurrency reports whether s has an ISO 4217 code's form (three
// capital letters): the rule for a fare table's currency, and the
// ledger's and its accounts' (ledger.ValidCurrency), which a table's must
// equal.
func ValidCurrency(s string) bool { return currencyRE.MatchString(s) }

// Parse reads and checks a fare table (JSON). Unknown fields, negative
// amounts, unknown profiles, a bad time zone or missing default fares are
// errors naming the field.
func Parse(data []byte) (*Table, error) {
	if len(data) > MaxTableSize {
		return nil, fmt.Errorf("%w: %d bytes is larger than %d", ErrInvalid, len(data), MaxTableSize)
	}
	// encoding/json would take the last of a key named twice — matched to
	// a field regardless of case ({"version":1,"Version":7}): a table read
	// one way by a reviewer and another by the ledger. Route and profile
	// names are map keys, matched exactly.
	if err := jsonstrict.DuplicateKeysExcept(data, "fares", "daily_cap"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var t Table
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalid)
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	return &t, nil
}

// Load reads a fare table file.
func Load(path string) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// A file that is not there is not an invalid table: say which.
		return nil, fmt.Errorf("fare table: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Marshal returns the table's JSON form.
func (t *Table) Marshal() ([]byte, error) { return json.MarshalIndent(t, "", "  ") }

func (t *Table) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
	}
	if t.Version == 0 {
		return bad("version must be at least 1")
	}
	if !ValidCurrency(t.Currency) {
		return bad("currency must be an ISO 4217 code like \"EUR\", got %q", t.Currency)
	}
	if t.TimeZone == "" {
		t.TimeZone, t.zoneDefaulted = "UTC", true
	}
	loc, err := time.LoadLocation(t.TimeZone)
	if err != nil {
		return bad("timezone %q: %v", t.TimeZone, err)
	}
	t.loc = loc
	if t.ServiceDayStart == "" {
		t.ServiceDayStart = "00:00"
	}
	m := hhmmRE.FindStringSubmatch(t.ServiceDayStart)
	if m == nil {
		return bad("service_day_start must be HH:MM, got %q", t.ServiceDayStart)
	}
	var h, min int
	fmt.Sscanf(m[1]+" "+m[2], "%d %d", &h, &min)
	t.dayStart = time.Duration(h)*time.Hour + time.Duration(min)*time.Minute
	if _, ok := t.Fares[DefaultRoute]; !ok {
		return bad("fares must have a default route %q", DefaultRoute)
	}
	for _, route := range sortedKeys(t.Fares) {
		if route == "" || len(route) > 64 {
			return bad("route name %q must be 1 to 64 characters", route)
		}
		if err := checkAmounts(t.Fares[route]); err != nil {
			return bad("fares[%q]: %v", route, err)
		}
	}
	listed := map[string]bool{}
	for _, r := range t.Routes {
		if err := record.CheckAssignment(r, ""); err != nil || r == DefaultRoute {
			return bad("routes: %q must be a route name of 1 to 64 characters", r)
		}
		if listed[r] {
			return bad("routes: %q appears twice", r)
		}
		listed[r] = true
	}
	for route := range t.Fares {
		if len(t.Routes) > 0 && route != DefaultRoute && !listed[route] {
			return bad("fares[%q]: the route is not in routes", route)
		}
	}
	for _, p := range []paycode.Profile{paycode.Adult, paycode.Child, paycode.Senior, paycode.Student} {
		if _, ok := t.Fares[DefaultRoute][p.String()]; !ok {
			return bad("fares[%q] has no fare for profile %q", DefaultRoute, p)
		}
	}
	if t.Transfer != nil {
		if t.Transfer.Window <= 0 || time.Duration(t.Transfer.Window) > 24*time.Hour {
			return bad("transfer.window must be between 0 and 24h, got %s", time.Duration(t.Transfer.Window))
		}
		if t.Transfer.Fare < 0 {
			return bad("transfer.fare must not be negative")
		}
	}
	if err := checkAmounts(t.DailyCap); err != nil {
		return bad("daily_cap: %v", err)
	}
	return nil
}

func checkAmounts(m map[string]int64) error {
	for _, p := range sortedKeys(m) {
		if _, err := paycode.ParseProfile(p); err != nil {
			return fmt.Errorf("unknown profile %q (want adult, child, senior or student)", p)
		}
		if v := m[p]; v < 0 || v > 1_000_000_00 {
			return fmt.Errorf("%s: amount %d out of range", p, v)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Fare returns the base fare of a ride on route for profile: the route's own
// fare if it has one for the profile, otherwise the default route's.
func (t *Table) Fare(route string, p paycode.Profile) (int64, error) {
	name := p.String()
	if fs, ok := t.Fares[route]; ok {
		if v, ok := fs[name]; ok {
			return v, nil
		}
	}
	if v, ok := t.Fares[DefaultRoute][name]; ok {
		return v, nil
	}
	return 0, fmt.Errorf("%w: route %q, profile %s", ErrNoFare, route, p)
}

// LocalZone reports whether the table's timezone is Go's "Local": the zone
// of whichever machine reads it, so the validator, each settlement instance
// and verify would each put a ride on their own service day. A table
// stored before such tables were refused still parses (refusing it would
// stop the settlement of every tap in its time); a new one is refused
// where it is published (the ledger's PutFareTable).
func (t *Table) LocalZone() bool { return strings.EqualFold(t.TimeZone, "Local") }

// CheckRouteNames checks the route names of Fares as every other route
// name is checked (record.CheckAssignment: no control characters, no
// surrounding spaces; nor the invisible ones of record.Hidden): for a table being published. Parse
// checks only their length, so that a table stored before still loads.
func (t *Table) CheckRouteNames() error {
	for _, route := range slices.Concat(sortedKeys(t.Fares), t.Routes) {
		if route == DefaultRoute {
			continue
		}
		if err := record.CheckNewAssignment(route, ""); err != nil {
			return fmt.Errorf("%w: fares: %v", ErrInvalid, err)
		}
	}
	return nil
}

// ZoneRules returns a short fingerprint of the rules of the table's time
// zone as this process reads them (the host's time zone database, or
// ZONEINFO's): its offset from UTC on the first of January of the year
// before now's and every change of it until that of three years after.
// Two settlement instances whose fingerprints differ put some rides on
// different service days (README, Fare tables). A service day depends on
// the offset alone: a change of abbreviation only (tzdata renames some)
// leaves the fingerprint as it was (TestZoneRulesIgnoreAbbreviations).
func (t *Table) ZoneRules(now time.Time) string {
	y := now.UTC().Year()
	at, to := time.Date(y-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(y+3, 1, 1, 0, 0, 0, 0, time.UTC)
	h := sha256.New()
	_, prev := at.In(t.loc).Zone()
	fmt.Fprintf(h, "%d %d\n", at.Unix(), prev)
	// A zone changes at most a few times a year (a bound for a bad file).
	for range 256 {
		_, end := at.In(t.loc).ZoneBounds()
		if end.IsZero() || !end.Before(to) {
			break
		}
		at = end
		if _, off := at.In(t.loc).Zone(); off != prev {
			fmt.Fprintf(h, "%d %d\n", at.Unix(), off)
			prev = off
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// ZoneDefaulted reports whether the table's document named no timezone,
// so that Parse took UTC: a table is published only with its zone named
// (a Berlin operator's days would otherwise run one or two hours off);
// one stored or provisioned before still loads.
func (t *Table) ZoneDefaulted() bool { return t.zoneDefaulted }

// ServiceDay returns the service day a ride at time at belongs to, as a
// date "YYYY-MM-DD" in the table's time zone. The service day of a date
// begins at the first instant of that date whose local wall clock reads
// ServiceDayStart, and lasts until the next date's begins: a ride belongs
// to its local calendar date, or to the day before when its wall-clock time
// is earlier than ServiceDayStart — unless the clocks went back after the
// day began (daylight saving ends inside the hour after the start), when
// the wall clock reads times before the start a second time: those are
// still the day that began. It reads the local date and time rather than
// subtracting a fixed duration, so a day that is 23 or 25 hours long still
// starts at ServiceDayStart on the wall clock, and a later ride never gets
// an earlier service day.
func (t *Table) ServiceDay(at time.Time) string {
	lt := at.In(t.loc)
	y, m, d := lt.Date()
	if clock := wallClock(lt); clock < t.dayStart && !t.dayBegan(at, y, m, d, clock) {
		d--
	}
	// Noon UTC of the (possibly normalised) date: no zone can move it.
	day := time.Date(y, m, d, 12, 0, 0, 0, time.UTC).Format(time.DateOnly)
	// Within a clock change back of S, the wall clock reads again what it
	// read in the S before: those instants are on the day that has
	// begun, also when the clocks went back across midnight (St. John's
	// until 2011: 00:01 back to 23:01 of the day before) or by more than
	// clockShifts holds (Casey station: 3 hours), which dayBegan does not
	// see.
	if start, _ := lt.ZoneBounds(); !start.IsZero() {
		_, off := lt.Zone()
		_, before := start.Add(-time.Nanosecond).In(t.loc).Zone()
		if back := time.Duration(before-off) * time.Second; back > 0 && at.Sub(start) < back {
			day = max(day, t.ServiceDay(start.Add(-time.Nanosecond)))
		}
	}
	return day
}

func wallClock(lt time.Time) time.Duration {
	return time.Duration(lt.Hour())*time.Hour + time.Duration(lt.Minute())*time.Minute +
		time.Duration(lt.Second())*time.Second + time.Duration(lt.Nanosecond())
}

// clockShifts are the sizes of the clock changes zones make (30 minutes on
// Lord Howe Island, 2 hours at Troll station, an hour elsewhere; a larger
// change back, Casey station's 3 hours, is seen by ServiceDay's
// ZoneBounds check).
var clockShifts = [...]time.Duration{0, 30 * time.Minute, time.Hour, 2 * time.Hour}

// dayBegan reports whether the service day of date y-m-d began before at,
// whose wall clock reads clock (before ServiceDayStart): whether an
// earlier instant of that date read ServiceDayStart, the clocks having gone
// back since. The instants of a date that read a given wall-clock time are
// at most two, a clock change apart; time.Date returns one of them.
func (t *Table) dayBegan(at time.Time, y int, m time.Month, d int, clock time.Duration) bool {
	if t.dayStart-clock > clockShifts[len(clockShifts)-1] {
		return false
	}
	x := time.Date(y, m, d, int(t.dayStart/time.Hour), int(t.dayStart%time.Hour/time.Minute), 0, 0, t.loc)
	for _, shift := range clockShifts {
		c := x.Add(-shift)
		if !c.Before(at) {
			continue
		}
		lc := c.In(t.loc)
		if cy, cm, cd := lc.Date(); cy == y && cm == m && cd == d && wallClock(lc) == t.dayStart {
			return true
		}
	}
	return false
}

// Covers reports whether the table serves route: every route when it
// lists none (Routes empty: the default route's fares apply to all), else
// the routes it lists. A validator assigned a route its table does not
// cover is out of service rather than charging another route's fare.
func (t *Table) Covers(route string) bool {
	return len(t.Routes) == 0 || slices.Contains(t.Routes, route)
}
