package rig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A validator a test finds stuck (no feedback in 60 s: Device.Scan) is
// made to write every goroutine's stack to its log before it exits, and
// the log holds the whole dump: the tap loop's workers and the scanner
// reader are where a stuck tap shows.
func TestStuckValidatorDumpsGoroutines(t *testing.T) {
	r, ctx := newRig(t)
	d := startDevice(t, ctx, r, "dump-1")
	d.dumpGoroutines()
	select {
	case <-d.exit.done:
	default:
		t.Fatal("the validator did not exit on SIGQUIT")
	}
	b, err := os.ReadFile(filepath.Join(d.Dir, "validator.log"))
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	for _, want := range []string{"SIGQUIT", "agent.(*Agent).Run", "scanner.(*Serial).session", "queue.(*Queue).writer"} {
		if !strings.Contains(log, want) {
			t.Errorf("validator.log lacks %q: the goroutine dump is missing or cut off; its tail:\n%s", want, tail(log, 40))
		}
	}
}
