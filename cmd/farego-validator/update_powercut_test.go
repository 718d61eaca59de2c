package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/sync/update"
	"github.com/farego/farego/sync/wire"
)

// TestPowerCutAfterUpdateKeepsTheBinary: the download of a release is
// complete, but its last read ends in an error (a connection dropped after
// the last byte, before the end of a chunked body; the same holds for a
// validator killed between the last write and its fsync): the retry finds
// the file whole and installs it. The power goes soon after the restart
// into the new version. The binary in place must be the release's — not an
// empty file no program runs, which nothing on the device can roll back
// (the update's rollback runs in the binary itself).
func TestPowerCutAfterUpdateKeepsTheBinary(t *testing.T) {
	disk, bin, old := binaryOnDisk(t)
	fleet := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))

	data := bytes.Repeat([]byte("farego-validator 1.1.0\n"), 5000)
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) > 1 {
			http.ServeContent(w, r, "bin", time.Time{}, bytes.NewReader(data))
			return
		}
		// Every byte, chunked, then the connection drops before the
		// chunked body's end.
		w.WriteHeader(http.StatusOK)
		w.Write(data)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer srv.Close()

	body := rollout110(t, fleet, data)

	u, err := update.New(update.Config{Binary: bin, Current: "1.0.0", DeviceID: "bus-1", Arch: "testarch",
		FleetPublicKey: fleet.Public().(ed25519.PublicKey), BaseURL: srv.URL, ReserveBytes: 1,
		MinRetry: time.Millisecond, MaxRetry: 10 * time.Millisecond, HealthTimeout: time.Hour})
	must(t, err)
	must(t, u.Boot())
	u.Offer(1, body)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := u.Run(ctx); !errors.Is(err, update.ErrRestart) {
		t.Fatalf("Run = %v, want ErrRestart (installed)", err)
	}
	if requests.Load() < 1 {
		t.Fatal("no download")
	}
	if got, _ := os.ReadFile(bin); !bytes.Equal(got, data) {
		t.Fatal("the release is not in place before the cut")
	}

	// The power goes before the kernel wrote the file back.
	if _, err := disk.Cut(false); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("no binary after the cut: %v", err)
	}
	if !bytes.Equal(got, data) && !bytes.Equal(got, old) {
		t.Fatalf("after the cut the binary in place is %d bytes, neither the release (%d) nor the previous one (%d): "+
			"the device cannot start any farego-validator", len(got), len(data), len(old))
	}
	// Whichever binary is in place, the state agrees with it: the new
	// one is pending, or the old one forgets the install.
	cur := "1.0.0"
	if bytes.Equal(got, data) {
		cur = "1.1.0"
	}
	u2, err := update.New(update.Config{Binary: bin, Current: cur, DeviceID: "bus-1", Arch: "testarch",
		FleetPublicKey: fleet.Public().(ed25519.PublicKey), BaseURL: srv.URL, HealthTimeout: time.Hour})
	must(t, err)
	must(t, u2.Boot())
	if u2.Pending() != (cur == "1.1.0") {
		t.Errorf("running %s after the cut: pending = %v", cur, u2.Pending())
	}
}

// TestPowerCutAfterUpdateKeepsTheBinaryExecutable: the install makes the
// verified download executable (chmod 0755) and renames it over the
// binary, the rename made durable by the directory's fsync. The chmod is
// the file's own metadata, which only an fsync of the file makes durable:
// a power cut after the install left the release in place with the
// download's mode 0600, a binary systemd cannot start — and the rollback
// runs in the binary itself, so the device stayed down until a technician
// came.
func TestPowerCutAfterUpdateKeepsTheBinaryExecutable(t *testing.T) {
	disk, bin, _ := binaryOnDisk(t)
	fleet := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	data := bytes.Repeat([]byte("farego-validator 1.1.0\n"), 5000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "bin", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	u, err := update.New(update.Config{Binary: bin, Current: "1.0.0", DeviceID: "bus-1", Arch: "testarch",
		FleetPublicKey: fleet.Public().(ed25519.PublicKey), BaseURL: srv.URL, ReserveBytes: 1,
		MinRetry: time.Millisecond, MaxRetry: 10 * time.Millisecond, HealthTimeout: time.Hour})
	must(t, err)
	must(t, u.Boot())
	u.Offer(1, rollout110(t, fleet, data))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := u.Run(ctx); !errors.Is(err, update.ErrRestart) {
		t.Fatalf("Run = %v, want ErrRestart (installed)", err)
	}
	if _, err := disk.Cut(false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(bin)
	must(t, err)
	if got, _ := os.ReadFile(bin); !bytes.Equal(got, data) {
		t.Fatalf("after the cut the binary in place is not the release (%d bytes)", len(got))
	}
	if fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("after the cut the release in place has mode %v: systemd cannot start it, and no rollback runs", fi.Mode().Perm())
	}
}

// syncDir fsyncs a directory.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// TestIgnitionCyclesDoNotRollBackAnUpdate: a release is installed and the
// validator restarts into it; before it reaches the broker the power goes
// and comes back again and again — the ignition turned off at the end of
// the shift, on in the morning, a dip while the engine cranks — each time
// a new kernel boot. Those starts ended with the machine, not with a crash
// of the new version: it must not be rolled back as a crash loop (it was
// at the fourth start, and the release recorded as failed, not retried
// until a new rollout). Starts that end within one kernel boot (the
// process dies, systemd starts it again) still count.
func TestIgnitionCyclesDoNotRollBackAnUpdate(t *testing.T) {
	disk, bin, old := binaryOnDisk(t)
	fleet := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))

	data := bytes.Repeat([]byte("farego-validator 1.1.0\n"), 5000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "bin", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	body := rollout110(t, fleet, data)

	boot := "kernel-boot-0"
	updater := func(current string) *update.Updater {
		u, err := update.New(update.Config{Binary: bin, Current: current, DeviceID: "bus-1", Arch: "testarch",
			FleetPublicKey: fleet.Public().(ed25519.PublicKey), BaseURL: srv.URL, ReserveBytes: 1,
			MinRetry: time.Millisecond, MaxRetry: 10 * time.Millisecond, HealthTimeout: time.Hour,
			BootID: func() string { return boot }})
		must(t, err)
		return u
	}
	u := updater("1.0.0")
	must(t, u.Boot())
	u.Offer(1, body)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := u.Run(ctx); !errors.Is(err, update.ErrRestart) {
		t.Fatalf("Run = %v, want ErrRestart (installed)", err)
	}

	// The new version starts; the power goes before it reports healthy;
	// the kernel boots again; twice as many times as max_boots.
	for i := range 2 * update.DefaultMaxBoots {
		if err := updater("1.1.0").Boot(); err != nil {
			t.Fatalf("start %d of the new version, each after a power cut: Boot = %v (rolled back as a crash loop)", i+1, err)
		}
		if _, err := disk.Cut(false); err != nil {
			t.Fatal(err)
		}
		boot = fmt.Sprintf("kernel-boot-%d", i+1)
		if got, _ := os.ReadFile(bin); !bytes.Equal(got, data) {
			t.Fatalf("after power cut %d the binary in place is not the release (%d bytes)", i+1, len(got))
		}
	}
	nu := updater("1.1.0")
	must(t, nu.Boot())
	if !nu.Pending() {
		t.Fatal("the new version is not waiting for its health check")
	}
	if st := nu.Status(); st != nil && st.Failed != "" {
		t.Fatalf("status after the power cuts: %+v", st)
	}

	// A crash loop within one kernel boot is still rolled back: this
	// start was the first; max_boots more, and the previous one is back.
	for i := range update.DefaultMaxBoots {
		err := updater("1.1.0").Boot()
		if i < update.DefaultMaxBoots-1 && err != nil {
			t.Fatalf("crash %d: Boot = %v", i+1, err)
		}
		if i == update.DefaultMaxBoots-1 && !errors.Is(err, update.ErrRolledBack) {
			t.Fatalf("start %d in one kernel boot: Boot = %v, want ErrRolledBack", update.DefaultMaxBoots+1, err)
		}
	}
	if _, err := disk.Cut(false); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(bin); !bytes.Equal(got, old) {
		t.Fatalf("after the crash loop and a power cut the binary in place is not the previous one (%d bytes)", len(got))
	}
}

// binaryOnDisk mounts a power-cut disk with version 1.0.0's binary on it,
// synced, and returns the disk, the binary's path and its contents.
func binaryOnDisk(t *testing.T) (*powercut.Disk, string, []byte) {
	t.Helper()
	disk := powercut.Mount(t, nil)
	bin := disk.Path("farego-validator")
	old := []byte("farego-validator 1.0.0\n")
	must(t, os.WriteFile(bin, old, 0o755))
	f, err := os.Open(bin)
	must(t, err)
	must(t, f.Sync())
	f.Close()
	must(t, syncDir(disk.Dir()))
	return disk, bin, old
}

// rollout110 is the fleet-signed rollout of release 1.1.0 (the binary
// data, for testarch) to bus-1.
func rollout110(t *testing.T, fleet ed25519.PrivateKey, data []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(data)
	m := &wire.Manifest{Version: "1.1.0", Arch: "testarch", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]),
		Date: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	mb, sig, err := wire.SignManifest(m, fleet)
	must(t, err)
	body, err := (&wire.Rollout{Version: "1.1.0", Builds: []wire.Build{{Manifest: mb, Signature: sig}}, Devices: []string{"bus-1"}}).Marshal()
	must(t, err)
	return body
}
