package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestCtrlCStopsALoop: a technician provisions a fleet with a shell loop
// and presses Ctrl-C on a terminal (a real pseudo-terminal: the shell and
// farego-provision both get SIGINT). The loop must stop there: a shell
// runs the next command after one that exited with a status, even 130,
// and stops only after one that SIGINT ended, so the loop went on to the
// next device after every Ctrl-C.
func TestCtrlCStopsALoop(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	fleet := filepath.Join(t.TempDir(), "fleet")
	if c, o, e := provision(t, "init-fleet", "--dir", fleet); c != 0 {
		t.Fatalf("init-fleet: %d %q %q", c, o, e)
	}
	// The server: its first request is held until the client goes (the
	// Ctrl-C); any later one, a next device's, is counted.
	var mu sync.Mutex
	var requests []string
	arrived := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.Method+" "+r.URL.Path)
		first := len(requests) == 1
		mu.Unlock()
		if first {
			close(arrived)
			<-r.Context().Done()
			return
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	script := `for id in bus-1 bus-2 bus-3; do "$0" device --fleet "$1" --id $id --route 42 --server "$2" --operator-token x --out "$3" --broker tcp://127.0.0.1:1883 --scanner front=/dev/scanner-front; done; echo LOOP-END`
	cmd := exec.Command(bash, "-c", script, os.Args[0], fleet, srv.URL, filepath.Join(t.TempDir(), "devices"))
	cmd.Env = append(os.Environ(), "FAREGO_TEST_PROVISION_MAIN=1")
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		_, _ = out.ReadFrom(tty) // ends with EIO once the shell is gone
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	select {
	case <-arrived:
	case err := <-exited:
		t.Fatalf("the loop ended before its first request: %v", err)
	case <-ctx.Done():
		t.Fatal("no request from the loop")
	}
	if _, err := tty.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	select {
	case err = <-exited:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		t.Fatal("the loop did not end")
	}
	tty.Close()
	<-read
	mu.Lock()
	defer mu.Unlock()
	if len(requests) != 1 || strings.Contains(out.String(), "LOOP-END") {
		t.Errorf("after Ctrl-C the loop went on: requests %q, output:\n%s", requests, out.String())
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("the shell ended with %v; want ended by SIGINT", err)
	}
}
