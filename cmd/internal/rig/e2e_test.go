package rig

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/powercut"
)

// binDir holds the binaries built once for these tests.
var binDir string

func TestMain(m *testing.M) {
	powercut.Main() // serves a power-cut disk when started as one; returns otherwise
	dir, err := os.MkdirTemp("", "farego-rig-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	err = Build(ctx, "../../..", dir, TestHooksTag)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const testFares = `{"version": 1, "currency": "EUR", "timezone": "Europe/Berlin", "service_day_start": "04:00",
  "fares": {"*": {"adult": 250, "child": 120, "senior": 120, "student": 180}},
  "transfer": {"window": "1m", "fare": 0}, "daily_cap": {"adult": 2000}}`

func newCtx(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Minute)
}

// newRig starts a server with the test fare table; its files stay behind
// (and are listed) when the test fails.
func newRig(t *testing.T) (*Rig, context.Context) {
	t.Helper()
	return newRigWith(t, testFares)
}

// must stops the test on an error.
func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// fast is the policy of a validator in a test that taps much: a rider
// may ride again at once and no tap is held for the risk cap.
var fast = []string{"passback_window", `"-1s"`, "risk_cap", "-1"}

// newRiders registers n adult riders, each topped up with topUp.
func newRiders(tb testing.TB, ctx context.Context, r *Rig, n int, topUp int64) []*APIRider {
	tb.Helper()
	riders := make([]*APIRider, n)
	for i := range riders {
		var err error
		riders[i], err = r.NewAPIRider(ctx, "adult", topUp)
		must(tb, err)
	}
	return riders
}

// newRigWith is newRig with the given fare table.
func newRigWith(t *testing.T, fares string) (*Rig, context.Context) {
	t.Helper()
	return newRigDB(t, fares, "")
}

// newRigDB is newRigWith with the ledger at dsn ("": SQLite in the
// server's data directory).
func newRigDB(t *testing.T, fares, dsn string) (*Rig, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	r := New(dir, binDir, testLog{t})
	r.DB = dsn
	t.Cleanup(func() {
		r.Close()
		if t.Failed() {
			for _, f := range []string{"server.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
					t.Logf("%s (tail):\n%s", f, tail(string(b), 60))
				}
			}
		}
	})
	if err := r.Init(ctx, fares); err != nil {
		t.Fatal(err)
	}
	if err := r.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	return r, ctx
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func startDevice(t *testing.T, ctx context.Context, r *Rig, id string, policy ...string) *Device {
	t.Helper()
	d, err := r.Provision(ctx, id, "42")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(policy); i += 2 {
		if err := d.SetPolicy(policy[i], policy[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Close()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(d.Dir, "validator.log")); err == nil {
				t.Logf("%s validator.log (tail):\n%s", id, tail(string(b), 40))
			}
		}
	})
	return d
}

func waitBalance(t *testing.T, ctx context.Context, r *Rig, id uint64, want int64) Account {
	t.Helper()
	var a Account
	err := WaitFor(ctx, 90*time.Second, fmt.Sprintf("account %d balance %d", id, want), func() bool {
		var err error
		a, err = r.Account(ctx, id)
		return err == nil && a.Balance == want
	})
	if err != nil {
		t.Fatalf("%v (last seen %+v)", err, a)
	}
	return a
}

// The whole path with real parts: a rider's QR PNG is read by a real QR
// decoder, written to a pseudo-terminal as a scanner does, accepted by the
// validator while it is offline, and once the link is back the server's
// balance drops by exactly the fare.
func TestEndToEndOfflineTap(t *testing.T) {
	zbar, err := exec.LookPath("zbarimg")
	if err != nil {
		if os.Getenv("FAREGO_CI") != "" {
			t.Fatal("zbarimg is required in CI (Debian zbar-tools)")
		}
		t.Skip("zbarimg not installed (Debian zbar-tools)")
	}
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "bus-1-front")
	rider, err := r.NewRider(ctx, "ada", "adult", 1000)
	if err != nil {
		t.Fatal(err)
	}
	d.Link.Cut() // the bus drives out of coverage
	png := filepath.Join(r.Dir, "ada.png")
	text, err := rider.Code(ctx, png)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, zbar, "--raw", "-q", png).Output()
	if err != nil {
		t.Fatalf("zbarimg: %v", err)
	}
	decoded := strings.TrimRight(string(out), "\r\n")
	if decoded != text {
		t.Fatalf("zbarimg read %q, want the code the rider shows", decoded)
	}
	line, err := d.Scan(ctx, decoded)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "ACCEPTED  2.50 EUR") {
		t.Fatalf("validator said %q, want ACCEPTED 2.50 EUR", line)
	}
	if a, _ := r.Account(ctx, rider.ID); a.Balance != 1000 {
		t.Fatalf("balance %d while the bus is offline, want 1000", a.Balance)
	}
	d.Link.Restore()
	a := waitBalance(t, ctx, r, rider.ID, 750)
	if len(a.Rides) != 1 || a.Rides[0].Charge != 250 || a.Rides[0].Route != "42" {
		t.Errorf("rides = %+v", a.Rides)
	}
	if out, err := r.Verify(ctx); err != nil {
		t.Errorf("ledger verify: %v", err)
	} else {
		t.Log(strings.TrimSpace(out))
	}
}

// An account that goes negative on an offline ride is deny-listed, and the
// deny list reaches the validator, which then refuses the rider.
func TestNegativeBalanceReachesValidator(t *testing.T) {
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "bus-2-front")
	rider, err := r.NewRider(ctx, "bob", "adult", 100)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := rider.Code(ctx, "")
	if line, _ := d.Scan(ctx, code); !strings.Contains(line, "ACCEPTED") {
		t.Fatalf("first ride: %q", line)
	}
	waitBalance(t, ctx, r, rider.ID, -150)
	// The deny list arrives within a few seconds; until then the rider is
	// refused by passback anyway, so keep scanning fresh codes.
	err = WaitFor(ctx, 90*time.Second, "the validator to refuse a denied account", func() bool {
		code, _ := rider.Code(ctx, "")
		line, err := d.Scan(ctx, code)
		return err == nil && strings.Contains(line, "(denied)")
	})
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := r.Account(ctx, rider.ID); !a.Denied || a.Balance != -150 {
		t.Errorf("account = %+v, want denied at -150", a)
	}
}

// A device whose registered key no longer matches its own is refused: its
// taps are not settled and stay in its queue.
func TestDeviceWithWrongKeyIsRefused(t *testing.T) {
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "bus-3-front")
	rider, err := r.NewRider(ctx, "cy", "adult", 1000)
	if err != nil {
		t.Fatal(err)
	}
	// The operator registers another key for the id (a stolen identity
	// being replaced, say): the old key's batches are refused, and the old
	// broker password stops working too.
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32)).Public().(ed25519.PublicKey)
	if err := r.API(ctx, "POST", "/v1/devices", map[string]any{"id": "bus-3-front", "public_key": hex.EncodeToString(other), "replace": true}, nil); err != nil {
		t.Fatal(err)
	}
	code, _ := rider.Code(ctx, "")
	if line, _ := d.Scan(ctx, code); !strings.Contains(line, "ACCEPTED") {
		t.Fatalf("tap: %q", line)
	}
	// A correctly keyed device on the same server settles meanwhile, so the
	// server is demonstrably working while it refuses bus-3.
	good := startDevice(t, ctx, r, "bus-4-front")
	dee, _ := r.NewRider(ctx, "dee", "adult", 1000)
	code2, _ := dee.Code(ctx, "")
	if line, _ := good.Scan(ctx, code2); !strings.Contains(line, "ACCEPTED") {
		t.Fatalf("tap on the good device: %q", line)
	}
	waitBalance(t, ctx, r, dee.ID, 750)
	if a, _ := r.Account(ctx, rider.ID); a.Balance != 1000 || len(a.Rides) != 0 {
		t.Errorf("a tap from the wrongly keyed device was settled: %+v", a)
	}
	var devs struct {
		Devices []struct {
			ID         string `json:"id"`
			QueueDepth int    `json:"queue_depth"`
		} `json:"devices"`
	}
	if err := r.API(ctx, "GET", "/v1/devices", nil, &devs); err != nil {
		t.Fatal(err)
	}
	for _, dv := range devs.Devices {
		if dv.ID == "bus-3-front" && dv.QueueDepth != 0 {
			t.Errorf("a forged status from bus-3 was recorded: %+v", dv)
		}
	}
}
