package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/sync/keyfile"
	"github.com/farego/farego/sync/uplink"
)

// Bundle file names.
const (
	bundleConfig    = "validator.toml"
	bundleDeviceKey = "device.key"
	bundleDevicePub = "device.pub"
	bundleTLSKey    = "device-tls.key"
	bundleTLSCert   = "device.crt"
	bundleCA        = "ca.crt"
	bundleFleetPub  = "fleet.pub"
	bundleKeyring   = "keyring.json"
	bundleFares     = "fares.json"
	bundleUnit      = "farego-validator.service"
	bundleReadme    = "INSTALL.txt"
)

// scannerFlag collects --scanner name=path.
type scannerFlag []struct{ Name, Path string }

func (s *scannerFlag) String() string { return fmt.Sprint(*s) }
func (s *scannerFlag) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return errors.New("want NAME=PATH, e.g. front=/dev/scanner-front")
	}
	// What the validator would refuse in the bundle is refused before
	// the device is registered.
	var names, paths []string
	for _, o := range *s {
		names, paths = append(names, o.Name), append(paths, o.Path)
	}
	names, paths = append(names, name), append(paths, path)
	if err := record.CheckScanners(names, paths); err != nil {
		return err
	}
	*s = append(*s, struct{ Name, Path string }{name, path})
	return nil
}

type deviceOpts struct {
	fleet, id, route, vehicle, server, token, out, broker, dataDir, metrics, topicPrefix, ctlSocket string
	scanners                                                                                        scannerFlag
	force, tls, unrevoke                                                                            bool
}

func cmdDevice(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-provision device", flag.ContinueOnError)
	var o deviceOpts
	fs.StringVar(&o.fleet, "fleet", "fleet", "fleet directory (from init-fleet)")
	fs.StringVar(&o.id, "id", "", "device id, e.g. bus-0417-front (required)")
	fs.StringVar(&o.route, "route", "", "route the vehicle serves (required)")
	fs.StringVar(&o.vehicle, "vehicle", "", "vehicle id")
	fs.StringVar(&o.server, "server", "http://127.0.0.1:8080", "settlement server URL")
	fs.StringVar(&o.token, "operator-token", "", "operator token, or @FILE (required)")
	fs.StringVar(&o.out, "out", "devices", "where to write the bundle (OUT/ID/ and OUT/ID.tar.gz)")
	fs.StringVar(&o.broker, "broker", "", "MQTT broker URL the device uses, e.g. ssl://mqtt.example.net:8883 (empty: offline only)")
	fs.StringVar(&o.topicPrefix, "topic-prefix", "", "MQTT topic prefix (default farego)")
	fs.BoolVar(&o.tls, "tls", false, "use the client certificate (mutual TLS) instead of the broker password")
	fs.StringVar(&o.dataDir, "data-dir", "/var/lib/farego", "data directory on the device")
	fs.StringVar(&o.metrics, "metrics", "127.0.0.1:9100", "metrics listen address on the device (empty: none)")
	fs.StringVar(&o.ctlSocket, "ctl-socket", "", `control socket on the device (default: the unit's RuntimeDirectory, else /run/farego-validator/ctl.sock; "off": none); each validator on one machine needs its own`)
	fs.Var(&o.scanners, "scanner", "scanner NAME=PATH (repeatable; default front=/dev/scanner-front)")
	fs.BoolVar(&o.force, "force", false, "replace an existing device identity (the old key stops working)")
	fs.BoolVar(&o.unrevoke, "unrevoke", false, "register a revoked device again, lifting its revocation (with --force: every run makes a new identity)")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if err := cli.Required(fs, stderr, "id", "route", "operator-token"); err != nil {
		return err
	}
	if err := record.ValidDeviceID(o.id); err != nil {
		return cli.Usagef(stderr, fs.Name(), "--id: %v", err)
	}
	if record.ReservedDeviceID(o.id) {
		return cli.Usagef(stderr, fs.Name(), "--id: %q is reserved for the settlement server and the broker; pick another id", o.id)
	}
	tok, err := cli.Token("--operator-token", o.token)
	if err != nil {
		return err
	}
	o.token = tok
	if o.token == "" {
		return cli.Usagef(stderr, fs.Name(), "--operator-token: %s is empty", fs.Lookup("operator-token").Value)
	}
	if len(o.scanners) == 0 {
		o.scanners.Set("front=/dev/scanner-front")
	}
	for _, sc := range o.scanners {
		// Allowed (a bench), but on a bus the scanner may come back
		// under another number, or a modem's port take this one.
		if hint, _ := scanner.KernelNameHint(sc.Path); hint != "" {
			fmt.Fprintf(stderr, "farego-provision device: warning: --scanner %s=%s: %s\n", sc.Name, sc.Path, hint)
		}
	}
	// Checked before the device is registered: a bundle its validator
	// refuses to start with was only found out on the bus.
	if err := checkListen(o.metrics); o.metrics != "" && err != nil {
		return cli.Usagef(stderr, fs.Name(), "--metrics %q: %v (host:port, e.g. 127.0.0.1:9100; empty: none)", o.metrics, err)
	}
	if err := checkBrokers(o.broker); err != nil {
		return cli.Usagef(stderr, fs.Name(), "--broker: %v", err)
	}
	if o.broker == "" {
		// Allowed (a bench, a device that is never online), but on a bus
		// its taps never leave it: the validator says so only in its log.
		fmt.Fprintf(stderr, "farego-provision device: note: no --broker: this device is offline only, its taps stay on it "+
			"(give the broker it reaches, e.g. --broker ssl://mqtt.example.net:8883, and provision it again with --force)\n")
	}
	if !filepath.IsAbs(o.dataDir) {
		// Right for a bundle run where it lies (tests, a bench); on a bus
		// the config is in /etc/farego, which the unit makes read-only.
		fmt.Fprintf(stderr, "farego-provision device: note: --data-dir %q is relative: the validator takes it from its configuration's directory "+
			"(on a bus /etc/farego, read-only under the unit: give an absolute path such as /var/lib/farego)\n", o.dataDir)
	}
	return provisionDevice(ctx, o, stdout, stderr)
}

// checkListen checks a listen address: host:port, the port a number.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// checkBrokers checks the device's broker URLs as its validator will
// (comma-separated, each by uplink.CheckBroker). Empty: offline only.
func checkBrokers(list string) error {
	if list == "" {
		return nil
	}
	for b := range strings.SplitSeq(list, ",") {
		if err := uplink.CheckBroker(b); err != nil {
			return err
		}
	}
	return nil
}

// now is the clock (tests move it).
var now = time.Now

// clockWarn is how far this computer's clock may be from the server's
// before farego-provision says so.
const clockWarn = 5 * time.Minute

// serverTime reads the server's clock from its HTTP Date header (to the
// second), and false when it cannot.
func serverTime(ctx context.Context, server string) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/v1/fleet", nil)
	if err != nil {
		return time.Time{}, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return time.Time{}, false
	}
	resp.Body.Close()
	at, err := http.ParseTime(resp.Header.Get("Date"))
	return at, err == nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// cutAt, when set (tests), is called at each step of putting a bundle (or
// the broker's certificate) in place; an error stops the run there, as a
// power cut would.
var cutAt func(step string) error

func provisionDevice(ctx context.Context, o deviceOpts, stdout, stderr io.Writer) error {
	// Refused on a card before anything is registered: the first key
	// written there failed its chmod after the registration (the server
	// held an identity no bundle had, and a --force run had retired the
	// working one), or, on exfat-fuse, the tarball carried device.key 0777.
	if err := keepsModes("--out", o.out, "the bundle's private keys",
		"nothing was registered: write the bundle to a local directory (--out devices) and copy devices/"+o.id+".tar.gz to the card (the tarball keeps the keys' modes)"); err != nil {
		return err
	}
	dir := filepath.Join(o.out, o.id)
	// A whole bundle beside its place is registered: a run stopped (a
	// power cut) after the registration and before the bundle was in
	// place left it there, and the one in place (or none) is not the
	// registered identity. It is put in place now; registering yet
	// another identity is what --force does afterwards.
	tmp := filepath.Join(o.out, "."+o.id+".new")
	// An identity whole in it (its key written last, before the
	// registration) is that of a run cut while registering it (Ctrl-C
	// before this release, a kill, a power cut, the server gone before it
	// answered): the server holds it or nothing. It is registered again,
	// which the server takes for the same key, and the bundle finished:
	// such a run asked for --force, and a technician's loop over a fleet
	// left a device registered with no bundle at every cut.
	var resume *identity
	if _, err := os.Stat(filepath.Join(tmp, bundleConfig)); err == nil {
		if err := placeBundle(o, dir, tmp); err != nil {
			return err
		}
		again := ""
		if o.force {
			again = " (no new identity registered: run again with --force for one)"
		}
		fmt.Fprintf(stdout, "device %s: an earlier run registered it and stopped before its bundle was in place; finished: bundle in %s/ and %s%s\n",
			o.id, dir, filepath.Join(o.out, o.id+".tar.gz"), again)
		return nil
	} else if id, err := readIdentity(tmp); err == nil {
		resume = id
	} else if _, err := os.Stat(tmp); err == nil && !o.force {
		return fmt.Errorf("an earlier run for %s stopped while registering it (%s is not whole): the server may hold an identity "+
			"that no bundle has, and the one in %s, if any, may no longer be registered; run again with --force to register a new one",
			o.id, tmp, dir)
	}
	replacing := false
	if _, err := os.Stat(filepath.Join(dir, bundleDeviceKey)); err == nil {
		if !o.force && resume != nil {
			return fmt.Errorf("an earlier run for %s stopped while registering its new identity (kept in %s): the bundle in %s may no longer be registered; "+
				"run again with --force to finish it (the same new identity is registered)", o.id, tmp, dir)
		}
		if !o.force {
			return fmt.Errorf("%s already has an identity (%s); use --force to replace it", o.id, filepath.Join(dir, bundleDeviceKey))
		}
		replacing = true // the old bundle stays until the new identity is registered
	}
	caCert, caKey, caPEM, err := loadCA(o.fleet)
	if err != nil {
		return err
	}
	if resume != nil {
		// The run cut may have been for another fleet (a staging server,
		// the same --out): its identity, registered here, made a bundle
		// with this CA and a certificate of the other, which the broker
		// refuses.
		if err := resume.signedBy(caCert); err != nil {
			return fmt.Errorf("an earlier run for %s stopped while registering the identity kept in %s, made for another fleet (%v): "+
				"finish it with that run's --fleet and --server, or remove %s to register a new identity here (with --force if %s is registered here)",
				o.id, tmp, err, tmp, o.id)
		}
	}
	fleetPub, err := os.ReadFile(filepath.Join(o.fleet, fleetPubFile))
	if err != nil {
		return fmt.Errorf("fleet public key: %w", err)
	}
	fleetKey, err := keyfile.ReadPublic(filepath.Join(o.fleet, fleetPubFile))
	if err != nil {
		return err
	}
	server := strings.TrimRight(o.server, "/")
	// The fleet directory must be the server's: a device trusting another
	// fleet key refuses every downlink and every ack of the server (its
	// taps would never leave it).
	var fleet struct {
		Key string `json:"fleet_public_key"`
	}
	if err := cli.GetJSONWaiting(ctx, server+"/v1/fleet", 10*time.Second, os.Stderr, &fleet); err != nil {
		return fmt.Errorf("the server's fleet key: %w", err)
	}
	if got := hex.EncodeToString(fleetKey); fleet.Key != got {
		return fmt.Errorf("the fleet key in %s (%.16s…) is not the server's (%.16s…): a validator with it would refuse every downlink and ack; "+
			"use the fleet directory the server was initialised with (its init --fleet-key FLEET/fleet.key; without --fleet-key, the server's DATA/keys, where farego-provision init-fleet --dir DATA/keys makes the CA)",
			filepath.Join(o.fleet, fleetPubFile), got, fleet.Key)
	}
	// Fetch what the device needs before changing anything on the server.
	var krJSON, faresJSON json.RawMessage
	if err := cli.CallJSON(ctx, "GET", server+"/v1/keyring", "", nil, &krJSON); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if _, err := paycode.ParseKeyring(krJSON); err != nil {
		return fmt.Errorf("the server's keyring: %w", err)
	}
	if err := cli.CallJSON(ctx, "GET", server+"/v1/fares", "", nil, &faresJSON); err != nil {
		return fmt.Errorf("fare table: %w (upload one first: PUT /v1/fares)", err)
	}
	if _, err := fare.Parse(faresJSON); err != nil {
		return fmt.Errorf("the server's fare table: %w", err)
	}

	id := resume
	if id == nil {
		if id, err = newIdentity(ctx, o, server, caCert, caKey, stderr); err != nil {
			return err
		}
	}
	var reg struct {
		MQTTUsername string `json:"mqtt_username"`
		MQTTPassword string `json:"mqtt_password"`
		Unrevoked    bool   `json:"unrevoked"`
	}
	if resume == nil {
		// The identity is written before the registration: a run
		// stopped from here on is told apart from one that never
		// registered, and the next one registers the same key.
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		if err := id.write(tmp); err != nil {
			return err
		}
	}
	if err := cutHere("registering"); err != nil {
		return err
	}
	body := map[string]any{"id": o.id, "public_key": hex.EncodeToString(id.pub), "certificate": string(id.certPEM), "replace": o.force}
	if o.unrevoke {
		// Only when asked: a server of the release before refuses a
		// field it does not know (bad_json), every registration with it.
		body["unrevoke"] = true
	}
	// Not cut by Ctrl-C: the device being registered is finished, and
	// the process ends by the signal afterwards (cli.SignalContext).
	if err := cli.CallJSON(context.WithoutCancel(ctx), "POST", server+"/v1/devices", o.token, body, &reg); err != nil {
		ae, na := (*cli.APIError)(nil), (*cli.NoAnswer)(nil)
		// A refusal (4xx) or no connection registered nothing; a 5xx may
		// be a proxy's (502, 504) after the server took it: the identity
		// is kept for the next run, which registers it again.
		errors.As(err, &ae)
		answered := (ae != nil && ae.Status < 500) || errors.As(err, &na)
		if answered && resume == nil && os.RemoveAll(tmp) == nil { // nothing registered
			durable.SyncDir(o.out)
		}
		if ae != nil && (ae.Status == http.StatusForbidden || ae.Status == http.StatusUnauthorized) {
			// "forbidden: not an API token" named no flag.
			err = fmt.Errorf("%w: check --operator-token (the server's DATA/keys/operator.token, or an operator token from farego-settlement token create)", err)
		} else if ae != nil && ae.Code == "device_revoked" {
			// Every run makes a new key, which a registered device takes
			// only with --force: --unrevoke alone was refused next.
			err = fmt.Errorf("%w: if it is to work again (not a stolen one), run again with --force --unrevoke", err)
		} else if ae != nil && ae.Code == "device_exists" && !o.force {
			// A bundle made elsewhere (or removed): this run's new key.
			err = fmt.Errorf("%w: run again with --force to register this run's new key (the old one stops working)", err)
		} else if !answered {
			err = fmt.Errorf("%w (the server may have registered it: run again to finish, registering the same key)", err)
		}
		if replacing {
			return fmt.Errorf("registering %s: %w (the old bundle in %s is kept and still registered)", o.id, err, dir)
		}
		return fmt.Errorf("registering %s: %w", o.id, err)
	}
	if err := cutHere("registered"); err != nil {
		return err
	}
	if resume != nil {
		// What the cut run wrote after its registration is written anew
		// (its MQTT password is the old registration's).
		if err := id.clearBeside(tmp); err != nil {
			return err
		}
	}
	// Registered: the new identity is the device's now. The bundle is
	// written whole beside its place, then put there (a replaced one is
	// moved aside and removed last).
	cfg, err := validatorConfig(o, reg.MQTTUsername, reg.MQTTPassword)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{bundleCA, caPEM, 0o644},
		{bundleFleetPub, fleetPub, 0o644},
		{bundleKeyring, krJSON, 0o644},
		{bundleFares, faresJSON, 0o644},
		{bundleUnit, []byte(systemdUnit), 0o644},
		{bundleReadme, []byte(installFor(o)), 0o644},
		{bundleConfig, cfg, 0o600},
	} {
		if err := durable.Create(filepath.Join(tmp, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	if err := placeBundle(o, dir, tmp); err != nil {
		return err
	}
	lifted := ""
	if reg.Unrevoked {
		lifted = " (it was revoked: its revocation is lifted)"
	}
	again := ""
	if resume != nil {
		again = " (an earlier run was cut while registering it: its identity is registered and its bundle finished)"
	}
	fmt.Fprintf(stdout, "device %s registered%s%s; bundle in %s/ and %s\n", o.id, lifted, again, dir, filepath.Join(o.out, o.id+".tar.gz"))
	return nil
}

// identity is a device's key pair and MQTT client certificate, made
// before its registration.
type identity struct {
	pub                ed25519.PublicKey
	priv               ed25519.PrivateKey
	certPEM, tlsKeyPEM []byte
}

// newIdentity makes a device's key pair and client certificate.
func newIdentity(ctx context.Context, o deviceOpts, server string, caCert *x509.Certificate, caKey *ecdsa.PrivateKey, stderr io.Writer) (*identity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	// The certificate is dated by the earlier of this computer's clock and
	// the server's: a laptop hours fast made one the broker and the
	// device, on the right time, took for not valid yet (refused until
	// then, and the device's selftest blaming its certificate).
	from := now()
	if at, ok := serverTime(ctx, server); ok {
		if off := from.Sub(at); off.Abs() > clockWarn {
			side := "behind"
			if off > 0 {
				side = "ahead of"
			}
			fmt.Fprintf(stderr, "farego-provision device: warning: this computer's clock is %s %s the server's: fix it (NTP); "+
				"the device's certificate is dated by the earlier of the two\n", off.Abs().Round(time.Minute), side)
		}
		from = minTime(from, at)
	}
	certPEM, tlsKeyPEM, err := issueClientCert(caCert, caKey, o.id, from)
	if err != nil {
		return nil, err
	}
	return &identity{pub: pub, priv: priv, certPEM: certPEM, tlsKeyPEM: tlsKeyPEM}, nil
}

// write writes the identity into dir (made here), each file durably and
// the device key last: with it, the identity is whole.
func (id *identity) write(dir string) error {
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := durable.Create(filepath.Join(dir, bundleTLSKey), id.tlsKeyPEM, 0o600); err != nil {
		return err
	}
	if err := durable.Create(filepath.Join(dir, bundleTLSCert), id.certPEM, 0o644); err != nil {
		return err
	}
	if err := keyfile.WritePublic(filepath.Join(dir, bundleDevicePub), id.pub); err != nil {
		return err
	}
	return keyfile.WritePrivate(filepath.Join(dir, bundleDeviceKey), id.priv)
}

// readIdentity reads a whole identity that write left in dir.
func readIdentity(dir string) (*identity, error) {
	priv, err := keyfile.ReadPrivate(filepath.Join(dir, bundleDeviceKey))
	if err != nil {
		return nil, err
	}
	pub, err := keyfile.ReadPublic(filepath.Join(dir, bundleDevicePub))
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pub, priv.Public().(ed25519.PublicKey)) {
		return nil, fmt.Errorf("%s is not %s's public half", bundleDevicePub, bundleDeviceKey)
	}
	id := &identity{pub: pub, priv: priv}
	if id.certPEM, err = os.ReadFile(filepath.Join(dir, bundleTLSCert)); err != nil {
		return nil, err
	}
	if id.tlsKeyPEM, err = os.ReadFile(filepath.Join(dir, bundleTLSKey)); err != nil {
		return nil, err
	}
	return id, nil
}

// signedBy checks that the identity's client certificate is ca's.
func (id *identity) signedBy(ca *x509.Certificate) error {
	b, _ := pem.Decode(id.certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return fmt.Errorf("%s is no PEM certificate", bundleTLSCert)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %w", bundleTLSCert, err)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("its %s is not signed by this fleet's CA %q: %w", bundleTLSCert, ca.Subject.CommonName, err)
	}
	return nil
}

// clearBeside removes from dir everything but the identity's files.
func (id *identity) clearBeside(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		switch e.Name() {
		case bundleDeviceKey, bundleDevicePub, bundleTLSKey, bundleTLSCert:
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return durable.SyncDir(dir)
}

// placeBundle puts the whole, registered bundle tmp in place as dir (a
// bundle there is moved aside and removed last) with its tarball. The
// tarball is written first, from tmp: a run stopped at any step leaves tmp
// until the bundle is in place, and the next run finishes it — the
// tarball written after the rename was left stale (a replaced identity's,
// no longer registered) or missing by a power cut, and the next run only
// said the device had an identity.
func placeBundle(o deviceOpts, dir, tmp string) error {
	tarball := filepath.Join(o.out, o.id+".tar.gz")
	if err := writeTarball(tarball, tmp, o.id); err != nil {
		return err
	}
	if err := cutHere("tarball"); err != nil {
		return err
	}
	old := filepath.Join(o.out, "."+o.id+".old")
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if err := durable.Rename(dir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w (the new bundle, registered, is in %s)", err, tmp)
	}
	if err := cutHere("aside"); err != nil {
		return err
	}
	if err := durable.Rename(tmp, dir); err != nil {
		return fmt.Errorf("%w (the new bundle, registered, is in %s)", err, tmp)
	}
	if err := cutHere("placed"); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// cutHere calls cutAt (tests) for step.
func cutHere(step string) error {
	if cutAt == nil {
		return nil
	}
	return cutAt(step)
}

var configTemplate = template.Must(template.New("cfg").Funcs(template.FuncMap{"toml": tomlString}).Parse(`# farego-validator configuration for {{.ID}}, made by farego-provision on {{.Date}}.
# Paths are relative to this file's directory (install the bundle in /etc/farego).

device_id = {{toml .ID}}
route     = {{toml .Route}}
vehicle   = {{toml .Vehicle}}
data_dir  = {{toml .DataDir}}

[log]
level  = "info"
format = "json"

[policy]
max_age         = "120s"
skew            = "30s"
passback_window = "5s"
risk_cap        = 10

[provision]
keyring = "keyring.json"
fares   = "fares.json"
{{range .Scanners}}
[[scanner]]
name = {{toml .Name}}
path = {{toml .Path}}
{{end}}
[feedback]
console = true

[metrics]
listen = {{toml .Metrics}}
{{- if .CtlSocket}}

[ctl]
socket = {{toml .CtlSocket}}
{{- end}}

[mqtt]
broker           = {{toml .Broker}}
topic_prefix     = {{toml .TopicPrefix}}
device_key       = "device.key"
fleet_public_key = "fleet.pub"
{{- if .TLS}}
ca_file          = "ca.crt"
cert_file        = "device.crt"
key_file         = "device-tls.key"
{{- else}}
{{- if .BrokerTLS}}
# The fleet CA, which signs the broker's certificate (farego-provision
# broker-cert); leave it out for a broker whose certificate a public CA
# signed (the system's roots are used then).
ca_file          = "ca.crt"
{{- end}}
{{- if .Password}}
username         = {{toml .Username}}
password         = {{toml .Password}}
{{- end}}
{{- end}}

# The settlement server's clock: until an ack of a tap batch has measured the
# device clock, its HTTP Date does (a clock hours off at start puts the
# validator out of service instead of refusing every rider's code as expired),
# and selftest compares with it when the validator is not running.
[selftest]
time_url = {{toml (printf "%s/healthz" .Server)}}

# Over-the-air updates (README: Software updates): uncomment once the binary's
# directory is writable by the validator (the shipped unit needs a drop-in).
# [update]
# server = {{toml .Server}}
`))

// tomlString writes s as a TOML basic string: quoted, with backslashes,
// quotes and control characters escaped, so that a value (a vehicle name,
// a path) reads back as given and cannot end its line and add settings.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// brokerTLS reports whether one of the broker URLs (a comma list) asks
// for TLS: the device then needs the fleet CA to trust the broker.
func brokerTLS(brokers string) bool {
	for b := range strings.SplitSeq(brokers, ",") {
		if uplink.IsTLSBroker(strings.TrimSpace(b)) {
			return true
		}
	}
	return false
}

func validatorConfig(o deviceOpts, user, pass string) ([]byte, error) {
	var b bytes.Buffer
	if user == "" {
		user = o.id
	}
	err := configTemplate.Execute(&b, map[string]any{
		"ID": o.id, "Route": o.route, "Vehicle": o.vehicle, "DataDir": o.dataDir, "Scanners": o.scanners,
		"Metrics": o.metrics, "Broker": o.broker, "Server": strings.TrimRight(o.server, "/"), "TopicPrefix": o.topicPrefix, "TLS": o.tls,
		"BrokerTLS": brokerTLS(o.broker),
		"Username":  user, "Password": pass, "Date": time.Now().UTC().Format(time.DateOnly), "CtlSocket": o.ctlSocket,
	})
	return b.Bytes(), err
}

// systemdUnit is the validator's service unit (also shipped by make dist).
//
//go:embed farego-validator.service
var systemdUnit string

const installText = `farego device bundle for ID

Copy ID.tar.gz (this bundle) and farego-validator (from make dist:
linux-armv7 or linux-arm64) into one directory on the validator. There,
unpack the bundle and go into it (the binary stays one level up, not
copied into /etc/farego with the bundle):

  tar xzf ID.tar.gz && cd ID

On the validator (as root), in that directory:

  install -m 0755 ../farego-validator /usr/local/bin/
  useradd --system --home /var/lib/farego --shell /usr/sbin/nologin farego
  groupadd --system farego-ctl      # the control socket's group (the unit needs it)
  mkdir -p /etc/farego && cp -a . /etc/farego/ && chown -R root:farego /etc/farego
  chmod 0750 /etc/farego && chmod 0640 /etc/farego/device-tls.key /etc/farego/validator.toml
  chown farego /etc/farego/device.key && chmod 0600 /etc/farego/device.key   # the signing key: its user's alone
  cp /etc/farego/farego-validator.service /etc/systemd/system/
  systemctl daemon-reload && systemctl enable --now farego-validator
  sync     # before the bus's power may go: written back, or the card may keep empty files

The bus's onboard computer (farego-validator ctl route, vehicle, status)
needs group farego-ctl only, never farego (which reads validator.toml and
the keys):

  usermod -aG farego-ctl OBC-USER && sync

Installed from the package instead (apt install ./farego-validator_VERSION_ARCH.deb:
binary /usr/bin/farego-validator, user farego, group farego-ctl and unit in
place)? Run only the mkdir, chmod and chown lines above (and the usermod
for the onboard computer), then
systemctl enable --now farego-validator and sync. Do not copy this bundle's unit:
its ExecStart is /usr/local/bin/farego-validator, and in /etc/systemd/system
it would hide the package's, so the service could not start.

Check it: show a payment code from a rider's app, and paste its text
(one line) into

  farego-validator check --keyring /etc/farego/keyring.json -

which prints the decision as JSON (exit 0 when accepted). That keyring is
the one of this bundle: after an issuer-key rotation the device holds a
newer one (from the server), and a code of a new key is unknown_issuer_key
here only; check with the server's instead:
curl -s SERVER/v1/keyring > /tmp/keyring.json. Then

  journalctl -u farego-validator -f
  METRICS
`

// installFor is installText for the device o describes: its id, and its
// metrics address (none: nothing to curl).
func installFor(o deviceOpts) string {
	metrics := "farego-validator selftest --config /etc/farego/validator.toml   # no metrics address configured"
	if o.metrics != "" {
		host, port, err := net.SplitHostPort(o.metrics)
		if err != nil {
			host, port = "127.0.0.1", o.metrics
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		metrics = "curl -s " + net.JoinHostPort(host, port) + "/metrics | grep farego_"
		if port == "0" {
			// A port the system picks at each start: the log says which.
			metrics = "journalctl -u farego-validator | grep 'metrics listening'   # the port is picked at each start (--metrics " +
				o.metrics + "); then curl -s ADDR/metrics | grep farego_"
		}
	}
	return strings.NewReplacer("ID", o.id, "METRICS", metrics).Replace(installText)
}

// writeTarball writes dir's files as PATH (a .tar.gz under prefix/),
// durably replacing an older one.
func writeTarball(path, dir, prefix string) error {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		info, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: prefix + "/" + n, Mode: int64(info.Mode().Perm()), Size: int64(len(data)), ModTime: info.ModTime(), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return durable.WriteFile(path, buf.Bytes(), 0o600)
}
