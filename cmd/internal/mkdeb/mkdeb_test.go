package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const repoRoot = "../../.."

// stubBinary cross-builds a tiny Go program for arch: a real ELF executable
// of the right machine, quicker to build than the validator.
func stubBinary(tb testing.TB, arch string) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module stub\n\ngo 1.26\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	env := map[string][]string{
		"armhf": {"GOARCH=arm", "GOARM=7"},
		"arm64": {"GOARCH=arm64"},
	}[arch]
	out := filepath.Join(dir, "farego-validator")
	gobin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(gobin, "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"CGO_ENABLED=0", "GOOS=linux", "GOFLAGS="}, env...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build for %s: %v\n%s", arch, err, b)
	}
	return out
}

// TestDeb builds the armhf and arm64 packages through the command, reads
// them back, and checks them (with dpkg-deb too where it is installed).
func TestDeb(t *testing.T) {
	out := t.TempDir()
	bins := map[string]string{"armhf": stubBinary(t, "armhf"), "arm64": stubBinary(t, "arm64")}
	var stdout, stderr bytes.Buffer
	args := []string{"--version", "v1.4.0-3-gabc123", "--out", out, "--root", repoRoot,
		"--binary", "armhf=" + bins["armhf"], "--binary", "arm64=" + bins["arm64"]}
	if code := run(context.Background(), args, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for arch, bin := range bins {
		t.Run(arch, func(t *testing.T) {
			path := filepath.Join(out, "farego-validator_1.4.0-3-gabc123_"+arch+".deb")
			if !strings.Contains(stdout.String(), path) {
				t.Errorf("output does not name %s:\n%s", path, stdout.String())
			}
			pkg, err := Inspect(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(pkg, arch); err != nil {
				t.Fatal(err)
			}
			if other := map[string]string{"armhf": "arm64", "arm64": "armhf"}[arch]; Check(pkg, other) == nil {
				t.Errorf("the %s package passes as %s", arch, other)
			}
			want, _ := os.ReadFile(bin)
			if !bytes.Equal(pkg.Files[binPath].Data, want) {
				t.Errorf("%s is not the binary given", binPath)
			}
			for _, f := range packageFiles {
				want, err := os.ReadFile(filepath.Join(repoRoot, f.src))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(pkg.Files[f.dst].Data, want) {
					t.Errorf("%s differs from %s", f.dst, f.src)
				}
			}
			checkUnitGroups(t, string(pkg.Files["/usr/lib/systemd/system/"+unitName].Data),
				string(pkg.Files["/usr/lib/sysusers.d/farego-validator.conf"].Data))
			dpkgDeb(t, path, arch)

			// Take a file out: the check notices.
			delete(pkg.Files, "/usr/lib/udev/rules.d/70-farego-gpio.rules")
			if err := Check(pkg, arch); err == nil || !strings.Contains(err.Error(), "missing /usr/lib/udev/rules.d/70-farego-gpio.rules") {
				t.Errorf("check of a package without its udev rule: %v", err)
			}
		})
	}
}

// staticGroups are the groups with a fixed id in Debian's base-passwd
// (/usr/share/base-passwd/group.master) that the unit may name: they exist
// on every Debian system, unlike "gpio" or "input".
var staticGroups = map[string]bool{"dialout": true}

// checkUnitGroups: every group the unit runs with exists on a system
// without a gpio (or input) group: it is created by the package's sysusers.d
// entry or is a static Debian group. A missing group stops a unit from
// starting (status 216/GROUP).
func checkUnitGroups(tb testing.TB, unit, sysusers string) {
	tb.Helper()
	created := map[string]bool{}
	for _, line := range strings.Split(sysusers, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && (f[0] == "u" || f[0] == "g") {
			created[f[1]] = true
		}
	}
	if b, err := os.ReadFile("/usr/share/base-passwd/group.master"); err == nil {
		for g := range staticGroups {
			if !bytes.Contains(b, []byte("\n"+g+":")) {
				tb.Errorf("%s is not a static group in this system's base-passwd", g)
			}
		}
	}
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || (k != "Group" && k != "SupplementaryGroups") {
			continue
		}
		for _, g := range strings.Fields(v) {
			if !created[g] && !staticGroups[g] {
				tb.Errorf("unit %s=%s names group %q, which may not exist", k, v, g)
			}
		}
	}
}

// dpkgDeb reads the package with dpkg-deb, when installed.
func dpkgDeb(tb testing.TB, path, arch string) {
	tb.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		tb.Logf("dpkg-deb not installed: package checked with the Go reader only")
		return
	}
	info, err := exec.Command("dpkg-deb", "--info", path).CombinedOutput()
	if err != nil {
		tb.Fatalf("dpkg-deb --info: %v\n%s", err, info)
	}
	for _, want := range []string{"Package: farego-validator", "Architecture: " + arch, "Version: 1.4.0-3-gabc123", "postinst", "prerm", "postrm"} {
		if !bytes.Contains(info, []byte(want)) {
			tb.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	list, err := exec.Command("dpkg-deb", "--contents", path).CombinedOutput()
	if err != nil {
		tb.Fatalf("dpkg-deb --contents: %v\n%s", err, list)
	}
	for _, want := range []string{"-rwxr-xr-x root/root", "./usr/bin/farego-validator", "./usr/lib/systemd/system/farego-validator.service",
		"./usr/lib/sysusers.d/farego-validator.conf", "./usr/lib/udev/rules.d/70-farego-gpio.rules", "./usr/lib/udev/rules.d/72-farego-scanners.rules",
		"./usr/share/doc/farego-validator/examples/71-farego-scanners.rules", "./usr/share/doc/farego-validator/examples/validator.toml"} {
		if !bytes.Contains(list, []byte(want)) {
			tb.Errorf("dpkg-deb --contents lacks %q:\n%s", want, list)
		}
	}
}

func TestBuildRefusesWrongBinary(t *testing.T) {
	arm64 := stubBinary(t, "arm64")
	_, err := build(Spec{Root: repoRoot, Out: t.TempDir(), Version: "1", Arch: "armhf", Binary: arm64, MTime: time.Now()})
	if err == nil || !strings.Contains(err.Error(), "want an executable for EM_ARM") {
		t.Errorf("an arm64 binary in the armhf package: %v", err)
	}
	plain := filepath.Join(t.TempDir(), "farego-validator")
	os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o755)
	if _, err := build(Spec{Root: repoRoot, Out: t.TempDir(), Version: "1", Arch: "arm64", Binary: plain}); err == nil {
		t.Error("a shell script packaged as the binary")
	}
}

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.4.0": "1.4.0", "1.4.0-3-gabc": "1.4.0-3-gabc", "569f960-dirty": "569f960-dirty", "dev": "0~dev",
		"abc123": "0~abc123", "1.0 beta/2": "1.0.beta.2", "": "0~",
	} {
		if got := debVersion(in); got != want {
			t.Errorf("debVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, exitOK, "usage"},
		{[]string{"--binary", "arm64=x"}, exitUsage, "--version"},
		{[]string{"--version", "1"}, exitUsage, "--binary"},
		{[]string{"--version", "1", "--binary", "mips=x"}, exitUsage, "-binary"},
		{[]string{"--version", "1", "--binary", "arm64"}, exitUsage, "-binary"},
		{[]string{"--version", "1", "--binary", "arm64=x", "--mtime", "yesterday"}, exitUsage, "--mtime"},
		{[]string{"--version", "1", "--binary", "arm64=x", "stray"}, exitUsage, "stray"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), tt.args, &stdout, &stderr); code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d mentioning %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
	}
}

// TestPostinstTriggersEveryRule: the package's postinst re-triggers udev
// for every subsystem its rules name, with the action each rule matches,
// so the rules apply at install and not only at the next boot (the LED
// rule, ACTION=="add" on "leds", was never applied: the lights stayed
// root's and a validator using them did not start until a reboot).
func TestPostinstTriggersEveryRule(t *testing.T) {
	post, err := os.ReadFile(filepath.Join("..", "..", "farego-validator", "packaging", "deb", "postinst"))
	if err != nil {
		t.Fatal(err)
	}
	var rules []string // the rules the package installs as rules (not examples)
	for _, f := range packageFiles {
		if strings.HasPrefix(f.dst, "/usr/lib/udev/rules.d/") {
			rules = append(rules, filepath.Join("..", "..", "..", filepath.FromSlash(f.src)))
		}
	}
	if len(rules) == 0 {
		t.Fatal("the package installs no udev rules")
	}
	subsystem := regexp.MustCompile(`SUBSYSTEMS?=="([a-z0-9_]+)"`)
	action := regexp.MustCompile(`ACTION=="([a-z]+)"`)
	for _, f := range rules {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			m := subsystem.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			act := "change"
			if a := action.FindStringSubmatch(line); a != nil {
				act = a[1]
			}
			if want := "udevadm trigger --subsystem-match=" + m[1] + " --action=" + act; !strings.Contains(string(post), want) {
				t.Errorf("%s: postinst lacks %q for the rule %q", filepath.Base(f), want, strings.TrimSpace(line))
			}
		}
	}
}
