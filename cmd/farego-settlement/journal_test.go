package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFatalErrorPriorityToJournal: under systemd the server's log lines
// carry their priority ("<4>", "<3>": cli.NewLogger), but the line that
// says why it stopped or could not start ("farego-settlement run: …", the
// one a technician looks for with journalctl -p err) went out as info. On
// the journal's stream it starts with "<3>"; elsewhere it is as before.
func TestFatalErrorPriorityToJournal(t *testing.T) {
	for _, journal := range []bool{true, false} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(w.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if journal {
			t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
		} else {
			t.Setenv("JOURNAL_STREAM", "")
		}
		// No ledger in --data: run refuses to start.
		code := run(context.Background(), []string{"run", "--data", filepath.Join(t.TempDir(), "none")}, io.Discard, w)
		w.Close()
		out, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := string(out)
		if code != 1 || !strings.Contains(got, "farego-settlement run: ") {
			t.Fatalf("run without a ledger: %d %q", code, got)
		}
		if journal && !strings.HasPrefix(got, "<3>farego-settlement run: ") {
			t.Errorf("to the journal: want the error at priority 3 (<3>), got %q", got)
		}
		if !journal && strings.HasPrefix(got, "<") {
			t.Errorf("not to the journal: want no priority prefix, got %q", got)
		}
	}
}
