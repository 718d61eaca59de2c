package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fast is a validator policy for tests that tap one rider often.
// tapAll taps each rider once on d and returns how many taps were accepted.
func tapAll(t *testing.T, ctx context.Context, d *Device, riders []*APIRider) {
	t.Helper()
	for _, rd := range riders {
		line, err := d.Scan(ctx, rd.Code(time.Now()))
		if err != nil || !strings.Contains(line, "ACCEPTED") {
			t.Fatalf("tap of %d: %q, %v", rd.ID, line, err)
		}
	}
}

// waitRides waits until every rider has n rides in the ledger.
func waitRides(t *testing.T, ctx context.Context, r *Rig, riders []*APIRider, n int) {
	t.Helper()
	for _, rd := range riders {
		err := WaitFor(ctx, 90*time.Second, fmt.Sprintf("%d rides of %d", n, rd.ID), func() bool {
			rides, err := r.Rides(ctx, rd.ID)
			return err == nil && len(rides) == n
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// copyFiles copies dir/name* (a SQLite file and its -wal and -shm) to dst.
func copyFiles(t *testing.T, dir, name, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, name+"*"))
	for _, m := range matches {
		in, err := os.Open(m)
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, filepath.Base(m)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
}

// The restore procedure: a ledger restored from an older backup lacks the
// taps settled since; "farego-settlement restored" moves the id counters
// past anything handed out since, and POST /v1/devices/replay has every
// online validator resend its whole archive, and keeps the request for
// every other one, sent when it is next heard online (bus-9 is off at the
// request: it was never asked, and its taps since the backup stayed out of
// the ledger). Every tap ends in the ledger exactly once, whatever order
// its batches committed in.
func TestRestoreAndReplay(t *testing.T) {
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "bus-8-front", fast...)
	off := startDevice(t, ctx, r, "bus-9-front", fast...)
	riders := newRiders(t, ctx, r, 4, 10_000)
	tapAll(t, ctx, d, riders)
	waitRides(t, ctx, r, riders, 1)

	// The backup: the ledger as it is now.
	if err := r.StopServer(false); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup")
	copyFiles(t, r.serverDir(), "ledger.db", backup)
	if err := r.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	// A fare table published after the backup, which the validator applies:
	// transfers within the minute cost 50 now (they were free).
	lostFares := strings.Replace(strings.Replace(testFares, `"version": 1`, `"version": 2`, 1), `"fare": 0`, `"fare": 50`, 1)
	if err := r.API(ctx, "PUT", "/v1/fares", json.RawMessage(lostFares), nil); err != nil {
		t.Fatal(err)
	}
	err := WaitFor(ctx, 90*time.Second, "the validator on fare table 2", func() bool {
		var devs struct {
			Devices []struct {
				Versions map[string]uint64 `json:"versions"`
			} `json:"devices"`
		}
		return r.API(ctx, "GET", "/v1/devices", nil, &devs) == nil && len(devs.Devices) == 2 &&
			devs.Devices[0].Versions["fares"] == 2 && devs.Devices[1].Versions["fares"] == 2
	})
	if err != nil {
		t.Fatal(err)
	}
	// Two more rounds settle after the backup (the device acks them and
	// keeps them in its archive).
	time.Sleep(1100 * time.Millisecond) // a transfer window of 1 minute: the charge does not matter here
	tapAll(t, ctx, d, riders)
	time.Sleep(1100 * time.Millisecond)
	tapAll(t, ctx, off, riders)
	waitRides(t, ctx, r, riders, 3)
	balances := map[uint64]int64{}
	for _, rd := range riders {
		a, err := r.Account(ctx, rd.ID)
		if err != nil {
			t.Fatal(err)
		}
		balances[rd.ID] = a.Balance
	}

	// Run on the ledger a server serves, restored is refused and moves
	// nothing (the server would go on without the restore window).
	out, err := r.command(ctx, "farego-settlement", "restored", "--data", r.serverDir())
	if err == nil || !strings.Contains(err.Error(), "a settlement server is serving this ledger") {
		t.Fatalf("restored beside a running server: %q, %v; want it refused", out, err)
	}

	// The disaster: the ledger is restored from the backup; bus-9 is off
	// until after the replay request.
	if err := r.StopServer(false); err != nil {
		t.Fatal(err)
	}
	if err := off.Stop(false); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(filepath.Join(r.serverDir(), "ledger.db*"))
	for _, m := range matches {
		os.Remove(m)
	}
	copyFiles(t, backup, "ledger.db", r.serverDir())
	// The fare table published since is lost with the backup: given back
	// to restored (a bad one first: refused, and nothing changes).
	faresFile := filepath.Join(t.TempDir(), "fares-v2.json")
	if err := os.WriteFile(faresFile, []byte(strings.Replace(lostFares, `"timezone": "Europe/Berlin", `, "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err = r.command(ctx, "farego-settlement", "restored", "--data", r.serverDir(), "--fares", faresFile); err == nil ||
		!strings.Contains(err.Error(), "timezone") || !strings.Contains(err.Error(), "the ledger is unchanged") {
		t.Fatalf("restored with a fare table that names no zone: %q, %v; want refused", out, err)
	}
	if err := os.WriteFile(faresFile, []byte(lostFares), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = r.command(ctx, "farego-settlement", "restored", "--data", r.serverDir(), "--fares", faresFile)
	if err != nil || !strings.Contains(out, "next account id") || !strings.Contains(out, "fare table version 2") {
		t.Fatalf("restored: %q, %v", out, err)
	}
	if err := r.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	waitRides(t, ctx, r, riders, 1) // what the backup held
	// A new rider gets an id past anything handed out before the restore.
	late, err := r.NewAPIRider(ctx, "adult", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, rd := range riders {
		if late.ID <= rd.ID+1000 {
			t.Errorf("a new account after the restore got id %d, close to %d's", late.ID, rd.ID)
		}
	}
	var resp struct {
		Asked     []string  `json:"asked"`
		Offline   []string  `json:"offline"`
		KeptUntil time.Time `json:"kept_until"`
	}
	err = WaitFor(ctx, 90*time.Second, "the device online again", func() bool {
		return r.API(ctx, "POST", "/v1/devices/replay", nil, &resp) == nil && len(resp.Asked) == 1
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Asked, []string{"bus-8-front"}) || !slices.Equal(resp.Offline, []string{"bus-9-front"}) ||
		resp.KeptUntil.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("replay asked %v, offline %v, kept until %v; want bus-8 asked, bus-9 offline, kept a day", resp.Asked, resp.Offline, resp.KeptUntil)
	}
	waitRides(t, ctx, r, riders, 2) // bus-8's: bus-9 is off, never asked
	if err := off.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitRides(t, ctx, r, riders, 3)
	for _, rd := range riders {
		if a, err := r.Account(ctx, rd.ID); err != nil || a.Balance != balances[rd.ID] {
			t.Errorf("rider %d after restore and replay: balance %d, %v; before the restore %d", rd.ID, a.Balance, err, balances[rd.ID])
		}
	}
	after, err := r.Verify(ctx)
	if err != nil || !strings.Contains(after, " 12 taps (0 flagged)") {
		t.Fatalf("verify after the replay: %q, %v", after, err)
	}
	t.Logf("after restore and replay: %s", strings.TrimSpace(after))
}

// A server whose key directory is restored from before a rotation (its
// keyring.json lacks issuer key 2, which signed the rider's credential)
// takes the keyring from the ledger at start, where the rotation stored it:
// the rider's tap is charged at once, not held aside. (Before the keyring
// was kept in the ledger, the tap was held until a rotation recreated the
// key, and before that acked as invalid_code and never charged.)
func TestKeyDirRestoredTakesLedgerKeyring(t *testing.T) {
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "bus-9-front", fast...)
	keyring := filepath.Join(r.serverDir(), "keys", "keyring.json")
	old, err := os.ReadFile(keyring)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.API(ctx, "POST", "/v1/keyring/rotate", map[string]string{"activate_in": "0s"}, nil); err != nil {
		t.Fatal(err)
	}
	waitKeyring := func(v uint64) {
		t.Helper()
		var devs struct {
			Devices []struct {
				Versions map[string]uint64 `json:"versions"`
			} `json:"devices"`
		}
		err := WaitFor(ctx, 90*time.Second, fmt.Sprintf("the validator on keyring %d", v), func() bool {
			return r.API(ctx, "GET", "/v1/devices", nil, &devs) == nil && len(devs.Devices) == 1 &&
				devs.Devices[0].Versions["keyring"] == v
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitKeyring(2)
	rider, err := r.NewAPIRider(ctx, "adult", 1000) // its credential is signed by key 2
	if err != nil {
		t.Fatal(err)
	}
	// The server's key directory goes back to before key 2.
	if err := r.StopServer(false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyring, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	var kr struct {
		Version uint64 `json:"version"`
	}
	if err := r.API(ctx, "GET", "/v1/keyring", nil, &kr); err != nil || kr.Version != 2 {
		t.Fatalf("the restarted server's keyring: version %d, %v; want the ledger's 2", kr.Version, err)
	}
	if b, err := os.ReadFile(keyring); err != nil || string(b) == string(old) {
		t.Errorf("keyring.json was not brought up to the ledger's (%v)", err)
	}
	if line, err := d.Scan(ctx, rider.Code(time.Now())); err != nil || !strings.Contains(line, "ACCEPTED") {
		t.Fatalf("tap: %q, %v", line, err)
	}
	a := waitBalance(t, ctx, r, rider.ID, 750)
	if len(a.Rides) != 1 || a.Rides[0].Flag != "" {
		t.Errorf("rides: %+v", a.Rides)
	}
	if out, err := r.Verify(ctx); err != nil || !strings.Contains(out, "0 held") || !strings.Contains(out, " 1 taps") {
		t.Errorf("verify: %q, %v", out, err)
	}
}
