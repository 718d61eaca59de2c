package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestCtlSocketGroupOnly runs the validator as the packaged unit does —
// the user and groups the package's sysusers.d entry makes (run through
// systemd-sysusers into a scratch root), the unit's supplementary group
// farego-ctl, its RuntimeDirectory= made with the unit's mode and owner,
// the sample config's ctl.group — and the ctl client as other users: the
// onboard computer's account in farego-ctl alone sets the route, and
// cannot read the broker's TLS key (group farego, 0640 as INSTALL.txt
// leaves it); an account in no group cannot use ctl. The socket used to be
// group farego's in a 0750 directory: the onboard computer had to be in
// farego, which reads the config and keys, the scanners and GPIO lines.
// Needs root (to run processes as other users) and systemd-sysusers.
func TestCtlSocketGroupOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs the validator and ctl as other users: needs root")
	}
	sysusers, err := exec.LookPath("systemd-sysusers")
	if err != nil {
		t.Skip("systemd-sysusers not found: it makes the package's users")
	}
	// The package's users and groups, in a scratch root (the host's
	// /etc/passwd is left alone): numeric ids, used only as credentials.
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "usr", "lib", "sysusers.d"), 0o755))
	conf, err := os.ReadFile(filepath.Join("packaging", "sysusers.d", "farego-validator.conf"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(root, "usr", "lib", "sysusers.d", "farego-validator.conf"), conf, 0o644))
	if out, err := exec.Command(sysusers, "--root="+root, "farego-validator.conf").CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	groups := idsOf(t, filepath.Join(root, "etc", "group"))
	users := idsOf(t, filepath.Join(root, "etc", "passwd"))
	uid, ok := users["farego"]
	fareGID, ok2 := groups["farego"]
	ctlGID, ok3 := groups["farego-ctl"]
	if !ok || !ok2 || !ok3 {
		t.Fatalf("the sysusers.d entry makes users %v, groups %v; want user farego, groups farego and farego-ctl", users, groups)
	}

	// The unit: the validator's supplementary groups and its runtime
	// directory's mode.
	unit := unitSettings(t, filepath.Join("..", "farego-provision", "farego-validator.service"))
	supp := []uint32{}
	for _, g := range strings.Fields(unit["SupplementaryGroups"]) {
		if id, ok := groups[g]; ok {
			supp = append(supp, id)
		} else if g != "dialout" { // a static group of every Debian system
			t.Fatalf("the unit's SupplementaryGroups= names %s, which the package does not make", g)
		}
	}
	if unit["User"] != "farego" || unit["Group"] != "farego" {
		t.Fatalf("the unit runs as %s:%s; this test follows farego:farego", unit["User"], unit["Group"])
	}
	runMode, err := strconv.ParseUint(unit["RuntimeDirectoryMode"], 8, 32)
	if err != nil {
		t.Fatalf("RuntimeDirectoryMode=%q: %v", unit["RuntimeDirectoryMode"], err)
	}
	// The socket's group the unit names (FAREGO_CTL_GROUP): by name there,
	// by number here, as the host has no group farego-ctl. Bundles name
	// none (a validator of the release before refuses the key).
	name, ok := strings.CutPrefix(unit["Environment"], CtlGroupEnv+"=")
	if _, made := groups[name]; !ok || !made || !slices.Contains(strings.Fields(unit["SupplementaryGroups"]), name) {
		t.Fatalf("the unit's Environment=%q: want %s naming a group of its SupplementaryGroups= the package makes", unit["Environment"], CtlGroupEnv)
	}

	// RuntimeDirectory=, as systemd makes it: owned by User= and Group=.
	run, err := os.MkdirTemp("", "ctl") // short: a socket path has at most 107 bytes
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(run) })
	must(t, os.Chmod(run, 0o755)) // as /run
	rundir := filepath.Join(run, "farego-validator")
	must(t, os.Mkdir(rundir, 0o700))
	must(t, os.Chown(rundir, int(uid), int(fareGID)))
	must(t, os.Chmod(rundir, os.FileMode(runMode)))
	sock := filepath.Join(rundir, "ctl.sock")

	d := newDevice(t, "", "\n[ctl]\nsocket = "+strconv.Quote(sock)+"\n")
	d.env = []string{CtlGroupEnv + "=" + strconv.Itoa(int(ctlGID))}
	// The validator's files, its user's (the test's temporary directories
	// are root's and 0700: opened up to be passed through).
	must(t, os.Chmod(filepath.Dir(d.dir), 0o711))
	must(t, os.Chmod(d.dir, 0o750))
	must(t, os.Chown(d.dir, int(uid), int(fareGID)))
	slave, err := filepath.EvalSymlinks(filepath.Join(d.dir, "scanner-front"))
	must(t, err)
	must(t, os.Chown(slave, int(uid), -1))
	// The broker's TLS key as INSTALL.txt leaves it: root:farego 0640.
	key := filepath.Join(d.dir, "device-tls.key")
	must(t, os.WriteFile(key, []byte("not a key\n"), 0o640))
	must(t, os.Chown(key, 0, int(fareGID)))
	// A binary every user may run (validatorBin's directory is root's, 0700).
	bindir := t.TempDir()
	must(t, os.Chmod(filepath.Dir(bindir), 0o711))
	must(t, os.Chmod(bindir, 0o755))
	bin := filepath.Join(bindir, "farego-validator")
	copyFile(t, validatorBin, bin) // 0755
	d.bin = bin
	d.attr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: fareGID, Groups: supp}}
	d.start()

	fi, err := os.Stat(sock)
	must(t, err)
	if st := fi.Sys().(*syscall.Stat_t); st.Gid != ctlGID || fi.Mode().Perm() != 0o660 {
		t.Errorf("ctl.sock: group %d mode %04o; want farego-ctl (%d), 0660\n%s", st.Gid, fi.Mode().Perm(), ctlGID, d.logged())
	}
	obc := uint32(64123) // the onboard computer's account: no user of the package
	as := func(groups []uint32, name string, args ...string) (string, error) {
		c := exec.Command(name, args...)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: obc, Gid: obc, Groups: groups}}
		out, err := c.CombinedOutput()
		return string(out), err
	}
	if out, err := as([]uint32{ctlGID}, bin, "ctl", "--socket", sock, "route", "7"); err != nil || !strings.Contains(out, `"route": "7"`) {
		t.Errorf("ctl route 7 by a member of farego-ctl: %v\n%s", err, out)
	}
	if out, err := as([]uint32{ctlGID}, "cat", key); err == nil {
		t.Errorf("a member of farego-ctl reads the broker's TLS key:\n%s", out)
	}
	if out, err := as(nil, bin, "ctl", "--socket", sock, "status"); err == nil || !strings.Contains(out, "usermod -aG ") {
		t.Errorf("ctl status by an account in neither group: %v; want refused, saying which group to join\n%s", err, out)
	}
	// Group farego alone (which reads the keys) is not the socket's.
	if out, err := as([]uint32{fareGID}, bin, "ctl", "--socket", sock, "status"); err == nil {
		t.Errorf("ctl status by a member of farego alone: allowed (the socket is farego-ctl's)\n%s", out)
	}
}

// idsOf reads name → id from an /etc/passwd or /etc/group file.
func idsOf(tb testing.TB, path string) map[string]uint32 {
	tb.Helper()
	b, err := os.ReadFile(path)
	must(tb, err)
	ids := map[string]uint32{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) > 2 {
			if id, err := strconv.ParseUint(f[2], 10, 32); err == nil {
				ids[f[0]] = uint32(id)
			}
		}
	}
	return ids
}

// unitSettings reads a unit file's [Service] settings (a repeated key:
// the last).
func unitSettings(tb testing.TB, path string) map[string]string {
	tb.Helper()
	f, err := os.Open(path)
	must(tb, err)
	defer f.Close()
	m := map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]" && line != "" && !strings.HasPrefix(line, "#"):
			if k, v, ok := strings.Cut(line, "="); ok {
				m[k] = v
			}
		}
	}
	must(tb, sc.Err())
	return m
}
