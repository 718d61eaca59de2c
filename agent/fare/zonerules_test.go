package fare_test

import (
	"archive/zip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
)

// zoneRulesChild, in a child process of the test binary, prints the
// fingerprint of the test table's zone rules as that process's time zone
// database (ZONEINFO) has them.
func TestZoneRulesChild(t *testing.T) {
	if os.Getenv("FAREGO_ZONE_RULES_CHILD") == "" {
		t.Skip("run by TestZoneRulesFollowTheTimeZoneDatabase")
	}
	tb, err := fare.Load("../../testdata/fare/table.json")
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("rules=" + tb.ZoneRules(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)) + "\n")
}

// Two settlement instances reading other versions of the time zone
// database put some rides on other service days (a ride at 04:10 summer
// time on the day before, where a zone had no summer hour): the
// fingerprint each shows on /metrics (farego_fare_zone_rules_info, which
// FaregoZoneRulesDiffer compares) is the same for the same rules and
// another for other rules. Each process reads a database of its own
// (ZONEINFO): Go's own zoneinfo.zip, and a copy whose Europe/Berlin has
// no summer hour (Etc/GMT-1's rules).
func TestZoneRulesFollowTheTimeZoneDatabase(t *testing.T) {
	if os.Getenv("FAREGO_QEMU") != "" {
		// As queue's crash tests: qemu-user can deadlock forking a
		// multithreaded emulated process; this runs natively in make test.
		t.Skip("spawns children; skipped under qemu-user emulation (make test-arm)")
	}
	root, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	goZones := filepath.Join(strings.TrimSpace(string(root)), "lib", "time", "zoneinfo.zip")
	zr, err := zip.OpenReader(goZones)
	if err != nil {
		t.Fatalf("Go's time zone database: %v", err)
	}
	defer zr.Close()
	read := func(name string) []byte {
		f, err := zr.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	noSummer := filepath.Join(t.TempDir(), "zones.zip")
	out, err := os.Create(noSummer)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(out)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "Europe/Berlin", Method: zip.Store})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(read("Etc/GMT-1"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	out.Close()

	rules := func(zoneinfo string) string {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestZoneRulesChild$", "-test.count", "1")
		cmd.Env = append(os.Environ(), "FAREGO_ZONE_RULES_CHILD=1", "ZONEINFO="+zoneinfo)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child with ZONEINFO=%s: %v\n%s", zoneinfo, err, b)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if r, ok := strings.CutPrefix(l, "rules="); ok {
				return r
			}
		}
		t.Fatalf("child with ZONEINFO=%s printed no rules:\n%s", zoneinfo, b)
		return ""
	}
	a, b, c := rules(goZones), rules(goZones), rules(noSummer)
	if len(a) != 12 {
		t.Fatalf("fingerprint %q, want 12 hex digits", a)
	}
	if a != b {
		t.Errorf("one database, two fingerprints: %s and %s", a, b)
	}
	if a == c {
		t.Errorf("Berlin with and without its summer hour, one fingerprint %s", a)
	}
	// Later within the same years, the same fingerprint; a zone of other
	// rules (Europe/London), another.
	tb, err := fare.Load("../../testdata/fare/table.json")
	if err != nil {
		t.Fatal(err)
	}
	d0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	if tb.ZoneRules(d0) != tb.ZoneRules(d0.Add(20*24*time.Hour)) {
		t.Error("the fingerprint changed within a year")
	}
	tb.TimeZone = "Europe/London"
	body, _ := tb.Marshal()
	london, err := fare.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if london.ZoneRules(d0) == tb.ZoneRules(d0) {
		t.Error("London and Berlin, one fingerprint")
	}
}

// A service day depends on the zone's offsets alone: two databases whose
// zone differs only in its abbreviations (tzdata renames some, as 2024b
// did MET's MET/MEST to CET/CEST, its offsets unchanged) put every ride
// on the same day, and FaregoZoneRulesDiffer warned that riders lose
// transfers. Africa/Lagos (WAT) and Etc/GMT-1 ("+01"), one hour east of
// UTC all year, as two versions of one zone: one fingerprint.
func TestZoneRulesIgnoreAbbreviations(t *testing.T) {
	tb, err := fare.Load("../../testdata/fare/table.json")
	if err != nil {
		t.Fatal(err)
	}
	zone := func(name string) *fare.Table {
		t.Helper()
		tb.TimeZone = name
		body, err := tb.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		z, err := fare.Parse(body)
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	d0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	lagos, gmt1, gmt2 := zone("Africa/Lagos"), zone("Etc/GMT-1"), zone("Etc/GMT-2")
	if a, b := lagos.ZoneRules(d0), gmt1.ZoneRules(d0); a != b {
		t.Errorf("one offset all year, two names: fingerprints %s and %s", a, b)
	}
	if gmt1.ZoneRules(d0) == gmt2.ZoneRules(d0) {
		t.Error("UTC+1 and UTC+2, one fingerprint")
	}
}
