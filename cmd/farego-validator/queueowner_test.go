package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A queue file holding another device's unsent taps (a card or data
// directory moved to a board provisioned with another id) is refused at
// start and left as it is: sent under this device's id, the server kept
// the taps aside as malformed records, uncharged, and acked them, so the
// device deleted green taps.
func TestQueueFileOfAnotherDeviceRefused(t *testing.T) {
	d := newDevice(t, "", "")
	d.start()
	for i := range 2 {
		code := d.issuer.Rider(t, uint64(5100+i), time.Now()).Code(t, time.Now())
		expectLine(t, d.scan(code), "ACCEPTED")
	}
	d.stop()

	out, code, ran := runAs(t, d, "bus-9-rear")
	if ran {
		t.Fatalf("the validator ran on another device's queue file:\n%s", out)
	}
	if code != exitUsage {
		t.Errorf("exit status %d, want %d", code, exitUsage)
	}
	for _, want := range []string{"2 unsent taps of device bus-7-front", "this validator is bus-9-rear"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	if n := len(d.records()); n != 2 {
		t.Errorf("%d taps left in the file, want 2 (untouched)", n)
	}
}

// runAs runs d's validator as device id (its config's device_id changed
// for the run, then put back): its output and exit code, or ran when it
// was still running after 30 s (then killed).
func runAs(t *testing.T, d *device, id string) (out []byte, code int, ran bool) {
	t.Helper()
	b, err := os.ReadFile(d.cfgPath)
	must(t, err)
	must(t, os.WriteFile(d.cfgPath, []byte(strings.Replace(string(b), `device_id = "bus-7-front"`, `device_id = "`+id+`"`, 1)), 0o644))
	defer func() { must(t, os.WriteFile(d.cfgPath, b, 0o644)) }()
	cmd := exec.Command(validatorBin, "run", "--config", d.cfgPath)
	done := make(chan struct{})
	go func() { out, _ = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		ran = true
	}
	return out, cmd.ProcessState.ExitCode(), ran
}
