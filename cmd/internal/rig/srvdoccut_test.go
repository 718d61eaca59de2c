package rig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/sync/update"
)

// TestServerDocumentsSurvivePowerCuts: the settlement server's data
// directory (SQLite ledger, keys, releases) on a power-cut disk; right
// after each answer of what the fleet is sent — a fare table, a deny-list
// entry, a device's registration, a release added and rolled out, the
// operator token file replaced (token revoke init) — the server is killed
// and the disk's unsynced writes dropped. It starts on what survived and
// the act is all there; verify is clean at the end.
func TestServerDocumentsSurvivePowerCuts(t *testing.T) {
	r, ctx, cut := serverOnPowerCutDisk(t, 23)

	must(t, r.API(ctx, "PUT", "/v1/fares", json.RawMessage(strings.Replace(chaosFares, `"version": 1`, `"version": 2`, 1)), nil))
	cut("a fare table published")
	var fares struct {
		Version uint64 `json:"version"`
	}
	must(t, r.API(ctx, "GET", "/v1/fares", nil, &fares))
	if fares.Version != 2 {
		t.Errorf("after a fare table's publication and a power cut the server's is version %d, want 2", fares.Version)
	}

	rider, err := r.NewAPIRider(ctx, "adult", 1000)
	must(t, err)
	must(t, r.API(ctx, "POST", "/v1/denylist", map[string]any{"account": rider.ID, "serial": 1, "reason": "lost"}, nil))
	cut("a deny-list entry")
	var dl struct {
		Version uint64 `json:"version"`
		Entries []struct {
			Account uint64 `json:"account"`
		} `json:"entries"`
	}
	must(t, r.API(ctx, "GET", "/v1/denylist", nil, &dl))
	if len(dl.Entries) != 1 || dl.Entries[0].Account != rider.ID {
		t.Errorf("after a deny-list entry and a power cut the deny list is %+v", dl)
	}

	dev, err := r.Provision(ctx, "doccut-0", "42")
	must(t, err)
	defer dev.Close()
	cut("a device's registration")
	devs, err := r.Devices(ctx)
	must(t, err)
	found := false
	for _, d := range devs {
		found = found || d.ID == dev.ID
	}
	if !found {
		t.Errorf("after a device's registration and a power cut the server does not know %s", dev.ID)
	}

	bin := buildVersion(t, ctx, t.TempDir(), "1.1.0")
	want, err := os.ReadFile(bin)
	must(t, err)
	_, err = r.command(ctx, "farego-settlement", "release", "add", "--data", r.DataDir(), "--file", bin, "--version", "1.1.0", "--arch", update.Arch())
	must(t, err)
	cut("a release added")
	resp, err := http.Get("http://" + r.HTTP + "/v1/releases/1.1.0/" + update.Arch())
	must(t, err)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, err)
	if resp.StatusCode != http.StatusOK || sha256.Sum256(got) != sha256.Sum256(want) {
		t.Errorf("after a release's addition and a power cut its binary is %d bytes (status %d, sha256 %s), want %d bytes",
			len(got), resp.StatusCode, hex.EncodeToString(func() []byte { s := sha256.Sum256(got); return s[:] }()), len(want))
	}
	must(t, r.API(ctx, "POST", "/v1/releases/1.1.0/rollout", map[string]any{"devices": []string{dev.ID}}, nil))
	cut("a rollout")
	var rels struct {
		Releases []struct {
			Version string `json:"version"`
		} `json:"releases"`
		Rollout *struct {
			Seq     uint64   `json:"seq"`
			Version string   `json:"version"`
			Devices []string `json:"devices"`
		} `json:"rollout"`
	}
	must(t, r.API(ctx, "GET", "/v1/releases", nil, &rels))
	if len(rels.Releases) != 1 || rels.Rollout == nil || rels.Rollout.Version != "1.1.0" || rels.Rollout.Seq != 1 {
		t.Errorf("after a rollout and a power cut the releases are %+v", rels)
	}

	old := r.Token
	_, err = r.command(ctx, "farego-settlement", "token", "revoke", "--data", r.DataDir(), "init")
	must(t, err)
	cut("token revoke init")
	tok, err := os.ReadFile(filepath.Join(r.DataDir(), "keys", "operator.token"))
	must(t, err)
	r.Token = strings.TrimSpace(string(tok))
	if r.Token == old {
		t.Errorf("after token revoke init and a power cut the token file holds the revoked token")
	}
	must(t, r.API(ctx, "GET", "/v1/denylist", nil, nil))
	r.Token = old
	if err := r.API(ctx, "GET", "/v1/denylist", nil, nil); err == nil {
		t.Errorf("after token revoke init and a power cut the revoked token is taken")
	}
	r.Token = strings.TrimSpace(string(tok))

	out, err := r.Verify(ctx)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	t.Logf("every power cut survived; %s", strings.TrimSpace(out))
}
