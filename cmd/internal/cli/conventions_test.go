package cli_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// binaries lists every program under cmd/ with its subcommands (none for
// a program of flags only) and the usage errors that must name a flag.
var binaries = map[string]struct {
	subcommands []string
	missing     []missingFlag
}{
	"farego-validator": {subcommands: []string{"check", "run"}, missing: []missingFlag{
		{[]string{"check", "FG1:X"}, "--keyring"},
		{[]string{"run"}, "--config"},
	}},
	"farego-settlement": {subcommands: []string{"init", "run", "verify", "broker", "mqtt-password"}},
	"farego-provision": {subcommands: []string{"init-fleet", "device", "broker-cert"}, missing: []missingFlag{
		{[]string{"broker-cert"}, "--host"},
		{[]string{"device"}, "--id"},
		{[]string{"device", "--id", "bus-1"}, "--route"},
		{[]string{"device", "--id", "bus-1", "--route", "42"}, "--operator-token"},
		{[]string{"device", "--id", "bus/1", "--route", "42", "--operator-token", "t"}, "--id"},
	}},
	"farego-rider": {subcommands: []string{"register", "topup", "credential", "code", "account"}, missing: []missingFlag{
		{[]string{"topup", "--amount", "100"}, "--operator-token"},
		{[]string{"topup"}, "--amount"},
	}},
	"farego-sim":  {},
	"farego-demo": {},
}

type missingFlag struct {
	args []string
	flag string // the flag the error must name
}

// TestConventions builds every binary under cmd/ and checks the house
// conventions on each: --help (and SUBCOMMAND --help) prints usage to
// standard output and exits 0, --version prints "NAME VERSION" and exits
// 0, an unknown flag or a missing required one exits 2 naming the flag on
// standard error. A new binary must join the table.
func TestConventions(t *testing.T) {
	if os.Getenv("FAREGO_QEMU") != "" {
		t.Skip("starts other programs; skipped under qemu-user emulation")
	}
	cmdDir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := filepath.Glob(filepath.Join(cmdDir, "farego-*"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range dirs {
		if info, err := os.Stat(d); err == nil && info.IsDir() {
			names = append(names, filepath.Base(d))
		}
	}
	for _, n := range names {
		if _, ok := binaries[n]; !ok {
			t.Errorf("cmd/%s is not in this test's table: add it with its subcommands", n)
		}
	}
	for n := range binaries {
		if !slices.Contains(names, n) {
			t.Errorf("the table names %s, which cmd/ does not have", n)
		}
	}
	bin := buildAll(t)
	env := append(os.Environ(), "FAREGO_RIDER_STATE="+filepath.Join(t.TempDir(), "rider.json"))
	run := func(t *testing.T, name string, args ...string) (code int, stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Env, cmd.Dir = env, t.TempDir()
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			code = ee.ExitCode()
		default:
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return code, o.String(), e.String()
	}
	for _, name := range names {
		b := binaries[name]
		t.Run(name, func(t *testing.T) {
			helps := [][]string{{"--help"}, {"-h"}}
			for _, sub := range b.subcommands {
				helps = append(helps, []string{sub, "--help"})
			}
			for _, args := range helps {
				code, out, errOut := run(t, name, args...)
				if code != 0 || !strings.Contains(strings.ToLower(out), "usage") {
					t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want 0 and usage on stdout", name, strings.Join(args, " "), code, out, errOut)
				}
			}
			code, out, _ := run(t, name, "--version")
			if f := strings.Fields(out); code != 0 || len(f) != 2 || f[0] != name {
				t.Errorf("%s --version: exit %d, %q; want 0 and %q", name, code, out, name+" VERSION")
			}
			bogus := [][]string{{"--no-such-flag"}}
			for _, sub := range b.subcommands {
				bogus = append(bogus, []string{sub, "--no-such-flag"})
			}
			for i, args := range bogus {
				code, _, errOut := run(t, name, args...)
				if code != 2 || !strings.Contains(errOut, "no-such-flag") {
					t.Errorf("%s %s: exit %d, stderr %q; want 2 naming the flag", name, strings.Join(args, " "), code, errOut)
				}
				// A flag where the subcommand goes is a flag, not an
				// "unknown subcommand \"--no-such-flag\"".
				if i == 0 && len(b.subcommands) > 0 && !strings.Contains(errOut, "flag \"--no-such-flag\" before the subcommand") {
					t.Errorf("%s --no-such-flag: stderr %q; want it named as a flag before the subcommand", name, errOut)
				}
			}
			// A stray argument is refused, not ignored (`verify ledger.db`
			// checked the default directory's ledger).
			strays := [][]string{{"stray-arg"}}
			for _, sub := range b.subcommands {
				if sub != "check" { // check takes the code as its argument
					strays = append(strays, []string{sub, "stray-arg"})
				}
			}
			if len(b.subcommands) > 0 {
				strays = strays[1:] // the first argument names the subcommand
			}
			for _, args := range strays {
				if code, _, errOut := run(t, name, args...); code != 2 || !strings.Contains(errOut, "stray-arg") {
					t.Errorf("%s %s: exit %d, stderr %q; want 2 naming the stray argument", name, strings.Join(args, " "), code, errOut)
				}
			}
			for _, m := range b.missing {
				if code, _, errOut := run(t, name, m.args...); code != 2 || !strings.Contains(errOut, m.flag) {
					t.Errorf("%s %s: exit %d, stderr %q; want 2 naming %s", name, strings.Join(m.args, " "), code, errOut, m.flag)
				}
			}
		})
	}
}

// built is the directory buildAll built every program into, once for the
// package's tests; TestMain removes it.
var built struct {
	once sync.Once
	dir  string
	err  error
}

// buildAll builds every program under cmd/ into a directory of the
// package's tests (once) and returns it. It skips the test without the go
// tool.
func buildAll(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "farego-cli-bin-"); built.err != nil {
			return
		}
		build := exec.Command(goBin, "build", "-o", built.dir+string(filepath.Separator), "./...")
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}
