package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/keyfile"
	"github.com/farego/farego/sync/wire"
)

// selftestDevice is a device (pty scanner, provisioning bundle, lights
// and buzzer as plain files) whose [mqtt] names a real broker that wants
// its credentials, and whose selftest compares the clock with a local
// HTTP server's Date.
type selftestDevice struct {
	*device
	broker *brokertest.Broker
	fleet  ed25519.PrivateKey
}

func newSelftestDevice(t *testing.T) *selftestDevice {
	return newSelftestDeviceOn(t, &brokertest.Options{Users: map[string]string{"bus-7-front": "s3cret"}})
}

func newSelftestDeviceOn(t *testing.T, opts *brokertest.Options) *selftestDevice {
	broker := brokertest.Start(t, opts)
	// The machine's temporary directory may be in memory (tmpfs): these
	// tests' data_dir is not a bus's (TestSelftestVolatileDataDir tests
	// the storage line).
	statfsType = func(path string, st *syscall.Statfs_t) error {
		err := syscall.Statfs(path, st)
		setFSType(&st.Type, 0xef53)
		return err
	}
	t.Cleanup(func() { statfsType = syscall.Statfs })
	time := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(time.Close)
	d := newDevice(t, "", "")
	for _, f := range []string{"green", "red", "buzzer"} {
		must(t, os.WriteFile(filepath.Join(d.dir, f), []byte("0\n"), 0o644))
	}
	fleet, dev := brokertest.NewKey(t), brokertest.NewKey(t)
	must(t, keyfile.WritePrivate(filepath.Join(d.dir, "device.key"), dev))
	must(t, keyfile.WritePublic(filepath.Join(d.dir, "fleet.pub"), fleet.Public().(ed25519.PublicKey)))
	cfg, _ := os.ReadFile(d.cfgPath)
	cfg = []byte(strings.Replace(string(cfg), "[feedback]\n", fmt.Sprintf("[feedback]\ngpio_green = %q\ngpio_red = %q\ngpio_buzzer = %q\n",
		filepath.Join(d.dir, "green"), filepath.Join(d.dir, "red"), filepath.Join(d.dir, "buzzer")), 1))
	cfg = append(cfg, fmt.Sprintf(`
[ctl]
socket = "ctl.sock"

[selftest]
time_url = %q

[mqtt]
broker = %q
username = "bus-7-front"
password = "s3cret"
device_key = "device.key"
fleet_public_key = "fleet.pub"
`, time.URL, broker.URL())...)
	must(t, os.WriteFile(d.cfgPath, cfg, 0o644))
	return &selftestDevice{device: d, broker: broker, fleet: fleet}
}

// selftest runs the subcommand in this process (so a test can simulate a
// full disk) and returns its report by check name and its exit code.
func (d *selftestDevice) selftest() (map[string]string, string, int) {
	d.t.Helper()
	var out, errb strings.Builder
	code := run(context.Background(), []string{"selftest", "--config", d.cfgPath}, strings.NewReader(""), &out, &errb)
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			lines[f[1]] += l + "\n"
		}
	}
	if errb.Len() > 0 {
		d.t.Errorf("selftest wrote to stderr: %s", errb.String())
	}
	return lines, out.String(), code
}

func wantCheck(t *testing.T, lines map[string]string, name, level, text string) {
	t.Helper()
	l := lines[name]
	if !strings.HasPrefix(l, level+" ") || !strings.Contains(l, text) {
		t.Errorf("%s check = %q, want %s with %q", name, strings.TrimSpace(l), level, text)
	}
}

// TestSelftestConfigAdvice: a configuration file that is not there is a
// matter of --config, not of fixing validator.toml.
func TestSelftestConfigAdvice(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.toml")
	var out, errb strings.Builder
	code := run(context.Background(), []string{"selftest", "--config", missing}, strings.NewReader(""), &out, &errb)
	if code != exitFailure || !strings.Contains(out.String(), "FAIL  config") || !strings.Contains(out.String(), "-> give the validator's configuration file with --config") {
		t.Errorf("a missing configuration: exit %d, %q; want FAIL config asking for the file", code, out.String())
	}
	bad := filepath.Join(dir, "bad.toml")
	must(t, os.WriteFile(bad, []byte("device_id = \"d\"\nroute = 42\n"), 0o644))
	out.Reset()
	code = run(context.Background(), []string{"selftest", "--config", bad}, strings.NewReader(""), &out, &errb)
	if code != exitFailure || !strings.Contains(out.String(), "-> fix "+bad) {
		t.Errorf("a configuration that does not parse: exit %d, %q; want FAIL config saying to fix %s", code, out.String(), bad)
	}
}

// TestSelftestBrokerCA: a TLS broker that takes passwords, its
// certificate signed by the fleet CA: without mqtt.ca_file the device
// trusts only the system's roots, and selftest says to set ca_file (it
// sent the technician to check the network and the credentials); with
// the CA named it connects.
func TestSelftestBrokerCA(t *testing.T) {
	// A certificate for other names, wrapped as paho wraps it (%w).
	wrongName := fmt.Errorf("network Error : %w", &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: &x509.Certificate{}, Host: "mqtt"}})
	if got := brokerAdvice(wrongName, "", false); !strings.Contains(got, "broker-cert --host") {
		t.Errorf("advice for a certificate of other names: %q", got)
	}

	pki := brokertest.NewPKI(t, "")
	server := pki.ServerTLS(t)
	server.ClientAuth = tls.NoClientCert
	d := newSelftestDeviceOn(t, &brokertest.Options{TLS: server, Users: map[string]string{"bus-7-front": "s3cret"}})
	lines, report, code := d.selftest()
	if code != exitFailure {
		t.Errorf("exit %d, want 1; report:\n%s", code, report)
	}
	wantCheck(t, lines, "broker", "FAIL", "certificate")
	wantCheck(t, lines, "broker", "FAIL", "mqtt.ca_file")
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(cfg), "[mqtt]\n", fmt.Sprintf("[mqtt]\nca_file = %q\n", pki.CAFile), 1)), 0o644))
	lines, report, _ = d.selftest()
	t.Logf("with ca_file:\n%s", report)
	wantCheck(t, lines, "broker", "OK", "connected to "+d.broker.URL()+" as bus-7-front")
}

func TestSelftest(t *testing.T) {
	d := newSelftestDevice(t)

	// A new device, never run: healthy; no queue file yet.
	lines, report, code := d.selftest()
	t.Logf("report:\n%s", report)
	if code != exitOK {
		t.Errorf("exit %d, want 0", code)
	}
	// OK, or WARN where the kernel says NTP has not synchronized the clock.
	if l := lines["clock"]; strings.HasPrefix(l, "FAIL") || !strings.Contains(l, "from the server's (from the Date of http://127.0.0.1") {
		t.Errorf("clock check = %q, want the offset from the local server's Date", l)
	}
	wantCheck(t, lines, "scanner", "OK", "front: ")
	wantCheck(t, lines, "feedback", "OK", "played accept")
	wantCheck(t, lines, "queue", "WARN", "does not exist yet")
	wantCheck(t, lines, "documents", "OK", "keyring v1 (1 of 1 keys valid now), fares v1, deny list v1 (1 entries)")
	wantCheck(t, lines, "disk", "OK", "MiB free")
	wantCheck(t, lines, "broker", "OK", "connected to "+d.broker.URL()+" as bus-7-front")
	for _, l := range strings.Split(strings.TrimSpace(report), "\n") {
		if lvl := strings.Fields(l)[0]; lvl != "OK" && lvl != "WARN" && lvl != "FAIL" {
			t.Errorf("line %q does not start with OK, WARN or FAIL", l)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(d.dir, "green")); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("green output left at %q after the patterns, want 0", b)
	}

	// After a day's work, with a newer fare table waiting on the broker.
	d.start()
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 5001, now).Code(t, now)), "ACCEPTED")
	// A tap is decided offline: on a loaded machine the uplink connected
	// after it, and the check below read "not connected".
	brokertest.WaitFor(t, 60*time.Second, "the uplink to connect", func() bool { return strings.Contains(d.logged(), "uplink connected") })

	// While it runs: the queue and the broker come from the validator.
	lines, report, code = d.selftest()
	t.Logf("report while running:\n%s", report)
	wantCheck(t, lines, "queue", "OK", "in use by the running validator: ")
	wantCheck(t, lines, "documents", "OK", "in service")
	wantCheck(t, lines, "broker", "OK", "the running validator is connected")
	if code != exitOK {
		t.Errorf("exit %d while running, want 0; report:\n%s", code, report)
	}
	d.stop()

	p, err := (&wire.Downlink{Kind: record.DocFares, Version: 2, IssuedAt: now, Body: []byte(fareJSON)}).MarshalBinary()
	must(t, err)
	msg, err := wire.Seal(wire.TypeDownlink, p, false, d.fleet)
	must(t, err)
	must(t, d.broker.Publish(wire.Topics{}.Fleet(record.DocFares), msg, true, 1))
	lines, report, code = d.selftest()
	t.Logf("report after a run:\n%s", report)
	if code != exitOK {
		t.Errorf("exit %d, want 0", code)
	}
	wantCheck(t, lines, "queue", "OK", "healthy: 1 taps waiting")
	wantCheck(t, lines, "broker", "WARN", "fares v2 (device has v1)")

	// A validator runs on the queue file but not on the control socket
	// (started by hand): the queue is not blamed, the documents not read
	// from the bundle, and nothing logs in as the device in its place.
	held, err := queue.Open(filepath.Join(d.dir, "data", queueFile), nil)
	must(t, err)
	lines, report, code = d.selftest()
	t.Logf("report beside a validator without a control socket:\n%s", report)
	wantCheck(t, lines, "queue", "WARN", "in use by another process")
	wantCheck(t, lines, "documents", "WARN", "not read")
	wantCheck(t, lines, "broker", "WARN", "not tried")
	if code != exitOK {
		t.Errorf("exit %d beside a running validator, want 0", code)
	}
	must(t, held.Close())

	// Failures, each named with what to do, and exit 1.
	fail := func(what, name, text string, setup, undo func()) {
		t.Helper()
		setup()
		lines, report, code := d.selftest()
		undo()
		if code != exitFailure {
			t.Errorf("%s: exit %d, want 1; report:\n%s", what, code, report)
		}
		wantCheck(t, lines, name, "FAIL", text)
		if !strings.Contains(lines[name], " -> ") {
			t.Errorf("%s: no advice in %q", what, lines[name])
		}
	}
	fail("broker down", "broker", "no connection to", d.broker.Stop, d.broker.Restart)
	// A broker not reached is the network's matter: it said to check "the
	// device's credentials (farego-provision device re-registers it)", a
	// new key for a broker that never saw the old one.
	d.broker.Stop()
	lines, _, _ = d.selftest()
	d.broker.Restart()
	if l := lines["broker"]; !strings.Contains(l, "nc -vz") || strings.Contains(l, "re-registers") {
		t.Errorf("broker down: %q; want the route to the broker checked, not the device provisioned again", l)
	}
	// A refused login is the credentials' (it got the same advice as a
	// broker down).
	cfgBytes, err := os.ReadFile(d.cfgPath)
	must(t, err)
	fail("password refused", "broker", "provisioned again", func() {
		must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(cfgBytes), `password = "s3cret"`, `password = "stale"`, 1)), 0o644))
	}, func() { must(t, os.WriteFile(d.cfgPath, cfgBytes, 0o644)) })
	fleetPub := filepath.Join(d.dir, "fleet.pub")
	ours, err := os.ReadFile(fleetPub)
	must(t, err)
	fail("another fleet's key", "broker", "this device has another fleet's key", func() {
		must(t, os.Remove(fleetPub))
		must(t, keyfile.WritePublic(fleetPub, brokertest.NewKey(t).Public().(ed25519.PublicKey)))
	}, func() { must(t, os.WriteFile(fleetPub, ours, 0o644)) })
	// A device key gone is not the network's fault: the file is named.
	devKey := filepath.Join(d.dir, "device.key")
	keyBytes, err := os.ReadFile(devKey)
	must(t, err)
	fail("device key missing", "broker", "not tried: mqtt.device_key "+devKey+" cannot be read", func() { must(t, os.Remove(devKey)) },
		func() { must(t, os.WriteFile(devKey, keyBytes, 0o600)) })
	fail("full disk", "disk", "the queue cannot grow", func() {
		statfs = func(path string, st *syscall.Statfs_t) error {
			err := syscall.Statfs(path, st)
			st.Bavail, st.Bsize = 100, 4096
			return err
		}
	}, func() { statfs = syscall.Statfs })
	link := filepath.Join(d.dir, "scanner-front")
	target, _ := os.Readlink(link)
	fail("scanner unplugged", "scanner", "not found", func() { os.Remove(link) }, func() { must(t, os.Symlink(target, link)) })
	qf := filepath.Join(d.dir, "data", queueFile)
	good, err := os.ReadFile(qf)
	must(t, err)
	fail("corrupted queue", "queue", "cannot be opened", func() {
		bad := append([]byte(nil), good...)
		for i := 0; i < 2*4096 && i < len(bad); i++ { // both meta pages
			bad[i] ^= 0x5a
		}
		must(t, os.WriteFile(qf, bad, 0o600))
	}, func() { must(t, os.WriteFile(qf, good, 0o600)) })

	// A device without its keyring (not provisioned, never run).
	d2 := newSelftestDevice(t)
	must(t, os.Remove(filepath.Join(d2.dir, "keyring.json")))
	lines, report, code = d2.selftest()
	if code != exitFailure {
		t.Errorf("missing keyring: exit %d, want 1; report:\n%s", code, report)
	}
	wantCheck(t, lines, "documents", "FAIL", "no keyring")
}

// A fleet in which nobody was ever denied has no deny list (the ledger's
// version 0 is none): a device of it, connected, is as up to date as it
// can be, and selftest says so instead of warning "no deny list" (a fresh
// fleet's every device warned). A deny list on the broker the device lacks
// is still a warning.
func TestSelftestNoDenyListPublished(t *testing.T) {
	d := newSelftestDevice(t)
	must(t, os.Remove(filepath.Join(d.dir, "denylist.json")))
	// A broker holding none of the server's documents tells nothing (its
	// retained messages lost, or not in yet): the warning stays.
	lines, report, _ := d.selftest()
	t.Logf("report with an empty broker:\n%s", report)
	wantCheck(t, lines, "documents", "WARN", "no deny list")
	publish := func(kind string, version uint64, body []byte) {
		t.Helper()
		p, err := (&wire.Downlink{Kind: kind, Version: version, IssuedAt: time.Now(), Body: body}).MarshalBinary()
		must(t, err)
		msg, err := wire.Seal(wire.TypeDownlink, p, false, d.fleet)
		must(t, err)
		must(t, d.broker.Publish(wire.Topics{}.Fleet(kind), msg, true, 1))
	}
	kr, err := d.issuer.Keyring.MarshalJSON()
	must(t, err)
	publish(record.DocKeyring, d.issuer.Keyring.Version(), kr)
	lines, report, _ = d.selftest()
	t.Logf("report:\n%s", report)
	wantCheck(t, lines, "documents", "OK", "deny list v0 (0 entries); the broker holds the server's documents and no deny list: none published")

	deny, err := json.Marshal(record.DenyList{Version: 3, Entries: []record.DenyEntry{{Account: 666, Reason: "negative_balance"}}})
	must(t, err)
	publish(record.DocDenyList, 3, deny)
	lines, report, _ = d.selftest()
	t.Logf("report with a deny list on the broker:\n%s", report)
	wantCheck(t, lines, "documents", "WARN", "no deny list")
	wantCheck(t, lines, "broker", "WARN", "denylist v3 (device has v0)")
}

// TestSelftestScannerServiceAccess: selftest runs as root, which opens any
// device; the validator runs as user farego in groups farego and dialout.
// A scanner those cannot open (an evdev scanner without the farego udev
// rule: root:input 0660; here a pseudo-terminal, owner:tty 0620) failed
// in the validator's log every few seconds while selftest said "present
// and readable". A device they can open (0666) stays OK. (serviceUser is
// nobody here: a machine without the user farego skips the check.)
func TestSelftestScannerServiceAccess(t *testing.T) {
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody")
	}
	defer func(u string) { serviceUser = u }(serviceUser)
	serviceUser = "nobody"
	ptmx, tty, err := pty.Open()
	must(t, err)
	defer ptmx.Close()
	defer tty.Close()
	must(t, os.Chmod(tty.Name(), 0o620))
	for _, c := range []struct {
		path, typ, want string
	}{{tty.Name(), "", "FAIL"}, {tty.Name(), "evdev", "FAIL"}, {"/dev/null", "evdev", "OK"}} { // /dev/null is no tty: as serial it fails (TestSelftestScannerNotASerialPort)
		s := &selftest{cfg: &Config{Scanners: []ScannerConfig{{Name: "front", Type: c.typ, Path: c.path}}}}
		s.checkScanners()
		if len(s.results) != 1 || s.results[0].level != c.want || (c.want == "FAIL" && !strings.Contains(s.results[0].why, "may not open it")) {
			t.Errorf("%s (%q): %+v; want %s", c.path, c.typ, s.results, c.want)
		}
	}
}

// TestSelftestScannerOpenToOthers: a serial scanner of group dialout
// (a tty's default) or open to every user can be opened by any such local
// user, who then holds its lock and the validator reads nothing: selftest
// warns and says how to give it to the validator's group alone; of the
// service's own group, 0660, it is OK. On a real pseudo-terminal, its
// group and mode set as udev would (root only).
func TestSelftestScannerOpenToOthers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a tty's group needs root")
	}
	dialout, err := user.LookupGroup("dialout")
	if err != nil {
		t.Skip("no group dialout")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody")
	}
	defer func(u string) { serviceUser = u }(serviceUser)
	serviceUser = "nobody" // its group stands for farego's
	nobody, _ := user.Lookup("nobody")
	ptmx, tty, err := pty.Open()
	must(t, err)
	defer ptmx.Close()
	defer tty.Close()
	did, _ := strconv.Atoi(dialout.Gid)
	own, _ := strconv.Atoi(nobody.Gid)
	for _, c := range []struct {
		gid  int
		mode os.FileMode
		want string // level; and for WARN, what it says
		says string
	}{
		{did, 0o660, "WARN", "open to every user of group dialout"},
		{own, 0o666, "WARN", "open to every user (mode 0666)"},
		{own, 0o660, "OK", ""},
	} {
		must(t, os.Chown(tty.Name(), 0, c.gid))
		must(t, os.Chmod(tty.Name(), c.mode))
		s := &selftest{cfg: &Config{Scanners: []ScannerConfig{{Name: "front", Path: tty.Name()}}}}
		s.checkScanners()
		if len(s.results) != 1 || s.results[0].level != c.want || !strings.Contains(s.results[0].why, c.says) ||
			(c.want == "WARN" && !strings.Contains(s.results[0].do, "72-farego-scanners.rules")) {
			t.Errorf("group %d mode %04o: %+v; want %s saying %q", c.gid, c.mode, s.results, c.want, c.says)
		}
	}
}

// TestSelftestVolatileDataDir: a data_dir in memory (tmpfs, ramfs: a
// read-only root made writable with an overlay in RAM, a queue put in
// /run or /tmp) loses every green tap not yet sent at each power-off while
// the queue's own checks pass: selftest fails it, and warns on an overlay
// (whose upper layer may be in memory). The validator logs the same at
// start (run.go).
func TestSelftestVolatileDataDir(t *testing.T) {
	defer func() { statfsType = syscall.Statfs }()
	for _, c := range []struct {
		fsType uint32
		want   string // the storage line's level; "" none
	}{{0x01021994, "FAIL"}, {0x858458f6, "FAIL"}, {0x794c7630, "WARN"}, {0xef53, ""}} { // tmpfs, ramfs, overlay, ext4
		statfsType = func(path string, st *syscall.Statfs_t) error {
			err := syscall.Statfs(path, st)
			setFSType(&st.Type, c.fsType)
			return err
		}
		s := &selftest{cfg: &Config{DataDir: t.TempDir()}}
		s.checkDisk()
		var got *selftestLine
		for i, r := range s.results {
			if r.name == "storage" {
				got = &s.results[i]
			}
		}
		switch {
		case c.want == "" && got != nil:
			t.Errorf("file system %#x: %+v; want no storage line", c.fsType, s.results)
		case c.want != "" && (got == nil || got.level != c.want || !strings.Contains(got.why, "lost when the power goes")):
			t.Errorf("file system %#x: %+v; want a storage line %s", c.fsType, s.results, c.want)
		}
	}
}

// setFSType sets a Statfs_t's Type, int32 on 32-bit ARM and int64 on
// 64-bit machines.
func setFSType[T ~int32 | ~int64](p *T, v uint32) { *p = T(int32(v)) }

// A serial scanner whose path is no tty (/dev/null, a plain file, or an
// evdev scanner's input device given as serial) cannot be opened by the
// validator ("inappropriate ioctl for device", retried forever), yet
// selftest said "present and readable" (field review: path = "/dev/null").
func TestSelftestScannerNotASerialPort(t *testing.T) {
	d := newSelftestDevice(t)
	link := filepath.Join(d.dir, "scanner-front")
	plain := filepath.Join(d.dir, "not-a-tty")
	must(t, os.WriteFile(plain, nil, 0o644))
	for _, target := range []string{os.DevNull, plain} {
		must(t, os.Remove(link))
		must(t, os.Symlink(target, link))
		lines, report, code := d.selftest()
		if code != exitFailure {
			t.Errorf("scanner at %s: exit %d, want %d; report:\n%s", target, code, exitFailure, report)
		}
		wantCheck(t, lines, "scanner", "FAIL", "is not a serial port")
	}
}

// TestSelftestDeviceCertificate: the device's TLS client certificate
// (mqtt.cert_file) has its own line: expired, the broker refuses the
// device ("remote error: tls: expired certificate"), and the broker line
// says to provision it again (it sent the technician to the broker's
// certificate and the device's clock); within 90 days of its end it warns.
func TestSelftestDeviceCertificate(t *testing.T) {
	pki := brokertest.NewPKI(t, "")
	d := newSelftestDeviceOn(t, &brokertest.Options{TLS: pki.ServerTLS(t), Users: map[string]string{"bus-7-front": "s3cret"}})
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	use := func(certFile, keyFile string) {
		must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(cfg), "[mqtt]\n",
			fmt.Sprintf("[mqtt]\nca_file = %q\ncert_file = %q\nkey_file = %q\n", pki.CAFile, certFile, keyFile), 1)), 0o644))
	}
	now := time.Now()
	use(pki.ClientCertDated(t, "bus-7-front", now.AddDate(-5, 0, 0), now.Add(-time.Hour)))
	lines, report, code := d.selftest()
	t.Logf("expired:\n%s", report)
	if code != exitFailure {
		t.Errorf("exit %d, want 1", code)
	}
	wantCheck(t, lines, "cert", "FAIL", "has expired")
	wantCheck(t, lines, "broker", "FAIL", "expired certificate")
	wantCheck(t, lines, "broker", "FAIL", "farego-provision device --force")

	use(pki.ClientCertDated(t, "bus-7-front", now.Add(-time.Hour), now.Add(10*24*time.Hour)))
	lines, report, _ = d.selftest()
	t.Logf("ending:\n%s", report)
	wantCheck(t, lines, "cert", "WARN", "ends in 9 days")
	wantCheck(t, lines, "broker", "OK", "connected")
}

// TestRunLogsClientCertEnding: a running validator says in its log that
// its TLS client certificate ends soon (only selftest said it, which
// nobody runs on a working bus).
func TestRunLogsClientCertEnding(t *testing.T) {
	pki := brokertest.NewPKI(t, "")
	broker := brokertest.Start(t, &brokertest.Options{TLS: pki.ServerTLS(t)})
	d := newDevice(t, "", "")
	d.withBroker(t, broker)
	certFile, keyFile := pki.ClientCertDated(t, "bus-7-front", time.Now().Add(-time.Hour), time.Now().Add(10*24*time.Hour))
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(cfg), "[mqtt]\n",
		fmt.Sprintf("[mqtt]\nca_file = %q\ncert_file = %q\nkey_file = %q\n", pki.CAFile, certFile, keyFile), 1)), 0o644))
	d.start() // it logs at start, before its scanner connects (which start waits for)
	var line string
	brokertest.WaitFor(t, 60*time.Second, "the certificate's warning", func() bool {
		for _, l := range strings.Split(d.logged(), "\n") {
			if strings.Contains(l, "the device's TLS certificate ends soon") {
				line = l
				return true
			}
		}
		return false
	})
	if !strings.Contains(line, "days_left=9") || !strings.Contains(line, "farego-provision device --force") {
		t.Errorf("the warning: %s", line)
	}
	d.stop()
}

// TestSelftestClientCertNotAsked: a --tls bundle (client certificate, no
// password) against a TLS broker that asks for no client certificate (a
// settlement server run with --mqtt-tls and without --client-ca, as the
// README's systemd example was): the broker refuses it, "not Authorized",
// and selftest sent the technician to the network and to provision the
// device again, which changes nothing. It names --client-ca.
func TestSelftestClientCertNotAsked(t *testing.T) {
	pki := brokertest.NewPKI(t, "")
	server := pki.ServerTLS(t)
	server.ClientAuth = tls.NoClientCert
	d := newSelftestDeviceOn(t, &brokertest.Options{TLS: server, Users: map[string]string{"bus-7-front": "s3cret"}})
	certFile, keyFile := pki.ClientCert(t, "bus-7-front")
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	text := strings.Replace(string(cfg), "username = \"bus-7-front\"\npassword = \"s3cret\"\n",
		fmt.Sprintf("ca_file = %q\ncert_file = %q\nkey_file = %q\n", pki.CAFile, certFile, keyFile), 1)
	if text == string(cfg) {
		t.Fatal("the test device's config no longer has the password lines")
	}
	must(t, os.WriteFile(d.cfgPath, []byte(text), 0o644))
	lines, report, code := d.selftest()
	t.Logf("report:\n%s", report)
	if code != exitFailure {
		t.Errorf("exit %d, want 1", code)
	}
	wantCheck(t, lines, "broker", "FAIL", "not Authorized")
	wantCheck(t, lines, "broker", "FAIL", "--client-ca")
}

// TestSelftestScannerKernelName: a scanner configured by the name the
// kernel numbers (/dev/ttyACM0) is read today and maybe not after the
// next re-plug or boot, when it comes back as ttyACM1 (or a modem's port
// takes its number): selftest warns and gives the udev fix, and, the
// name gone, names the device of its kind present now (it said "not
// found" and sent the technician to the cable; field review).
func TestSelftestScannerKernelName(t *testing.T) {
	d := newSelftestDevice(t)
	target, err := os.Readlink(filepath.Join(d.dir, "scanner-front"))
	must(t, err)
	acm0, acm1 := filepath.Join(d.dir, "ttyACM0"), filepath.Join(d.dir, "ttyACM1")
	must(t, os.Symlink(target, acm0))
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(cfg), `path = "scanner-front"`, `path = "ttyACM0"`, 1)), 0o644))

	lines, report, code := d.selftest()
	if code != exitOK {
		t.Errorf("exit %d, want 0 (a warning); report:\n%s", code, report)
	}
	wantCheck(t, lines, "scanner", "WARN", "under a name the kernel may give another device")
	wantCheck(t, lines, "scanner", "WARN", "/dev/scanner-NAME")

	must(t, os.Remove(acm0))
	must(t, os.Symlink(target, acm1))
	lines, report, code = d.selftest()
	if code != exitFailure {
		t.Errorf("exit %d, want 1; report:\n%s", code, report)
	}
	wantCheck(t, lines, "scanner", "FAIL", "not found; present now: "+acm1)
	wantCheck(t, lines, "scanner", "FAIL", "udev rule")
}

// TestSelftestKeyringEndingSoon: the device's keyring ends in five days
// (it has not heard from the server, which publishes its renewal 30 days
// before). On that day every rider is refused; selftest said "OK" until
// then, never run, running and stopped. It warns now, with the date and
// what to do, and ctl status gives the date.
func TestSelftestKeyringEndingSoon(t *testing.T) {
	d := newSelftestDevice(t)
	now := time.Now()
	end := now.Add(5 * 24 * time.Hour).Truncate(time.Second)
	kr, err := paycode.NewKeyring(1, []paycode.Key{{ID: d.issuer.KeyID, Public: d.issuer.Key.Public().(ed25519.PublicKey),
		NotBefore: now.AddDate(0, 0, -360), NotAfter: end}})
	must(t, err)
	b, err := kr.MarshalJSON()
	must(t, err)
	must(t, os.WriteFile(filepath.Join(d.dir, "keyring.json"), b, 0o644))
	const ends = "the keyring's last valid key ends "
	date := end.UTC().Format("2006-01-02 15:04 UTC")

	lines, report, code := d.selftest()
	t.Logf("report, never run:\n%s", report)
	wantCheck(t, lines, "documents", "WARN", ends+date+" (in 4 days): from then every rider is refused")
	wantCheck(t, lines, "documents", "WARN", "-> connect it to the broker (see the broker line) so that it gets the current keyring")
	if code != exitOK {
		t.Errorf("exit %d, want 0 (a warning)", code)
	}

	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 5001, now).Code(t, now)), "ACCEPTED")
	if st := d.mustCtl("status"); st.KeyringEnds == nil || !st.KeyringEnds.Equal(end) {
		t.Errorf("ctl status keyring_ends = %v, want %v", st.KeyringEnds, end)
	}
	lines, report, _ = d.selftest()
	t.Logf("report while running:\n%s", report)
	wantCheck(t, lines, "documents", "WARN", "in service; "+ends+date)
	d.stop()

	lines, report, _ = d.selftest()
	t.Logf("report after a run:\n%s", report)
	wantCheck(t, lines, "queue", "OK", "healthy")
	wantCheck(t, lines, "documents", "WARN", ends+date)

	publish := func(kr *paycode.Keyring) {
		t.Helper()
		body, err := kr.MarshalJSON()
		must(t, err)
		p, err := (&wire.Downlink{Kind: record.DocKeyring, Version: kr.Version(), IssuedAt: time.Now(), Body: body}).MarshalBinary()
		must(t, err)
		msg, err := wire.Seal(wire.TypeDownlink, p, false, d.fleet)
		must(t, err)
		must(t, d.broker.Publish(wire.Topics{}.Fleet(record.DocKeyring), msg, true, 1))
	}
	// The broker holds the server's keyring, the device's: the server has
	// not renewed, and connecting the device changes nothing.
	publish(kr)
	lines, report, _ = d.selftest()
	t.Logf("report, the server's keyring the device's:\n%s", report)
	wantCheck(t, lines, "documents", "WARN", ends+date+" (in 4 days): from then every rider is refused; the broker holds the server's keyring at this version (v1): the server has not renewed its keys")
	wantCheck(t, lines, "documents", "WARN", "-> check the settlement server now")

	// The server renewed (a key for a year, keyring v2): the device has
	// not had it.
	renewed, err := paycode.NewKeyring(2, append(kr.Keys(), paycode.Key{ID: d.issuer.KeyID + 1,
		Public: brokertest.NewKey(t).Public().(ed25519.PublicKey), NotBefore: now, NotAfter: now.AddDate(1, 0, 0)}))
	must(t, err)
	publish(renewed)
	lines, report, _ = d.selftest()
	t.Logf("report, a renewed keyring on the broker:\n%s", report)
	wantCheck(t, lines, "documents", "WARN", "so this device has not had it")
	wantCheck(t, lines, "broker", "WARN", "keyring v2 (device has v1)")
}

// TestSelftestKeyringRenewedNotActiveYet: the device has the server's
// renewal (a rotation within the last 14 days: its key signs, and is
// valid, from the activation delay on, 24 h by default), while the key
// valid now ends in five days. Riders are served after that day: selftest
// warned that the keyring ends and every rider is refused then, that the
// device had not had the renewal, and, the broker holding this very
// keyring, "check the settlement server now"; ctl status gave the old
// key's end. A renewal after a gap does not carry the keyring on.
func TestSelftestKeyringRenewedNotActiveYet(t *testing.T) {
	d := newSelftestDevice(t)
	now := time.Now()
	end := now.Add(5 * 24 * time.Hour).Truncate(time.Second)
	renewedEnd := now.AddDate(1, 0, 0).Truncate(time.Second)
	keyring := func(renewedFrom time.Time) *paycode.Keyring {
		kr, err := paycode.NewKeyring(2, []paycode.Key{
			{ID: d.issuer.KeyID, Public: d.issuer.Key.Public().(ed25519.PublicKey), NotBefore: now.AddDate(0, 0, -360), NotAfter: end},
			{ID: d.issuer.KeyID + 1, Public: brokertest.NewKey(t).Public().(ed25519.PublicKey), NotBefore: renewedFrom, NotAfter: renewedEnd}})
		must(t, err)
		b, err := kr.MarshalJSON()
		must(t, err)
		must(t, os.WriteFile(filepath.Join(d.dir, "keyring.json"), b, 0o644))
		return kr
	}
	// A renewal that begins a day after the key valid now ends (never
	// run: selftest reads the bundle): the keyring ends with that key.
	keyring(end.Add(24 * time.Hour))
	lines, report, _ := d.selftest()
	t.Logf("report, a gap:\n%s", report)
	wantCheck(t, lines, "documents", "WARN", "the keyring's last valid key ends "+end.UTC().Format("2006-01-02 15:04 UTC"))

	keyring(now.Add(24 * time.Hour).Truncate(time.Second)) // renewed, active tomorrow
	lines, report, _ = d.selftest()
	t.Logf("report, renewed, never run:\n%s", report)
	wantCheck(t, lines, "documents", "OK", "")
	for _, l := range lines {
		if strings.Contains(l, "the keyring's last valid key ends") {
			t.Errorf("a warning of the keyring's end with its renewal in hand: %s", l)
		}
	}
	d.start()
	expectLine(t, d.scan(d.issuer.Rider(t, 5001, now).Code(t, now)), "ACCEPTED")
	if st := d.mustCtl("status"); st.KeyringEnds == nil || !st.KeyringEnds.Equal(renewedEnd) {
		t.Errorf("ctl status keyring_ends = %v, want the renewed key's end %v", st.KeyringEnds, renewedEnd)
	}
	d.stop()
}
