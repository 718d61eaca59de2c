package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
)

func settle(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestInitVerifyAndPasswords(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	fares := filepath.Join("..", "..", "testdata", "fare", "table.json")
	c, out, e := settle(t, ctx, "init", "--data", data, "--fares", fares)
	if c != 0 || !strings.Contains(out, "operator token") || strings.Contains(out, "fares:") {
		t.Fatalf("init: %d %q %q", c, out, e)
	}
	tok, _ := os.ReadFile(filepath.Join(data, "keys", "operator.token"))
	if strings.Contains(out, strings.TrimSpace(string(tok))) {
		t.Error("init printed the operator token")
	}
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 1 || !strings.Contains(e, "already exists") {
		t.Errorf("second init: %d %q", c, e)
	}
	if c, out, e := settle(t, ctx, "verify", "--data", data); c != 0 || !strings.Contains(out, "ledger ok") || e != "" {
		t.Errorf("verify: %d %q %q", c, out, e)
	}
	// Progress on stderr, every check once given an interval shorter than
	// each (a large ledger's verify said nothing for minutes); the line
	// scripts read stays alone on stdout.
	c, out, e = settle(t, ctx, "verify", "--data", data, "--progress", "1ns")
	if n := strings.Count(e, "verify: "); c != 0 || !strings.HasPrefix(out, "ledger ok") || n < ledger.InvariantSteps ||
		!strings.Contains(e, fmt.Sprintf("check 1 of %d, looking for: account balance or posting count differs from its postings\n", ledger.InvariantSteps)) {
		t.Errorf("verify --progress 1ns: %d, %d progress lines (want %d or more: a check running a second says so again), stdout %q, stderr:\n%s",
			c, n, ledger.InvariantSteps, out, e)
	}
	for step := 1; step <= ledger.InvariantSteps; step++ {
		if !strings.Contains(e, fmt.Sprintf(": check %d of %d, ", step, ledger.InvariantSteps)) {
			t.Errorf("verify --progress 1ns: check %d not said:\n%s", step, e)
		}
	}
	// The password alone: FAREGO_BROKER_PASSWORD="$(… mqtt-password …)".
	c, out, _ = settle(t, ctx, "mqtt-password", "--data", data)
	if f := strings.Fields(out); c != 0 || len(f) != 1 || len(f[0]) != 64 || out != f[0]+"\n" {
		t.Errorf("mqtt-password: %d %q", c, out)
	}
	// Tokens: made once (the token printed alone on standard output),
	// listed, revoked; bad flags exit 2 naming the flag.
	c, out, e = settle(t, ctx, "token", "create", "--data", data, "--role", "merchant", "--merchant", "shop-1", "--name", "till 3")
	if tok := strings.TrimSpace(out); c != 0 || !strings.HasPrefix(tok, "fgt_") || strings.Contains(tok, "\n") {
		t.Fatalf("token create: %d %q %q", c, out, e)
	}
	id := strings.Split(strings.TrimSpace(out), "_")[1]
	if c, out, _ := settle(t, ctx, "token", "list", "--data", data); c != 0 || !strings.Contains(out, id) || !strings.Contains(out, "shop-1") ||
		strings.Contains(out, "fgt_") {
		t.Errorf("token list: %d %q", c, out)
	}
	if c, _, e := settle(t, ctx, "token", "create", "--data", data, "--role", "merchant"); c != 2 || !strings.Contains(e, "--merchant") {
		t.Errorf("merchant token without --merchant: %d %q", c, e)
	}
	if c, _, e := settle(t, ctx, "token", "create", "--data", data); c != 2 || !strings.Contains(e, "--role") {
		t.Errorf("token create without --role: %d %q", c, e)
	}
	if c, out, _ := settle(t, ctx, "token", "revoke", "--data", data, id); c != 0 || !strings.Contains(out, "revoked") {
		t.Errorf("token revoke: %d %q", c, out)
	}
	// A revoked till token's payments (none here: the ledger's and the
	// API's tests list some).
	if c, out, e := settle(t, ctx, "token", "payments", "--data", data, id); c != 0 || strings.TrimSpace(out) != "ID  MERCHANT  ORDER  ACCOUNT  AMOUNT  AT" {
		t.Errorf("token payments: %d %q %q", c, out, e)
	}
	if c, out, e := settle(t, ctx, "token", "refunds", "--data", data, id); c != 0 || strings.TrimSpace(out) != "PAYMENT  MERCHANT  ORDER  REFUND  ACCOUNT  AMOUNT  AT" {
		t.Errorf("token refunds: %d %q %q", c, out, e)
	}
	if c, _, e := settle(t, ctx, "token", "refunds", "--data", data, "nosuch12"); c != 1 || !strings.Contains(e, "token list") {
		t.Errorf("an unknown token's refunds: %d %q", c, e)
	}
	if c, _, e := settle(t, ctx, "token", "refunds", "--data", data, "--before", "-1", id); c != 1 || !strings.Contains(e, "unix nanoseconds") {
		t.Errorf("token refunds --before -1: %d %q", c, e)
	}
	if c, _, e := settle(t, ctx, "token", "payments", "--data", data); c != 2 || !strings.Contains(e, "token's id") {
		t.Errorf("token payments without an id: %d %q", c, e)
	}
	if c, _, e := settle(t, ctx, "token", "payments", "--data", data, "nosuch12"); c != 1 || !strings.Contains(e, "not found") ||
		!strings.Contains(e, "token list") {
		t.Errorf("an unknown token's payments: %d %q", c, e)
	}
	// Again: nothing changes, and it says so (it printed "revoked" again).
	if c, out, _ := settle(t, ctx, "token", "revoke", "--data", data, id); c != 0 || !strings.Contains(out, "was revoked already") ||
		!strings.Contains(out, "nothing changed") {
		t.Errorf("revoke again: %d %q", c, out)
	}
	// An unknown id points at the list of ids (operator review).
	if c, _, e := settle(t, ctx, "token", "revoke", "--data", data, "nosuch12"); c != 1 || !strings.Contains(e, "not found") ||
		!strings.Contains(e, "token list") {
		t.Errorf("revoking an unknown token: %d %q; want not found, and where the ids are", c, e)
	}
	if c, _, e := settle(t, ctx, "device", "revoke", "--data", data, "bus-1"); c != 1 || !strings.Contains(e, "not found") {
		t.Errorf("revoking an unknown device: %d %q", c, e)
	}
	c, out, _ = settle(t, ctx, "mqtt-passwd", "--data", data)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); c != 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "farego-server:$7$101$") {
		t.Errorf("mqtt-passwd: %d %q", c, out)
	}
	if c, _, e := settle(t, ctx, "verify", "--data", t.TempDir()); c != 1 || !strings.Contains(e, "no ledger") {
		t.Errorf("verify without a ledger: %d %q", c, e)
	}
	if c, _, _ := settle(t, ctx, "frobnicate"); c != 2 {
		t.Errorf("unknown subcommand: exit %d", c)
	}
}

// A port already taken is named in the error, not silently moved.
func TestRunSaysWhatIsInTheWay(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	// Without --fares, init says the ledger has no fare table yet.
	if c, out, e := settle(t, context.Background(), "init", "--data", data); c != 0 || !strings.Contains(out, "fares:          none yet") {
		t.Fatalf("init without --fares: %d %q %q", c, out, e)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// An earlier run's ready file (the README's by-hand block run again
	// in the same directory) must not say this one is serving.
	ready := filepath.Join(t.TempDir(), "ready")
	if err := os.WriteFile(ready, []byte(`{"http":"127.0.0.1:1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, e := settle(t, ctx, "run", "--data", data, "--mqtt", ln.Addr().String(), "--http", "127.0.0.1:0", "--ready-file", ready)
	if c != 1 || !strings.Contains(e, ln.Addr().String()) || !strings.Contains(e, "--mqtt") {
		t.Errorf("run on a taken MQTT port: %d %q", c, e)
	}
	if _, err := os.Stat(ready); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a server that could not start left an earlier run's ready file: %v", err)
	}
	c, _, e = settle(t, ctx, "run", "--data", data, "--mqtt", "127.0.0.1:0", "--http", ln.Addr().String())
	if c != 1 || !strings.Contains(e, "--http") {
		t.Errorf("run on a taken HTTP port: %d %q", c, e)
	}
	if c, _, e := settle(t, ctx, "run", "--data", t.TempDir()); c != 1 || !strings.Contains(e, "init") {
		t.Errorf("run before init: %d %q", c, e)
	}
	for _, bad := range []string{"proxy.example", "10.0.0.0/33", "10.0.0.1,", "::1/129"} {
		if c, _, e := settle(t, ctx, "run", "--data", data, "--trusted-proxy", bad); c != 2 || !strings.Contains(e, "trusted-proxy") {
			t.Errorf("--trusted-proxy %q: %d %q", bad, c, e)
		}
	}
	for _, bad := range [][]string{{"--max-age", "-1s"}, {"--skew", "-30s"}, {"--max-age", "2h"}, {"--skew", "2h"}, {"--credential-ttl", "-5h"}, {"--credential-ttl", "0s"}, {"--key-activation", "-1h"}, {"--key-activation", "1000h"},
		{"--device-aside-budget", "0"}, {"--device-aside-budget", "-5"},
		{"--device-verify-budget", "0"}, {"--device-verify-budget", "-2"},
		{"--http-max-conns", "-2"}, {"--http-max-conns", "5"}, {"--http-max-conns-per-address", "-3"},
		{"--log-format", "jsn"}, {"--log-level", "verbose"},
		{"--allowed-hosts", "https://farego.example.net"}, {"--allowed-hosts", "farego.example.net:443"}, {"--allowed-hosts", "a.example,,b.example"},
		{"--allowed-hosts", "*.farego.example.net"}, {"--allowed-hosts", "bücher.example"}, // matched no request: every rider by it had 421
		{"--metrics", "127.0.0.1:18080", "--http", "127.0.0.1:18080"}} { // it said only "address already in use"
		if c, _, e := settle(t, ctx, append([]string{"run", "--data", data}, bad...)...); c != 2 || !strings.Contains(e, bad[0]) {
			t.Errorf("%v: %d %q", bad, c, e)
		}
	}
	// A comma too many was refused as `--allowed-hosts ""`, with the advice
	// for a scheme or port: the empty name is said, in the value given.
	if c, _, e := settle(t, ctx, "run", "--data", data, "--allowed-hosts", "farego.example.net,"); c != 2 ||
		!strings.Contains(e, `--allowed-hosts "farego.example.net,": an empty name between commas`) || strings.Contains(e, "without scheme or port") {
		t.Errorf("--allowed-hosts with a comma too many: %d %q", c, e)
	}
}

// --http and --metrics on port 0 both (a script reading the ports from
// --ready-file, as the README says) are two listeners, not one address
// given twice: run served both instead of refusing them as the same.
func TestRunMetricsAndHTTPOnPortZero(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if c, _, e := settle(t, context.Background(), "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := filepath.Join(dir, "ready.json")
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		c, _, e := settle(t, ctx, "run", "--data", data, "--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
			"--mqtt", "127.0.0.1:0", "--ready-file", ready, "--allowed-hosts", "farego.example.net")
		done <- result{c, e}
	}()
	for {
		if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
			var addrs struct{ HTTP, Metrics string }
			if err := json.Unmarshal(b, &addrs); err != nil || addrs.HTTP == "" || addrs.Metrics == "" || addrs.HTTP == addrs.Metrics {
				t.Errorf("ready file %s: %v", b, err)
			}
			// --allowed-hosts: the name given is served on both, another is not (the DNS rebinding guard).
			for _, addr := range []string{addrs.HTTP + "/v1/keyring", addrs.Metrics + "/metrics"} {
				for host, want := range map[string]int{"farego.example.net": http.StatusOK, "evil.example": http.StatusMisdirectedRequest} {
					req, _ := http.NewRequest("GET", "http://"+addr, nil)
					req.Host = host
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != want {
						t.Errorf("run --allowed-hosts farego.example.net: GET %s with Host %s: %d, want %d", addr, host, resp.StatusCode, want)
					}
				}
			}
			break
		}
		select {
		case r := <-done:
			t.Fatalf("run --http 127.0.0.1:0 --metrics 127.0.0.1:0 exited %d: %s", r.code, r.stderr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	if r := <-done; r.code != 0 {
		t.Errorf("run exited %d: %s", r.code, r.stderr)
	}
}

// Every subcommand of token is in the top-level usage (payments was
// missing), and run's --device-aside-budget names everything it counts.
func TestUsageNamesEverySubcommand(t *testing.T) {
	ctx := context.Background()
	c, out, _ := settle(t, ctx, "--help")
	if c != 0 || !strings.Contains(out, "token  create|list|revoke|payments|refunds") {
		t.Errorf("farego-settlement --help: %d\n%s", c, out)
	}
	for _, sub := range []string{"create", "list", "revoke", "payments", "refunds"} {
		if c, out, e := settle(t, ctx, "token", sub, "--help"); c != 0 || !strings.Contains(out, "-data string") {
			t.Errorf("token %s --help: %d %q %q", sub, c, out, e)
		}
	}
	for _, args := range [][]string{{"account", "show"}, {"account", "topup"}, {"tap", "void"}, {"payment", "refund"}} {
		if !strings.Contains(out, "farego-settlement "+args[0]+" ") {
			t.Errorf("farego-settlement --help does not name %s", args[0])
		}
		if c, sub, e := settle(t, ctx, append(args, "--help")...); c != 0 || !strings.Contains(sub, "-data string") || !strings.Contains(sub, "-db string") {
			t.Errorf("%v --help: %d %q %q", args, c, sub, e)
		}
	}
	if c, out, _ := settle(t, ctx, "run", "--help"); c != 0 || !strings.Contains(out, "charged nothing") {
		t.Errorf("run --help does not say --device-aside-budget counts taps charged nothing: %d", c)
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{"10.1.2.3": "10.1.2.3/32", "10.1.2.3/8": "10.0.0.0/8", "::1": "::1/128",
		"::ffff:10.0.0.1": "10.0.0.1/32", "2001:db8::/32": "2001:db8::/32"} {
		if p, err := parsePrefix(in); err != nil || p.String() != want {
			t.Errorf("parsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
}

// init takes the ledger's currency from its fare table, and refuses a
// --currency the table is not in before it makes anything.
func TestInitCurrency(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	yen := filepath.Join(dir, "yen.json")
	if err := os.WriteFile(yen, []byte(`{"version":1,"currency":"JPY","timezone":"Asia/Tokyo","service_day_start":"04:00",
		"fares":{"*":{"adult":210,"child":110,"senior":110,"student":160}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	c, _, e := settle(t, ctx, "init", "--data", data, "--fares", yen, "--currency", "EUR")
	if c != 1 || !strings.Contains(e, "JPY") || !strings.Contains(e, "EUR") {
		t.Fatalf("init with a JPY table and --currency EUR: %d %q", c, e)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the refused init left %s behind: %v", data, err)
	}
	// The form alone is not enough: the currency is kept for good.
	for _, bad := range []string{"yen", "ABC", "EUE"} {
		if c, _, e := settle(t, ctx, "init", "--data", data, "--currency", bad); c != 2 || !strings.Contains(e, "--currency") {
			t.Fatalf("init --currency %s: %d %q", bad, c, e)
		}
	}
	xyz := filepath.Join(dir, "xyz.json")
	if err := os.WriteFile(xyz, []byte(`{"version":1,"currency":"XYZ","timezone":"UTC","fares":{"*":{"adult":210,"child":110,"senior":110,"student":160}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, _, e := settle(t, ctx, "init", "--data", data, "--fares", xyz); c != 1 || !strings.Contains(e, "ISO 4217") {
		t.Fatalf("init with a table in XYZ: %d %q", c, e)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the refused init left %s behind: %v", data, err)
	}
	if c, _, e := settle(t, ctx, "init", "--data", data, "--fares", yen); c != 0 {
		t.Fatalf("init: %d %q", c, e)
	}
	// The ledger is in yen for every program that opens it.
	st, err := ledger.Open(ctx, filepath.Join(data, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Currency() != "JPY" {
		t.Errorf("ledger currency %s, want JPY", st.Currency())
	}
}

// A command pointed at a directory without a ledger (a mistyped --data, a
// restore that forgot the ledger) says so and makes none: opening a
// missing SQLite file used to create an empty ledger, which restored then
// marked as restored, token create put a token in, and run served.
func TestCommandsRefuseAMissingLedger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	db := filepath.Join(data, "ledger.db")
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(db + suffix)
	}
	for _, args := range [][]string{
		{"verify", "--data", data},
		{"restored", "--data", data},
		{"token", "create", "--data", data, "--role", "auditor"},
		{"token", "list", "--data", data},
		{"device", "revoke", "--data", data, "bus-1"},
		{"account", "show", "--data", data, "1000"},
		{"account", "topup", "--data", data, "--reference", "r", "--reason", "x", "1000", "5.00"},
		{"tap", "void", "--data", data, "--reason", "x", "bus-1/e/1"},
		{"payment", "refund", "--data", data, "--merchant", "m", "--reason", "x", "o-1"},
		{"run", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"},
		{"verify", "--db", "sqlite:" + filepath.Join(t.TempDir(), "typo.db")},
	} {
		c, _, e := settle(t, ctx, args...)
		if c != 1 || !strings.Contains(e, "no ledger at") {
			t.Errorf("%v: exit %d, %q; want 1 and no ledger at …", args, c, e)
		}
		if _, err := os.Stat(db); !os.IsNotExist(err) {
			t.Fatalf("%v made a ledger: %v", args, err)
		}
	}
	// An empty file in its place (a copy that failed) is no ledger either:
	// SQLite took it for a new database, which restored marked, verify
	// found fine and run served with no accounts.
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"verify", "--data", data},
		{"restored", "--data", data},
		{"run", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"},
	} {
		c, _, e := settle(t, ctx, args...)
		if c != 1 || !strings.Contains(e, "no ledger at") || !strings.Contains(e, "empty (0 bytes)") {
			t.Errorf("%v on an empty file: exit %d, %q; want 1 and no ledger at …: empty", args, c, e)
		}
		if info, err := os.Stat(db); err != nil || info.Size() != 0 {
			t.Fatalf("%v changed the empty file: %v, %v", args, info, err)
		}
	}
}

// restored given another deployment's ledger (a backup of the wrong one)
// refuses before changing it: it marked it restored and moved its
// counters, and only run then refused it.
func TestRestoredOtherDeployment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ours, theirs := filepath.Join(t.TempDir(), "ours"), filepath.Join(t.TempDir(), "theirs")
	for _, d := range []string{ours, theirs} {
		if c, _, e := settle(t, ctx, "init", "--data", d); c != 0 {
			t.Fatal(e)
		}
	}
	if c, _, e := settle(t, ctx, "restored", "--data", ours, "--db", "sqlite:"+filepath.Join(theirs, "ledger.db")); c != 1 ||
		!strings.Contains(e, "another key directory") || !strings.Contains(e, "the ledger is unchanged") {
		t.Errorf("restored on another deployment's ledger: exit %d, %q", c, e)
	}
	if c, _, e := settle(t, ctx, "restored", "--data", ours, "--keys", filepath.Join(t.TempDir(), "none")); c != 1 || !strings.Contains(e, "--keys") {
		t.Errorf("restored without its key directory: exit %d, %q; want 1 naming --keys", c, e)
	}
	st, err := ledger.Open(ctx, filepath.Join(theirs, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if a, err := st.CreateAccount(ctx, ledger.AccountSpec{}); err != nil || a.ID > 2000 {
		t.Errorf("after the refused restored: account %+v, %v; want the counters where init left them", a, err)
	}
	if c, o, e := settle(t, ctx, "restored", "--data", theirs); c != 0 {
		t.Errorf("restored with its own keys: exit %d, %q %q", c, o, e)
	}
}

// init makes the ledger, then the keys: a failure leaves nothing of its
// own behind, and an init cut between the two (a ledger, no keys) is
// finished by running init again.
func TestInitLeavesNothingHalfDone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	bad := filepath.Join(dir, "fleet.key")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, _, e := settle(t, ctx, "init", "--data", data, "--fleet-key", bad); c != 1 || !strings.Contains(e, "--fleet-key") {
		t.Fatalf("init with a bad fleet key: %d %q", c, e)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the failed init left %s: %v", data, err)
	}
	// A ledger without keys, as a cut between the two leaves it.
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := ledger.Open(ctx, filepath.Join(data, "ledger.db"), &ledger.Options{Currency: "JPY"})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if c, _, e := settle(t, ctx, "run", "--data", data); c != 1 || !strings.Contains(e, "init") {
		t.Fatalf("run on a ledger without keys: %d %q, want to be told to run init", c, e)
	}
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatalf("init again: %d %q", c, e)
	}
	if c, out, e := settle(t, ctx, "verify", "--data", data); c != 0 || !strings.Contains(out, "ledger ok") {
		t.Fatalf("verify: %d %q %q", c, out, e)
	}
	st, err = ledger.Open(ctx, filepath.Join(data, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Currency() != "JPY" {
		t.Errorf("the ledger init took over is in %s, want its own JPY", st.Currency())
	}
}

// TestSecondInitOnOneLedger: init run on a database that already holds a
// ledger another init made is refused, making nothing (its keys would
// call the ledger's riders' codes forged); a server started with another
// key directory than the ledger's refuses to start; the ledger's own keys,
// copied, start. On SQLite and, with FAREGO_TEST_POSTGRES, PostgreSQL.
func TestSecondInitOnOneLedger(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			db := "sqlite:" + filepath.Join(dir, "shared.db")
			if backend == "postgres" {
				db = ledgertest.PostgresSchema(t)
			}
			first, second := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			if c, _, e := settle(t, ctx, "init", "--data", first, "--db", db); c != 0 {
				t.Fatalf("init: %d %q", c, e)
			}
			c, _, e := settle(t, ctx, "init", "--data", second, "--db", db)
			if c != 1 || !strings.Contains(e, "already holds a ledger") || !strings.Contains(e, "key directory") {
				t.Fatalf("a second init on the same database: %d %q", c, e)
			}
			if strings.Contains(e, "password") {
				t.Errorf("the refusal shows the DSN's password: %q", e)
			}
			if _, err := os.Stat(second); !os.IsNotExist(err) {
				t.Errorf("the refused init left %s: %v", second, err)
			}
			// A ledger from before the binding (unbound) that a server
			// has used is refused too; an empty one (init cut before its
			// keys) is taken, as before.
			if backend == "sqlite" {
				legacy := "sqlite:" + filepath.Join(dir, "legacy.db")
				st, err := ledger.Open(ctx, legacy, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult}); err != nil {
					t.Fatal(err)
				}
				st.Close()
				if c, _, e := settle(t, ctx, "init", "--data", filepath.Join(dir, "d"), "--db", legacy); c != 1 ||
					!strings.Contains(e, "already holds a ledger") {
					t.Errorf("init on a used ledger from before the binding: %d %q", c, e)
				}
			}
			// Keys made apart (as a second init before this check did).
			if _, err := keys.Init(filepath.Join(second, "keys"), keys.InitOptions{}); err != nil {
				t.Fatal(err)
			}
			c, _, e = settle(t, ctx, "run", "--data", second, "--db", db, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0")
			if c != 1 || !strings.Contains(e, "another key directory") {
				t.Fatalf("run with another key directory: %d %q", c, e)
			}
			copied := filepath.Join(dir, "c")
			if err := os.MkdirAll(filepath.Join(copied, "keys"), 0o700); err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(filepath.Join(first, "keys"))
			for _, en := range entries { // as cp -p copies them: modes kept
				b, err := os.ReadFile(filepath.Join(first, "keys", en.Name()))
				info, _ := en.Info()
				if err != nil || info == nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(copied, "keys", en.Name()), b, info.Mode().Perm()); err != nil {
					t.Fatal(err)
				}
			}
			runCtx, cancel := context.WithCancel(ctx)
			ready := filepath.Join(dir, "ready.json")
			done := make(chan int, 1)
			go func() {
				c, _, e := settle(t, runCtx, "run", "--data", copied, "--db", db, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0",
					"--ready-file", ready)
				if c != 0 {
					t.Log(e)
				}
				done <- c
			}()
			deadline := time.Now().Add(60 * time.Second)
			for {
				if _, err := os.Stat(ready); err == nil {
					break
				}
				select {
				case c := <-done:
					t.Fatalf("run with the ledger's own keys, copied, exited %d", c)
				case <-time.After(100 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatal("run with the ledger's own keys did not start")
				}
			}
			cancel()
			<-done
		})
	}
}

// restored's --margin out of range is a usage error (exit 2) before the
// ledger is opened, like every other bad flag; it was exit 1 from the
// ledger.
func TestRestoredMarginRange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	for _, m := range []string{"-5", "1099511627777"} {
		if c, _, e := settle(t, ctx, "restored", "--data", data, "--margin", m); c != 2 || !strings.Contains(e, "--margin must be 0") {
			t.Errorf("restored --margin %s: exit %d, %q; want 2 and the range", m, c, e)
		}
	}
	st, err := ledger.Open(ctx, filepath.Join(data, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if a, err := st.CreateAccount(ctx, ledger.AccountSpec{}); err != nil || a.ID > 2000 {
		t.Errorf("after the refused restored: account %+v, %v; want the counters where init left them", a, err)
	}
}

// mqtt-passwd --out replaces Mosquitto's password file whole or not at
// all, keeping its mode: "mqtt-passwd > FILE" (the README's command) left
// the live file empty when the ledger was out of reach, and the reload
// that follows refused every device and the settlement server.
func TestMQTTPasswdOutIsAtomic(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	pw := filepath.Join(t.TempDir(), "farego.passwd")
	if c, out, e := settle(t, ctx, "mqtt-passwd", "--data", data, "--out", pw); c != 0 || out != "" || !strings.Contains(e, "wrote the server") {
		t.Fatalf("mqtt-passwd --out: %d %q %q", c, out, e)
	}
	good, err := os.ReadFile(pw)
	if err != nil || !strings.HasPrefix(string(good), "farego-server:$7$") {
		t.Fatalf("password file: %q %v", good, err)
	}
	// A new file, of password hashes, is its maker's alone (it was 0644:
	// every local account could take the hashes away), and the note says
	// to give it to Mosquitto's user.
	if fi, err := os.Stat(pw); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("a new password file: %v %v; want 0600", fi.Mode(), err)
	}
	if c, _, e := settle(t, ctx, "mqtt-passwd", "--data", data, "--out", pw+".2"); c != 0 || !strings.Contains(e, "chown mosquitto: "+pw+".2") {
		t.Errorf("mqtt-passwd --out NEW: %d %q; want a note to give it to mosquitto", c, e)
	}
	os.Remove(pw + ".2")
	// So does its usage, read before the first run.
	if c, out, _ := settle(t, ctx, "mqtt-passwd", "--help"); c != 0 || !strings.Contains(out, "a new one is 0600") {
		t.Errorf("mqtt-passwd --help: %d %q; want --out to say a new file is 0600", c, out)
	}
	if err := os.Chmod(pw, 0o640); err != nil {
		t.Fatal(err)
	}
	// The ledger out of reach: an error, and the file as it was.
	if c, _, e := settle(t, ctx, "mqtt-passwd", "--data", data, "--db", "sqlite:"+filepath.Join(t.TempDir(), "typo.db"), "--out", pw); c != 1 || !strings.Contains(e, "no ledger") {
		t.Errorf("mqtt-passwd with a wrong --db: %d %q; want 1 and no ledger", c, e)
	}
	if b, err := os.ReadFile(pw); err != nil || string(b) != string(good) {
		t.Errorf("a failed mqtt-passwd --out changed the file: %q %v", b, err)
	}
	// Written again: the same content, its mode kept, no temporary file left.
	if c, _, e := settle(t, ctx, "mqtt-passwd", "--data", data, "--out", pw); c != 0 {
		t.Fatal(e)
	}
	if fi, err := os.Stat(pw); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode after mqtt-passwd --out: %v %v; want 0640 kept", fi.Mode(), err)
	}
	if c, _, e := settle(t, ctx, "mqtt-passwd", "--data", data, "--out", pw); c != 0 || strings.Contains(e, "is new") {
		t.Errorf("mqtt-passwd --out over an existing file: %d %q; want no note of a new file", c, e)
	}
	if ents, _ := os.ReadDir(filepath.Dir(pw)); len(ents) != 1 {
		t.Errorf("files beside the password file: %v", ents)
	}
}

// A mistyped --data (nothing there at all) is named as such: run said
// "not initialised (run farego-settlement init)", and following that
// advice made a second, empty installation with keys of its own; release,
// mqtt-passwd and mqtt-password named only a missing key file.
func TestMistypedDataSaysCheckData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	typo := filepath.Join(t.TempDir(), "farego-dta")
	for _, args := range [][]string{
		{"run", "--data", typo, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"},
		{"release", "list", "--data", typo},
		{"mqtt-passwd", "--data", typo},
		{"mqtt-password", "--data", typo},
	} {
		c, _, e := settle(t, ctx, args...)
		if c != 1 || !strings.Contains(e, "check --data") || strings.Contains(e, "(run farego-settlement init)") {
			t.Errorf("%v: exit %d, %q; want 1 and check --data", args, c, e)
		}
		// Only run and restored take --keys: the others said "check --data
		// (or --keys)", a flag they refuse.
		if args[0] != "run" && strings.Contains(e, "--keys") {
			t.Errorf("%v names --keys, which it does not take: %q", args, e)
		}
		if _, err := os.Stat(typo); !os.IsNotExist(err) {
			t.Fatalf("%v made %s: %v", args, typo, err)
		}
	}
}

// init's summary names the ledger without the database password: it is
// printed to a terminal or a CI log, and every other secret init makes
// stays in its 0600 file.
func TestInitHidesTheDatabasePassword(t *testing.T) {
	u, err := url.Parse(ledgertest.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "Sekr3tPw") // trust auth, as in CI, ignores it
	c, out, e := settle(t, context.Background(), "init", "--data", filepath.Join(t.TempDir(), "data"), "--db", u.String())
	if c != 0 {
		t.Fatalf("init: %d %q", c, e)
	}
	if strings.Contains(out+e, "Sekr3tPw") || !strings.Contains(out, "ledger:") {
		t.Errorf("init shows the database password:\n%s%s", out, e)
	}
}

// TestDeviceRevokeAgain: revoking a device revoked already (the restore
// procedure says to revoke again those revoked since the backup) says so
// and is not audited a second time, as token revoke (it said "revoked"
// again and wrote a second entry). The first revoke names what an external
// broker still needs: its password file written again (operator review:
// nothing said so, and Mosquitto let the device in).
func TestDeviceRevokeAgain(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	st, err := ledger.Open(ctx, filepath.Join(data, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := st.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "bus-1", PublicKey: pub, MQTTHash: "h"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if c, out, e := settle(t, ctx, "device", "revoke", "--data", data, "bus-1"); c != 0 || !strings.Contains(out, "device bus-1 revoked") ||
		!strings.Contains(e, "mqtt-passwd") {
		t.Fatalf("revoke: %d %q %q; want it revoked and the external broker's password file named", c, out, e)
	}
	if c, out, e := settle(t, ctx, "device", "revoke", "--data", data, "bus-1"); c != 0 || !strings.Contains(out, "was revoked already") {
		t.Errorf("revoke again: %d %q %q", c, out, e)
	}
	// A mistyped id said "ledger: not found: device …" alone.
	if c, out, e := settle(t, ctx, "device", "revoke", "--data", data, "bus-l"); c != 1 || !strings.Contains(e, `device "bus-l"`) ||
		!strings.Contains(e, "nothing was changed") || !strings.Contains(e, "GET /v1/devices") {
		t.Errorf("revoke of an unknown id: %d %q %q; want 1, nothing changed, where the ids are", c, out, e)
	}
	// Its usage says how to bring a device back: farego-provision
	// refuses --force alone for a revoked device.
	if c, out, e := settle(t, ctx, "device", "--help"); c != 0 || !strings.Contains(out, "farego-provision device --force --unrevoke") {
		t.Errorf("device --help: %d %q %q; want it to name farego-provision device --force --unrevoke", c, out, e)
	}
	st, err = ledger.Open(ctx, filepath.Join(data, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	entries, err := st.AuditLog(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Action == "revoke_device" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d revoke_device audit entries, want 1", n)
	}
}

// TestDeviceRevokeSaysUnsentTaps: revoking a device says what the server
// knows of the taps it has not sent (its last status): green taps, owed,
// never charged while it is revoked, and how a decommission settles them
// (field test: a validator with two taps queued offline was revoked and
// the command said only "revoked"). On SQLite and, with
// FAREGO_TEST_POSTGRES, PostgreSQL.
func TestDeviceRevokeSaysUnsentTaps(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			db := "sqlite:" + filepath.Join(dir, "ledger.db")
			if backend == "postgres" {
				db = ledgertest.PostgresSchema(t)
			}
			if c, _, e := settle(t, ctx, "init", "--data", data, "--db", db); c != 0 {
				t.Fatal(e)
			}
			st, err := ledger.Open(ctx, db, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"bus-1", "bus-2", "bus-3"} {
				pub, _, _ := ed25519.GenerateKey(nil)
				if err := st.RegisterDevice(ctx, ledger.DeviceRegistration{ID: id, PublicKey: pub, MQTTHash: "h"}); err != nil {
					t.Fatal(err)
				}
			}
			now := time.Now()
			if err := st.UpdateDeviceStatus(ctx, "bus-1", ledger.DeviceStatus{Online: true, QueueDepth: 2,
				OldestUnsent: 90 * time.Second, LastSeen: now, Written: now}); err != nil {
				t.Fatal(err)
			}
			if err := st.UpdateDeviceStatus(ctx, "bus-2", ledger.DeviceStatus{Online: true, LastSeen: now, Written: now}); err != nil {
				t.Fatal(err)
			}
			st.Close()
			c, out, e := settle(t, ctx, "device", "revoke", "--data", data, "--db", db, "bus-1")
			if c != 0 || !strings.Contains(out, "device bus-1 revoked") || !strings.Contains(e, "had 2 taps not yet sent") ||
				!strings.Contains(e, "never charged") || !strings.Contains(e, "--force --unrevoke --id bus-1") ||
				!strings.Contains(e, `"queue_depth": 0`) {
				t.Errorf("revoke of a device with 2 taps unsent: %d %q %q; want them named, and how to settle them", c, out, e)
			}
			c, _, e = settle(t, ctx, "device", "revoke", "--data", data, "--db", db, "bus-2")
			if c != 0 || !strings.Contains(e, "no taps waiting; taps made since cannot be known") {
				t.Errorf("revoke of a device that reported none waiting: %d %q; want it said, and that later taps are unknown", c, e)
			}
			c, _, e = settle(t, ctx, "device", "revoke", "--data", data, "--db", db, "bus-3")
			if c != 0 || !strings.Contains(e, "never sent a status") {
				t.Errorf("revoke of a device never heard: %d %q", c, e)
			}
		})
	}
}

// TestCommandsAuditWhoRanThem: a command that changes the ledger is
// audited with the user who ran it (the one sudo was run by, for the
// commands run as the service's user) and the host, not just "cli".
func TestCommandsAuditWhoRanThem(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatalf("init: %s", e)
	}
	t.Setenv("SUDO_USER", "alice")
	if c, _, e := settle(t, ctx, "token", "create", "--data", data, "--role", "auditor", "--name", "wall"); c != 0 {
		t.Fatalf("token create: %s", e)
	}
	st, err := ledger.Open(ctx, "sqlite:"+filepath.Join(data, "ledger.db"), &ledger.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	entries, err := st.AuditLog(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	for _, e := range entries {
		if e.Action == "create_token" {
			if e.Actor != "cli:alice@"+host {
				t.Errorf("token create audited as %q, want cli:alice@%s", e.Actor, host)
			}
			return
		}
	}
	t.Errorf("no create_token in the audit trail: %+v", entries)
}

// TestRevokeInitTokenDoneWhenItSaysSo: once token revoke init has said
// the token is revoked, a server reading the key directory refuses the
// old token, so that no console session is signed in with it after the
// sessions were ended. The command ended them at once while the servers
// took the old token up to a second longer (a sign-in then made a session
// that outlived the revocation).
func TestRevokeInitTokenDoneWhenItSaysSo(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatalf("init: %s", e)
	}
	server, err := keys.Open(filepath.Join(data, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(data, "keys", keys.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	old := strings.TrimSpace(string(b))
	if !server.CheckToken(old) {
		t.Fatal("the server refuses the token init wrote")
	}
	if c, out, e := settle(t, ctx, "token", "revoke", "--data", data, "init"); c != 0 || !strings.Contains(out, "token init revoked") {
		t.Fatalf("token revoke init: %d %q %q", c, out, e)
	}
	if server.CheckToken(old) {
		t.Error("after token revoke init said so, a server reading the key directory still takes the old token")
	}
}

// TestInitSaysWhatTheDatabaseLacks: init --db naming a PostgreSQL database
// that does not exist said PostgreSQL's FATAL alone, and one whose
// search_path names no schema that exists failed at its first table ("no
// schema has been selected to create in"), neither saying what to do.
// Both name the fix, and make nothing.
func TestInitSaysWhatTheDatabaseLacks(t *testing.T) {
	base, err := url.Parse(ledgertest.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	rand.Read(b[:])
	missing := "farego_missing_" + hex.EncodeToString(b[:])
	noDB := *base
	noDB.Path = "/" + missing
	noSchema := *base
	q := noSchema.Query()
	q.Set("search_path", missing)
	noSchema.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		dsn, want string
	}{
		{noDB.String(), "createdb NAME"},
		{noSchema.String(), "CREATE SCHEMA NAME"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		c, _, e := settle(t, ctx, "init", "--data", data, "--db", tc.dsn)
		if c != 1 || !strings.Contains(e, tc.want) || !strings.Contains(e, "--db") {
			t.Errorf("init --db %s: %d %q; want 1, naming --db and %q", tc.dsn, c, e, tc.want)
		}
		if _, err := os.Stat(data); !os.IsNotExist(err) {
			t.Errorf("init --db %s left %s: %v", tc.dsn, data, err)
		}
	}
	c, _, e := settle(t, ctx, "verify", "--data", t.TempDir(), "--db", noSchema.String())
	if c != 1 || !strings.Contains(e, "CREATE SCHEMA NAME") {
		t.Errorf("verify --db with no schema: %d %q", c, e)
	}
}

// TestInitSaysWhatAMissingFareTableIs: the Technician's guide named a
// fares.json the clone does not have, and init said only "open
// fares.json: no such file or directory": the error now says what the
// file is and where a sample is, and init makes nothing.
func TestInitSaysWhatAMissingFareTableIs(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	c, _, e := settle(t, ctx, "init", "--data", data, "--fares", filepath.Join(t.TempDir(), "fares.json"))
	if c != 1 || !strings.Contains(e, "--fares") || !strings.Contains(e, "testdata/fare/table.json") || !strings.Contains(e, "Fare tables") {
		t.Fatalf("init with a fare table that is not there: exit %d, %q; want 1 naming --fares, the README's Fare tables and the sample", c, e)
	}
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("init refused but left %s behind (%v)", data, err)
	}
	// The sample it names is there and takes.
	if c, _, e := settle(t, ctx, "init", "--data", data, "--fares", filepath.Join("..", "..", "testdata", "fare", "table.json")); c != 0 {
		t.Fatalf("init with the sample fare table: exit %d, %s", c, e)
	}
}
