package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// udevKey is what udev(7) allows of a key: whether it takes an attribute
// in braces, and whether it matches (==, !=) and assigns (=, +=, -=, :=).
type udevKey struct{ attr, match, assign bool }

var udevKeys = map[string]udevKey{
	"ACTION": {match: true}, "DEVPATH": {match: true}, "KERNEL": {match: true}, "KERNELS": {match: true},
	"SUBSYSTEM": {match: true}, "SUBSYSTEMS": {match: true}, "DRIVER": {match: true}, "DRIVERS": {match: true},
	"ATTRS": {attr: true, match: true}, "TAGS": {match: true}, "TEST": {match: true}, "RESULT": {match: true},
	"CONST": {attr: true, match: true}, "PROGRAM": {match: true},
	"NAME": {match: true, assign: true}, "SYMLINK": {match: true, assign: true}, "ATTR": {attr: true, match: true, assign: true},
	"SYSCTL": {attr: true, match: true, assign: true}, "ENV": {attr: true, match: true, assign: true}, "TAG": {match: true, assign: true},
	"OWNER": {assign: true}, "GROUP": {assign: true}, "MODE": {assign: true}, "SECLABEL": {attr: true, assign: true},
	"RUN": {assign: true}, "LABEL": {assign: true}, "GOTO": {assign: true}, "IMPORT": {attr: true, assign: true},
	"OPTIONS": {assign: true},
}

// udevPair is one key-operator-value of a rule.
type udevPair struct{ key, attr, op, value string }

var udevPairRE = regexp.MustCompile(`^([A-Z]+)(?:\{([^}]+)\})?(==|!=|\+=|-=|:=|=)"((?:[^"\\]|\\.)*)"`)

// parseUdevRules parses a rules file as udev(7) describes it: each line
// not blank nor a comment is one rule, comma-separated pairs of a known
// key (an attribute in braces where it takes one), an operator it allows
// and a double-quoted value; MODE an octal mode. It returns the rules.
func parseUdevRules(text string) ([][]udevPair, error) {
	var rules [][]udevPair
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			return nil, fmt.Errorf("line %d: continued lines are not used here", n+1)
		}
		var rule []udevPair
		rest := line
		for {
			m := udevPairRE.FindStringSubmatch(rest)
			if m == nil {
				return nil, fmt.Errorf("line %d: not KEY{attr}OP\"value\" at %q", n+1, rest)
			}
			p := udevPair{key: m[1], attr: m[2], op: m[3], value: m[4]}
			k, ok := udevKeys[p.key]
			switch {
			case !ok:
				return nil, fmt.Errorf("line %d: unknown key %s", n+1, p.key)
			case k.attr != (p.attr != "") && p.key != "RUN" && p.key != "IMPORT" && p.key != "TEST":
				return nil, fmt.Errorf("line %d: key %s with attribute %q", n+1, p.key, p.attr)
			case (p.op == "==" || p.op == "!=") && !k.match:
				return nil, fmt.Errorf("line %d: %s cannot be matched (%s)", n+1, p.key, p.op)
			case p.op != "==" && p.op != "!=" && !k.assign:
				return nil, fmt.Errorf("line %d: %s cannot be assigned (%s)", n+1, p.key, p.op)
			}
			if p.key == "MODE" {
				if v, err := strconv.ParseUint(p.value, 8, 32); err != nil || v > 0o7777 || len(p.value) != 4 {
					return nil, fmt.Errorf("line %d: MODE %q is not a 4-digit octal mode", n+1, p.value)
				}
			}
			rule = append(rule, p)
			rest = strings.TrimSpace(rest[len(m[0]):])
			if rest == "" {
				break
			}
			if !strings.HasPrefix(rest, ",") {
				return nil, fmt.Errorf("line %d: want a comma before %q", n+1, rest)
			}
			rest = strings.TrimSpace(rest[1:])
		}
		rules = append(rules, rule)
	}
	return rules, nil
}

func (r udevRule) get(key, op string) (string, bool) {
	for _, p := range r {
		if p.key == key && p.op == op {
			return p.value, true
		}
	}
	return "", false
}

type udevRule []udevPair

// shippedUdevRules returns the udev rules files of the packaging.
func shippedUdevRules(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot, "cmd", "farego-validator", "packaging", "udev", "*.rules"))
	if err != nil || len(paths) < 3 {
		t.Fatalf("udev rules: %v, %v", paths, err)
	}
	files := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = string(b)
	}
	return files
}

// TestUdevRulesParse: every udev rules file the package ships (installed
// or sample) parses as udev(7) has it, and udevadm verify (systemd 254 and
// later, where installed) passes it.
func TestUdevRulesParse(t *testing.T) {
	for path, text := range shippedUdevRules(t) {
		rules, err := parseUdevRules(text)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(path), err)
		}
		if len(rules) == 0 {
			t.Errorf("%s holds no rule", filepath.Base(path))
		}
	}
	// The parser refuses what udev would (each of these is one mistake).
	for _, bad := range []string{
		`SUBSYSTEM=="tty", SYMLINK=="scanner-*", GROUP="farego", MODE="660"`,
		`SUBSYSTEM=="tty" SYMLINK=="scanner-*"`,
		`SUBSYSTEM="=tty"`,
		`SUBSYSTEM=tty`,
		`SUBSYSTEMS="tty"`,
		`GROUP=="farego"`,
		`GRUOP="farego"`,
		`ATTRS=="x"`,
		`SUBSYSTEM=="tty", MODE="0668"`,
		`SUBSYSTEM=="tty",`,
	} {
		if _, err := parseUdevRules(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if out, err := exec.Command("udevadm", "verify", "--help").CombinedOutput(); err != nil {
		t.Logf("udevadm verify not available (systemd 254 or later has it): %v %s; the rules were parsed here", err, strings.TrimSpace(string(out)))
		return
	}
	for path := range shippedUdevRules(t) {
		if out, err := exec.Command("udevadm", "verify", "--resolve-names=never", path).CombinedOutput(); err != nil {
			t.Errorf("udevadm verify %s: %v\n%s", filepath.Base(path), err, out)
		}
	}
}

// TestScannerTTYToFaregoAlone: a serial scanner's tty is given to the
// validator's group farego alone (mode 0660: no one else, no other group
// such as dialout, whose users could open it and hold its lock), by the
// rule the package installs for every /dev/scanner-* name and by the
// sample rule that names one; the package installs the former among its
// udev rules, and no shipped rule gives anything to dialout.
func TestScannerTTYToFaregoAlone(t *testing.T) {
	var installed, sample bool
	for path, text := range shippedUdevRules(t) {
		rules, err := parseUdevRules(text)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(path), err)
		}
		for _, pairs := range rules {
			r := udevRule(pairs)
			if g, ok := r.get("GROUP", "="); ok && g != "farego" {
				t.Errorf("%s: a rule gives group %q: %v", filepath.Base(path), g, r)
			}
			if sub, _ := r.get("SUBSYSTEM", "=="); sub != "tty" {
				continue
			}
			link, matched := r.get("SYMLINK", "==")
			if !matched {
				link, _ = r.get("SYMLINK", "+=")
			}
			if !strings.HasPrefix(link, "scanner-") {
				continue
			}
			group, _ := r.get("GROUP", "=")
			mode, _ := r.get("MODE", "=")
			m, err := strconv.ParseUint(mode, 8, 32)
			if group != "farego" || err != nil || m&0o007 != 0 || m&0o060 != 0o060 {
				t.Errorf("%s: scanner rule %v gives group %q mode %q; want farego, 0660 (group read-write, nothing for others)",
					filepath.Base(path), r, group, mode)
			}
			if matched {
				installed = filepath.Base(path) == "72-farego-scanners.rules"
			} else {
				sample = true
			}
		}
	}
	if !installed || !sample {
		t.Errorf("scanner rules: installed (SYMLINK==\"scanner-*\" in 72-farego-scanners.rules) %v, sample (SYMLINK+=) %v; want both", installed, sample)
	}
	var inPackage bool
	for _, f := range packageFiles {
		if f.dst == "/usr/lib/udev/rules.d/72-farego-scanners.rules" && f.src == "cmd/farego-validator/packaging/udev/72-farego-scanners.rules" {
			inPackage = true
		}
	}
	if !inPackage {
		t.Error("the package does not install 72-farego-scanners.rules in /usr/lib/udev/rules.d")
	}
}
