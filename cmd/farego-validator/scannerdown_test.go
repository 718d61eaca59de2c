package main

import (
	"bufio"
	"crypto/ed25519"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/sync/brokertest"
	"github.com/farego/farego/sync/wire"
)

// TestNoScannerReadIsOutOfService: a validator whose only scanner was
// unplugged took no code, and said in service — in ctl status, in
// farego_out_of_service and in the status the server shows the operator —
// while the bus's riders could not pay all day. Once no scanner has been
// read for the grace (20 s; 2 s here, the test hooks' build), it is out of
// service, reason "scanner: …" naming the scanner and why, logged, sent to
// the server at once; back in service when the scanner is back.
func TestNoScannerReadIsOutOfService(t *testing.T) {
	broker := brokertest.Start(t, nil)
	fleet, dev := brokertest.NewKey(t), brokertest.NewKey(t)
	d := newDevice(t, "", "\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[ctl]\nsocket = \"ctl.sock\"\n")
	d.withBroker(t, broker, fleet, dev)
	d.bin = testHooksBin(t)
	d.env = append(d.env, "FAREGO_TEST_SCANNER_GRACE=2s")
	d.start()
	now := time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 7001, now).Code(t, now)), "ACCEPTED")

	statusTopic := wire.Topics{}.Device("bus-7-front", wire.KindStatus)
	reported := func(what string, cond func(string) bool) {
		t.Helper()
		last := "(none)"
		brokertest.WaitFor(t, 60*time.Second, what, func() bool {
			msg, ok := broker.Retained(statusTopic)
			if !ok {
				return false
			}
			body, err := wire.Open(msg, wire.TypeStatus, dev.Public().(ed25519.PublicKey))
			if err != nil {
				return false
			}
			st, err := wire.ParseStatus(body)
			if err != nil || !st.Online {
				return false
			}
			last = st.OutOfService
			return cond(st.OutOfService)
		})
		if t.Failed() {
			t.Logf("last status out of service: %q", last)
		}
	}
	reported("the status in service", func(s string) bool { return s == "" })
	if v, _ := metricValue(d.metrics(), "farego_out_of_service "); v != 0 {
		t.Errorf("farego_out_of_service = %v with the scanner read, want 0", v)
	}

	// Unplugged: the pty's other end goes, and its name with it.
	d.master.Close()
	must(t, os.Remove(filepath.Join(d.dir, "scanner-front")))
	d.waitLog("out of service: no scanner is read")
	st := d.mustCtl("status")
	if st.InService || !strings.HasPrefix(st.OutOfService, "scanner: no scanner is read (front: ") {
		t.Errorf("ctl status with the scanner unplugged: in service %v, out of service %q; want out of service naming the scanner",
			st.InService, st.OutOfService)
	}
	if len(st.Scanners) != 1 || st.Scanners[0].Up {
		t.Errorf("ctl status scanners %+v, want front not read", st.Scanners)
	}
	if v, _ := metricValue(d.metrics(), "farego_out_of_service "); v != 1 {
		t.Errorf("farego_out_of_service = %v with no scanner read, want 1", v)
	}
	reported("the status out of service for the scanner", func(s string) bool {
		return strings.HasPrefix(s, "scanner: no scanner is read (front: ")
	})

	// Plugged in again: back in service, and it takes taps.
	d.newPTY()
	d.waitLog("a scanner is read again: back in service")
	if st := d.mustCtl("status"); !st.InService || st.OutOfService != "" {
		t.Errorf("ctl status with the scanner back: in service %v, out of service %q", st.InService, st.OutOfService)
	}
	reported("the status back in service", func(s string) bool { return s == "" })
	now = time.Now()
	expectLine(t, d.scan(d.issuer.Rider(t, 7002, now).Code(t, now)), "ACCEPTED")
}

// TestSelftestScannerHeldWhileRunning: a scanner another program holds
// (flock(1) on the real pty, as a terminal program of group dialout
// would) is present and readable to selftest's own look at the device,
// which said OK, and the documents check said "in service" (it leaves a
// scanner's reason to the scanner check): a technician's selftest passed
// at a validator no rider could pay at. It fails, naming the holder, from
// the running validator's word; and passes once the holder lets go.
func TestSelftestScannerHeldWhileRunning(t *testing.T) {
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Skip("no flock(1)")
	}
	d := newSelftestDevice(t)
	holder := exec.Command(flock, "--exclusive", filepath.Join(d.dir, "scanner-front"), "-c", "echo locked; exec cat")
	stdin, err := holder.StdinPipe()
	must(t, err)
	out, err := holder.StdoutPipe()
	must(t, err)
	must(t, holder.Start())
	defer func() { stdin.Close(); holder.Wait() }()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("flock: %q, %v", line, err)
	}
	d.startUntil("scanner unavailable; retrying")
	lines, report, code := d.selftest()
	t.Logf("report with the scanner held:\n%s", report)
	wantCheck(t, lines, "scanner", "FAIL", "the running validator does not read it: ")
	wantCheck(t, lines, "scanner", "FAIL", "in use by another reader")
	wantCheck(t, lines, "scanner", "FAIL", fmt.Sprintf("held by pid %d (flock)", holder.Process.Pid))
	if code != exitFailure {
		t.Errorf("selftest with the running validator's only scanner held: exit %d, want %d", code, exitFailure)
	}
	stdin.Close() // it lets go
	d.waitLog("scanner resumed")
	lines, report, code = d.selftest()
	wantCheck(t, lines, "scanner", "OK", "front: ")
	if code != exitOK {
		t.Errorf("selftest once the scanner is read: exit %d; report:\n%s", code, report)
	}
}
