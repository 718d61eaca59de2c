package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConsoleToJournalNotFlooded: under systemd the console feedback is the
// journal's (the shipped unit, bundles with console = true). A scanner
// sending garbage made one REJECTED line per frame (10,000 in a second on
// a pty, past journald's default burst, after which it drops every line of
// the service for the rest of its interval, the real warnings with them).
// With $JOURNAL_STREAM naming its standard output, a refusal line of one
// scanner and reason is written at most once a second, the next saying
// how many were not; accepted taps are each written.
func TestConsoleToJournalNotFlooded(t *testing.T) {
	d := newDevice(t, "", "")
	r, w, err := os.Pipe()
	must(t, err)
	defer r.Close()
	var st syscall.Stat_t
	must(t, syscall.Fstat(int(w.Fd()), &st))
	d.cmd = exec.Command(validatorBin, "run", "--config", d.cfgPath)
	d.cmd.Env = append(os.Environ(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	d.cmd.Stdout = w
	stderr, err := d.cmd.StderrPipe()
	must(t, err)
	must(t, d.cmd.Start())
	w.Close()
	d.lines, d.logs = make(chan string, 100000), make(chan string, 10000)
	go pump(r, d.lines, nil)
	go pump(stderr, d.logs, func(s string) { d.mu.Lock(); d.logText.WriteString(s + "\n"); d.mu.Unlock() })
	d.waitLog("scanner connected")

	const garbage = 2000
	_, err = d.master.Write([]byte(strings.Repeat("x\r\n", garbage)))
	must(t, err)
	now := time.Now()
	code := d.issuer.Rider(t, 1001, now).Code(t, now)
	_, err = d.master.Write([]byte(code + "\r\n"))
	must(t, err)
	rejected := 0
	timeout := time.After(60 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-d.lines:
			if !ok {
				t.Fatal("validator exited")
			}
			switch {
			case strings.Contains(l, "ACCEPTED"):
				done = true
			case strings.Contains(l, "REJECTED"):
				rejected++
			default:
				t.Errorf("unexpected line %q", l)
			}
		case <-timeout:
			t.Fatalf("no ACCEPTED line after the garbage (%d REJECTED lines)", rejected)
		}
	}
	// One a second at most: the garbage takes far less than 200 s.
	if rejected == 0 || rejected > 200 {
		t.Errorf("%d REJECTED lines for %d garbage frames, want one a second", rejected, garbage)
	}
}

// TestLogPriorityToJournal: under systemd every line of the validator's
// stream was priority info (6): journalctl -p warning, and whatever
// forwards the journal by priority, showed no lost scanner, no tap that
// could not be recorded, no clock out of bounds (field review). With
// $JOURNAL_STREAM naming its standard error, each log line starts with its
// level's priority, "<4>" for a warning, which journald takes and strips
// (SyslogLevelPrefix=, on by default); without it the lines are as before.
func TestLogPriorityToJournal(t *testing.T) {
	for _, journal := range []bool{true, false} {
		d := newDevice(t, "", "")
		must(t, os.Remove(filepath.Join(d.dir, "scanner-front"))) // unplugged: a warning
		r, w, err := os.Pipe()
		must(t, err)
		var st syscall.Stat_t
		must(t, syscall.Fstat(int(w.Fd()), &st))
		d.cmd = exec.Command(validatorBin, "run", "--config", d.cfgPath)
		d.cmd.Env = os.Environ()
		if journal {
			d.cmd.Env = append(d.cmd.Env, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
		}
		d.cmd.Stderr = w
		out, err := d.cmd.StdoutPipe()
		must(t, err)
		must(t, d.cmd.Start())
		w.Close()
		d.lines, d.logs = make(chan string, 1000), make(chan string, 1000)
		go pump(out, d.lines, nil)
		go pump(r, d.logs, func(s string) { d.mu.Lock(); d.logText.WriteString(s + "\n"); d.mu.Unlock() })
		// Either may come first.
		var running, warn string
		for n := 0; running == "" || warn == ""; n++ {
			if n == 1000 {
				t.Fatalf("1000 log lines without both the start and the scanner's warning:\n%s", d.logged())
			}
			l := d.waitLog("level=")
			switch {
			case strings.Contains(l, "validator running"):
				running = l
			case strings.Contains(l, "scanner unavailable; retrying"):
				warn = l
			}
		}
		if journal {
			if !strings.HasPrefix(running, "<6>") || !strings.HasPrefix(warn, "<4>") {
				t.Errorf("to the journal: want <6> before an info line and <4> before a warning:\n%s\n%s", running, warn)
			}
		} else if strings.HasPrefix(running, "<") || strings.HasPrefix(warn, "<") {
			t.Errorf("not to the journal: want no priority prefix:\n%s\n%s", running, warn)
		}
		d.stop()
	}
}
