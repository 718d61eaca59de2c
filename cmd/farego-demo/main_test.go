package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
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
