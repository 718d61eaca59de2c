package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/server/api/apitest"
	"github.com/farego/farego/server/broker"
	"github.com/farego/farego/sync/keyfile"
)

func TestMain(m *testing.M) {
	powercut.Main() // serves a power-cut disk when started as one; returns otherwise
	if os.Getenv("FAREGO_TEST_PROVISION_MAIN") == "1" {
		main() // farego-provision itself, for a shell to run (TestCtrlCStopsALoop)
	}
	os.Exit(m.Run())
}

// TestDeviceAfterACutRun: farego-provision device --force, writing to a
// disk whose power the test cuts, stops there at each step between making the new identity and having its bundle
// and tarball in place; the operator runs it again. What it leaves in
// devices/ID/ and devices/ID.tar.gz must be the identity the server holds:
// cut after the rename and before the tarball, the tarball was the
// replaced identity's (no longer registered: a validator installed from it
// never reached the broker, its taps stuck on it), and the next run only
// said the device had an identity; cut before the rename, the bundle in
// place was that replaced one.
func TestDeviceAfterACutRun(t *testing.T) {
	disk := powercut.Mount(t, nil)
	fleet, out := filepath.Join(t.TempDir(), "fleet"), disk.Path("devices")
	if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatalf("init-fleet: %d %q %q", c, o, e)
	}
	srv := apitest.StartWith(t, apitest.Options{FleetKey: filepath.Join(fleet, "fleet.key")})
	tok := "@" + srv.TokenFile
	tbl := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	if err := putFares(srv.URL, srv.TokenFile, tbl); err != nil {
		t.Fatal(err)
	}
	const id = "bus-7-front"
	args := []string{"device", "--fleet", fleet, "--id", id, "--route", "42", "--server", srv.URL,
		"--operator-token", tok, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--scanner", "front=/dev/ttyACM0"}
	if c, o, e := provision(t, args...); c != 0 {
		t.Fatalf("device: %d %q %q", c, o, e)
	}
	// consistent checks that the bundle and the tarball carry the
	// registered key.
	consistent := func(step string) {
		t.Helper()
		dev, err := srv.Store.Device(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := os.ReadFile(filepath.Join(out, id, bundleDevicePub))
		if err != nil {
			t.Fatalf("cut at %s: the bundle: %v", step, err)
		}
		inTar := tarFile(t, filepath.Join(out, id+".tar.gz"), id+"/"+bundleDevicePub)
		if !bytes.Equal(pub, inTar) {
			t.Errorf("cut at %s: the tarball's device.pub is not the bundle's (the tarball is another identity's)", step)
		}
		if k, err := keyfile.ReadPublic(filepath.Join(out, id, bundleDevicePub)); err != nil || !bytes.Equal(k, dev.PublicKey) {
			t.Errorf("cut at %s: the bundle's device.pub is not the registered key", step)
		}
	}
	consistent("nothing")

	errCut := errors.New("power cut")
	for _, step := range []string{"registering", "tarball", "aside", "placed"} {
		cutAt = func(s string) error {
			if s == step {
				return errCut
			}
			return nil
		}
		c, _, e := provision(t, append(args, "--force")...)
		cutAt = nil
		if c == 0 || !strings.Contains(e, "power cut") {
			t.Fatalf("cut at %s: %d %q", step, c, e)
		}
		if _, err := disk.Cut(false); err != nil {
			t.Fatal(err)
		}
		// The operator runs it again, as they did the first time.
		c, o, e := provision(t, args...)
		if step == "registering" {
			if c == 0 || !strings.Contains(e, "stopped while registering") {
				t.Fatalf("again after a cut while registering: %d %q %q, want it to say so", c, o, e)
			}
			if c, o, e = provision(t, append(args, "--force")...); c != 0 {
				t.Fatalf("again with --force: %d %q %q", c, o, e)
			}
		} else if step == "placed" {
			// In place with its tarball: only the replaced one's removal
			// was cut, and the device has its identity.
			if c == 0 || !strings.Contains(e, "already has an identity") {
				t.Errorf("again after a cut at %s: %d %q %q", step, c, o, e)
			}
		} else if c != 0 || !strings.Contains(o, "finished") {
			t.Errorf("again after a cut at %s: %d %q %q, want the cut run finished", step, c, o, e)
		}
		consistent(step)
		if _, err := os.Stat(filepath.Join(out, "."+id+".new")); err == nil {
			t.Errorf("cut at %s: .%s.new left behind", step, id)
		}
	}
}

// tarFile returns the named file of a .tar.gz.
func tarFile(t *testing.T, path, name string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no %s: %v", path, name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// TestBrokerCertRenewalAfterACutRun: broker-cert --force (a renewal),
// writing to a disk whose power the test cuts, stops once the new key is
// in place and before the certificate is; the power goes. What is left in
// --out must be a pair the broker can load: the old one or the new one.
// Written one after the other, the new key stood beside the old
// certificate, and the broker's TLS listener refused to start ("private
// key does not match public key") with the old key gone.
func TestBrokerCertRenewalAfterACutRun(t *testing.T) {
	disk := powercut.Mount(t, nil)
	fleet, out := filepath.Join(t.TempDir(), "fleet"), disk.Path("broker")
	if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatalf("init-fleet: %d %q %q", c, o, e)
	}
	args := []string{"broker-cert", "--fleet", fleet, "--host", "mqtt.example.net", "--out", out}
	if c, o, e := provision(t, args...); c != 0 {
		t.Fatalf("broker-cert: %d %q %q", c, o, e)
	}
	loads := func(when string) []byte {
		t.Helper()
		c, err := tls.LoadX509KeyPair(filepath.Join(out, brokerCertFile), filepath.Join(out, brokerKeyFile))
		if err != nil {
			t.Fatalf("%s: the broker cannot load its pair: %v", when, err)
		}
		return c.Certificate[0]
	}
	first := loads("after the first run")

	errCut := errors.New("power cut")
	cutAt = func(s string) error {
		if s == "broker key in place" {
			return errCut
		}
		return nil
	}
	c, _, e := provision(t, append(args, "--force")...)
	cutAt = nil
	if c == 0 || !strings.Contains(e, "power cut") {
		t.Fatalf("broker-cert --force cut: %d %q", c, e)
	}
	if _, err := disk.Cut(false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(loads("after a renewal cut short by the power"), first) {
		t.Errorf("after a renewal cut short by the power the pair is not the old one")
	}
	// The operator runs it again.
	if c, o, e := provision(t, append(args, "--force")...); c != 0 {
		t.Fatalf("broker-cert --force again: %d %q %q", c, o, e)
	}
	if bytes.Equal(loads("after the renewal run again"), first) {
		t.Errorf("the renewal run again left the old certificate")
	}
}

// TestDeviceLoopCutWhileRegistering: a technician's loop over new devices
// (no --force: none has a bundle yet) is cut while registering one, before
// the server has it and after (the answer lost: a power cut, a kill, the
// server gone before it answered). The same command run again must finish
// the device, without --force: it asked for --force, and the server held a
// key no bundle had until a technician ran it by hand. What is left must be
// the server's identity: key, certificate and MQTT password.
func TestDeviceLoopCutWhileRegistering(t *testing.T) {
	disk := powercut.Mount(t, nil)
	fleet, out := filepath.Join(t.TempDir(), "fleet"), disk.Path("devices")
	if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatalf("init-fleet: %d %q %q", c, o, e)
	}
	srv := apitest.StartWith(t, apitest.Options{FleetKey: filepath.Join(fleet, "fleet.key")})
	tbl := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	if err := putFares(srv.URL, srv.TokenFile, tbl); err != nil {
		t.Fatal(err)
	}
	errCut := errors.New("power cut")
	for _, step := range []string{"registering", "registered"} {
		id := "bus-" + step
		args := []string{"device", "--fleet", fleet, "--id", id, "--route", "42", "--server", srv.URL,
			"--operator-token", "@" + srv.TokenFile, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--scanner", "front=/dev/scanner-front"}
		cutAt = func(s string) error {
			if s == step {
				return errCut
			}
			return nil
		}
		c, _, e := provision(t, args...)
		cutAt = nil
		if c == 0 || !strings.Contains(e, "power cut") {
			t.Fatalf("cut at %s: %d %q", step, c, e)
		}
		if _, err := disk.Cut(false); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Store.DeviceAuth(context.Background(), id); (err == nil) != (step == "registered") {
			t.Fatalf("cut at %s: registered: %v", step, err)
		}
		// The loop runs again, with the same flags.
		if c, o, e := provision(t, args...); c != 0 || !strings.Contains(o, "an earlier run was cut while registering it") {
			t.Fatalf("again after a cut at %s: %d %q %q, want the device finished", step, c, o, e)
		}
		auth, err := srv.Store.DeviceAuth(context.Background(), id)
		if err != nil {
			t.Fatalf("cut at %s, run again: %v", step, err)
		}
		if k, err := keyfile.ReadPublic(filepath.Join(out, id, bundleDevicePub)); err != nil || !bytes.Equal(k, auth.PublicKey) {
			t.Errorf("cut at %s: the bundle's device.pub is not the registered key (%v)", step, err)
		}
		if priv, err := keyfile.ReadPrivate(filepath.Join(out, id, bundleDeviceKey)); err != nil || !bytes.Equal(priv.Public().(ed25519.PublicKey), auth.PublicKey) {
			t.Errorf("cut at %s: the bundle's device.key is not the registered key's (%v)", step, err)
		}
		crt, err := os.ReadFile(filepath.Join(out, id, bundleTLSCert))
		if err != nil {
			t.Fatal(err)
		}
		if blk, _ := pem.Decode(crt); blk == nil || !bytes.Equal(sha256Of(blk.Bytes), auth.CertSHA256) {
			t.Errorf("cut at %s: the bundle's device.crt is not the registered certificate", step)
		}
		cfg, err := os.ReadFile(filepath.Join(out, id, bundleConfig))
		if err != nil {
			t.Fatal(err)
		}
		_, pw, _ := strings.Cut(string(cfg), "password         = \"")
		pw, _, _ = strings.Cut(pw, "\"")
		if ok, err := broker.CheckPassword(auth.MQTTHash, pw); !ok || err != nil {
			t.Errorf("cut at %s: the bundle's MQTT password is not the registered one (%v)", step, err)
		}
		pub, err := os.ReadFile(filepath.Join(out, id, bundleDevicePub))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tarFile(t, filepath.Join(out, id+".tar.gz"), id+"/"+bundleDevicePub), pub) {
			t.Errorf("cut at %s: the tarball is another identity's", step)
		}
		if _, err := os.Stat(filepath.Join(out, "."+id+".new")); err == nil {
			t.Errorf("cut at %s: .%s.new left behind", step, id)
		}
	}
}

func sha256Of(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

// TestDeviceCutForAnotherFleet: a run against a staging server (its own
// fleet) is cut while registering; the technician then provisions the
// same device id for production with the same --out. The identity kept
// from the staging run has a client certificate of the staging CA: it was
// registered on production and the bundle carried production's CA with
// it, a device the broker refuses. It is refused, naming the kept
// directory, and nothing is registered on production.
func TestDeviceCutForAnotherFleet(t *testing.T) {
	tbl := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	out := filepath.Join(t.TempDir(), "devices")
	type site struct {
		fleet string
		srv   *apitest.Server
	}
	start := func(name string) site {
		fleet := filepath.Join(t.TempDir(), name)
		if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
			t.Fatalf("init-fleet: %d %q %q", c, o, e)
		}
		srv := apitest.StartWith(t, apitest.Options{FleetKey: filepath.Join(fleet, "fleet.key")})
		if err := putFares(srv.URL, srv.TokenFile, tbl); err != nil {
			t.Fatal(err)
		}
		return site{fleet, srv}
	}
	staging, prod := start("staging"), start("prod")
	const id = "bus-9-front"
	args := func(s site) []string {
		return []string{"device", "--fleet", s.fleet, "--id", id, "--route", "42", "--server", s.srv.URL,
			"--operator-token", "@" + s.srv.TokenFile, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--scanner", "front=/dev/ttyACM0"}
	}
	cutAt = func(s string) error {
		if s == "registering" {
			return errors.New("power cut")
		}
		return nil
	}
	c, _, e := provision(t, args(staging)...)
	cutAt = nil
	if c == 0 || !strings.Contains(e, "power cut") {
		t.Fatalf("cut: %d %q", c, e)
	}
	c, o, e := provision(t, args(prod)...)
	if c == 0 {
		t.Errorf("production took the staging run's identity: %q", o)
	} else if !strings.Contains(e, "another fleet") || !strings.Contains(e, "."+id+".new") {
		t.Errorf("the refusal: %q", e)
	}
	if _, err := prod.srv.Store.Device(context.Background(), id); err == nil {
		t.Error("the device was registered on production")
	}
	// The staging run finishes with its own fleet and server.
	if c, o, e := provision(t, args(staging)...); c != 0 || !strings.Contains(o, "an earlier run was cut") {
		t.Fatalf("staging again: %d %q %q", c, o, e)
	}
}

// TestDeviceRegisteredBehindAFailingProxy: a reverse proxy in front of the
// server passes the registration on and answers 502 (the server took it,
// its answer lost). The identity was removed as if nothing were
// registered: the server held a key no bundle had, and the next run asked
// for --force. It is kept, and the next run finishes with the
// registered key.
func TestDeviceRegisteredBehindAFailingProxy(t *testing.T) {
	fleet := filepath.Join(t.TempDir(), "fleet")
	if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatalf("init-fleet: %d %q %q", c, o, e)
	}
	srv := apitest.StartWith(t, apitest.Options{FleetKey: filepath.Join(fleet, "fleet.key")})
	tbl := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	if err := putFares(srv.URL, srv.TokenFile, tbl); err != nil {
		t.Fatal(err)
	}
	backend, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(backend)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/devices" {
			rp.ServeHTTP(httptest.NewRecorder(), r) // the server registers it
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	const id = "bus-5-front"
	out := filepath.Join(t.TempDir(), "devices")
	args := func(server string) []string {
		return []string{"device", "--fleet", fleet, "--id", id, "--route", "42", "--server", server,
			"--operator-token", "@" + srv.TokenFile, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--scanner", "front=/dev/scanner-front"}
	}
	if c, o, e := provision(t, args(proxy.URL)...); c == 0 || !strings.Contains(e, "502") {
		t.Fatalf("through the failing proxy: %d %q %q", c, o, e)
	}
	if _, err := srv.Store.Device(context.Background(), id); err != nil {
		t.Fatalf("the proxy did not pass the registration on: %v", err)
	}
	c, o, e := provision(t, args(srv.URL)...)
	if c != 0 {
		t.Fatalf("the next run: %d %q %q", c, o, e)
	}
	dev, err := srv.Store.Device(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := keyfile.ReadPublic(filepath.Join(out, id, bundleDevicePub)); err != nil || !bytes.Equal(k, dev.PublicKey) {
		t.Errorf("the bundle's device.pub is not the registered key (%v)", err)
	}
}
