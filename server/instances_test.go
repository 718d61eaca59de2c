package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/server/servertest"
)

// TestKeyringSharedByInstances: settlement instances on one ledger, each
// with its copy of the key directory, behind one load balancer. A rotation
// through one instance's API reaches the others (before, they kept the old
// keyring until restarted: a rider whose credential the new key signed was
// refused at their shop's scanners as "unknown issuer key", and their bus
// taps were held uncharged). Two rotations at once make two versions or
// one and a refusal, never two keyrings of one version. An instance
// started with a key directory older than the ledger's keyring takes the
// ledger's; a keyring written into the database by someone without the
// issuer root is not taken. SQLite and, with FAREGO_TEST_POSTGRES,
// PostgreSQL.
func TestKeyringSharedByInstances(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			testKeyringShared(t, dsn)
		})
	}
}

func testKeyringShared(t *testing.T, dsn string) {
	dirA, dirB, dirC := t.TempDir(), t.TempDir(), t.TempDir()
	if _, err := keys.Init(filepath.Join(dirA, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	copyKeys(t, dirA, dirB)
	copyKeys(t, dirA, dirC) // kept as it is now: C starts later, with version 1
	run := func(dir string) string {
		return "http://" + servertest.RunConfig(t, server.Config{DataDir: dir, DB: dsn, PollInterval: 100 * time.Millisecond}).HTTP
	}
	a, b := run(dirA), run(dirB)
	tok := operatorToken(t, dirA)
	c := &client{t: t, token: tok}

	c.do("PUT", a+"/v1/fares", `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`, 200)
	if v := c.do("POST", a+"/v1/keyring/rotate", `{"activate_in":"0s"}`, 200)["version"]; v != 2.0 {
		t.Fatalf("rotated to version %v, want 2", v)
	}
	waitVersion(t, c, b, 2)
	if kd, err := keys.Open(filepath.Join(dirB, "keys")); err != nil || kd.Keyring().Version() != 2 {
		t.Errorf("B's key directory: %v; want keyring version 2 written", err)
	}

	// A rider signed up at A holds a credential of issuer key 2; their
	// code pays at B.
	acct := c.do("POST", a+"/v1/accounts", `{"profile":"adult"}`, 201)
	id := uint64(acct["account"].(map[string]any)["id"].(float64))
	secret := acct["secret"].(string)
	c.do("POST", a+"/v1/accounts/"+strconv.FormatUint(id, 10)+"/topups", `{"amount":1000,"reference":"psp-1"}`, 200)
	rc := &client{t: t, token: secret}
	cred := rc.do("POST", a+"/v1/accounts/"+strconv.FormatUint(id, 10)+"/credentials", "", 201)
	seed, _ := hex.DecodeString(cred["token_seed"].(string))
	credBytes, _ := hex.DecodeString(cred["credential"].(string))
	rk, err := paycode.RiderKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	code, err := paycode.MakeCode(credBytes, rk, time.Now(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := paycode.Verify(paycode.EncodeText(code), time.Now(), keyringOf(t, c, a), paycode.Policy{}); !d.Accepted || d.Code.KeyID != 2 {
		t.Fatalf("the credential: %+v; want one of issuer key 2", d)
	}
	pay, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": "o-1", "code": paycode.EncodeText(code), "amount": 300})
	c.do("POST", b+"/v1/payments", string(pay), 201)

	// Two rotations at once, one through each instance.
	var wg sync.WaitGroup
	results := make([]map[string]any, 2)
	statuses := make([]int, 2)
	for i, u := range []string{a, b} {
		wg.Go(func() { statuses[i], results[i] = c.try("POST", u+"/v1/keyring/rotate", `{"activate_in":"0s"}`) })
	}
	wg.Wait()
	want := uint64(2)
	seen := map[float64]bool{}
	for i, st := range statuses {
		switch st {
		case 200:
			v := results[i]["version"].(float64)
			if seen[v] {
				t.Errorf("two rotations made version %v", v)
			}
			seen[v] = true
			want = max(want, uint64(v))
		case 409:
			if e, _ := results[i]["error"].(map[string]any); e["code"] != "conflict" {
				t.Errorf("a rotation refused with %v; want conflict", results[i])
			}
		default:
			t.Errorf("a rotation answered %d %v", st, results[i])
		}
	}
	if len(seen) == 0 {
		t.Fatal("neither rotation was made")
	}
	waitVersion(t, c, a, want)
	waitVersion(t, c, b, want)
	ka, kb := keyringOf(t, c, a), keyringOf(t, c, b)
	if ja, jb := mustJSON(t, ka), mustJSON(t, kb); ja != jb {
		t.Errorf("the instances' keyrings differ:\n%s\n%s", ja, jb)
	}
	if n := len(ka.Keys()); n != int(want) {
		t.Errorf("%d issuer keys at version %d; want one a rotation", n, want)
	}

	// C starts with the key directory of version 1 and takes the ledger's.
	cu := run(dirC)
	if kc := keyringOf(t, c, cu); kc.Version() != want {
		t.Errorf("C started at keyring version %d; want the ledger's %d", kc.Version(), want)
	}

	// Keyrings written into the database by someone who holds no issuer
	// root are not taken: one of another root's key, and this
	// installation's own keys with every window ended at a version no
	// rotation can pass (every rider refused everywhere, for good). The
	// instances keep their keyring and still take payments; a rotation is
	// refused as a conflict, saying why.
	other, err := paycode.IssuerKey(make([]byte, paycode.SecretSize), 9)
	if err != nil {
		t.Fatal(err)
	}
	keysNow := append(ka.Keys(), paycode.Key{ID: 9, Public: other.Public().(ed25519.PublicKey),
		NotBefore: time.Now().Add(-time.Hour).UTC().Truncate(time.Second), NotAfter: time.Now().Add(time.Hour).UTC().Truncate(time.Second)})
	forged, err := paycode.NewKeyring(want+1, keysNow)
	if err != nil {
		t.Fatal(err)
	}
	insertKeyring(t, dsn, forged)
	ended := ka.Keys()
	for i := range ended {
		ended[i].NotBefore, ended[i].NotAfter = time.Now().Add(-2*time.Hour).UTC().Truncate(time.Second), time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	}
	dead, err := paycode.NewKeyring(math.MaxInt64, ended)
	if err != nil {
		t.Fatal(err)
	}
	insertKeyring(t, dsn, dead)
	time.Sleep(time.Second) // ten polls
	for _, u := range []string{a, b, cu} {
		if kr := keyringOf(t, c, u); !sameKeyring(t, kr, ka) {
			t.Errorf("%s took a forged keyring (version %d)", u, kr.Version())
		}
	}
	code2, err := paycode.MakeCode(credBytes, rk, time.Now(), 2)
	if err != nil {
		t.Fatal(err)
	}
	pay2, _ := json.Marshal(map[string]any{"merchant_id": "shop-1", "order_id": "o-2", "code": paycode.EncodeText(code2), "amount": 300})
	c.do("POST", cu+"/v1/payments", string(pay2), 201)
	if st, res := c.try("POST", b+"/v1/keyring/rotate", `{"activate_in":"0s"}`); st != 409 || !strings.Contains(fmt.Sprint(res), "did not seal") {
		t.Errorf("a rotation above a forged keyring answered %d %v; want 409 naming it", st, res)
	}
}

func sameKeyring(t *testing.T, a, b *paycode.Keyring) bool {
	t.Helper()
	return mustJSON(t, a) == mustJSON(t, b)
}

// TestKeyRenewedOnItsOwn: a server whose newest issuer key's window ends
// within a month rotates on its own, at start: the new key is published at
// once and signs after the activation delay, and the audit trail says the
// server did it. Nothing rotated before: a year after the last rotation
// credentials were cut short and then not issued at all.
func TestKeyRenewedOnItsOwn(t *testing.T) {
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{KeyValidity: 10 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	u := "http://" + servertest.RunConfig(t, server.Config{DataDir: dir, KeyActivation: 6 * time.Hour}).HTTP
	c := &client{t: t, token: operatorToken(t, dir)}
	waitVersion(t, c, u, 2)
	k2, ok := keyringOf(t, c, u).Lookup(2)
	if start := time.Now().Add(6 * time.Hour); !ok || k2.NotBefore.Before(start.Add(-2*time.Minute)) || k2.NotBefore.After(start) {
		t.Errorf("key 2 signs from %s; want in 6 h (%s)", k2.NotBefore, start)
	}
	if k2.NotAfter.Sub(k2.NotBefore) < 300*24*time.Hour {
		t.Errorf("key 2's window %s to %s: want a year", k2.NotBefore, k2.NotAfter)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		audit := mustJSONAny(t, c.do("GET", u+"/v1/audit", "", 200)) // written just after the keyring
		if strings.Contains(audit, `"actor":"server"`) && strings.Contains(audit, "rotate_keyring") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the audit trail does not show the server's rotation: %s", audit)
		}
	}
	// Renewed once: the new key's window is a year.
	time.Sleep(200 * time.Millisecond)
	if v := keyringOf(t, c, u).Version(); v != 2 {
		t.Errorf("keyring version %d; want one renewal", v)
	}
}

type client struct {
	t     *testing.T
	token string
}

func (c *client) try(method, url, body string) (int, map[string]any) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Error(err)
		return 0, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

func (c *client) do(method, url, body string, want int) map[string]any {
	c.t.Helper()
	st, out := c.try(method, url, body)
	if st != want {
		c.t.Fatalf("%s %s: %d %v; want %d", method, url, st, out, want)
	}
	return out
}

func keyringOf(t *testing.T, c *client, base string) *paycode.Keyring {
	t.Helper()
	st, out := c.try("GET", base+"/v1/keyring", "")
	if st != 200 {
		t.Fatalf("GET %s/v1/keyring: %d", base, st)
	}
	kr, err := paycode.ParseKeyring([]byte(mustJSONAny(t, out)))
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// waitVersion waits up to 10 s for the instance at base to serve keyring
// version v.
func waitVersion(t *testing.T, c *client, base string, v uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		got := keyringOf(t, c, base).Version()
		if got == v {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s serves keyring version %d after 10 s; want %d", base, got, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustJSON(t *testing.T, kr *paycode.Keyring) string {
	b, err := kr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustJSONAny(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func operatorToken(t *testing.T, dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "keys", keys.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// copyKeys copies from's key directory into to (an instance's copy).
func copyKeys(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(to, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(from, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, "keys", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, "keys", e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// insertKeyring writes kr into the ledger's keyrings as someone with the
// database's password could.
func insertKeyring(t *testing.T, dsn string, kr *paycode.Keyring) {
	t.Helper()
	driver, src := "pgx", dsn
	if p, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		// The instances poll this file: wait out their locks as they do.
		driver, src = "sqlite", p+"?_pragma=busy_timeout(10000)"
	}
	db, err := sql.Open(driver, src)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), `INSERT INTO issuer_keyrings (version, keyring, created_ns) VALUES ($1, $2, $3)`,
		int64(kr.Version()), mustJSON(t, kr), time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
}

// TestReleasesSharedByInstances: instances given one releases directory
// (storage they all mount) serve a release stored through either: a
// device's download reaches whichever instance the load balancer picks
// (a 404 fails its update for good).
func TestReleasesSharedByInstances(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
	shared := t.TempDir()
	dirA, dirB := t.TempDir(), t.TempDir()
	if _, err := keys.Init(filepath.Join(dirA, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	copyKeys(t, dirA, dirB)
	run := func(dir string) string {
		return "http://" + servertest.RunConfig(t, server.Config{DataDir: dir, DB: dsn, Releases: shared}).HTTP
	}
	a, b := run(dirA), run(dirB)
	bin := validatorBinary(t)
	req, _ := http.NewRequest("PUT", a+"/v1/releases/1.4.0/amd64", bytes.NewReader(bin))
	req.Header.Set("Authorization", "Bearer "+operatorToken(t, dirA))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT the release at A: %d %s", resp.StatusCode, body)
	}
	got, err := http.Get(b + "/v1/releases/1.4.0/amd64")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if got.StatusCode != http.StatusOK || !bytes.Equal(served, bin) {
		t.Errorf("B serves the release with %d, %d bytes; want A's %d", got.StatusCode, len(served), len(bin))
	}
}

// validatorBinary builds a small Go program for linux/amd64: a release
// Add takes (a real executable with build information).
func validatorBinary(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	// Its version as make dist stamps it (Add refuses a binary without it).
	src := "package main\n\nvar version = \"1.4.0\"\n\nfunc main() { println(\"validator\", version) }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/validator\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "v", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOWORK=off", "GOFLAGS=")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, msg)
	}
	b, err := os.ReadFile(filepath.Join(dir, "v"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
