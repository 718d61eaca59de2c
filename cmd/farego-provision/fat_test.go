package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/queue/durable/fatdisk"
	"github.com/farego/farego/server/api/apitest"
	"github.com/farego/farego/sync/keyfile"
)

// TestDeviceOnAFATCard: --out (and init-fleet's --dir, broker-cert's --out)
// on a real FAT or exFAT card (a USB stick, an SD card as sold) is refused
// in one line that says what to do, before anything is registered and with
// nothing left on the card. The bundle was
// registered first, then its first key failed its chmod (vfat: EPERM,
// fusefat: ENOSYS): the server held an identity no bundle had, a --force
// run had retired the bus's working one, and the next run blamed a run
// "stopped while registering"; on exfat-fuse, which takes a chmod and
// keeps 0777, it "worked" and the tarball carried device.key as 0777,
// refused by the validator on the bus. What the line says works: the
// tarball copied to the card and unpacked from it keeps the keys' modes,
// and one cut short on the card does not unpack as whole.
func TestDeviceOnAFATCard(t *testing.T) {
	for _, kind := range []fatdisk.Kind{fatdisk.VFAT, fatdisk.ExFAT} {
		t.Run(string(kind), func(t *testing.T) {
			card := fatdisk.Mount(t, kind)
			dir := t.TempDir()
			fleet, local := filepath.Join(dir, "fleet"), filepath.Join(dir, "devices")
			if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
				t.Fatalf("init-fleet: %d %q %q", c, o, e)
			}
			srv := apitest.StartWith(t, apitest.Options{FleetKey: filepath.Join(fleet, "fleet.key")})
			tbl := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
			if err := putFares(srv.URL, srv.TokenFile, tbl); err != nil {
				t.Fatal(err)
			}
			const id = "bus-12-front"
			args := func(out string, more ...string) []string {
				return append([]string{"device", "--fleet", fleet, "--id", id, "--route", "42", "--server", srv.URL,
					"--operator-token", "@" + srv.TokenFile, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--scanner", "front=/dev/scanner-front"}, more...)
			}
			refused := func(c int, o, e, what, todo string) {
				t.Helper()
				if c != 1 || o != "" || strings.Count(e, "\n") != 1 || !strings.Contains(e, "keeps no file modes") ||
					!strings.Contains(e, "nothing was ") || !strings.Contains(e, todo) {
					t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 and one line saying to write locally (%s)", what, c, o, e, todo)
				}
				ents, err := os.ReadDir(card)
				if err != nil {
					t.Fatal(err)
				}
				for _, en := range ents {
					t.Errorf("%s left %s on the card", what, en.Name())
				}
			}
			// The fleet and the broker's certificate, made on the card.
			c, o, e := provision(t, "init-fleet", "--dir", filepath.Join(card, "fleet"))
			refused(c, o, e, "init-fleet --dir on the card", "tar czf fleet.tar.gz fleet")
			c, o, e = provision(t, "broker-cert", "--fleet", fleet, "--host", "mqtt.example.net", "--out", filepath.Join(card, "broker"))
			refused(c, o, e, "broker-cert --out on the card", "tar czf broker.tar.gz broker")
			// A new device, onto the card (a directory not there yet).
			c, o, e = provision(t, args(filepath.Join(card, "devices"))...)
			refused(c, o, e, "a new device onto the card", "copy devices/"+id+".tar.gz to the card")
			if _, err := srv.Store.Device(context.Background(), id); err == nil {
				t.Fatal("refused, the device was registered all the same")
			}
			// A working device provisioned again onto the card keeps its
			// registered identity.
			if c, o, e := provision(t, args(local)...); c != 0 {
				t.Fatalf("device --out local: %d %q %q", c, o, e)
			}
			before, err := srv.Store.Device(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			c, o, e = provision(t, args(card, "--force")...)
			refused(c, o, e, "--force onto the card", "copy devices/"+id+".tar.gz to the card")
			if after, err := srv.Store.Device(context.Background(), id); err != nil || !bytes.Equal(after.PublicKey, before.PublicKey) {
				t.Fatalf("refused --force changed the registered key (%v): the working bundle no longer is", err)
			}

			// The tarball copied to the card, unpacked from it on the bus.
			tgz, err := os.ReadFile(filepath.Join(local, id+".tar.gz"))
			if err != nil {
				t.Fatal(err)
			}
			onCard := filepath.Join(card, id+".tar.gz")
			if err := os.WriteFile(onCard, tgz, 0o644); err != nil {
				t.Fatal(err)
			}
			bus := t.TempDir()
			if out, err := exec.Command("tar", "-xzf", onCard, "-C", bus).CombinedOutput(); err != nil {
				t.Fatalf("tar xzf from the card: %v: %s", err, out)
			}
			key := filepath.Join(bus, id, bundleDeviceKey)
			if info, err := os.Stat(key); err != nil || info.Mode().Perm() != 0o600 {
				t.Fatalf("device.key unpacked from the card: %v %v; want mode 0600", info, err)
			}
			if _, err := keyfile.ReadPrivate(key); err != nil {
				t.Errorf("the validator's read of device.key unpacked from the card: %v", err)
			}
			// Cut short on the card (pulled while copying): tar fails.
			cut := filepath.Join(card, "cut.tar.gz")
			if err := os.WriteFile(cut, tgz[:len(tgz)-8], 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("tar", "-xzf", cut, "-C", t.TempDir()).CombinedOutput(); err == nil {
				t.Errorf("a tarball cut short unpacked without an error (%s)", out)
			}
		})
	}
}
