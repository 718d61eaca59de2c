package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/cmd/internal/rig"
)

// TestDemo runs the README's first command (make demo) as a newcomer
// would: the release binaries, built here, and the whole narrated script,
// which must end with the ledger's invariants holding and every figure it
// tells as it should be.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary and runs the whole system")
	}
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := rig.Build(ctx, "../..", bin); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"--bin", bin}, &out, &errb); err != nil {
		t.Fatalf("the demo failed: %v\n%s\n%s", err, out.String(), errb.String())
	}
	for _, want := range []string{
		"Ada (adult)                    validator:",
		"REJECTED",
		"Cy's balance is now -1.50 EUR",
		"(denied)",
		"kiosk-9 order-1: paid 3.00 EUR",
		"the same code for another order: refused (code_used)",
		"the kiosk refunds 1.00 EUR (one item returned; 2.00 EUR of the payment left to refund): Ada's balance 5.50 EUR",
		"ledger ok: 4 accounts, 4 taps (0 flagged), 10 postings, 1 payments, balances total 1600 (16.00 EUR); 0 held, 0 quarantined; 1 refunds of payments, 100 given back (1.00 EUR)",
		"Cleaned up",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "\033[") {
		t.Error("escape sequences in the output to a buffer (not a terminal)")
	}

	keepWallet(t, bin)

	// Ctrl-C (here before the first step): interrupted, exit 130, and the
	// files (the demo fleet's private keys among them) removed as after a
	// finished run; it left them and said "context canceled".
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	stopped, stop := context.WithCancel(context.Background())
	stop()
	out.Reset()
	err := run(stopped, []string{"--bin", bin}, &out, &errb)
	if !errors.Is(err, cli.ErrInterrupted) || !strings.Contains(out.String(), "Interrupted: cleaned up") {
		t.Errorf("interrupted demo: %v\n%s", err, out.String())
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "farego-demo-*")); len(left) != 0 {
		t.Errorf("the interrupted demo left %v", left)
	}
}

// syncBuffer is a bytes.Buffer the demo writes to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// keepWallet runs the demo with --keep, as the README's wallet section
// says to, and does what it then prints: an account made as the wallet
// makes it is asked to top up before its first pass (the server's default
// credential minimum, an adult's daily cap), and gets one once topped up.
// The kept server ran with the script's --credential-minimum -1 and gave a
// new account a pass at 0.00: the printed "top it up, then press Get a
// pass" could not be followed (the wallet showed a code at once), and a
// rider trying the wallet rode into the red.
func keepWallet(t *testing.T, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--bin", bin, "--keep"}, &out, &errb) }()
	defer func() {
		cancel()
		<-done
	}()
	// The demo prints this line once the kept server is up; until then
	// it runs its script (bounded by ctx).
	const up = "the server stays up"
	for !strings.Contains(out.String(), up) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the demo with --keep ended: %v\n%s\n%s", err, out.String(), errb.String())
		case <-ctx.Done():
			t.Fatalf("the demo with --keep did not come up:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	m := regexp.MustCompile(`curl -H "Authorization: Bearer \$\(cat (\S+)\)".*\n.* (http://\S+)/v1/accounts/ACCOUNT/topups`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no top-up command in the output:\n%s", out.String())
	}
	base := m[2]
	token, err := os.ReadFile(m[1])
	if err != nil {
		t.Fatal(err)
	}
	var acct struct {
		Account struct {
			ID int64 `json:"id"`
		} `json:"account"`
		Secret string `json:"secret"`
	}
	if err := cli.CallJSON(ctx, http.MethodPost, base+"/v1/accounts", "", map[string]any{"profile": "adult"}, &acct); err != nil {
		t.Fatal(err)
	}
	credential := fmt.Sprintf("%s/v1/accounts/%d/credentials", base, acct.Account.ID)
	var apiErr *cli.APIError
	err = cli.CallJSON(ctx, http.MethodPost, credential, acct.Secret, map[string]any{}, nil)
	if !errors.As(err, &apiErr) || apiErr.Code != "insufficient_funds" {
		t.Fatalf("a pass for a new account at 0.00 from the kept server: %v (want insufficient_funds: top up first)", err)
	}
	topup := fmt.Sprintf("%s/v1/accounts/%d/topups", base, acct.Account.ID)
	if err := cli.CallJSON(ctx, http.MethodPost, topup, strings.TrimSpace(string(token)),
		map[string]any{"amount": 1000, "reference": "keep-wallet-test"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := cli.CallJSON(ctx, http.MethodPost, credential, acct.Secret, map[string]any{}, nil); err != nil {
		t.Fatalf("a pass after the top-up the demo prints: %v", err)
	}
}

// TestHelpSaysWhatItRuns: the newcomer's program answered --help with
// Go's bare "Usage of farego-demo:" and two flags; it now says what it
// runs and how make runs it, on standard output, exit 0, as every other
// farego program does.
func TestHelpSaysWhatItRuns(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"--help"}, &out, &errb)
	if c := cli.Exit("farego-demo", err, &errb); c != 0 || errb.Len() != 0 {
		t.Fatalf("--help: exit %d, stderr %q", c, errb.String())
	}
	for _, want := range []string{"farego-demo: run the whole system on this machine", "make demo DEMO_FLAGS=--keep", "-keep", "-bin"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not say %q:\n%s", want, out.String())
		}
	}
}
