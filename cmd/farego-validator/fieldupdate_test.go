package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestUpdateRolledBackOnAKeyOpenToAll: the start-up refusal of a TLS key
// every user may read is new, and a device installed by hand with such a
// key took the releases before it. Updated over the air, the new version
// must not leave the bus without a validator: each refused start counts
// towards max_boots and the previous binary is put back, the failure
// recorded for the device's status.
func TestUpdateRolledBackOnAKeyOpenToAll(t *testing.T) {
	d := tlsDevice(t, "bus-7-front", 0o644)
	must(t, os.MkdirAll(filepath.Join(d.dir, "bin"), 0o755))
	d.bin = filepath.Join(d.dir, "bin", "farego-validator")
	copyFile(t, validatorBin, d.bin)
	cfg, err := os.ReadFile(d.cfgPath)
	must(t, err)
	cfg = append(cfg, fmt.Sprintf("\n[update]\nserver = %q\nbinary = \"bin/farego-validator\"\n", "http://127.0.0.1:1")...)
	must(t, os.WriteFile(d.cfgPath, cfg, 0o644))
	previous := filepath.Join(d.dir, "previous-binary")
	must(t, os.WriteFile(previous, []byte("#!/bin/sh\necho the previous version\n"), 0o755))
	d.pendingUpdate(t, previous)

	var exits []int
	for range 4 {
		cmd := exec.Command(d.bin, "run", "--config", d.cfgPath)
		cmd.Env = append(os.Environ(), "FAREGO_BOOT_ID=6f1c0b8e-4d7a-4c55-9a43-2c1e0f5b7d10") // one kernel boot
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("start %d: %v, want an exit status\n%s", len(exits)+1, err, out)
		}
		exits = append(exits, exit.ExitCode())
		if exit.ExitCode() == exitRestart {
			if !strings.Contains(string(out), "update: rolling back to the previous version") {
				t.Errorf("exit status %d without the rollback logged:\n%s", exitRestart, out)
			}
			break
		}
		if !strings.Contains(string(out), "mqtt.key_file") || !strings.Contains(string(out), "counted towards max_boots") {
			t.Fatalf("start %d did not stop on the key's mode, counted:\n%s", len(exits), out)
		}
	}
	if want := []int{exitUsage, exitUsage, exitUsage, exitRestart}; !slices.Equal(exits, want) {
		t.Fatalf("exit statuses %v, want %v: the version refusing the key is not rolled back after max_boots starts", exits, want)
	}
	if got, err := os.ReadFile(d.bin); err != nil || !strings.Contains(string(got), "the previous version") {
		t.Fatalf("the previous binary is not back in place (%v)", err)
	}
}
