package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/keyfile"
)

// TestBundleFilesTheServiceCannotReadSaySo runs the real validator as
// another user than root, as the unit runs it (user farego), on a bundle
// installed as root with INSTALL.txt's chown and chmod lines left out: the
// config still 0600 root's as the tarball has it, then device.key root's
// (chown -R root:farego done, the chown farego of the signing key not).
// Each stops it with exit 2 naming the file and the chown and chmod that
// give it to the validator's user; it used to say "permission denied"
// alone, while selftest, run as root, read both. Needs root.
func TestBundleFilesTheServiceCannotReadSaySo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs the validator as another user: needs root")
	}
	const uid, gid = 64131, 64132 // the unit's farego:farego, by number
	d := newDevice(t, "", "\n[metrics]\nlisten = \"\"\n\n[ctl]\nsocket = \"off\"\n\n"+
		"[mqtt]\nbroker = \"tcp://127.0.0.1:1\"\ndevice_key = \"device.key\"\nfleet_public_key = \"fleet.pub\"\n")
	key := filepath.Join(d.dir, "device.key")
	must(t, keyfile.WritePrivate(key, brokertest.NewKey(t)))
	must(t, keyfile.WritePublic(filepath.Join(d.dir, "fleet.pub"), brokertest.NewKey(t).Public().(ed25519.PublicKey)))
	// /etc/farego as INSTALL.txt makes it: root:farego 0750 (the test's
	// temporary directories are 0700: opened up to be passed through).
	must(t, os.Chmod(filepath.Dir(d.dir), 0o711))
	must(t, os.Chown(d.dir, 0, gid))
	must(t, os.Chmod(d.dir, 0o750))
	bindir := t.TempDir()
	must(t, os.Chmod(filepath.Dir(bindir), 0o711))
	must(t, os.Chmod(bindir, 0o755))
	bin := filepath.Join(bindir, "farego-validator")
	copyFile(t, validatorBin, bin)

	run := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "run", "--config", d.cfgPath)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("run: %v; want exit status 2\n%s", err, stderr.String())
		}
		return stderr.String()
	}

	// The config as the tarball has it: root's, 0600.
	must(t, os.Chown(d.cfgPath, 0, 0))
	must(t, os.Chmod(d.cfgPath, 0o600))
	out := run()
	if want := "chown root:farego " + d.cfgPath + " && chmod 0640 " + d.cfgPath; !strings.Contains(out, "permission denied") || !strings.Contains(out, want) {
		t.Errorf("config not readable by the validator's user: %q; want permission denied and %q", out, want)
	}

	// The config right; the signing key root's (0600).
	must(t, os.Chown(d.cfgPath, 0, gid))
	must(t, os.Chmod(d.cfgPath, 0o640))
	must(t, os.Chown(key, 0, gid))
	must(t, os.Chmod(key, 0o600))
	out = run()
	if want := "mqtt.device_key"; !strings.Contains(out, want) || !strings.Contains(out, "chown farego "+key+" && chmod 0600 "+key) {
		t.Errorf("device.key not readable by the validator's user: %q; want %s named with chown farego and chmod 0600", out, want)
	}

	// Given to its user, the key is read: what stops it now is the data
	// directory the test left root's (the unit's StateDirectory= makes it
	// farego's), nothing of the bundle.
	must(t, os.Chown(key, uid, gid))
	out = run()
	if strings.Contains(out, "device_key") || strings.Contains(out, "validator.toml: permission denied") || !strings.Contains(out, "data_dir") {
		t.Errorf("bundle readable by the validator's user: %q; want only data_dir refused", out)
	}
}

// TestSelftestDeviceKeyServiceAccess: selftest, run as root, read a
// device.key the validator's user cannot (root's, 0600: INSTALL.txt's
// chown farego left out) and went on to the broker, while the unit then
// stopped at start. It fails the broker line naming the key and the
// chown; given to the user, the key passes and the broker is tried. A real
// key file, its owner set as the technician left it (root only; user
// nobody stands for farego).
func TestSelftestDeviceKeyServiceAccess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	defer func(u string) { serviceUser = u }(serviceUser)
	serviceUser = "nobody"
	dir := t.TempDir()
	key := filepath.Join(dir, "device.key")
	must(t, keyfile.WritePrivate(key, brokertest.NewKey(t)))
	must(t, keyfile.WritePublic(filepath.Join(dir, "fleet.pub"), brokertest.NewKey(t).Public().(ed25519.PublicKey)))
	cfg := &Config{DeviceID: "bus-7-front", dir: dir,
		MQTT: MQTTConfig{Broker: "tcp://127.0.0.1:1", DeviceKey: "device.key", FleetPublicKey: "fleet.pub"}}
	check := func() selftestLine {
		t.Helper()
		s := &selftest{cfg: cfg, now: time.Now()}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		s.checkBroker(ctx)
		if len(s.results) == 0 {
			t.Fatal("checkBroker: no result")
		}
		return s.results[0]
	}
	must(t, os.Chown(key, 0, 0))
	if l := check(); l.level != levelFail || !strings.Contains(l.why, "may not open it") || !strings.Contains(l.do, "chown nobody "+key+" && chmod 0600 "+key) {
		t.Errorf("device.key root's 0600: %+v; want FAIL saying the validator may not open it, with chown nobody", l)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	must(t, os.Chown(key, uid, -1))
	if l := check(); strings.Contains(l.why, "device_key") {
		t.Errorf("device.key the user's: %+v; want the broker tried", l)
	}
}

// TestConfigPasswordOpenToAllWarned: a validator.toml holding the broker
// password (a bundle without --tls) that every user may read (0644: a
// config copied or edited by hand, not INSTALL.txt's chmod 0640) was taken
// without a word, while a TLS key_file so open is refused: anyone on the
// device could log in to the broker as it. selftest warns on a config
// line, and the real validator logs a warning at start, with the chown and
// chmod (it still runs: refused, buses that run today would stop); at 0640
// neither says anything.
func TestConfigPasswordOpenToAllWarned(t *testing.T) {
	d := newDevice(t, "", "\n[metrics]\nlisten = \"\"\n\n[ctl]\nsocket = \"ctl.sock\"\n\n"+
		"[mqtt]\nbroker = \"tcp://127.0.0.1:1\"\nusername = \"bus-7-front\"\npassword = \"s3cretpw\"\n"+
		"device_key = \"device.key\"\nfleet_public_key = \"fleet.pub\"\n")
	must(t, keyfile.WritePrivate(filepath.Join(d.dir, "device.key"), brokertest.NewKey(t)))
	must(t, keyfile.WritePublic(filepath.Join(d.dir, "fleet.pub"), brokertest.NewKey(t).Public().(ed25519.PublicKey)))
	const warned = "holds the broker password (mqtt.password) and every user may read it"
	selftestOut := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, validatorBin, "selftest", "--config", d.cfgPath).CombinedOutput()
		if strings.Contains(string(out), "s3cretpw") {
			t.Errorf("selftest printed the password:\n%s", out)
		}
		return string(out)
	}
	for _, mode := range []os.FileMode{0o644, 0o640} {
		must(t, os.Chmod(d.cfgPath, mode))
		out := selftestOut()
		line := "WARN  config    " + d.cfgPath + " " + warned
		if got := strings.Contains(out, line) && strings.Contains(out, "chmod 0640 "+d.cfgPath); got != (mode == 0o644) {
			t.Errorf("config mode %04o: selftest says %q; want the warning %v", mode, out, mode == 0o644)
		}
		d.mu.Lock()
		d.logText.Reset() // this start's log alone
		d.mu.Unlock()
		d.start()
		if got := strings.Contains(d.logged(), warned); got != (mode == 0o644) {
			t.Errorf("config mode %04o: the validator's log %q; want the warning %v", mode, d.logged(), mode == 0o644)
		}
		if strings.Contains(d.logged(), "s3cretpw") {
			t.Errorf("the validator logged the password:\n%s", d.logged())
		}
		d.kill()
	}
}

// TestSelftestConfigServiceAccess: selftest, run as root, read the
// tarball's validator.toml (root's, 0600: INSTALL.txt's chmod 0640 left
// out), which the validator's user cannot, and said nothing of it. It fails
// a config line with the chown and chmod; at root:GROUP 0640 (the user's
// group) it says nothing. A real file (root only; user nobody stands for
// farego).
func TestSelftestConfigServiceAccess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	defer func(u string) { serviceUser = u }(serviceUser)
	serviceUser = "nobody"
	d := newDevice(t, "", "")
	gid, _ := strconv.Atoi(nobody.Gid)
	for _, c := range []struct {
		gid  int
		mode os.FileMode
		fail bool
	}{{0, 0o600, true}, {gid, 0o640, false}} {
		must(t, os.Chown(d.cfgPath, 0, c.gid))
		must(t, os.Chmod(d.cfgPath, c.mode))
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmdSelftest(ctx, []string{"--config", d.cfgPath}, &out, &out)
		cancel()
		failed := strings.Contains(out.String(), "FAIL  config    "+d.cfgPath+" is owned by root:") &&
			strings.Contains(out.String(), "chown root:nobody "+d.cfgPath+" && chmod 0640 "+d.cfgPath)
		if failed != c.fail {
			t.Errorf("config gid %d mode %04o: selftest says\n%s\nwant a config FAIL %v", c.gid, c.mode, out.String(), c.fail)
		}
	}
}
