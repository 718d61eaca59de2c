package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/server/api/apitest"
	"github.com/farego/farego/sync/keyfile"
)

// TestDeviceBundleSurvivesPowerCutsAtEverySync: farego-provision device, writing the bundle
// to a disk whose power the test cuts before each of its syncs in turn
// (Disk.FreezeAfterSyncs, every other cut asked to tear a page) — a first
// identity, then a replacement (--force) — and the technician runs it
// again as its message says (with --force only where it asks for it).
// After that run the bundle in place and its tarball carry the identity
// the server holds, whole: device.key 0600 and the key of device.pub, a
// config, nothing left beside it (.ID.new). TestDeviceAfterACutRun cuts at
// four named steps; this one at every sync.
func TestDeviceBundleSurvivesPowerCutsAtEverySync(t *testing.T) {
	disk := powercut.Mount(t, nil)
	fleet := filepath.Join(t.TempDir(), "fleet")
	if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatalf("init-fleet: %d %q %q", c, o, e)
	}
	srv := apitest.StartWith(t, apitest.Options{FleetKey: filepath.Join(fleet, "fleet.key")})
	tbl := `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`
	if err := putFares(srv.URL, srv.TokenFile, tbl); err != nil {
		t.Fatal(err)
	}
	cuts, torn, pages, entries := 0, 0, 0, 0
	var cutOff int64
	for _, force := range []bool{false, true} {
		for n := int64(0); ; n++ {
			if n > 200 {
				t.Fatal("farego-provision device still syncs after 200 syncs")
			}
			// A device of its own for each cut: a first identity, or one
			// registered and in place, replaced.
			id := fmt.Sprintf("bus-%v-%d", force, n)
			out := disk.Path("devices")
			args := []string{"device", "--fleet", fleet, "--id", id, "--route", "42", "--server", srv.URL,
				"--operator-token", "@" + srv.TokenFile, "--out", out, "--broker", "tcp://127.0.0.1:1883", "--scanner", "front=/dev/ttyACM0"}
			first := args
			if force {
				if c, o, e := provision(t, args...); c != 0 {
					t.Fatalf("device %s: %d %q %q", id, c, o, e)
				}
				first = append(args, "--force")
			}
			if err := disk.FreezeAfterSyncs(n); err != nil {
				t.Fatal(err)
			}
			c, o, e := provision(t, first...)
			st, err := disk.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if !st.Frozen {
				if c != 0 {
					t.Fatalf("with the power on: %d %q %q", c, o, e)
				}
				if err := disk.FreezeAfterSyncs(-1); err != nil {
					t.Fatal(err)
				}
				bundleConsistent(t, srv, out, id, "no cut")
				t.Logf("force %v: %d syncs", force, n)
				break
			}
			tear := cuts%2 == 1
			rep, err := disk.Cut(tear)
			if err != nil {
				t.Fatal(err)
			}
			cuts++
			if rep.Torn {
				torn++
			}
			pages += rep.PagesDiscarded
			cutOff += rep.BytesCutOff
			entries += rep.EntriesDiscarded
			what := fmt.Sprintf("force %v, cut before sync %d (tear %v)", force, n, tear)
			// The technician runs it again, as the message says.
			c, o, e = provision(t, args...)
			if c != 0 && strings.Contains(e, "--force") && !strings.Contains(e, "already has an identity") {
				c, o, e = provision(t, append(args, "--force")...)
			}
			switch {
			case c == 0:
			case force && strings.Contains(e, "already has an identity"):
				// The cut run finished its bundle before the cut: in place.
			default:
				t.Fatalf("%s: again: %d %q %q", what, c, o, e)
			}
			bundleConsistent(t, srv, out, id, what)
		}
	}
	t.Logf("%d power cuts of farego-provision device (%d tearing a page; %d unsynced pages put back, %d unsynced bytes cut off, "+
		"%d unsynced entries undone): each time the bundle and tarball whole and the registered identity's after the next run",
		cuts, torn, pages, cutOff, entries)
}

// bundleConsistent checks that out/id/ and out/id.tar.gz are a whole
// bundle of the identity the server holds, with nothing left beside.
func bundleConsistent(t *testing.T, srv *apitest.Server, out, id, what string) {
	t.Helper()
	dev, err := srv.Store.Device(context.Background(), id)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	dir := filepath.Join(out, id)
	pub, err := keyfile.ReadPublic(filepath.Join(dir, bundleDevicePub))
	if err != nil || !bytes.Equal(pub, dev.PublicKey) {
		t.Fatalf("%s: the bundle's device.pub is not the registered key (%v)", what, err)
	}
	if _, err := keyfile.ReadPrivate(filepath.Join(dir, bundleDeviceKey)); err != nil {
		t.Fatalf("%s: the bundle's device.key: %v", what, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, bundleDeviceKey)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: device.key: %v %v, want 0600", what, fi.Mode(), err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, bundleConfig))
	if err != nil || len(cfg) == 0 {
		t.Fatalf("%s: the bundle's config: %v", what, err)
	}
	if inTar := tarFile(t, filepath.Join(out, id+".tar.gz"), id+"/"+bundleConfig); !bytes.Equal(inTar, cfg) {
		t.Fatalf("%s: the tarball's config is not the bundle's", what)
	}
	if inTar := tarFile(t, filepath.Join(out, id+".tar.gz"), id+"/"+bundleDevicePub); !bytes.Equal(inTar, mustRead(t, filepath.Join(dir, bundleDevicePub))) {
		t.Fatalf("%s: the tarball's device.pub is not the bundle's", what)
	}
	if _, err := os.Stat(filepath.Join(out, "."+id+".new")); err == nil {
		t.Fatalf("%s: .%s.new left beside the bundle", what, id)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
