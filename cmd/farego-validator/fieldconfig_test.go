package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/keyfile"
)

// runBin runs the real validator binary on cfgPath until it exits (or 30 s)
// and returns its exit status and standard error.
func runBin(t *testing.T, cfgPath string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, validatorBin, "run", "--config", cfgPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("run: %v; want it to exit with a status\n%s", err, stderr.String())
	}
	return ee.ExitCode(), stderr.String()
}

// tlsDevice is a test device whose [mqtt] logs in with a TLS client
// certificate issued for cn, its key file given mode keyMode.
func tlsDevice(t *testing.T, cn string, keyMode os.FileMode) *device {
	t.Helper()
	pki := brokertest.NewPKI(t, "")
	certFile, keyFile := pki.ClientCert(t, cn)
	d := newDevice(t, "", fmt.Sprintf("\n[ctl]\nsocket = \"ctl.sock\"\n\n[mqtt]\nbroker = \"ssl://127.0.0.1:1\"\nca_file = %q\ncert_file = %q\nkey_file = \"device-tls.key\"\ndevice_key = \"device.key\"\nfleet_public_key = \"fleet.pub\"\n",
		pki.CAFile, certFile))
	must(t, keyfile.WritePrivate(filepath.Join(d.dir, "device.key"), brokertest.NewKey(t)))
	must(t, keyfile.WritePublic(filepath.Join(d.dir, "fleet.pub"), brokertest.NewKey(t).Public().(ed25519.PublicKey)))
	key, err := os.ReadFile(keyFile)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(d.dir, "device-tls.key"), key, keyMode))
	must(t, os.Chmod(filepath.Join(d.dir, "device-tls.key"), keyMode))
	return d
}

// TestRunClientCertOfAnotherDevice: a TLS client certificate issued for
// another device id (a bundle's files mixed up on the bench) stops the
// validator at start with exit 2 and one line naming mqtt.cert_file, both
// ids and the fix, before it makes anything. It started, took taps and
// never sent them, the uplink logging "not Authorized" at every attempt.
func TestRunClientCertOfAnotherDevice(t *testing.T) {
	d := tlsDevice(t, "bus-9-rear", 0o640)
	code, stderr := runBin(t, d.cfgPath)
	for _, want := range []string{"mqtt.cert_file", `device "bus-9-rear"`, `device_id "bus-7-front"`, "farego-provision device --id bus-7-front"} {
		if code != exitUsage || !strings.Contains(stderr, want) {
			t.Errorf("exit %d, stderr:\n%s\nwant exit %d and a line saying %q", code, stderr, exitUsage, want)
		}
	}
	if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("stderr is more than one line:\n%s", stderr)
	}
	if _, err := os.Stat(filepath.Join(d.dir, "data")); !os.IsNotExist(err) {
		t.Errorf("data_dir after a config error: %v; want it not made", err)
	}
}

// TestRunClientKeyOpenToAll: the TLS client key (the device's login to
// the broker) readable by every user stops the validator with exit 2 and
// the chmod to run, as the signing key's does (it was read as it was).
// The bundle's INSTALL.txt mode, 0640 (group farego), starts.
func TestRunClientKeyOpenToAll(t *testing.T) {
	d := tlsDevice(t, "bus-7-front", 0o644)
	code, stderr := runBin(t, d.cfgPath)
	if code != exitUsage || !strings.Contains(stderr, "mqtt.key_file") || !strings.Contains(stderr, "mode -rw-r--r--") ||
		!strings.Contains(stderr, "chmod 0640") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit %d and a line naming mqtt.key_file and chmod 0640", code, stderr, exitUsage)
	}

	ok := tlsDevice(t, "bus-7-front", 0o640)
	ok.startUntil("validator running")
	ok.stop()
}

// TestRunDataDirReadOnly: a data_dir on a read-only file system (a
// read-only mount; under the unit, any directory but /var/lib/farego, which
// ProtectSystem=strict leaves read-only) stops the validator with exit 2
// and one line naming data_dir and the fix. It failed only on opening the
// queue file, with a JSON "validator stopped" record and exit 1, naming
// neither, and systemd started it again every 2 s. Needs a bind mount
// (root); skipped where the test may not mount.
func TestRunDataDirReadOnly(t *testing.T) {
	d := newDevice(t, "", "\n[ctl]\nsocket = \"ctl.sock\"\n")
	ro := filepath.Join(d.dir, "ro")
	must(t, os.MkdirAll(filepath.Join(ro, "data"), 0o700))
	if err := unix.Mount(ro, ro, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount a directory here (%v): run as root", err)
	}
	t.Cleanup(func() { unix.Unmount(ro, unix.MNT_DETACH) })
	must(t, unix.Mount("", ro, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""))
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, bytes.Replace(cfg, []byte(`data_dir = "data"`), []byte(`data_dir = "ro/data"`), 1), 0o644))

	code, stderr := runBin(t, d.cfgPath)
	dir := filepath.Join(ro, "data")
	for _, want := range []string{"config: data_dir " + dir + " cannot be written", "read-only file system", "ReadWritePaths=" + dir} {
		if code != exitUsage || !strings.Contains(stderr, want) {
			t.Errorf("exit %d, stderr:\n%s\nwant exit %d and a line saying %q", code, stderr, exitUsage, want)
		}
	}
	if strings.Contains(stderr, "validator stopped") {
		t.Errorf("stderr:\n%s\nwant the plain config line, not the log's", stderr)
	}
}

// TestSelftestClientCertOfAnotherDevice: selftest's cert line fails a
// client certificate issued for another device id, with the fix (it
// showed its dates, OK).
func TestSelftestClientCertOfAnotherDevice(t *testing.T) {
	pki := brokertest.NewPKI(t, "")
	d := newSelftestDeviceOn(t, &brokertest.Options{TLS: pki.ServerTLS(t), Users: map[string]string{"bus-7-front": "s3cret"}})
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	certFile, keyFile := pki.ClientCert(t, "bus-9-rear")
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(cfg), "[mqtt]\n",
		fmt.Sprintf("[mqtt]\nca_file = %q\ncert_file = %q\nkey_file = %q\n", pki.CAFile, certFile, keyFile), 1)), 0o644))
	lines, report, code := d.selftest()
	t.Logf("report:\n%s", report)
	if code != exitFailure {
		t.Errorf("exit %d, want 1", code)
	}
	wantCheck(t, lines, "cert", "FAIL", `the certificate of device "bus-9-rear"`)
	wantCheck(t, lines, "cert", "FAIL", "farego-provision device --id bus-7-front")
}

// TestRunScannerAIMIdentifierHint: a scanner set to send an AIM symbology
// identifier ("]Q1") before each code has every rider refused "Code not
// readable" (malformed); the refusal's log line says what the scanner adds
// and the setting (it said reason=malformed alone). With that setting,
// prefix = "]Q1", the same scan pays.
func TestRunScannerAIMIdentifierHint(t *testing.T) {
	d := newDevice(t, "", "")
	d.start()
	rider := d.issuer.Rider(t, 4242, time.Now())
	code := rider.Code(t, time.Now())
	if got := d.scan("]Q1" + code); !strings.Contains(got, "(malformed)") {
		t.Fatalf("feedback %q; want malformed", got)
	}
	line := d.waitLog(`msg="tap refused"`)
	if want := `hint="the scanner adds characters around each code (an AIM symbology identifier such as ]Q1?): set prefix = \"]Q1\" under [[scanner]]`; !strings.Contains(line, want) {
		t.Errorf("log line %s\nwant %s", line, want)
	}
	if strings.Contains(d.logged(), code[4:60]) {
		t.Error("the log holds the code")
	}
	d.stop()

	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, bytes.Replace(cfg, []byte("path = \"scanner-front\"\n"), []byte("path = \"scanner-front\"\nprefix = \"]Q1\"\n"), 1), 0o644))
	d.start()
	if got := d.scan("]Q1" + rider.Code(t, time.Now().Add(time.Second))); !strings.Contains(got, "ACCEPTED") {
		t.Errorf("feedback %q with prefix = \"]Q1\"; want ACCEPTED", got)
	}
	d.stop()
}

// TestRunContinuousScannerHint: a scanner in continuous (auto-sense) mode
// reads a phone left in front of it many times a second: green "Already
// paid" for 6 s, nothing charged again, then red "Code used". The first
// refusal's log line says what the scanner is likely set to and the fix
// (it said reason=code_used alone). A code shown again after a gap (handed
// on) is refused without it.
func TestRunContinuousScannerHint(t *testing.T) {
	d := newDevice(t, "", "")
	d.start()
	rider := d.issuer.Rider(t, 4242, time.Now())
	code := rider.Code(t, time.Now())
	if got := d.scan(code); !strings.Contains(got, "ACCEPTED") {
		t.Fatalf("first scan: %q", got)
	}
	var red string
	for i := 0; i < 200 && red == ""; i++ { // 6 s of reads at about 10 a second, and more
		time.Sleep(100 * time.Millisecond)
		if got := d.scan(code); strings.Contains(got, "REJECTED") {
			red = got
		} else if !strings.Contains(got, "Already paid") {
			t.Fatalf("re-read %d: %q; want Already paid", i, got)
		}
	}
	if !strings.Contains(red, "(code_used)") {
		t.Fatalf("no code_used after the re-reads: %q", red)
	}
	line := d.waitLog("reason=code_used")
	if !strings.Contains(line, "continuous (auto-sense) mode") || !strings.Contains(line, "same-code delay") {
		t.Errorf("log line %s\nwant the continuous-mode hint", line)
	}
	if n := strings.Count(d.logged(), `msg="tap accepted"`); n != 1 {
		t.Errorf("%d taps accepted, want 1 (the re-reads charge nothing)", n)
	}

	// Handed on after a gap: refused, no hint.
	other := d.issuer.Rider(t, 4343, time.Now())
	code = other.Code(t, time.Now())
	if got := d.scan(code); !strings.Contains(got, "ACCEPTED") {
		t.Fatalf("second rider: %q", got)
	}
	time.Sleep(agent.ReReadWindow + 500*time.Millisecond)
	if got := d.scan(code); !strings.Contains(got, "(code_used)") {
		t.Fatalf("after a gap: %q; want code_used", got)
	}
	line = d.waitLog("reason=code_used")
	if strings.Contains(line, "hint=") {
		t.Errorf("a code shown again after a gap: %s\nwant no hint", line)
	}
	d.stop()
}
