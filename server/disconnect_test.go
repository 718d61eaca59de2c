package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/servertest"
)

// TestDeviceLoginEnds: a validator's live broker connection ends when the
// device is replaced (a new key and password) or revoked through this
// instance's API — at once — and when it is revoked through the ledger
// alone, as another instance would, by the sweep within seconds. The old
// password is refused afterwards; the new one works. A real server: its
// SQLite ledger, embedded broker and HTTP API on loopback.
func TestDeviceLoginEnds(t *testing.T) {
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	addrs := servertest.Run(t, dir)
	tok, err := os.ReadFile(filepath.Join(dir, "keys", keys.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	post := func(path string, body any) map[string]any {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", "http://"+addrs.HTTP+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST %s: %d %v", path, resp.StatusCode, out)
		}
		return out
	}
	register := func(id string, replace bool) map[string]any {
		pub, _, _ := ed25519.GenerateKey(nil)
		return post("/v1/devices", map[string]any{"id": id, "public_key": hex.EncodeToString(pub), "replace": replace})
	}
	// connect logs in as the device; lost is closed when the broker ends
	// the connection.
	connect := func(reg map[string]any) (mqtt.Client, <-chan struct{}, error) {
		lost := make(chan struct{})
		o := mqtt.NewClientOptions().AddBroker("tcp://" + addrs.MQTT).SetClientID(reg["mqtt_client_id"].(string)).
			SetUsername(reg["mqtt_username"].(string)).SetPassword(reg["mqtt_password"].(string)).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
			SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
		c := mqtt.NewClient(o)
		tk := c.Connect()
		if !tk.WaitTimeout(10 * time.Second) {
			return nil, nil, context.DeadlineExceeded
		}
		if tk.Error() != nil {
			return nil, nil, tk.Error()
		}
		t.Cleanup(func() { c.Disconnect(0) })
		return c, lost, nil
	}
	// Broker logins wait until the ingest has subscribed.
	connectEventually := func(reg map[string]any) <-chan struct{} {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, lost, err := connect(reg)
			if err == nil {
				return lost
			}
			if time.Now().After(deadline) {
				t.Fatalf("device %s cannot log in: %v", reg["id"], err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	ended := func(what string, lost <-chan struct{}, within time.Duration) {
		t.Helper()
		select {
		case <-lost:
		case <-time.After(within):
			t.Errorf("%s: the device's connection is still up after %v", what, within)
		}
	}

	old := register("bus-1", false)
	lost := connectEventually(old)
	replaced := register("bus-1", true)
	ended("replaced through the API", lost, 5*time.Second)
	if _, _, err := connect(old); err == nil {
		t.Errorf("the replaced password still logs in")
	}
	lost = connectEventually(replaced)
	post("/v1/devices/bus-1/revoke", nil)
	ended("revoked through the API", lost, 5*time.Second)
	if _, _, err := connect(replaced); err == nil {
		t.Errorf("a revoked device still logs in")
	}

	// Revoked by another instance: only the ledger changes here.
	other := register("bus-2", false)
	lost = connectEventually(other)
	l, err := ledger.Open(ctx, "sqlite:"+filepath.Join(dir, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.RevokeDevice(ctx, "bus-2"); err != nil {
		t.Fatal(err)
	}
	ended("revoked by another instance", lost, 13*time.Second) // the sweep runs every 2 s
}
