package cli_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/sync/brokertest"
)

// byHand is the README's "By hand" block: the system run with the programs
// themselves, as a newcomer pastes it.
var byHand = regexp.MustCompile("(?s)\\*\\*By hand\\*\\*.*?\\n```sh\\n(.*?)\\n```")

// TestReadmeByHand runs the README's "By hand" commands as written (the
// loopback ports it names swapped for free ones), with the programs
// built from this checkout, and checks what they say they do: the rider's
// tap settled, 10.00 EUR less its 2.50 fare, and the ledger verified.
func TestReadmeByHand(t *testing.T) {
	bash, dir, script := byHandBlock(t, nil)
	// After the block: the tap settled (the block gives it 2 s; a loaded
	// machine may take longer), the ledger verified, and the README's way
	// of stopping it all.
	script = "set -e\n" + script + `
for i in $(seq 1 300); do farego-rider account | grep -q 'balance 7.50 EUR' && break; sleep 0.2; done
echo '== account'; farego-rider account
echo '== verify'; farego-settlement verify --data srv
kill %1 %2; wait
`
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	text, err := runGroup(ctx, bash, dir, script)
	if err != nil {
		t.Fatalf("the README's block: %v\n%s", err, text)
	}
	// A newcomer's machine has no group farego-ctl: the block's
	// validator (no unit to set FAREGO_CTL_GROUP, a bundle naming no
	// group) keeps its socket in its own group, without a warning that
	// reads as a fault of the block (a bundle that named the group did).
	if strings.Contains(text, "control socket left in the validator's own group") {
		t.Errorf("the block's validator warns about its control socket's group:\n%s", text)
	}
	_, after, _ := strings.Cut(text, "== account")
	for _, want := range []string{"balance 7.50 EUR", "route 42", "-2.50 EUR",
		"ledger ok: 1 accounts, 1 taps (0 flagged), 2 postings"} {
		if !strings.Contains(after, want) {
			t.Errorf("after the block, %q is not said:\n%s", want, text)
		}
	}
}

// byHandBlock returns bash, a directory standing for the checkout (bin/
// and testdata/ of this one) and the README's "By hand" block with each
// loopback port it names swapped for a free one, or for ports[port].
func byHandBlock(t *testing.T, ports map[string]string) (bash, dir, script string) {
	t.Helper()
	if os.Getenv("FAREGO_QEMU") != "" {
		t.Skip("starts other programs; skipped under qemu-user emulation")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	bin := buildAll(t)
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := byHand.FindSubmatch(readme)
	if m == nil {
		t.Fatal("the README has no **By hand** block of sh")
	}
	script = string(m[1])
	// The block's ports are fixed for the reader: each is swapped for a
	// free one, and must be there to be swapped.
	for _, port := range []string{"18080", "18883", "18910"} {
		if !strings.Contains(script, "127.0.0.1:"+port) {
			t.Fatalf("the block no longer names 127.0.0.1:%s: update this test\n%s", port, script)
		}
		addr := ports[port]
		if addr == "" {
			addr = brokertest.FreeAddr(t)
		}
		script = strings.ReplaceAll(script, "127.0.0.1:"+port, addr)
	}
	dir = t.TempDir()
	for _, l := range [][2]string{{bin, "bin"}, {filepath.Join(root, "testdata"), "testdata"}} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	return bash, dir, script
}

// A newcomer whose MQTT port another program holds: the server says so
// and stops, and the block goes on to farego-provision's error instead of
// waiting for ever (its curl loop waited for an answer no server would
// give; without curl it waited too).
func TestReadmeByHandServerCannotStart(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	bash, dir, script := byHandBlock(t, map[string]string{"18883": held.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	text, err := runGroup(ctx, bash, dir, "set -e\n"+script)
	if ctx.Err() != nil {
		t.Fatalf("the README's block still ran after 2 minutes with a server that could not start:\n%s", text)
	}
	if err == nil {
		t.Fatalf("the README's block succeeded with the MQTT port held:\n%s", text)
	}
	for _, want := range []string{"address already in use (is another broker running? use --mqtt", "farego-provision device:"} {
		if !strings.Contains(text, want) {
			t.Errorf("%q is not said:\n%s", want, text)
		}
	}
	if strings.Contains(text, "registered; bundle in") {
		t.Errorf("a device was provisioned with no server:\n%s", text)
	}
}

// runGroup runs script with bash in dir, in its own process group, and
// returns what it wrote; whatever it started in the background is killed
// when it ends or ctx is done. Its output is a pipe its background
// programs hold too: without WaitDelay a script that stopped half way
// (set -e) with the server running left Run waiting for them, past ctx's
// end (which no longer kills once bash has exited), until go test's
// timeout killed the test binary and left them running.
func runGroup(ctx context.Context, bash, dir, script string) (string, error) {
	cmd := exec.CommandContext(ctx, bash, "-c", script)
	cmd.Dir = dir
	// Its own process group: what the block starts in the background goes
	// with it if the test fails half way.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return out.String(), err
}

// A script that fails with a program left running in the background is
// answered at once, and the program killed.
func TestRunGroupFailsHalfWay(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	_, err = runGroup(ctx, bash, t.TempDir(), "set -e\nsleep 60 &\necho $! > "+pidFile+"\nfalse\n")
	if took := time.Since(start); err == nil || took > 15*time.Second {
		t.Fatalf("runGroup returned after %s with %v; want an error within 15 s (the context: 20 s)", took.Round(time.Second), err)
	}
	pid, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	// Killed: gone, or a zombie until its new parent reaps it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
		if _, after, _ := strings.Cut(string(stat), ") "); err != nil || strings.HasPrefix(after, "Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background sleep (pid %s) still runs", strings.TrimSpace(string(pid)))
		}
	}
}
