package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/keyfile"
)

// TestConfigBrokerURLChecked: an mqtt.broker the uplink cannot use (the
// host:port a technician types without its scheme) is a config error that
// names the setting and the form it wants, and never repeats a password of
// the URL. It was found only when the uplink started, after the queue file
// was made, as "mqtt: uplink: invalid config: broker URL 1 of 1 is not a
// URL".
func TestConfigBrokerURLChecked(t *testing.T) {
	dir := t.TempDir()
	base := "device_id = \"d\"\nroute = \"1\"\ndata_dir = \"x\"\n[[scanner]]\nname = \"a\"\npath = \"-\"\n" +
		"[mqtt]\ndevice_key = \"device.key\"\nfleet_public_key = \"fleet.pub\"\n"
	for broker, want := range map[string]string{
		"127.0.0.1:1883":             "mqtt.broker (URL 1 of 1): broker URL: not a URL (want scheme://host:port: tcp://host:1883",
		"tcp://h:1883,10.0.0.5:1883": "mqtt.broker (URL 2 of 2): broker URL: not a URL",
		"ws://h:1883":                "mqtt.broker (URL 1 of 1): broker URL ws://h:1883: scheme must be tcp, mqtt, ssl, tls or mqtts",
		"tcp://h":                    "mqtt.broker (URL 1 of 1): broker URL tcp://h: want scheme://host:port",
		"tcp://u:s3cret@h:1%zz":      "mqtt.broker (URL 1 of 1): broker URL: not a URL",
		"tcp://u:s3cret@h:1883":      "mqtt.broker (URL 1 of 1) tcp://u:xxxxx@h:1883 holds a login: put the user name and password in mqtt.username and mqtt.password",
		"tcp://127.0.0.1:1883":       "",
		"ssl://mqtt.example.net:8883,tcp://10.0.0.5:1883": "",
	} {
		path := filepath.Join(dir, "validator.toml")
		must(t, os.WriteFile(path, []byte(base+"broker = \""+broker+"\"\n"), 0o600))
		_, err := loadConfig(path)
		switch {
		case want == "" && err != nil:
			t.Errorf("broker %q: %v", broker, err)
		case want != "" && (!errors.Is(err, errConfig) || !strings.Contains(err.Error(), want)):
			t.Errorf("broker %q: %v; want a config error saying %q", broker, err, want)
		case err != nil && strings.Contains(err.Error(), "s3cret"):
			t.Errorf("broker %q: the error repeats the password: %v", broker, err)
		}
	}
}

// TestRunBadBrokerURLMakesNothing: the real validator given such a config
// exits 2 with the setting named, before it makes its data directory (it
// made the directory and a new queue file, with a new epoch, first).
func TestRunBadBrokerURLMakesNothing(t *testing.T) {
	d := newDevice(t, "", "\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[ctl]\nsocket = \"ctl.sock\"\n\n"+
		"[mqtt]\nbroker = \"127.0.0.1:1883\"\ndevice_key = \"device.key\"\nfleet_public_key = \"fleet.pub\"\n")
	// Real key files, so that nothing but the broker URL is wrong.
	must(t, keyfile.WritePrivate(filepath.Join(d.dir, "device.key"), brokertest.NewKey(t)))
	must(t, keyfile.WritePublic(filepath.Join(d.dir, "fleet.pub"), brokertest.NewKey(t).Public().(ed25519.PublicKey)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, validatorBin, "run", "--config", d.cfgPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("run: %v; want exit status 2\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "mqtt.broker (URL 1 of 1): broker URL: not a URL (want scheme://host:port") {
		t.Errorf("stderr %q; want mqtt.broker named with the form it wants", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(d.dir, "data")); !os.IsNotExist(err) {
		t.Errorf("data_dir after a config error: %v; want it not made", err)
	}
}

// TestBrokerURLLoginRefusedUnprinted: a login written into mqtt.broker
// (tcp://user:password@host:port) was taken by the config check; the
// real validator then made its queue file and stopped when its uplink
// refused it, in Go's terms ("put credentials in Username and Password"),
// and selftest printed the URL, password and all, on its broker line (a
// technician pastes that output into a ticket). Both now refuse it as a
// config error naming mqtt.username and mqtt.password, the password
// masked, before anything is made.
func TestBrokerURLLoginRefusedUnprinted(t *testing.T) {
	d := newDevice(t, "", "\n[metrics]\nlisten = \"\"\n\n[ctl]\nsocket = \"off\"\n\n"+
		"[mqtt]\nbroker = \"tcp://bus-7-front:s3cretpw@127.0.0.1:1\"\ndevice_key = \"device.key\"\nfleet_public_key = \"fleet.pub\"\n")
	must(t, keyfile.WritePrivate(filepath.Join(d.dir, "device.key"), brokertest.NewKey(t)))
	must(t, keyfile.WritePublic(filepath.Join(d.dir, "fleet.pub"), brokertest.NewKey(t).Public().(ed25519.PublicKey)))
	for _, sub := range []string{"selftest", "run"} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, validatorBin, sub, "--config", d.cfgPath)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("%s: %v; want it to fail\n%s", sub, err, out.String())
		}
		if strings.Contains(out.String(), "s3cretpw") {
			t.Errorf("%s printed the broker password:\n%s", sub, out.String())
		}
		if !strings.Contains(out.String(), "mqtt.username and mqtt.password") {
			t.Errorf("%s: %q; want mqtt.username and mqtt.password named", sub, out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(d.dir, "data")); !os.IsNotExist(err) {
		t.Errorf("data_dir after a config error: %v; want it not made", err)
	}
}
