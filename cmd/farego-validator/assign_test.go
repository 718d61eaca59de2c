package main

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/keyfile"
	"github.com/farego/farego/sync/wire"
)

// routeFares serves routes 42 and 43 only.
const routeFares = `{"version": 1, "currency": "EUR", "routes": ["42", "43"],
  "fares": {"*": {"adult": 250, "child": 120, "senior": 120, "student": 180}, "42": {"adult": 250, "child": 120, "senior": 120, "student": 180},
            "43": {"adult": 300, "child": 150, "senior": 150, "student": 200}}}`

// ctl runs "farego-validator ctl" as a process against the device's socket.
func (d *device) ctl(args ...string) (ctlStatus, string, error) {
	d.t.Helper()
	cmd := exec.Command(validatorBin, append([]string{"ctl", "--socket", filepath.Join(d.dir, "ctl.sock")}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var st ctlStatus
	if err == nil {
		if jerr := json.Unmarshal(out, &st); jerr != nil {
			d.t.Fatalf("ctl %v printed %q: %v", args, out, jerr)
		}
	}
	return st, stderr.String(), err
}

func (d *device) mustCtl(args ...string) ctlStatus {
	d.t.Helper()
	st, stderr, err := d.ctl(args...)
	if err != nil {
		d.t.Fatalf("ctl %v: %v: %s", args, err, stderr)
	}
	return st
}

// withBroker adds an [mqtt] section for broker, with the keys given
// (fleet, device) or new ones.
func (d *device) withBroker(t *testing.T, broker *brokertest.Broker, keys ...ed25519.PrivateKey) {
	if len(keys) == 0 {
		keys = []ed25519.PrivateKey{brokertest.NewKey(t), brokertest.NewKey(t)}
	}
	must(t, keyfile.WritePrivate(filepath.Join(d.dir, "device.key"), keys[1]))
	must(t, keyfile.WritePublic(filepath.Join(d.dir, "fleet.pub"), keys[0].Public().(ed25519.PublicKey)))
	cfg, _ := os.ReadFile(d.cfgPath)
	cfg = append(cfg, fmt.Sprintf("\n[mqtt]\nbroker = %q\ndevice_key = \"device.key\"\nfleet_public_key = \"fleet.pub\"\n", broker.URL())...)
	must(t, os.WriteFile(d.cfgPath, cfg, 0o644))
}

func newRouteDevice(t *testing.T, extra string) *device {
	d := newDevice(t, "", "\n[ctl]\nsocket = \"ctl.sock\"\n"+extra)
	must(t, os.WriteFile(filepath.Join(d.dir, "fares.json"), []byte(routeFares), 0o644))
	return d
}

// TestCtlRouteAndVehicle changes the route and vehicle over the real
// control socket between taps, puts the validator out of service on a
// route the fare table lacks, and keeps the assignment across a restart.
func TestCtlRouteAndVehicle(t *testing.T) {
	d := newRouteDevice(t, "")
	d.start()
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 2001, now).Code(t, now)), "ACCEPTED  2.50 EUR")

	fi, err := os.Stat(filepath.Join(d.dir, "ctl.sock"))
	must(t, err)
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("control socket mode %v, want a socket with 0660", fi.Mode())
	}
	st := d.mustCtl("status")
	if st.Route != "42" || st.Vehicle != "bus-7" || st.Source != "config" || !st.InService || st.QueueDepth != 1 {
		t.Errorf("status = %+v, want route 42, vehicle bus-7 from the config, in service, 1 queued", st)
	}

	// A route without fares: out of service with a stable reason, no tap.
	st = d.mustCtl("route", "7")
	if st.Route != "7" || st.InService || !strings.HasPrefix(st.OutOfService, "route_not_in_fares:") {
		t.Errorf("status after route 7 = %+v, want out of service route_not_in_fares", st)
	}
	expectLine(t, d.scan(d.issuer.Rider(t, 2002, now).Code(t, time.Now())), "OUT OF SERVICE")

	st = d.mustCtl("route", "43")
	if st.Route != "43" || !st.InService || st.Source != "local" {
		t.Errorf("status after route 43 = %+v, want in service, local", st)
	}
	d.mustCtl("vehicle", "BUS-9")
	expectLine(t, d.scan(d.issuer.Rider(t, 2003, now).Code(t, time.Now())), "ACCEPTED  3.00 EUR")

	// Bad input changes nothing and says why.
	for _, args := range [][]string{{"route", ""}, {"route", "4\t2"}, {"route", strings.Repeat("x", 65)}, {"vehicle", " B "}} {
		if _, stderr, err := d.ctl(args...); err == nil || !strings.Contains(stderr, "invalid assignment") {
			t.Errorf("ctl %q: err %v, stderr %q; want a refusal naming the invalid assignment", args, err, stderr)
		}
	}
	if _, stderr, err := d.ctl("fly"); err == nil || !strings.Contains(stderr, "want one of") {
		t.Errorf("ctl fly: %v %q", err, stderr)
	}
	raw := func(req string) string {
		c, err := net.Dial("unix", filepath.Join(d.dir, "ctl.sock"))
		must(t, err)
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprint(c, req)
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	if got := raw(`{"op":"route","value":"42","extra":1}` + "\n"); !strings.Contains(got, "unknown field") {
		t.Errorf("unknown field: %q", got)
	}
	if got := raw(strings.Repeat("x", 5000) + "\n"); !strings.Contains(got, "longer than 4096 bytes") {
		t.Errorf("oversized request: %q", got)
	}
	if st := d.mustCtl("status"); st.Route != "43" || st.Vehicle != "BUS-9" {
		t.Errorf("status after refused requests = %+v, want route 43, vehicle BUS-9 unchanged", st)
	}

	// A restart keeps the assignment (the config still says 42, bus-7).
	d.stop()
	d.start()
	if st := d.mustCtl("status"); st.Route != "43" || st.Vehicle != "BUS-9" || st.Source != "local" {
		t.Errorf("status after restart = %+v, want route 43, vehicle BUS-9, local", st)
	}
	expectLine(t, d.scan(d.issuer.Rider(t, 2004, now).Code(t, time.Now())), "ACCEPTED  3.00 EUR")
	d.stop()
	recs := d.records()
	want := []struct{ route, vehicle string }{{"42", "bus-7"}, {"43", "BUS-9"}, {"43", "BUS-9"}}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, w := range want {
		if recs[i].Route != w.route || recs[i].Vehicle != w.vehicle {
			t.Errorf("record %d: route %q vehicle %q, want %q %q", i, recs[i].Route, recs[i].Vehicle, w.route, w.vehicle)
		}
	}
}

// TestServerAssignment sends a fleet-signed assignment through a real
// broker, retained on the device's command topic: the validator applies
// it, reports it in its status, ignores it when it sees it again on
// reconnection (a later local change stands), and refuses a forged one.
func TestServerAssignment(t *testing.T) {
	broker := brokertest.Start(t, nil)
	fleet := brokertest.NewKey(t)
	dev := brokertest.NewKey(t)
	d := newRouteDevice(t, "")
	d.withBroker(t, broker, fleet, dev)
	cmdTopic := wire.Topics{}.Device("bus-7-front", wire.KindCmd)
	assign := func(key ed25519.PrivateKey, device string, version uint64, route, vehicle string) {
		t.Helper()
		p, err := (&wire.Assignment{DeviceID: device, Version: version, Route: route, Vehicle: vehicle, IssuedAt: time.Now()}).MarshalBinary()
		must(t, err)
		msg, err := wire.Seal(wire.TypeAssign, p, false, key)
		must(t, err)
		must(t, broker.Publish(cmdTopic, msg, true, 1))
	}
	statusTopic := wire.Topics{}.Device("bus-7-front", wire.KindStatus)
	reported := func(cond func(*wire.StatusAssignment) bool) {
		t.Helper()
		brokertest.WaitFor(t, 60*time.Second, "the status to report the assignment", func() bool {
			msg, ok := broker.Retained(statusTopic)
			if !ok {
				return false
			}
			body, err := wire.Open(msg, wire.TypeStatus, dev.Public().(ed25519.PublicKey))
			if err != nil {
				return false
			}
			st, err := wire.ParseStatus(body)
			return err == nil && st.Assignment != nil && cond(st.Assignment)
		})
	}

	// Made while the device is off: retained, applied when it connects.
	assign(fleet, "bus-7-front", 1, "43", "BUS-12")
	d.start()
	brokertest.WaitFor(t, 60*time.Second, "the assignment to apply", func() bool { return d.mustCtl("status").Source == "server" })
	if st := d.mustCtl("status"); st.Route != "43" || st.Vehicle != "BUS-12" || st.Source != "server" || st.ServerVersion != 1 {
		t.Errorf("status = %+v, want route 43, BUS-12 from the server, version 1", st)
	}
	reported(func(a *wire.StatusAssignment) bool {
		return a.Route == "43" && a.Source == "server" && a.ServerVersion == 1
	})
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 3001, now).Code(t, now)), "ACCEPTED  3.00 EUR")

	// Forged (another key) and another device's: refused, nothing changes.
	assign(brokertest.NewKey(t), "bus-7-front", 5, "7", "")
	d.waitLog("message refused")
	assign(fleet, "bus-8", 6, "7", "")
	d.waitLog("message refused")
	// The onboard computer changes the route; a restart brings the
	// retained version 1 again, which must not undo it.
	assign(fleet, "bus-7-front", 1, "43", "BUS-12")
	d.mustCtl("route", "42")
	d.stop()
	d.start()
	brokertest.WaitFor(t, 60*time.Second, "the retained assignment to be seen again", func() bool {
		return strings.Count(d.logged(), "assignment from the server already applied") >= 2
	})
	if st := d.mustCtl("status"); st.Route != "42" || st.Source != "local" || st.ServerVersion != 1 {
		t.Errorf("status after restart = %+v, want the local route 42 kept (server version 1)", st)
	}
	// A newer one from the server applies, between taps, and the tap records it.
	brokertest.WaitFor(t, 60*time.Second, "the device to connect", func() bool { return broker.Connected("farego-dev-bus-7-front") })
	assign(fleet, "bus-7-front", 2, "7", "BUS-12")
	reported(func(a *wire.StatusAssignment) bool { return a.ServerVersion == 2 })
	if st := d.mustCtl("status"); st.Route != "7" || !strings.HasPrefix(st.OutOfService, "route_not_in_fares") {
		t.Errorf("status = %+v, want route 7 out of service (route_not_in_fares)", st)
	}
	expectLine(t, d.scan(d.issuer.Rider(t, 3002, now).Code(t, time.Now())), "OUT OF SERVICE")
	d.stop()
	recs := d.records()
	if len(recs) != 1 || recs[0].Route != "43" || recs[0].Vehicle != "BUS-12" || recs[0].Profile != paycode.Adult {
		t.Errorf("records = %+v, want one tap on route 43, BUS-12", recs)
	}
}

// TestCtlStatusScannerHeld: a scanner another program holds (a local user
// of group dialout with a terminal program; here flock(1) on the real
// pty) is read by nobody: the validator logged "scanner unavailable" once
// while ctl status said in service, and a technician at the bus saw
// nothing wrong. ctl status names each scanner, whether it is read, and
// why not, with the process that holds it; read again once it lets go.
func TestCtlStatusScannerHeld(t *testing.T) {
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Skip("no flock(1)")
	}
	d := newRouteDevice(t, "")
	holder := exec.Command(flock, "--exclusive", filepath.Join(d.dir, "scanner-front"), "-c", "echo locked; exec cat")
	stdin, err := holder.StdinPipe()
	must(t, err)
	out, err := holder.StdoutPipe()
	must(t, err)
	must(t, holder.Start())
	defer func() { stdin.Close(); holder.Wait() }()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("flock: %q, %v", line, err)
	}
	d.startUntil("scanner unavailable; retrying")
	st := d.mustCtl("status")
	want := fmt.Sprintf("held by pid %d (flock)", holder.Process.Pid)
	if len(st.Scanners) != 1 || st.Scanners[0].Name != "front" || st.Scanners[0].Up ||
		!strings.Contains(st.Scanners[0].Problem, "in use by another reader") || !strings.Contains(st.Scanners[0].Problem, want) {
		t.Fatalf("ctl status scanners %+v; want front not read, in use, %s", st.Scanners, want)
	}
	stdin.Close() // it lets go
	d.waitLog("scanner resumed")
	st = d.mustCtl("status")
	if len(st.Scanners) != 1 || !st.Scanners[0].Up || st.Scanners[0].Problem != "" {
		t.Fatalf("ctl status scanners %+v once it let go; want front read", st.Scanners)
	}
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 2001, now).Code(t, now)), "ACCEPTED  2.50 EUR")
}
