package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/cmd/internal/powercut"
)

// TestServerActsSurvivePowerCuts: the settlement server's data directory
// (SQLite ledger, keys) on a power-cut disk; each act an operator, a shop
// or the server's CLI is answered for is followed at once by a power cut
// (the server killed, the disk's unsynced writes dropped): a top-up, a
// shop payment, an issuer key rotation, a token made with farego-settlement
// token create. After each cut the server starts on what survived and the
// act is all there: the balance, the payment (its code refused a second
// time: no double charge), the keyring in the key directory and the ledger,
// the token. verify is clean at the end.
func TestServerActsSurvivePowerCuts(t *testing.T) {
	r, ctx, cut := serverOnPowerCutDisk(t, 17)

	rider, err := r.NewAPIRider(ctx, "adult", 1000)
	must(t, err)
	cut("the account's registration")
	if _, err := r.Account(ctx, rider.ID); err != nil {
		t.Fatalf("the account registered before the power cut: %v", err)
	}
	for i := range 3 {
		must(t, r.API(ctx, "POST", fmt.Sprintf("/v1/accounts/%d/topups", rider.ID), map[string]any{"amount": 500, "reference": fmt.Sprintf("cut-%d", i)}, nil))
		cut(fmt.Sprintf("top-up %d", i+1))
		a, err := r.Account(ctx, rider.ID)
		must(t, err)
		if want := int64(1000 + 500*(i+1)); a.Balance != want {
			t.Fatalf("after top-up %d and a power cut the balance is %d, want %d", i+1, a.Balance, want)
		}
	}

	tok, err := r.MerchantToken(ctx, "shop-1")
	must(t, err)
	cut("farego-settlement token create")
	for i := range 2 {
		code := rider.Code(time.Now())
		must(t, cli.CallJSON(ctx, "POST", "http://"+r.HTTP+"/v1/payments", tok,
			map[string]any{"merchant_id": "shop-1", "order_id": fmt.Sprintf("order-%d", i), "code": code, "amount": 300}, nil))
		cut(fmt.Sprintf("shop payment %d", i+1))
		a, err := r.Account(ctx, rider.ID)
		must(t, err)
		if want := int64(2500 - 300*(i+1)); a.Balance != want {
			t.Fatalf("after shop payment %d and a power cut the balance is %d, want %d", i+1, a.Balance, want)
		}
		err = cli.CallJSON(ctx, "POST", "http://"+r.HTTP+"/v1/payments", tok,
			map[string]any{"merchant_id": "shop-1", "order_id": fmt.Sprintf("order-%d-again", i), "code": code, "amount": 300}, nil)
		if err == nil || !strings.Contains(err.Error(), "code_used") {
			t.Fatalf("shop payment %d's code taken again after the cut: %v (want code_used)", i+1, err)
		}
	}

	for i := range 3 {
		var kr struct {
			Version uint64 `json:"version"`
		}
		must(t, r.API(ctx, "POST", "/v1/keyring/rotate", map[string]any{"activate_in": "0s"}, &kr))
		cut(fmt.Sprintf("key rotation %d (version %d)", i+1, kr.Version))
		var now struct {
			Version uint64 `json:"version"`
		}
		must(t, r.API(ctx, "GET", "/v1/keyring", nil, &now))
		if now.Version != kr.Version {
			t.Fatalf("after rotation %d to version %d and a power cut the server's keyring is version %d", i+1, kr.Version, now.Version)
		}
		b, err := os.ReadFile(filepath.Join(r.ServerData, "keys", "keyring.json"))
		must(t, err)
		var file struct {
			Version uint64 `json:"version"`
		}
		must(t, json.Unmarshal(b, &file))
		if file.Version != kr.Version {
			t.Errorf("after rotation %d to version %d and a power cut keyring.json holds version %d", i+1, kr.Version, file.Version)
		}
		// A credential of the new key pays.
		fresh, err := r.NewAPIRider(ctx, "adult", 500)
		must(t, err)
		must(t, cli.CallJSON(ctx, "POST", "http://"+r.HTTP+"/v1/payments", tok,
			map[string]any{"merchant_id": "shop-1", "order_id": fmt.Sprintf("fresh-%d", i), "code": fresh.Code(time.Now()), "amount": 100}, nil))
	}
	out, err := r.Verify(ctx)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	t.Log(strings.TrimSpace(out))
}

// serverOnPowerCutDisk starts a settlement server (the chaos test's fare
// table) whose data directory (SQLite ledger, keys, releases) is on a
// power-cut disk made with seed, and returns it with cut: the server
// killed right after an act, the disk's unsynced writes dropped (every
// other cut tearing pages), and the server started on what survived,
// the test failing if it does not start. The server's log ends a failed
// test's output.
func serverOnPowerCutDisk(t *testing.T, seed uint64) (*Rig, context.Context, func(after string)) {
	t.Helper()
	disk := powercut.Mount(t, &powercut.Options{Seed: seed})
	dir := t.TempDir()
	r := New(dir, binDir, nil)
	r.ServerData = disk.Path("srv", "farego")
	ctx, cancel := newCtx(t)
	t.Cleanup(func() {
		cancel()
		r.Close()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "server.log")); err == nil {
				t.Logf("server.log (tail):\n%s", tail(string(b), 40))
			}
		}
	})
	must(t, r.Init(ctx, chaosFares))
	must(t, r.StartServer(ctx))
	n := 0
	return r, ctx, func(after string) {
		t.Helper()
		must(t, r.StopServer(true))
		rep, err := disk.Cut(n%2 == 1)
		must(t, err)
		n++
		t.Logf("cut after %s: %+v", after, rep)
		if err := r.StartServer(ctx); err != nil {
			t.Fatalf("power cut after %s: the server does not start on what survived: %v", after, err)
		}
	}
}
