package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unitFile reads a systemd unit's [Service] settings (a key given twice:
// its values joined by newlines).
func unitFile(t *testing.T, path string) map[string]string {
	return unitSection(t, path, "[Service]")
}

// unitSection reads one section of a systemd unit (a key given twice: its
// values joined by newlines).
func unitSection(t *testing.T, path, want string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == want:
			k, v, _ := strings.Cut(line, "=")
			if out[k] != "" {
				v = out[k] + "\n" + v
			}
			out[k] = v
		}
	}
	return out
}

// TestSettlementUnit: the shipped unit (farego-settlement.service) is one
// systemd reads without a warning, and its command line, run as the unit
// runs it (the environment file's flags word-split into it, NOTIFY_SOCKET
// and WATCHDOG_USEC set), starts the server on a data directory init made:
// READY=1 once serving, WATCHDOG=1 while it runs, STOPPING=1 and a clean
// exit when stopped. No unit shipped: every operator wrote their own,
// without the open-files limit the broker needs or a sandbox.
func TestSettlementUnit(t *testing.T) {
	unit := unitFile(t, "farego-settlement.service")
	for k, want := range map[string]string{"Type": "notify", "User": "farego-settlement", "StateDirectory": "farego-settlement",
		"ProtectSystem": "strict", "NoNewPrivileges": "yes", "CapabilityBoundingSet": ""} {
		if got, ok := unit[k]; !ok || got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	if n, err := strconv.Atoi(unit["LimitNOFILE"]); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE=%q: the broker closes connections beyond half of it", unit["LimitNOFILE"])
	}
	// A start refused for a full disk or a database down (an operator's
	// drill) is tried again every RestartSec until it works: systemd's
	// default start limit stopped trying after 5 starts in 10 s.
	if got := unitSection(t, "farego-settlement.service", "[Unit]")["StartLimitIntervalSec"]; got != "0" {
		t.Errorf("[Unit] StartLimitIntervalSec=%q, want 0: after 5 failed starts in 10 s (a full disk, the database down) systemd stops restarting the server", got)
	}
	if unit["WatchdogSec"] == "" {
		t.Error("no WatchdogSec: a hung server is never restarted")
	}
	sysusers, err := os.ReadFile(filepath.Join("packaging", "sysusers.d", "farego-settlement.conf"))
	if err != nil || !strings.Contains(string(sysusers), "u farego-settlement ") {
		t.Errorf("the sysusers.d entry does not make the unit's user: %v %q", err, sysusers)
	}
	// systemd's own reading: no unknown key, no bad value (verify
	// exits 0 on those: its warnings are the finding). The binary's path
	// is the test machine's.
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		text, err := os.ReadFile("farego-settlement.service")
		if err != nil {
			t.Fatal(err)
		}
		copyPath := filepath.Join(t.TempDir(), "farego-settlement.service")
		if err := os.WriteFile(copyPath, []byte(strings.Replace(string(text), "/usr/local/bin/farego-settlement", "/bin/true", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
		var warnings []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(l, "farego-settlement.service") {
				warnings = append(warnings, l)
			}
		}
		if err != nil || len(warnings) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(warnings, "\n"))
		}
	} else if os.Getenv("FAREGO_CI") != "" {
		t.Error("systemd-analyze not found")
	}

	// The command line, as systemd runs it.
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data, "--fares", filepath.Join("..", "..", "testdata", "fare", "table.json")); c != 0 {
		t.Fatalf("init: %s", e)
	}
	exec := strings.Fields(unit["ExecStart"])
	if len(exec) < 2 || exec[0] != "/usr/local/bin/farego-settlement" || exec[1] != "run" {
		t.Fatalf("ExecStart=%q", unit["ExecStart"])
	}
	var args []string
	for _, a := range exec[1:] {
		switch a {
		case "/var/lib/farego-settlement":
			args = append(args, data)
		case "$FAREGO_SETTLEMENT_FLAGS": // unbraced: split into words, as systemd does
			args = append(args, strings.Fields("--http 127.0.0.1:0 --mqtt 127.0.0.1:0")...)
		default:
			args = append(args, a)
		}
	}
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		code, _, e := settle(t, runCtx, args...)
		if code != 0 {
			t.Errorf("run %q: exit %d: %s", args, code, e)
		}
		done <- code
	}()
	got := map[string]bool{}
	buf := make([]byte, 4096)
	read := func(want string) {
		t.Helper()
		for !got[want] {
			conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s from the server: %v (had %v)", want, err, got)
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				got[l] = true
			}
		}
	}
	read("READY=1")
	read("WATCHDOG=1")
	stop()
	read("STOPPING=1")
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the server did not stop")
	}
}
