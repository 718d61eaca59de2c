package rig

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRiderEventsLoggedOnce: at the server's default log level a rider's
// account, top-up and credential are each one line of the server's log
// (the API's and the ledger's said each twice: a rider's daily credential
// two lines, millions a day in a city).
func TestRiderEventsLoggedOnce(t *testing.T) {
	r, ctx := newRig(t)
	must(t, r.StopServer(false))
	r.LogLevel = "info"
	must(t, r.StartServer(ctx))
	rider, err := r.NewAPIRider(ctx, "adult", 1000)
	must(t, err)
	log, err := os.ReadFile(filepath.Join(r.Dir, "server.log"))
	must(t, err)
	mine := regexp.MustCompile(fmt.Sprintf(`\baccount=%d\b`, rider.ID))
	var lines []string
	for _, l := range strings.Split(string(log), "\n") {
		if mine.MatchString(l) {
			lines = append(lines, l)
		}
	}
	for _, msg := range []string{`msg="account created"`, `msg=top-up`, `msg="credential issued"`} {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, msg) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s logged %d times", msg, n)
		}
	}
	if len(lines) != 3 {
		t.Errorf("%d lines of the server's log name the rider's account, want 3:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}
