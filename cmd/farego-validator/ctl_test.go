package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/wire"
)

// FuzzCtlRequest sends arbitrary bytes to the control socket's handler
// (over a real connection pair, with a real agent on a real queue file):
// it always answers one line of JSON, and whatever it accepts leaves a
// valid assignment.
func FuzzCtlRequest(f *testing.F) {
	for _, s := range []string{`{"op":"status"}` + "\n", `{"op":"route","value":"42"}` + "\n", `{"op":"vehicle","value":""}` + "\n",
		`{"op":"route","value":"4\t2"}` + "\n", `{"op":"fly"}` + "\n", `{"op":"route"` + "\n", "\n", `{"op":"status"}{}` + "\n"} {
		f.Add([]byte(s))
	}
	q, err := queue.Open(filepath.Join(f.TempDir(), "validator.db"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { q.Close() })
	a, err := agent.New(q, feedback.Multi{}, agent.Config{DeviceID: "bus-1", Route: "42", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	s := runningCtl(a, q)
	f.Fuzz(func(t *testing.T, req []byte) {
		client, server := net.Pipe()
		go func() {
			client.Write(req)
			client.Write([]byte("\n"))
		}()
		done := make(chan struct{})
		go func() { s.handle(server); close(done) }()
		line, err := bufio.NewReader(client).ReadBytes('\n')
		client.Close()
		<-done
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		var resp ctlResponse
		if err := json.Unmarshal(line, &resp); err != nil || resp.OK == (resp.Error != "") {
			t.Fatalf("answer %q: %v", line, err)
		}
		as := a.Assignment()
		if err := agent.CheckAssignment(as.Route, as.Vehicle); err != nil {
			t.Fatalf("assignment %+v after %q: %v", as, req, err)
		}
	})
}

// TestCtlSocketNotTakenFromALiveValidator: a second validator given the
// socket of one that runs is refused, and the first keeps answering (it
// used to be unlinked and replaced, and the second removed it at exit,
// leaving the running validator without a control socket); a stale
// socket of an earlier run is replaced.
func TestCtlSocketNotTakenFromALiveValidator(t *testing.T) {
	q, err := queue.Open(filepath.Join(t.TempDir(), "validator.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	a, err := agent.New(q, feedback.Multi{}, agent.Config{DeviceID: "bus-1", Route: "42", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s := runningCtl(a, q)
	dir, err := os.MkdirTemp("", "ctl") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ctl.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, err := serveCtl(ctx, path, "", true, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := serveCtl(ctx, path, "", true, s); !errors.Is(err, errConfig) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second serveCtl on a live socket: %v, want refused as in use", err)
	}
	if resp, err := ctlCall(path, ctlRequest{Op: "status"}); err != nil || !resp.OK {
		t.Fatalf("the first validator's socket after the refusal: %+v, %v", resp, err)
	}
	stop()

	// A stale socket (its validator killed: the file stays) is replaced.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	stop, err = serveCtl(ctx, path, "", true, s)
	if err != nil {
		t.Fatalf("serveCtl on a stale socket: %v", err)
	}
	defer stop()
	if resp, err := ctlCall(path, ctlRequest{Op: "status"}); err != nil || !resp.OK {
		t.Fatalf("status on the replaced socket: %+v, %v", resp, err)
	}
}

// runningCtl is the control socket's server of a running validator.
func runningCtl(a *agent.Agent, q *queue.Queue) *ctlServer {
	s := &ctlServer{device: a.DeviceID(), log: slog.New(slog.DiscardHandler), starting: func() string { return "starting" }}
	s.running.Store(&ctlRunning{a: a, q: q})
	return s
}

// TestCtlStatusUpdate: ctl status carries the software update's report: a
// release rolled back is seen at the bus (version and reason), not only at
// the server and in the metrics.
func TestCtlStatusUpdate(t *testing.T) {
	q, err := queue.Open(filepath.Join(t.TempDir(), "validator.db"), nil)
	must(t, err)
	defer q.Close()
	a, err := agent.New(q, feedback.Multi{}, agent.Config{DeviceID: "bus-1", Route: "42", Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	s := runningCtl(a, q)
	r := s.running.Load()
	r.update = func() *wire.UpdateStatus {
		return &wire.UpdateStatus{Failed: "1.6.0", FailedReason: "version 1.6.0 stopped 3 times at start without reporting healthy"}
	}
	b, err := json.Marshal(s.status(r))
	must(t, err)
	if !strings.Contains(string(b), `"update":{"failed":"1.6.0","failed_reason":"version 1.6.0 stopped 3 times`) {
		t.Errorf("ctl status %s: want the failed update with its reason", b)
	}
	r.update = func() *wire.UpdateStatus { return nil }
	if b, _ := json.Marshal(s.status(r)); strings.Contains(string(b), `"update"`) {
		t.Errorf("ctl status %s: want no update when there is none", b)
	}
}

// TestCtlStatusOldestUnsent: a bus offline for days showed the technician
// its queue_depth and not since when its taps wait (the server's status
// and /metrics had the age; ctl status, at the bus, not). It says the age
// of the oldest tap not acknowledged, from the queue file, and nothing
// while none waits.
func TestCtlStatusOldestUnsent(t *testing.T) {
	d := newDevice(t, "", "\n[ctl]\nsocket = \"ctl.sock\"\n") // no broker: nothing is ever acknowledged
	d.start()
	defer d.stop()
	if st := d.mustCtl("status"); st.QueueDepth != 0 || st.OldestUnsentSec != nil {
		t.Errorf("before any tap: queue_depth %d, oldest_unsent_s %v; want 0 and none", st.QueueDepth, st.OldestUnsentSec)
	}
	now := time.Now()
	if l := d.scan(d.issuer.Rider(t, 1001, now).Code(t, now)); !strings.Contains(l, "ACCEPTED") {
		t.Fatalf("tap: %q", l)
	}
	st := d.mustCtl("status")
	if st.QueueDepth != 1 || st.OldestUnsentSec == nil || *st.OldestUnsentSec < 0 || *st.OldestUnsentSec > int64(time.Since(now)/time.Second)+1 {
		t.Errorf("after a tap: queue_depth %d, oldest_unsent_s %v; want 1 and the tap's age", st.QueueDepth, st.OldestUnsentSec)
	}
}
