package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/api/apitest"
)

func rider(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRiderFlow(t *testing.T) {
	dir := t.TempDir()
	srv := apitest.Start(t)
	kd := srv.Keys
	st := filepath.Join(dir, "rider.json")
	tokFile := "@" + srv.TokenFile

	if c, _, e := rider(t, "code", "--state", st); c != 1 || !strings.Contains(e, "register") {
		t.Errorf("code before register: %d %q", c, e)
	}
	// The rider's word for a child fare leaves it pending (the adult fare
	// until the operator confirms it); the operator's token confirms it.
	// A server address without its scheme is named as such (it was "not
	// reachable …; codes still work offline", before any code existed).
	if c, _, e := rider(t, "register", "--state", st, "--server", strings.TrimPrefix(srv.URL, "http://")); c != 2 ||
		!strings.Contains(e, "is not the server's URL") {
		t.Errorf("register with a host:port: %d %q; want 2, not the server's URL", c, e)
	}
	// The wallet's address (the demo prints it) is named for what it is.
	if c, _, e := rider(t, "register", "--state", st, "--server", srv.URL+"/wallet/"); c != 2 ||
		!strings.Contains(e, "wallet page") || !strings.Contains(e, srv.URL+"\n") {
		t.Errorf("register with the wallet's address: %d %q; want 2, the server's own address", c, e)
	}
	if c, _, e := rider(t, "register", "--state", st, "--server", srv.URL, "--profile", "kid"); c != 2 || !strings.Contains(e, "--profile") {
		t.Errorf("register --profile kid: %d %q; want 2 naming --profile", c, e)
	}
	// A state file that cannot be written is found before the account is
	// made (it was made, with its secret lost): the next account made is
	// the one after the last.
	first := filepath.Join(dir, "first.json")
	if c, o, e := rider(t, "register", "--state", first, "--server", srv.URL); c != 0 {
		t.Fatalf("register: %d %q %q", c, o, e)
	}
	if c, _, e := rider(t, "register", "--state", filepath.Join(dir, "no-such-dir", "r.json"), "--server", srv.URL); c != 1 ||
		!strings.Contains(e, "cannot be written") {
		t.Errorf("register into a missing directory: %d %q; want 1, cannot be written", c, e)
	}
	second := filepath.Join(dir, "second.json")
	if c, o, e := rider(t, "register", "--state", second, "--server", srv.URL); c != 0 {
		t.Fatalf("register: %d %q %q", c, o, e)
	}
	if a, b := readState(t, first).Account, readState(t, second).Account; b != a+1 {
		t.Errorf("accounts %d then %d around the refused register: one was made for it", a, b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("files left in the state directory: %v, want first.json and second.json", ents)
	}
	if c, _, e := rider(t, "register", "--state", st, "--server", "http://127.0.0.1:1"); c != 1 || strings.Contains(e, "codes still work") {
		t.Errorf("register with the server down: %d %q", c, e)
	}
	if c, o, e := rider(t, "register", "--state", st, "--server", srv.URL, "--profile", "child"); c != 0 || !strings.Contains(o, "registered account") ||
		!strings.Contains(o, "waits for the operator's confirmation") {
		t.Fatalf("register: %d %q %q", c, o, e)
	}
	// The account says the reduced fare waits (it showed "(child)" while
	// the codes carried the adult fare).
	if c, o, e := rider(t, "account", "--state", st); c != 0 || !strings.Contains(o, "(child, pending confirmation: adult fare until then)") {
		t.Errorf("account of a pending child profile: %d %q %q", c, o, e)
	}
	if c, _, e := rider(t, "register", "--state", st, "--server", srv.URL); c != 1 || !strings.Contains(e, "--force") {
		t.Errorf("second register without --force: %d %q", c, e)
	}
	if c, o, e := rider(t, "register", "--state", st, "--server", srv.URL, "--profile", "child", "--force", "--operator-token", tokFile); c != 0 ||
		!strings.Contains(o, "(child)") || strings.Contains(o, "waits") {
		t.Fatalf("register confirmed by the operator: %d %q %q", c, o, e)
	}
	if c, _, e := rider(t, "code", "--state", st); c != 1 || !strings.Contains(e, "credential") {
		t.Errorf("code before credential: %d %q", c, e)
	}
	if c, o, e := rider(t, "topup", "--state", st, "--amount", "1500", "--operator-token", tokFile); c != 0 || !strings.Contains(o, "15.00 EUR") {
		t.Fatalf("topup: %d %q %q", c, o, e)
	}
	if c, _, e := rider(t, "topup", "--state", st, "--amount", "1500", "--operator-token", "wrong"); c != 1 || !strings.Contains(e, "forbidden") ||
		!strings.Contains(e, "refused the operator token") {
		t.Errorf("topup with a wrong token: %d %q", c, e)
	}
	if c, o, e := rider(t, "credential", "--state", st); c != 0 || !strings.Contains(o, "credential 1") {
		t.Fatalf("credential: %d %q %q", c, o, e)
	}
	info, _ := os.Stat(st)
	if info.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", info.Mode().Perm())
	}
	// Offline from here: the server is gone.
	srv.Close()
	png := filepath.Join(dir, "code.png")
	// A file left readable by others (an older run's, a cp) is replaced
	// by one only the user may read: the image is a whole payment code.
	if err := os.WriteFile(png, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, o, e := rider(t, "code", "--state", st, "--png", png, "--qr")
	if c != 0 {
		t.Fatalf("code: %d %q", c, e)
	}
	text := strings.SplitN(o, "\n", 2)[0]
	d := paycode.Verify(text, time.Now(), kd.Keyring(), paycode.Policy{})
	if !d.Accepted || d.Code.Profile != paycode.Child || d.Code.Counter != 1 {
		t.Fatalf("the code does not verify: %+v (%q)", d, text)
	}
	_, o2, _ := rider(t, "code", "--state", st)
	if c2, _ := paycode.ParseText(strings.TrimSpace(o2)); c2 == nil || c2.Counter != 2 {
		t.Errorf("second code's counter = %v, want 2", c2)
	}
	// A FIFO (a viewer reading the image) is written to, not replaced by
	// a file.
	fifo := filepath.Join(dir, "code.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	read := make(chan int, 1)
	go func() {
		b, _ := os.ReadFile(fifo) // blocks until the command opens it
		read <- len(b)
	}()
	if c, _, e := rider(t, "code", "--state", st, "--png", fifo); c != 0 {
		t.Errorf("code --png FIFO: %d %q", c, e)
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("code --png FIFO: the FIFO was replaced (%v, %v)", fi, err)
	} else if n := <-read; n == 0 {
		t.Error("code --png FIFO: nothing written to it")
	}
	// A PNG that cannot be written fails the command before a code is shown.
	if c, o, e := rider(t, "code", "--state", st, "--png", filepath.Join(dir, "no-such-dir", "code.png")); c != 1 || o != "" || !strings.Contains(e, "--png") {
		t.Errorf("code --png into a missing directory: %d %q %q; want exit 1, no code, an error naming --png", c, o, e)
	}
	data, _ := os.ReadFile(st)
	if strings.Contains(o+o2+e, string(data[strings.Index(string(data), "token_seed")+14:][:64])) {
		t.Error("the seed was printed")
	}
	if info, err := os.Stat(png); err != nil {
		t.Fatal(err)
	} else if info.Mode().Perm() != 0o600 {
		t.Errorf("code PNG mode %v, want 0600 (it is a whole payment code)", info.Mode().Perm())
	}
	zbar, err := exec.LookPath("zbarimg")
	if err != nil {
		if os.Getenv("FAREGO_CI") != "" {
			t.Fatal("zbarimg is required in CI (Debian zbar-tools)")
		}
		t.Skip("zbarimg not installed (Debian zbar-tools): the PNG is not decoded")
	}
	out, err := exec.Command(zbar, "--raw", "-q", png).Output()
	if err != nil {
		t.Fatalf("zbarimg: %v", err)
	}
	if got := strings.TrimRight(string(out), "\r\n"); got != text {
		t.Errorf("zbarimg read %q, want the code", got)
	}
	if c, _, e := rider(t, "account", "--state", st); c != 1 || !strings.Contains(e, "not reachable") {
		t.Errorf("account offline: %d %q", c, e)
	}
	// A top-up offline says how to try again without paying twice, not
	// that codes still work.
	if c, _, e := rider(t, "topup", "--state", st, "--amount", "100", "--operator-token", tokFile); c != 1 ||
		!strings.Contains(e, "not reachable") || !strings.Contains(e, "--reference rider-") || strings.Contains(e, "codes still work") {
		t.Errorf("topup offline: %d %q", c, e)
	}
	if c, _, e := rider(t, "code", "--state", st, "--now", "yesterday"); c != 2 || !strings.Contains(e, "--now") {
		t.Errorf("code --now yesterday: %d %q; want 2 naming --now", c, e)
	}
}

func readState(t *testing.T, path string) *state {
	t.Helper()
	s, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Amounts print with their currency's decimals: 1500 yen is "1500 JPY",
// not "15.00 JPY".
func TestRiderAmountsInYen(t *testing.T) {
	srv := apitest.StartWith(t, apitest.Options{Currency: "JPY"})
	st := filepath.Join(t.TempDir(), "rider.json")
	if c, _, e := rider(t, "register", "--state", st, "--server", srv.URL); c != 0 {
		t.Fatalf("register: %d %q", c, e)
	}
	if c, o, e := rider(t, "topup", "--state", st, "--amount", "1500", "--operator-token", "@"+srv.TokenFile); c != 0 || !strings.Contains(o, "balance 1500 JPY") {
		t.Fatalf("topup: %d %q %q", c, o, e)
	}
}

// The rider sees a shop's payment and its refund in "account", with the
// shop, the order and the balance after each.
func TestRiderSeesShopPayments(t *testing.T) {
	srv := apitest.Start(t)
	st := filepath.Join(t.TempDir(), "rider.json")
	tokFile := "@" + srv.TokenFile
	for _, args := range [][]string{
		{"register", "--state", st, "--server", srv.URL},
		{"topup", "--state", st, "--amount", "1500", "--operator-token", tokFile},
		{"credential", "--state", st},
	} {
		if c, o, e := rider(t, args...); c != 0 {
			t.Fatalf("%v: %d %q %q", args, c, o, e)
		}
	}
	_, code, _ := rider(t, "code", "--state", st)
	tok, err := os.ReadFile(srv.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	post := func(path string, body any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", srv.URL+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
	post("/v1/payments", map[string]any{"merchant_id": "cafe", "order_id": "o-1", "code": strings.TrimSpace(code), "amount": 450})
	post("/v1/payments/cafe/o-1/refunds", map[string]any{"refund_id": "r-1", "amount": 150, "reason": "milk was out"})
	c, o, e := rider(t, "account", "--state", st)
	if c != 0 {
		t.Fatalf("account: %d %q", c, e)
	}
	refund := strings.Index(o, "refund from cafe (order o-1): milk was out")
	paid := strings.Index(o, "paid at cafe (order o-1)")
	if !strings.Contains(o, "balance 12.00 EUR") || refund < 0 || paid < refund || !strings.Contains(o, "-4.50 EUR  balance 10.50 EUR") ||
		!strings.Contains(o, "1.50 EUR  balance 12.00 EUR") {
		t.Errorf("account:\n%s", o)
	}
}

// signin takes an account whose secret was changed elsewhere (the wallet,
// the operator), or one made elsewhere, into the state file: the rider
// CLI had no way but editing the file or registering anew.
func TestRiderSignIn(t *testing.T) {
	dir := t.TempDir()
	srv := apitest.Start(t)
	st := filepath.Join(dir, "rider.json")
	if c, _, e := rider(t, "register", "--state", st, "--server", srv.URL); c != 0 {
		t.Fatal(e)
	}
	data, err := os.ReadFile(st)
	if err != nil {
		t.Fatal(err)
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	// The secret is replaced elsewhere (the operator, for a lost one).
	req, _ := http.NewRequest("POST", fmt.Sprintf("%s/v1/accounts/%d/secret", srv.URL, s.Account), nil)
	tok, err := os.ReadFile(srv.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Secret string `json:"secret"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Secret == "" {
		t.Fatalf("new secret: %v", err)
	}
	resp.Body.Close()
	if c, _, e := rider(t, "account", "--state", st); c != 1 || !strings.Contains(e, "forbidden") {
		t.Fatalf("account with the old secret: %d %q", c, e)
	}
	if c, _, e := rider(t, "signin", "--state", st, "--secret", "0000"); c != 1 || !strings.Contains(e, "does not open") {
		t.Errorf("signin with a wrong secret: %d %q", c, e)
	}
	// The operator's token opens the account for reading, but it is no
	// rider's secret: refused, the state file untouched.
	before, _ := os.ReadFile(st)
	if c, _, e := rider(t, "signin", "--state", st, "--secret", "@"+srv.TokenFile); c != 2 || !strings.Contains(e, "is an API token (the server reads it as an operator's)") {
		t.Errorf("signin with the operator's token: %d %q", c, e)
	}
	if after, _ := os.ReadFile(st); string(after) != string(before) {
		t.Errorf("signin with the operator's token changed the state file")
	}
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(out.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, o, e := rider(t, "signin", "--state", st, "--secret", "@"+secretFile); c != 0 || !strings.Contains(o, "signed in") {
		t.Fatalf("signin: %d %q %q", c, o, e)
	}
	if c, o, e := rider(t, "account", "--state", st); c != 0 || !strings.Contains(o, fmt.Sprintf("account %d", s.Account)) {
		t.Errorf("account after signin: %d %q %q", c, o, e)
	}
	// Another account over this one needs --force; a fresh state file
	// needs the server and the account.
	if c, _, e := rider(t, "signin", "--state", st, "--account", fmt.Sprint(s.Account+1), "--secret", "x"); c != 1 || !strings.Contains(e, "--force") {
		t.Errorf("signin to another account: %d %q", c, e)
	}
	if c, _, e := rider(t, "signin", "--state", filepath.Join(dir, "new.json"), "--secret", "x"); c != 2 ||
		!strings.Contains(e, "--server URL (the wallet's address without /wallet/) and --account N (the number the wallet shows) are required: there is no state file at") {
		t.Errorf("signin without a state file: %d %q", c, e)
	}
	// One of the two given: the other is named alone (both were named,
	// the rider left to guess which was missing).
	if c, _, e := rider(t, "signin", "--state", filepath.Join(dir, "new.json"), "--secret", "x", "--account", fmt.Sprint(s.Account)); c != 2 ||
		!strings.Contains(e, "--server URL (the wallet's address without /wallet/) is required") || strings.Contains(e, "--account N") {
		t.Errorf("signin without a state file, with --account: %d %q; want --server named alone", c, e)
	}
	if c, _, e := rider(t, "signin", "--state", filepath.Join(dir, "new.json"), "--secret", "x", "--server", srv.URL); c != 2 ||
		!strings.Contains(e, "--account N (the number the wallet shows) is required") || strings.Contains(e, "--server URL") {
		t.Errorf("signin without a state file, with --server: %d %q; want --account named alone", c, e)
	}
	if c, _, e := rider(t, "signin", "--state", filepath.Join(dir, "new.json"), "--server", srv.URL, "--account", fmt.Sprint(s.Account),
		"--secret", out.Secret); c != 0 {
		t.Errorf("signin into a new state file: %d %q", c, e)
	}
}

// A ride's line says why it cost nothing, and its time is to the second
// whatever digits the API gave.
func TestRideLine(t *testing.T) {
	for _, tc := range []struct {
		r    ride
		want string
	}{
		{ride{Time: "2026-12-04T22:03:05.54Z", Route: "42", Charge: 250}, "  2026-12-04 22:03:05Z  route 42      -2.50 EUR"},
		{ride{Time: "2026-12-04T22:14:03.947Z", Route: "7", Transfer: true}, "  2026-12-04 22:14:03Z  route 7        0.00 EUR  transfer"},
		{ride{Time: "2026-12-04T23:00:00Z", Route: "7", Charge: 50, Capped: true}, "  2026-12-04 23:00:00Z  route 7       -0.50 EUR  daily cap reached"},
		{ride{Time: "bad", Route: "9", Flag: "duplicate_code"}, "  bad  route 9        0.00 EUR  duplicate_code"},
		// A stolen validator's route: a terminal's CSI (C1) and an
		// override reach the terminal as code points, not as commands.
		{ride{Time: "bad", Route: "\u009b31m\u202e24", Charge: 250}, "  bad  route <U+009B>31m<U+202E>24  -2.50 EUR"},
	} {
		if got := tc.r.line("EUR"); got != tc.want {
			t.Errorf("line(%+v) =\n%q, want\n%q", tc.r, got, tc.want)
		}
	}
}

// TestTopUpAmountInCurrency: an amount typed in the currency ("5.00") is
// refused with what to type instead (strconv's "parse error" before).
func TestTopUpAmountInCurrency(t *testing.T) {
	for amount, want := range map[string]string{"5.00": "e.g. 500 for 5.00", "0.50": "e.g. 50 for 0.50", "five": "want whole minor units"} {
		code, _, stderr := rider(t, "topup", "--state", filepath.Join(t.TempDir(), "r.json"), "--amount", amount, "--operator-token", "x")
		if code != 2 || !strings.Contains(stderr, want) || strings.Contains(stderr, "parse error") {
			t.Errorf("--amount %s: exit %d, %q; want a usage error saying %q", amount, code, stderr, want)
		}
	}
}

// offlineState writes a state file holding a credential of account 7
// (valid from an hour ago to a day from now) and its token seed, with
// counter, and returns its path: the code command needs no server.
func offlineState(t *testing.T, counter uint16) string {
	t.Helper()
	_, issuer, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	seed := bytes.Repeat([]byte{9}, paycode.SecretSize)
	rk, err := paycode.RiderKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	c := paycode.Credential{KeyID: 1, Account: 7, Serial: 1, NotBefore: uint32(now - 3600), NotAfter: uint32(now + 86400)}
	copy(c.RiderKey[:], rk.Public().(ed25519.PublicKey))
	cred, err := paycode.IssueCredential(issuer, c)
	if err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(t.TempDir(), "rider.json")
	s := state{Server: "http://127.0.0.1:1", Account: 7, Secret: "s", TokenSeed: hex.EncodeToString(seed),
		Credential: hex.EncodeToString(cred), Counter: counter}
	if err := s.save(st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestRiderCodeCounterEnds: the counter is 16 bits. Past 65535 it wrapped
// to 0 and began again at 1: with the same code time (--now), the code
// of counter 1 came out again, byte for byte the one shown before, which
// a validator refuses (code_used) and the server counts as a code used
// twice (the credential denied). The wallet stops at 65535 ("exhausted");
// so does the CLI, naming the cure, and leaves the state as it was.
func TestRiderCodeCounterEnds(t *testing.T) {
	st := offlineState(t, 0)
	at := strconv.FormatInt(time.Now().Unix(), 10)
	c, first, e := rider(t, "code", "--state", st, "--now", at)
	if c != 0 {
		t.Fatalf("code: %d %q", c, e)
	}
	s, err := loadState(st)
	if err != nil {
		t.Fatal(err)
	}
	s.Counter = math.MaxUint16
	if err := s.save(st); err != nil {
		t.Fatal(err)
	}
	seen := map[paycode.ID]bool{}
	if p, err := paycode.ParseText(strings.TrimSpace(first)); err == nil {
		seen[p.ID()] = true
	}
	for i := 0; i < 2; i++ {
		c, o, e := rider(t, "code", "--state", st, "--now", at)
		if c == 0 {
			p, err := paycode.ParseText(strings.TrimSpace(o))
			if err != nil {
				t.Fatal(err)
			}
			t.Errorf("code %d past 65535: exit 0, counter %d (the same code as one before: %v)", i+1, p.Counter, seen[p.ID()])
			seen[p.ID()] = true
			continue
		}
		if !strings.Contains(e, "65535") || !strings.Contains(e, "farego-rider credential") {
			t.Errorf("code past 65535: %d %q; want it to name the 65535 codes and the cure", c, e)
		}
	}
	if s, err := loadState(st); err != nil {
		t.Fatal(err)
	} else if s.Counter != math.MaxUint16 {
		t.Errorf("after the refusals the counter is %d, want 65535", s.Counter)
	}
}

// TestRiderDamagedCredential: a credential cut short in the state file
// was read as all zeros, and the rider told "the credential expired at
// 1970-01-01" (a wrong reason), the counter advanced for nothing.
func TestRiderDamagedCredential(t *testing.T) {
	st := offlineState(t, 5)
	s, err := loadState(st)
	if err != nil {
		t.Fatal(err)
	}
	s.Credential = s.Credential[:100]
	if err := s.save(st); err != nil {
		t.Fatal(err)
	}
	c, _, e := rider(t, "code", "--state", st)
	if c != 1 || strings.Contains(e, "1970") || !strings.Contains(e, "credential") || !strings.Contains(e, "farego-rider credential") {
		t.Errorf("code with a damaged credential: %d %q; want exit 1 naming the credential damaged and the cure", c, e)
	}
	if s, err := loadState(st); err != nil {
		t.Fatal(err)
	} else if s.Counter != 5 {
		t.Errorf("the counter moved to %d, want 5", s.Counter)
	}
}

// TestRiderCodeCounterLastMade: the 65535th code is made (counter 65535,
// the last a 16-bit counter holds): only the one after it is refused. A
// stop one code early passed TestRiderCodeCounterEnds, which starts at
// 65535 already.
func TestRiderCodeCounterLastMade(t *testing.T) {
	st := offlineState(t, math.MaxUint16-1)
	c, o, e := rider(t, "code", "--state", st, "--now", strconv.FormatInt(time.Now().Unix(), 10))
	if c != 0 {
		t.Fatalf("the 65535th code: %d %q", c, e)
	}
	p, err := paycode.ParseText(strings.TrimSpace(o))
	if err != nil {
		t.Fatal(err)
	}
	if p.Counter != math.MaxUint16 {
		t.Errorf("the 65535th code has counter %d", p.Counter)
	}
	if s, err := loadState(st); err != nil {
		t.Fatal(err)
	} else if s.Counter != math.MaxUint16 {
		t.Errorf("after the 65535th code the counter is %d, want 65535", s.Counter)
	}
}

// TestRiderServerOfTheStateFile: account, credential and topup take the
// server from the state file and have no --server, yet a server that did
// not answer was "check --server" (a flag they refuse), and "codes still
// work offline" to a rider without a credential. They name the state file
// and say whether codes work offline; the retry a top-up cut off asks for
// says it added nothing (it printed the balance alone, as a new top-up).
func TestRiderServerOfTheStateFile(t *testing.T) {
	srv := apitest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	st := filepath.Join(dir, "rider.json")
	if c, o, e := rider(t, "register", "--state", st, "--server", srv.URL); c != 0 {
		t.Fatalf("register: %d %q %q", c, o, e)
	}
	tokFile := "@" + srv.TokenFile
	if c, o, e := rider(t, "topup", "--state", st, "--amount", "1500", "--reference", "psp-1", "--operator-token", tokFile); c != 0 ||
		!strings.Contains(o, "balance 15.00 EUR") || strings.Contains(o, "nothing added") {
		t.Fatalf("topup: %d %q %q", c, o, e)
	}
	if c, o, e := rider(t, "topup", "--state", st, "--amount", "1500", "--reference", "psp-1", "--operator-token", tokFile); c != 0 ||
		!strings.Contains(o, `reference "psp-1" was used already`) || !strings.Contains(o, "nothing added") || !strings.Contains(o, "balance 15.00 EUR") {
		t.Errorf("topup again with its reference: %d %q %q; want nothing added, the balance as it was", c, o, e)
	}

	// Without a credential, the server gone.
	s := readState(t, st)
	s.Server = down
	if err := s.save(st); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"account"}, {"credential"}, {"topup", "--amount", "100", "--operator-token", tokFile}} {
		c, _, e := rider(t, append(args, "--state", st)...)
		if c != 1 || !strings.Contains(e, "not reachable") || strings.Contains(e, "--server)") || !strings.Contains(e, "the one "+st+" holds") {
			t.Errorf("%s with the server down: %d %q; want 1, the state file named as the server's source, not --server", args[0], c, e)
		}
		if args[0] != "topup" && (strings.Contains(e, "codes still work") || !strings.Contains(e, "no codes offline without a credential")) {
			t.Errorf("%s with the server down and no credential: %q; want no codes offline", args[0], e)
		}
	}
	// With a credential valid now, codes do work offline.
	off := offlineState(t, 0)
	s = readState(t, off)
	s.Server = down
	if err := s.save(off); err != nil {
		t.Fatal(err)
	}
	if c, _, e := rider(t, "account", "--state", off); c != 1 || !strings.Contains(e, "codes still work offline (credential valid until") ||
		strings.Contains(e, "--server)") {
		t.Errorf("account with the server down and a credential: %d %q", c, e)
	}
}

// TestRiderWatchIntoAFile: code --watch into a file or a pipe (a scanner's
// feed, as the README's "By hand" appends codes to) wrote the terminal's
// clear-screen escapes and a header line before each code, which a
// validator reads as frames that are no code. There it writes the codes
// alone, one a line.
func TestRiderWatchIntoAFile(t *testing.T) {
	st := offlineState(t, 0)
	f, err := os.Create(filepath.Join(t.TempDir(), "feed"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the first code, then stop as at Ctrl-C
	var errb bytes.Buffer
	if c := run(ctx, []string{"code", "--watch", "--state", st}, f, &errb); c != 0 {
		t.Fatalf("code --watch: %d %q", c, errb.String())
	}
	data, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("code --watch into a file wrote %q; want one line, the code", data)
	}
	if _, err := paycode.ParseText(lines[0]); err != nil {
		t.Errorf("code --watch into a file wrote %q: %v", lines[0], err)
	}
}
