package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/cmd/internal/powercut"
)

func TestMain(m *testing.M) {
	powercut.Main() // serves a power-cut disk when started as one; returns otherwise
	os.Exit(m.Run())
}

// TestMQTTPasswdOutSurvivesPowerCuts: mqtt-passwd --out writes
// Mosquitto's password file on a disk whose power the test cuts. After a
// cut that follows a run, the file is the one written, with its mode
// (Mosquitto's group's 0640 kept); after a cut in the middle of runs (the
// disk frozen while they follow one another, half the cuts tearing a
// page), it is a whole file, never empty or cut short: Mosquitto's reload
// of an empty one refuses every device and the settlement server.
func TestMQTTPasswdOutSurvivesPowerCuts(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	disk := powercut.Mount(t, nil)
	pw := disk.Path("farego.passwd")
	whole := func(what string, b []byte) {
		t.Helper()
		if s := string(b); !strings.HasPrefix(s, "farego-server:$7$") || !strings.HasSuffix(s, "\n") {
			t.Fatalf("%s: the password file is not whole: %d bytes", what, len(b))
		}
	}
	cut := func(what string, tear bool) []byte {
		t.Helper()
		if _, err := disk.Cut(tear); err != nil {
			t.Fatalf("cut after %s: %v", what, err)
		}
		b, err := os.ReadFile(pw)
		if err != nil {
			t.Fatalf("after a cut after %s: %v", what, err)
		}
		whole("after a cut after "+what, b)
		return b
	}
	passwd := func() (int, string) {
		c, _, e := settle(t, ctx, "mqtt-passwd", "--data", data, "--out", pw)
		return c, e
	}
	if c, e := passwd(); c != 0 {
		t.Fatalf("mqtt-passwd --out: %d %q", c, e)
	}
	want, err := os.ReadFile(pw)
	if err != nil {
		t.Fatal(err)
	}
	if got := cut("a new file", false); string(got) != string(want) {
		t.Fatal("after a cut after mqtt-passwd made the file: not the file written")
	}
	// Given to Mosquitto's group, durably (the chmod, then its fsync).
	f, err := os.Open(pw)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Chmod(0o640); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for i := range 2 {
		if c, e := passwd(); c != 0 {
			t.Fatalf("mqtt-passwd --out again: %d %q", c, e)
		}
		if want, err = os.ReadFile(pw); err != nil {
			t.Fatal(err)
		}
		if got := cut("a replacement", i == 1); string(got) != string(want) {
			t.Fatal("after a cut after mqtt-passwd replaced the file: not the file written")
		}
		if fi, err := os.Stat(pw); err != nil || fi.Mode().Perm() != 0o640 {
			t.Fatalf("after a cut after a replacement: mode %v (%v), want 0640 kept", fi.Mode().Perm(), err)
		}
	}
	// Cut mid-run.
	for round := range 4 {
		ran, done := make(chan struct{}), make(chan int) // ran: closed after round+1 runs, or when they stop
		var last string
		go func() {
			n := 0
			defer func() {
				if n <= round {
					close(ran)
				}
				done <- n
			}()
			for {
				c, e := passwd()
				if c != 0 {
					last = e
					return
				}
				n++
				if n == round+1 {
					close(ran)
				}
			}
		}()
		<-ran
		if err := disk.Freeze(); err != nil {
			t.Fatal(err)
		}
		if n := <-done; n <= round {
			t.Fatalf("round %d: mqtt-passwd failed before the power was cut: %q", round, last)
		}
		cut("a run cut short", round%2 == 0)
		if fi, err := os.Stat(pw); err != nil || fi.Mode().Perm() != 0o640 {
			t.Fatalf("round %d: after a cut mid-run: mode %v (%v), want 0640 kept", round, fi.Mode().Perm(), err)
		}
	}
}
