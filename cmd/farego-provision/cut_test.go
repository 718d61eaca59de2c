package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/server/api/apitest"
	"github.com/farego/farego/sync/keyfile"
)

func TestMain(m *testing.M) {
	powercut.Main() // serves a power-cut disk when started as one; returns otherwise
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
