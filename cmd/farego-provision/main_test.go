package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/api/apitest"
	"github.com/farego/farego/sync/keyfile"
	"github.com/farego/farego/sync/update"
)

func provision(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestProvisionDevice(t *testing.T) {
	dir := t.TempDir()
	fleet, out := filepath.Join(dir, "fleet"), filepath.Join(dir, "devices")
	if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 || !strings.Contains(o, "fleet created") {
		t.Fatalf("init-fleet: %d %q %q", c, o, e)
	}
	srv := apitest.StartWith(t, apitest.Options{FleetKey: filepath.Join(fleet, "fleet.key")})
	store := srv.Store
	tok := "@" + srv.TokenFile

	if c, _, e := provision(t, "init-fleet", "--dir", fleet); c != 1 || !strings.Contains(e, "already exists") {
		t.Errorf("second init-fleet: %d %q", c, e)
	}
	args := []string{"device", "--fleet", fleet, "--id", "bus-9-front", "--route", "42", "--server", srv.URL,
		"--operator-token", tok, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--scanner", "front=/dev/scanner-front"}
	// Without a fare table on the server nothing is made.
	if c, _, e := provision(t, args...); c != 1 || !strings.Contains(e, "fare table") {
		t.Fatalf("device without fares: %d %q", c, e)
	}
	if _, err := os.Stat(filepath.Join(out, "bus-9-front")); err == nil {
		t.Error("a failed provisioning left a bundle behind")
	}
	tbl := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	if err := putFares(srv.URL, strings.TrimPrefix(tok, "@"), tbl); err != nil {
		t.Fatal(err)
	}
	if c, o, e := provision(t, args...); c != 0 || !strings.Contains(o, "registered") || e != "" {
		t.Fatalf("device: %d %q %q", c, o, e)
	}
	// A bundle without a broker is noted: its validator keeps every tap
	// (it said so only in its own log, on the bus).
	if c, _, e := provision(t, append(args, "--id", "bus-9-offline", "--broker", "")...); c != 0 || !strings.Contains(e, "no --broker: this device is offline only") {
		t.Errorf("device --broker \"\": %d %q; want a note that it is offline only", c, e)
	}
	// A scanner by its kernel name is warned about: on a bus it comes
	// back as ttyACM1 after a re-plug, or a modem takes its number.
	if c, _, e := provision(t, append(args[:len(args)-2:len(args)-2], "--id", "bus-9-acm", "--scanner", "front=/dev/ttyACM0")...); c != 0 ||
		!strings.Contains(e, "warning: --scanner front=/dev/ttyACM0: ttyACM0 is a number the kernel gives") || !strings.Contains(e, "/dev/scanner-NAME") {
		t.Errorf("device --scanner front=/dev/ttyACM0: %d %q; want a warning with the udev fix", c, e)
	}
	// A relative data directory is noted: on a bus it would be under
	// /etc/farego, read-only.
	if c, _, e := provision(t, append(args, "--id", "bus-9-rel", "--data-dir", "data")...); c != 0 || !strings.Contains(e, `--data-dir "data" is relative`) {
		t.Errorf("device --data-dir data: %d %q; want a note that it is relative", c, e)
	}
	b := filepath.Join(out, "bus-9-front")
	for _, f := range []string{bundleConfig, bundleDeviceKey, bundleDevicePub, bundleTLSKey, bundleTLSCert, bundleCA, bundleFleetPub, bundleKeyring, bundleFares, bundleUnit, bundleReadme} {
		if _, err := os.Stat(filepath.Join(b, f)); err != nil {
			t.Errorf("bundle lacks %s", f)
		}
	}
	// INSTALL.txt runs only what the bundle and make dist ship.
	install, err := os.ReadFile(filepath.Join(b, bundleReadme))
	if err != nil {
		t.Fatal(err)
	}
	// It starts where a technician does, with the tarball and the binary
	// side by side: unpacked and entered, the binary one level up (it said
	// neither, and a binary put in the bundle's directory went into
	// /etc/farego with cp -a .; a newcomer's walkthrough).
	if !strings.Contains(string(install), "tar xzf bus-9-front.tar.gz && cd bus-9-front") ||
		!strings.Contains(string(install), "install -m 0755 ../farego-validator /usr/local/bin/") {
		t.Errorf("INSTALL.txt does not say to unpack the bundle and go into it, the binary beside the tarball:\n%s", install)
	}
	for _, w := range strings.Fields(string(install)) {
		if strings.HasPrefix(w, "farego-") && !strings.HasPrefix(w, "farego-validator") && w != "farego-ctl" { // a group
			t.Errorf("INSTALL.txt names %s, which the bundle does not ship", w)
		}
	}
	// Its modes are ones the validator takes: INSTALL.txt's chmod lines,
	// run on a copy of the bundle, leave a signing key it will read (it
	// refuses one others may read; INSTALL.txt made it 0640).
	etc := filepath.Join(dir, "etc-farego")
	if err := os.CopyFS(etc, os.DirFS(b)); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(install), "\n") {
		for _, cmd := range strings.Split(line, "&&") {
			cmd, _, _ = strings.Cut(cmd, "#")
			if f := strings.Fields(cmd); len(f) > 2 && f[0] == "chmod" {
				for _, path := range f[2:] {
					mode, err := strconv.ParseUint(f[1], 8, 32)
					if err != nil {
						t.Fatalf("INSTALL.txt: %q", cmd)
					}
					if err := os.Chmod(strings.Replace(path, "/etc/farego", etc, 1), os.FileMode(mode)); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	if _, err := keyfile.ReadPrivate(filepath.Join(etc, bundleDeviceKey)); err != nil {
		t.Errorf("after INSTALL.txt's chmods the validator refuses its key: %v", err)
	}
	// The install ends with a sync: the bus's power goes with its
	// ignition, and what cp, chmod and systemctl enable wrote (the
	// config, the keys, the unit's enable link) sat in the page cache —
	// a cut then left empty files or no link, and a validator that never
	// came into service.
	lines := strings.Split(string(install), "\n")
	enable := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "systemctl daemon-reload && systemctl enable") })
	synced := slices.IndexFunc(lines, func(l string) bool { f := strings.Fields(l); return len(f) > 0 && f[0] == "sync" })
	if enable < 0 || synced < enable {
		t.Errorf("INSTALL.txt does not sync after installing and enabling the validator:\n%s", install)
	}
	// The registered key is the bundle's.
	dev, err := store.Device(context.Background(), "bus-9-front")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keyfile.ReadPublic(filepath.Join(b, bundleDevicePub))
	if err != nil || !bytes.Equal(pub, dev.PublicKey) {
		t.Errorf("registered key differs from the bundle's")
	}
	if _, err := keyfile.ReadPrivate(filepath.Join(b, bundleDeviceKey)); err != nil {
		t.Error(err)
	}
	if _, err := paycode.LoadKeyring(filepath.Join(b, bundleKeyring)); err != nil {
		t.Error(err)
	}
	var cfg map[string]any
	if _, err := toml.DecodeFile(filepath.Join(b, bundleConfig), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["device_id"] != "bus-9-front" || cfg["route"] != "42" || cfg["mqtt"].(map[string]any)["broker"] != "tcp://127.0.0.1:1883" {
		t.Errorf("config = %v", cfg)
	}
	// The update section, once uncommented as the comment says, names the server.
	raw, err := os.ReadFile(filepath.Join(b, bundleConfig))
	if err != nil {
		t.Fatal(err)
	}
	on := strings.NewReplacer("# [update]", "[update]", "# server =", "server =").Replace(string(raw))
	cfg = nil
	if _, err := toml.Decode(on, &cfg); err != nil {
		t.Fatal(err)
	}
	if u, _ := cfg["update"].(map[string]any); u == nil || u["server"] != srv.URL {
		t.Errorf("uncommented [update] = %v, want server %s", cfg["update"], srv.URL)
	}
	// The tarball holds the same files.
	f, err := os.Open(filepath.Join(out, "bus-9-front.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h.Name, "bus-9-front/") {
			t.Errorf("tarball entry %q", h.Name)
		}
		n++
	}
	f.Close()
	if n != 11 {
		t.Errorf("tarball holds %d files, want 11", n)
	}
	// A second provisioning refuses to replace the identity without --force.
	if c, _, e := provision(t, args...); c != 1 || !strings.Contains(e, "--force") {
		t.Errorf("re-provision without --force: %d %q", c, e)
	}
	if c, _, e := provision(t, append(args, "--force")...); c != 0 {
		t.Errorf("re-provision with --force: %d %q", c, e)
	}
	dev2, _ := store.Device(context.Background(), "bus-9-front")
	if bytes.Equal(dev2.PublicKey, dev.PublicKey) {
		t.Error("--force did not register the new key")
	}
	pub2, err := keyfile.ReadPublic(filepath.Join(b, bundleDevicePub))
	if err != nil || !bytes.Equal(pub2, dev2.PublicKey) {
		t.Errorf("after --force the bundle's key is not the registered one: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(out, ".bus-9-front.*")); len(left) != 0 {
		t.Errorf("--force left %v", left)
	}
	// A revoked device (a stolen validator) is provisioned again only
	// with --unrevoke: --force alone lifted its revocation, unsaid.
	if err := store.RevokeDevice(context.Background(), "bus-9-front"); err != nil {
		t.Fatal(err)
	}
	if c, _, e := provision(t, append(args, "--force")...); c != 1 || !strings.Contains(e, "was revoked") || !strings.Contains(e, "--unrevoke") || !strings.Contains(e, "kept") {
		t.Errorf("re-provision of a revoked device with --force: %d %q; want refused, the old bundle kept", c, e)
	}
	if d, _ := store.Device(context.Background(), "bus-9-front"); d.Revoked.IsZero() || !bytes.Equal(d.PublicKey, dev2.PublicKey) {
		t.Error("a refused re-provision lifted the revocation or changed the key")
	}
	// Each refusal names the flags that get past it: every run makes a
	// new key, so --unrevoke goes with --force (it was told "run again
	// with --unrevoke", and that alone was refused in turn, naming no flag).
	elsewhere := append(slices.Clone(args), "--out", filepath.Join(dir, "elsewhere"))
	if c, _, e := provision(t, elsewhere...); c != 1 || !strings.Contains(e, "--force --unrevoke") {
		t.Errorf("provisioning a revoked device from another directory: %d %q; want refused, naming --force --unrevoke", c, e)
	}
	if c, _, e := provision(t, append(elsewhere, "--unrevoke")...); c != 1 || !strings.Contains(e, "run again with --force") {
		t.Errorf("provisioning a revoked device with --unrevoke alone: %d %q; want refused, naming --force", c, e)
	}
	if d, _ := store.Device(context.Background(), "bus-9-front"); d.Revoked.IsZero() || !bytes.Equal(d.PublicKey, dev2.PublicKey) {
		t.Error("a refused re-provision lifted the revocation or changed the key")
	}
	if c, o, e := provision(t, append(args, "--force", "--unrevoke")...); c != 0 || !strings.Contains(o, "its revocation is lifted") {
		t.Errorf("re-provision with --force --unrevoke: %d %q %q", c, o, e)
	}
	if dev2, _ = store.Device(context.Background(), "bus-9-front"); !dev2.Revoked.IsZero() {
		t.Error("--unrevoke left the device revoked")
	}

	// Another fleet's directory: refused before anything is made (the
	// device would refuse every downlink and ack of this server).
	other := filepath.Join(dir, "other-fleet")
	if c, _, e := provision(t, "init-fleet", "--dir", other); c != 0 {
		t.Fatal(e)
	}
	otherArgs := []string{"device", "--fleet", other, "--id", "bus-10-front", "--route", "42", "--server", srv.URL,
		"--operator-token", tok, "--out", out}
	if c, _, e := provision(t, otherArgs...); c != 1 || !strings.Contains(e, "not the server's") || !strings.Contains(e, "init-fleet --dir DATA/keys") {
		t.Errorf("device with another fleet's directory: %d %q", c, e)
	}
	// A fleet directory without the CA: the error says how to make it.
	noCA := []string{"device", "--fleet", filepath.Join(dir, "no-fleet"), "--id", "bus-10-front", "--route", "42", "--server", srv.URL,
		"--operator-token", tok, "--out", out}
	if c, _, e := provision(t, noCA...); c != 1 || !strings.Contains(e, "farego-provision init-fleet --dir "+filepath.Join(dir, "no-fleet")) {
		t.Errorf("device with no fleet CA: %d %q", c, e)
	}
	if _, err := os.Stat(filepath.Join(out, "bus-10-front")); err == nil {
		t.Error("a refused provisioning left a bundle behind")
	}
	if _, err := store.Device(context.Background(), "bus-10-front"); err == nil {
		t.Error("a refused provisioning registered the device")
	}

	// --force whose registration is refused (a wrong token): the old
	// bundle stays whole, and stays the registered one.
	keyBefore, err := os.ReadFile(filepath.Join(b, bundleDeviceKey))
	if err != nil {
		t.Fatal(err)
	}
	badTok := slices.Clone(args)
	badTok[slices.Index(badTok, "--operator-token")+1] = "fgt_wrong"
	if c, _, e := provision(t, append(badTok, "--force")...); c != 1 || !strings.Contains(e, "kept") || !strings.Contains(e, "check --operator-token") {
		t.Errorf("re-provision with --force, registration refused: %d %q", c, e)
	}
	if dev3, _ := store.Device(context.Background(), "bus-9-front"); !bytes.Equal(dev3.PublicKey, dev2.PublicKey) {
		t.Error("the refused registration changed the registered key")
	}
	keyAfter, err := os.ReadFile(filepath.Join(b, bundleDeviceKey))
	if err != nil || !bytes.Equal(keyAfter, keyBefore) {
		t.Fatalf("the old bundle's key is gone or changed after a failed --force: %v", err)
	}
	for _, f := range []string{bundleConfig, bundleDevicePub, bundleFleetPub, bundleFares} {
		if _, err := os.Stat(filepath.Join(b, f)); err != nil {
			t.Errorf("the old bundle lost %s after a failed --force", f)
		}
	}
}

func putFares(url, tokFile, body string) error {
	tok, err := os.ReadFile(tokFile)
	if err != nil {
		return err
	}
	return callPut(url+"/v1/fares", strings.TrimSpace(string(tok)), body)
}

func callPut(url, tok, body string) error {
	req, _ := http.NewRequest("PUT", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("PUT fares: %s", resp.Status)
	}
	return nil
}

// TestSampleConfigNamesBundleFiles: the sample config (make dist ships it)
// names the files a device bundle holds.
func TestSampleConfigNamesBundleFiles(t *testing.T) {
	var cfg struct {
		Provision struct{ Keyring, Fares string }
		MQTT      struct {
			CAFile         string `toml:"ca_file"`
			CertFile       string `toml:"cert_file"`
			KeyFile        string `toml:"key_file"`
			DeviceKey      string `toml:"device_key"`
			FleetPublicKey string `toml:"fleet_public_key"`
		}
	}
	if _, err := toml.DecodeFile(filepath.Join("..", "..", "testdata", "validator", "validator.toml"), &cfg); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ key, got, want string }{
		{"provision.keyring", cfg.Provision.Keyring, bundleKeyring},
		{"provision.fares", cfg.Provision.Fares, bundleFares},
		{"mqtt.ca_file", cfg.MQTT.CAFile, bundleCA},
		{"mqtt.cert_file", cfg.MQTT.CertFile, bundleTLSCert},
		{"mqtt.key_file", cfg.MQTT.KeyFile, bundleTLSKey},
		{"mqtt.device_key", cfg.MQTT.DeviceKey, bundleDeviceKey},
		{"mqtt.fleet_public_key", cfg.MQTT.FleetPublicKey, bundleFleetPub},
	} {
		if f.got != f.want {
			t.Errorf("sample %s = %q, the bundle's file is %q", f.key, f.got, f.want)
		}
	}
}

// TestConfigValuesReadBack: the values a technician gives (a vehicle name
// with quotes, a path with a backslash or a space, a broker password) are
// written so that validator.toml reads them back as given; a value with a
// quote and a newline used to end its string and add settings of its own.
func TestConfigValuesReadBack(t *testing.T) {
	o := deviceOpts{id: "bus-9-front", route: `4"2`, vehicle: "Bus \"7\" \\ east\nrisk_cap = 100000", dataDir: `/var/lib/far go\x`,
		metrics: "127.0.0.1:9100", broker: "ssl://mqtt.example.net:8883", server: "http://settle:8080/\n[policy]",
		topicPrefix: "fleet\t1", ctlSocket: "/run/farego-validator/rear \"x\".sock"}
	o.scanners.Set(`front=/dev/serial/by-id/usb-Honeywell "X"`)
	cfg, err := validatorConfig(o, "bus-9-front", `pa"ss\word`+"\x01")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		DeviceID string `toml:"device_id"`
		Route    string
		Vehicle  string
		DataDir  string `toml:"data_dir"`
		Policy   struct {
			RiskCap int `toml:"risk_cap"`
		}
		Scanner []struct{ Name, Path string }
		MQTT    struct {
			TopicPrefix string `toml:"topic_prefix"`
			Password    string
			CAFile      string `toml:"ca_file"`
		}
		Ctl struct{ Socket, Group string }
	}
	if _, err := toml.Decode(string(cfg), &got); err != nil {
		t.Fatalf("validator.toml does not parse: %v\n%s", err, cfg)
	}
	if got.Route != o.route || got.Vehicle != o.vehicle || got.DataDir != o.dataDir || got.MQTT.TopicPrefix != o.topicPrefix ||
		got.MQTT.Password != `pa"ss\word`+"\x01" || len(got.Scanner) != 1 || got.Scanner[0].Path != `/dev/serial/by-id/usb-Honeywell "X"` {
		t.Errorf("read back %+v", got)
	}
	if got.Policy.RiskCap != 10 {
		t.Errorf("risk_cap %d: a value added a setting", got.Policy.RiskCap)
	}
	// A TLS broker with passwords (no --tls): the device trusts the
	// fleet CA that signs broker-cert's certificates (without it, only
	// the system's roots: x509 unknown authority, forever); a plain one
	// needs none.
	if got.MQTT.CAFile != "ca.crt" {
		t.Errorf("broker %s without --tls: ca_file %q, want ca.crt", o.broker, got.MQTT.CAFile)
	}
	for broker, want := range map[string]bool{"tcp://mqtt:1883": false, "tcp://a:1883,mqtts://b:8883": true, "tls://b:8883": true} {
		p := o
		p.broker = broker
		cfg, _ := validatorConfig(p, "bus-9-front", "p")
		if got := strings.Contains(string(cfg), "\nca_file"); got != want {
			t.Errorf("broker %s: ca_file written %v, want %v", broker, got, want)
		}
	}
	if got.Ctl.Socket != o.ctlSocket {
		t.Errorf("ctl socket %q, want %q", got.Ctl.Socket, o.ctlSocket)
	}
	// No socket group: the unit names it ($FAREGO_CTL_GROUP), and a
	// validator of the release before refuses a bundle with a key it does
	// not know (ctl.group: unknown key, exit 2).
	if got.Ctl.Group != "" {
		t.Errorf("ctl group %q in the bundle; want none (the unit's FAREGO_CTL_GROUP)", got.Ctl.Group)
	}
	// Without --ctl-socket, no [ctl] (the validator's default applies).
	o.ctlSocket = ""
	if cfg, _ := validatorConfig(o, "bus-9-front", "p"); strings.Contains(string(cfg), "[ctl]") {
		t.Errorf("a [ctl] section without --ctl-socket:\n%s", cfg)
	}
	// INSTALL.txt's metrics check names the device's metrics address.
	for metrics, want := range map[string]string{"127.0.0.1:9112": "curl -s 127.0.0.1:9112/metrics", ":9200": "curl -s 127.0.0.1:9200/metrics",
		"[::1]:9300": "curl -s [::1]:9300/metrics", "": "no metrics address",
		"127.0.0.1:0": "grep 'metrics listening'"} {
		o.metrics = metrics
		if got := installFor(o); !strings.Contains(got, want) || strings.Contains(got, "METRICS") || !strings.Contains(got, "bus-9-front") {
			t.Errorf("INSTALL.txt for --metrics %q does not say %q:\n%s", metrics, want, got)
		}
	}
}

// FuzzTOMLString: any text written by tomlString reads back as itself.
func FuzzTOMLString(f *testing.F) {
	for _, s := range []string{"", `a"b`, `C:\x`, "line\nbreak", "\x00\x1f\x7f", "é中"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return // TOML is UTF-8; flags are too
		}
		var got struct{ K string }
		if _, err := toml.Decode("k = "+tomlString(s), &got); err != nil || got.K != s {
			t.Fatalf("%q: read back %q, %v", s, got.K, err)
		}
	})
}

// TestBrokerCert: the broker's certificate, signed by the fleet CA, is the
// one a device trusting the bundle's ca.crt accepts for the names given,
// and no other; an existing one is replaced only with --force.
func TestBrokerCert(t *testing.T) {
	dir := t.TempDir()
	fleet, out := filepath.Join(dir, "fleet"), filepath.Join(dir, "broker")
	if c, _, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatal(e)
	}
	for _, bad := range [][]string{{}, {"--host", "mqtt..example"}, {"--host", "mqtt.example.net,"}, {"--host", "x", "--days", "0"}} {
		if c, _, e := provision(t, append([]string{"broker-cert", "--fleet", fleet, "--out", out}, bad...)...); c != 2 {
			t.Errorf("broker-cert %q: %d %q, want a usage error", bad, c, e)
		}
	}
	args := []string{"broker-cert", "--fleet", fleet, "--out", out, "--host", "mqtt.example.net,127.0.0.1"}
	if c, o, e := provision(t, args...); c != 0 || !strings.Contains(o, "broker.crt") {
		t.Fatalf("broker-cert: %d %q %q", c, o, e)
	}
	if fi, err := os.Stat(filepath.Join(out, "broker.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("broker.key: %v %v, want mode 0600", fi, err)
	}
	if c, _, e := provision(t, args...); c != 1 || !strings.Contains(e, "--force") {
		t.Errorf("broker-cert again: %d %q, want a refusal naming --force", c, e)
	}
	old, _ := os.ReadFile(filepath.Join(out, "broker.crt"))
	if c, _, e := provision(t, append(args, "--force")...); c != 0 {
		t.Fatalf("broker-cert --force: %d %q", c, e)
	}
	if renewed, _ := os.ReadFile(filepath.Join(out, "broker.crt")); bytes.Equal(renewed, old) {
		t.Error("--force did not renew the certificate")
	}

	cert, err := tls.LoadX509KeyPair(filepath.Join(out, "broker.crt"), filepath.Join(out, "broker.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	caPEM, err := os.ReadFile(filepath.Join(fleet, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	for _, c := range []struct {
		name string
		ok   bool
	}{{"mqtt.example.net", true}, {"127.0.0.1", true}, {"other.example.net", false}} {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: c.name})
		if err == nil {
			conn.Close()
		}
		if (err == nil) != c.ok {
			t.Errorf("a device dialling %s: %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// TestInitFleetOverAServersKeys: a settlement server made by init without
// --fleet-key has a fleet key and no CA: no device could ever be
// provisioned for it, short of a new init (a newcomer's review, following
// the Operator's guide). init-fleet over its key directory adds the CA,
// and devices are then provisioned with --fleet DATA/keys; a directory
// whose fleet.pub is not fleet.key's half is refused, and a CA is made
// once.
func TestInitFleetOverAServersKeys(t *testing.T) {
	srv := apitest.Start(t)
	keysDir := srv.Keys.Path()
	if c, o, e := provision(t, "init-fleet", "--dir", keysDir); c != 0 || !strings.Contains(o, "MQTT CA now") {
		t.Fatalf("init-fleet over the server's keys: %d %q %q", c, o, e)
	}
	if c, _, e := provision(t, "init-fleet", "--dir", keysDir); c != 1 || !strings.Contains(e, "already exists") {
		t.Errorf("a second init-fleet: %d %q", c, e)
	}
	if err := putFares(srv.URL, srv.TokenFile,
		`{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "devices")
	if c, o, e := provision(t, "device", "--fleet", keysDir, "--id", "bus-1", "--route", "42", "--server", srv.URL,
		"--operator-token", "@"+srv.TokenFile, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--scanner", "front=/dev/ttyACM0"); c != 0 {
		t.Fatalf("device with the server's key directory as its fleet: %d %q %q", c, o, e)
	}

	// Half a fleet: fleet.pub of another key.
	other := t.TempDir()
	if c, _, e := provision(t, "init-fleet", "--dir", other); c != 0 {
		t.Fatal(e)
	}
	mixed := t.TempDir()
	for src, name := range map[string]string{filepath.Join(keysDir, "fleet.key"): "fleet.key", filepath.Join(other, "fleet.pub"): "fleet.pub"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mixed, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if c, _, e := provision(t, "init-fleet", "--dir", mixed); c != 1 || !strings.Contains(e, "not the public half") {
		t.Errorf("init-fleet over a mismatched pair: %d %q", c, e)
	}
	if _, err := os.Stat(filepath.Join(mixed, "ca.crt")); err == nil {
		t.Error("a refused init-fleet made a CA")
	}
}

// TestDeviceBadAddresses: a bad metrics address or broker URL is a usage
// error before anything is made or registered (a bundle whose validator
// would not start was written, and the device registered).
func TestDeviceBadAddresses(t *testing.T) {
	srv := apitest.Start(t)
	fleet := filepath.Join(t.TempDir(), "fleet")
	if c, _, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatal(e)
	}
	out := filepath.Join(t.TempDir(), "devices")
	for _, bad := range [][]string{{"--metrics", "bogus"}, {"--metrics", "127.0.0.1:99999"}, {"--broker", "notaurl"},
		{"--broker", "http://mqtt.example:1883"}, {"--broker", "tcp://mqtt.example"}, {"--broker", "tcp://a:1883,ssl://b"},
		// A bundle the validator would refuse (it was registered and
		// written, and only selftest told).
		{"--scanner", "front=/dev/x", "--scanner", "front=/dev/y"}, {"--scanner", "a=-", "--scanner", "b=-"},
		{"--scanner", "validator-bus-0417-door-scanner-front=/dev/x"}} {
		args := append([]string{"device", "--fleet", fleet, "--id", "bus-1", "--route", "42", "--server", srv.URL,
			"--operator-token", "@" + srv.TokenFile, "--out", out}, bad...)
		if c, _, e := provision(t, args...); c != 2 || !strings.Contains(e, strings.TrimPrefix(bad[0], "-")) {
			t.Errorf("%v: exit %d, %q; want a usage error naming it", bad, c, e)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused device left files")
	}
	if devs, err := srv.Store.Devices(context.Background()); err != nil || len(devs) != 0 {
		t.Errorf("devices registered: %v, %v", devs, err)
	}
}

// INSTALL.txt tells a device installed from the .deb (binary in /usr/bin)
// not to copy the bundle's unit (binary in /usr/local/bin) over the
// package's: following every line after apt install left a unit whose
// ExecStart named a binary that is not there.
func TestInstallTextForPackagedDevice(t *testing.T) {
	got := installFor(deviceOpts{id: "bus-1"})
	for _, want := range []string{"/usr/local/bin/farego-validator", "apt install ./farego-validator_", "/usr/bin/farego-validator", "Do not copy this bundle's unit"} {
		if !strings.Contains(got, want) {
			t.Errorf("INSTALL.txt does not say %q:\n%s", want, got)
		}
	}
}

// TestInstallTextLeavesConfigReadable follows INSTALL.txt's mkdir, cp and
// chmod lines literally (the chown lines need root and the user farego:
// left out), from a bundle directory as farego-provision makes it (0700)
// and as scp -r or a USB stick carries it: cp -a . copied that mode onto
// /etc/farego, whose group farego then could not enter, so the validator
// (user farego) could not read its config and the unit restarted it every
// 2 s with "config: open /etc/farego/validator.toml: permission denied".
func TestInstallTextLeavesConfigReadable(t *testing.T) {
	root, bundle := t.TempDir(), filepath.Join(t.TempDir(), "bus-1")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(bundle, 0o700))
	for f, mode := range map[string]os.FileMode{bundleConfig: 0o600, bundleDeviceKey: 0o600, bundleTLSKey: 0o600, bundleKeyring: 0o644, bundleFleetPub: 0o644} {
		must(os.WriteFile(filepath.Join(bundle, f), []byte("x\n"), mode))
	}
	must(os.Chmod(bundle, 0o700)) // whatever the umask
	etc := filepath.Join(root, "etc", "farego")
	ran := 0
	for line := range strings.SplitSeq(installFor(deviceOpts{id: "bus-1"}), "\n") {
		line, _, _ = strings.Cut(line, "#")
		for cmd := range strings.SplitSeq(line, "&&") {
			cmd = strings.TrimSpace(cmd)
			f := strings.Fields(cmd)
			if len(f) == 0 || !slices.Contains([]string{"mkdir", "cp", "chmod"}, f[0]) || strings.Contains(cmd, "/etc/systemd") {
				continue // the unit's copy is the package's business
			}
			c := exec.Command("sh", "-c", strings.ReplaceAll(cmd, "/etc/farego", etc))
			c.Dir = bundle
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", cmd, err, out)
			}
			ran++
		}
	}
	if ran < 3 {
		t.Fatalf("INSTALL.txt has %d mkdir, cp and chmod commands; want them all", ran)
	}
	fi, err := os.Stat(etc)
	must(err)
	if m := fi.Mode().Perm(); m&0o050 != 0o050 || m&0o007 != 0 {
		t.Errorf("/etc/farego is %04o after INSTALL.txt; want its group (farego) to enter and list it, others nothing", m)
	}
	for f, want := range map[string]os.FileMode{bundleConfig: 0o640, bundleTLSKey: 0o640, bundleDeviceKey: 0o600} {
		fi, err := os.Stat(filepath.Join(etc, f))
		must(err)
		if m := fi.Mode().Perm(); m != want {
			t.Errorf("%s is %04o after INSTALL.txt; want %04o", f, m, want)
		}
	}
}

// TestUnitLetsTheValidatorReadNTPState: the validator asks adjtimex
// (read-only) whether NTP keeps the clock, and does not believe a Date over
// plain HTTP far from such a clock (a forgery on the path). The unit's
// ProtectClock=yes filters adjtimex whatever its arguments, and so does the
// @system-service allow-list, which lacks it: under the shipped unit every
// forged Date was believed (field review). The unit must allow it by name
// after every line that takes it away (systemd merges SystemCallFilter=
// lines in order: the first, an allow-list, sets the default; a later
// ~-line removes its calls, a later allow-line adds them back; @privileged
// holds @clock, which holds adjtimex), and keep the clock unsettable
// another way (no capabilities: adjtimex then only reads).
func TestUnitLetsTheValidatorReadNTPState(t *testing.T) {
	allowed, capsEmpty := false, false
	takesAdjtimex := map[string]bool{"adjtimex": true, "@clock": true, "@privileged": true}
	for line := range strings.SplitSeq(systemdUnit, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		switch k {
		case "ProtectClock":
			if v != "no" && v != "false" {
				t.Errorf("ProtectClock=%s: it filters adjtimex, even to read the NTP state", v)
			}
		case "CapabilityBoundingSet":
			capsEmpty = v == ""
		case "SystemCallFilter":
			deny := strings.HasPrefix(v, "~")
			for _, s := range strings.Fields(strings.TrimPrefix(v, "~")) {
				switch {
				case deny && takesAdjtimex[s]:
					allowed = false // until a later line allows it again
				case !deny && s == "adjtimex":
					allowed = true
				}
			}
		}
	}
	if !allowed {
		t.Error("no SystemCallFilter= allows adjtimex by name after the lines that take it away (@system-service does not hold it; @privileged does, through @clock)")
	}
	if !capsEmpty {
		t.Error("CapabilityBoundingSet= is not empty: without ProtectClock=, CAP_SYS_TIME must be kept out so adjtimex only reads")
	}
	if out, err := exec.Command("systemd-analyze", "syscall-filter", "@system-service").Output(); err == nil && strings.Contains(string(out), "adjtimex") {
		t.Log("this systemd's @system-service holds adjtimex; the unit names it for those that do not")
	}
}

// TestUnitGivesTheValidatorItsBootID: an update counts the starts of a new
// version within one kernel boot, so that power cuts (the ignition) do not
// roll a good version back as a crash loop; the unit's ProcSubset=pid hides
// /proc/sys/kernel/random/boot_id, so the unit must hand it over (systemd's
// %b specifier) in the variable the updater reads.
func TestUnitGivesTheValidatorItsBootID(t *testing.T) {
	if !strings.Contains(systemdUnit, "\nProcSubset=pid\n") {
		t.Log("the unit no longer hides /proc/sys; the variable is still read first")
	}
	if want := "\nEnvironment=" + update.BootIDEnv + "=%b\n"; !strings.Contains(systemdUnit, want) {
		t.Errorf("the unit lacks %q", strings.TrimSpace(want))
	}
}

// TestInitFleetAfterACutRun: init-fleet cut (a power cut, a kill) between
// the fleet key and its public half left a directory every re-run refused
// ("holds part of a fleet") until deleted by hand (power-cut review): the
// half is derived from the key. Cut between the CA's key and certificate,
// the re-run says what happened and what to do.
func TestInitFleetAfterACutRun(t *testing.T) {
	fleet := filepath.Join(t.TempDir(), "fleet")
	if err := os.Mkdir(fleet, 0o700); err != nil {
		t.Fatal(err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := keyfile.WritePrivate(filepath.Join(fleet, "fleet.key"), priv); err != nil {
		t.Fatal(err)
	}
	if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 || !strings.Contains(o, "written from fleet.key") {
		t.Fatalf("init-fleet over a fleet key alone: %d %q %q", c, o, e)
	}
	pub, err := keyfile.ReadPublic(filepath.Join(fleet, "fleet.pub"))
	if err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("fleet.pub: %v, %v", pub, err)
	}
	for _, f := range []string{"ca.key", "ca.crt"} {
		if _, err := os.Stat(filepath.Join(fleet, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}

	if err := os.Remove(filepath.Join(fleet, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	if c, _, e := provision(t, "init-fleet", "--dir", fleet); c != 1 || !strings.Contains(e, "stopped before it finished") ||
		!strings.Contains(e, "delete "+filepath.Join(fleet, "ca.key")) {
		t.Errorf("init-fleet over a CA key without its certificate: %d %q", c, e)
	}
}

// TestEveryUnitGroupIsMade: each group the unit names (but the static
// dialout) is made by INSTALL.txt, by the package's postinst where
// systemd-sysusers is missing, and by its sysusers.d entry: the unit does
// not start with a group that does not exist. The control socket's group
// (farego-ctl) is the one INSTALL.txt gives the onboard computer, never
// farego, which reads the config and the keys.
func TestEveryUnitGroupIsMade(t *testing.T) {
	install := installFor(deviceOpts{id: "bus-1"})
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join("..", "farego-validator", "packaging", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	postinst, sysusers := read("deb/postinst"), read("sysusers.d/farego-validator.conf")
	var groups []string
	for line := range strings.SplitSeq(systemdUnit, "\n") {
		if v, ok := strings.CutPrefix(line, "SupplementaryGroups="); ok {
			groups = append(groups, strings.Fields(v)...)
		}
	}
	if !slices.Contains(groups, "farego-ctl") {
		t.Errorf("the unit's supplementary groups %v lack farego-ctl, the control socket's", groups)
	}
	for _, g := range groups {
		if g == "dialout" {
			continue
		}
		if !strings.Contains(install, "groupadd --system "+g) {
			t.Errorf("INSTALL.txt does not make group %s", g)
		}
		if !strings.Contains(postinst, "addgroup --system "+g) {
			t.Errorf("postinst does not make group %s", g)
		}
		if !strings.Contains(sysusers, "\ng "+g+" ") {
			t.Errorf("the sysusers.d entry does not make group %s", g)
		}
	}
	if !strings.Contains(install, "usermod -aG farego-ctl ") || strings.Contains(install, "usermod -aG farego ") {
		t.Errorf("INSTALL.txt does not give the onboard computer group farego-ctl alone:\n%s", install)
	}
}

// TestRegistrationKnownToTheReleaseBefore: a registration without
// --unrevoke sends only the fields the release before takes (id,
// public_key, certificate, replace): its server decodes strictly, and
// "unrevoke": false sent every time made it refuse every device
// (bad_json: unknown field "unrevoke") until the server was upgraded
// first. --unrevoke names it. The requests go to the real API through a
// proxy that notes their fields.
func TestRegistrationKnownToTheReleaseBefore(t *testing.T) {
	dir := t.TempDir()
	fleet, out := filepath.Join(dir, "fleet"), filepath.Join(dir, "devices")
	if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatalf("init-fleet: %d %q %q", c, o, e)
	}
	srv := apitest.StartWith(t, apitest.Options{FleetKey: filepath.Join(fleet, "fleet.key")})
	tbl := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	if err := putFares(srv.URL, srv.TokenFile, tbl); err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var fields [][]string // of each POST /v1/devices
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/devices" {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				t.Error(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Errorf("registration body: %v", err)
			}
			mu.Lock()
			fields = append(fields, slices.Sorted(maps.Keys(m)))
			mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	args := []string{"device", "--fleet", fleet, "--id", "bus-3-front", "--route", "3", "--server", front.URL,
		"--operator-token", "@" + srv.TokenFile, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--scanner", "front=/dev/ttyACM0"}
	if c, o, e := provision(t, args...); c != 0 {
		t.Fatalf("device: %d %q %q", c, o, e)
	}
	if c, o, e := provision(t, append(args, "--force")...); c != 0 {
		t.Fatalf("device --force: %d %q %q", c, o, e)
	}
	if err := srv.Store.RevokeDevice(context.Background(), "bus-3-front"); err != nil {
		t.Fatal(err)
	}
	if c, o, e := provision(t, append(args, "--force", "--unrevoke")...); c != 0 || !strings.Contains(o, "its revocation is lifted") {
		t.Fatalf("device --force --unrevoke: %d %q %q", c, o, e)
	}
	known := []string{"certificate", "id", "public_key", "replace"}
	want := [][]string{known, known, append(slices.Clone(known), "unrevoke")}
	mu.Lock()
	defer mu.Unlock()
	if !slices.EqualFunc(fields, want, slices.Equal[[]string]) {
		t.Errorf("registrations sent the fields %q; want %q (unrevoke only when asked)", fields, want)
	}
}

// TestProvisionWithAFastClock: a technician's laptop two hours fast made
// a device certificate not valid for two hours on the broker and the
// device (both on the right time): the device was refused and its
// selftest blamed the certificate. It is dated by the server's clock, and
// the technician is told the laptop's clock is off.
func TestProvisionWithAFastClock(t *testing.T) {
	dir := t.TempDir()
	fleet, out := filepath.Join(dir, "fleet"), filepath.Join(dir, "devices")
	if c, _, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatalf("init-fleet: %s", e)
	}
	srv := apitest.StartWith(t, apitest.Options{FleetKey: filepath.Join(fleet, "fleet.key")})
	tbl := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	if err := putFares(srv.URL, srv.TokenFile, tbl); err != nil {
		t.Fatal(err)
	}
	now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	t.Cleanup(func() { now = time.Now })
	c, _, e := provision(t, "device", "--fleet", fleet, "--id", "bus-fast", "--route", "42", "--server", srv.URL,
		"--operator-token", "@"+srv.TokenFile, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--data-dir", "/var/lib/farego")
	if c != 0 {
		t.Fatalf("device: %d %s", c, e)
	}
	if !strings.Contains(e, "clock is 2h0m0s ahead of the server's") {
		t.Errorf("no word of the laptop's clock: %q", e)
	}
	b, err := os.ReadFile(filepath.Join(out, "bus-fast", bundleTLSCert))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM in the device's certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotBefore.Before(time.Now()) {
		t.Errorf("the device's certificate begins %v, after the server's now: the broker refuses it until then", cert.NotBefore)
	}
}
