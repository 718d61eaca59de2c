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

// TestFatalErrorPriorityToJournal: the validator's log lines carry their
// priority under systemd, but why it could not start ("farego-validator
// run: config …", what a technician must fix) went to the journal as info,
// out of journalctl -p err. On the journal's stream it is "<3>"; elsewhere
// as before.
func TestFatalErrorPriorityToJournal(t *testing.T) {
	for _, journal := range []bool{true, false} {
		r, w, err := os.Pipe()
		must(t, err)
		var st syscall.Stat_t
		must(t, syscall.Fstat(int(w.Fd()), &st))
		if journal {
			t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
		} else {
			t.Setenv("JOURNAL_STREAM", "")
		}
		bad := filepath.Join(t.TempDir(), "validator.toml")
		must(t, os.WriteFile(bad, []byte("device_id = \n"), 0o644)) // does not parse
		code := run(context.Background(), []string{"run", "--config", bad}, strings.NewReader(""), io.Discard, w)
		w.Close()
		out, err := io.ReadAll(r)
		r.Close()
		must(t, err)
		got := string(out)
		if code == 0 || !strings.Contains(got, "farego-validator run: ") {
			t.Fatalf("run with a config that does not parse: %d %q", code, got)
		}
		if journal && !strings.HasPrefix(got, "<3>farego-validator run: ") {
			t.Errorf("to the journal: want the error at priority 3 (<3>), got %q", got)
		}
		if !journal && strings.HasPrefix(got, "<") {
			t.Errorf("not to the journal: want no priority prefix, got %q", got)
		}
	}
}
