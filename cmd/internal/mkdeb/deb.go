package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// Package facts.
const (
	pkgName    = "farego-validator"
	unitName   = "farego-validator.service"
	binPath    = "/usr/bin/farego-validator"
	unitSource = "cmd/farego-provision/farego-validator.service"
	// bundleExec is the binary's path in the provisioning unit (copied to
	// /usr/local/bin by hand); the package puts it in /usr/bin.
	bundleExec = "/usr/local/bin/farego-validator"
)

// elfMachines maps the Debian architectures to their ELF machine.
var elfMachines = map[string]elf.Machine{"armhf": elf.EM_ARM, "arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64}

// file is one file of the package: where it comes from in the repository
// (or the build), where it goes, its mode.
type file struct {
	src, dst string
	mode     os.FileMode
}

// packageFiles lists the package's files except the binary and the unit.
var packageFiles = []file{
	{"cmd/farego-validator/packaging/sysusers.d/farego-validator.conf", "/usr/lib/sysusers.d/farego-validator.conf", 0o644},
	{"cmd/farego-validator/packaging/udev/70-farego-gpio.rules", "/usr/lib/udev/rules.d/70-farego-gpio.rules", 0o644},
	{"cmd/farego-validator/packaging/udev/72-farego-scanners.rules", "/usr/lib/udev/rules.d/72-farego-scanners.rules", 0o644},
	{"cmd/farego-validator/packaging/udev/71-farego-scanners.rules", "/usr/share/doc/farego-validator/examples/71-farego-scanners.rules", 0o644},
	{"testdata/validator/validator.toml", "/usr/share/doc/farego-validator/examples/validator.toml", 0o644},
}

// Spec is one package to build.
type Spec struct {
	Root    string    // the repository
	Out     string    // directory for the .deb
	Version string    // any version; made a Debian one
	Arch    string    // armhf, arm64 (amd64 for tests on a PC)
	Binary  string    // the farego-validator binary for Arch
	MTime   time.Time // stamped on every file
}

// build writes the package and returns its path.
func build(s Spec) (string, error) {
	if err := checkELF(s.Binary, s.Arch); err != nil {
		return "", err
	}
	unit, err := os.ReadFile(filepath.Join(s.Root, unitSource))
	if err != nil {
		return "", err
	}
	if !bytes.Contains(unit, []byte("ExecStart="+bundleExec+" ")) {
		return "", fmt.Errorf("%s: no ExecStart=%s to point at %s", unitSource, bundleExec, binPath)
	}
	tmp, err := os.MkdirTemp("", "mkdeb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	unitPath := filepath.Join(tmp, unitName)
	unit = bytes.Replace(unit, []byte("ExecStart="+bundleExec+" "), []byte("ExecStart="+binPath+" "), 1)
	if err := os.WriteFile(unitPath, unit, 0o644); err != nil {
		return "", err
	}

	fi := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: s.MTime}
	}
	contents := files.Contents{
		{Source: s.Binary, Destination: binPath, FileInfo: fi(0o755)},
		{Source: unitPath, Destination: "/usr/lib/systemd/system/" + unitName, FileInfo: fi(0o644)},
	}
	for _, f := range packageFiles {
		contents = append(contents, &files.Content{Source: filepath.Join(s.Root, f.src), Destination: f.dst, FileInfo: fi(f.mode)})
	}
	script := func(name string) string {
		return filepath.Join(s.Root, "cmd", "farego-validator", "packaging", "deb", name)
	}
	info := &nfpm.Info{
		Name:          pkgName,
		Arch:          s.Arch,
		Platform:      "linux",
		Version:       debVersion(s.Version),
		VersionSchema: "none",
		Section:       "misc",
		Priority:      "optional",
		Maintainer:    "farego <farego@example.invalid>",
		Description: "Offline QR fare validator for buses\n" +
			"Reads riders' payment codes from serial or USB keyboard-wedge QR scanners,\n" +
			"verifies them offline, records each charge durably and forwards it over MQTT\n" +
			"to the farego settlement server. Drives lights and a buzzer through GPIO.",
		Homepage: "https://github.com/farego/farego",
		License:  "Proprietary",
		MTime:    s.MTime,
		Overridables: nfpm.Overridables{
			Contents:   contents,
			Recommends: []string{"systemd"},
			Scripts:    nfpm.Scripts{PostInstall: script("postinst"), PreRemove: script("prerm"), PostRemove: script("postrm")},
			Deb:        nfpm.Deb{Compression: "gzip"},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", err
	}
	if err := info.Validate(); err != nil {
		return "", err
	}
	pkger, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	path := filepath.Join(s.Out, pkger.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := pkger.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("package: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return path, nil
}

// checkELF makes sure path is an executable for arch.
func checkELF(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("binary %s: %w", path, err)
	}
	defer f.Close()
	if want := elfMachines[arch]; f.Machine != want || f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("binary %s is %v %v, want an executable for %v (%s)", path, f.Type, f.Machine, want, arch)
	}
	return nil
}

// debVersion makes v a valid Debian version: a leading "v" is dropped,
// characters outside [A-Za-z0-9.+~-] become '.', and a version not starting
// with a digit gets "0~" in front (sorting before any release).
func debVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	v = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".+~-", r):
			return r
		}
		return '.'
	}, v)
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0~" + v
	}
	return strings.TrimRight(v, "-")
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Entry is one file in a package's data or control archive.
type Entry struct {
	Mode  os.FileMode
	Owner string
	Data  []byte
}

// Package is a .deb read back.
type Package struct {
	Control map[string]string // the control file's fields
	Scripts map[string]Entry  // postinst, prerm, … (control archive)
	Files   map[string]Entry  // data archive, by absolute path, regular files only
}

// maxMember bounds what Inspect reads of one archive member.
const maxMember = 256 << 20

// Inspect reads a .deb: an ar archive of debian-binary ("2.0"),
// control.tar.gz and data.tar.gz.
func Inspect(path string) (*Package, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(raw, []byte("!<arch>\n")) {
		return nil, errors.New("not an ar archive")
	}
	members := map[string][]byte{}
	var order []string
	for p := raw[8:]; len(p) > 0; {
		if len(p) < 60 {
			return nil, errors.New("truncated ar header")
		}
		h := p[:60]
		name := strings.TrimRight(strings.TrimSpace(string(h[:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(h[48:58])), 10, 64)
		if err != nil || size < 0 || size > maxMember || int64(len(p)-60) < size || string(h[58:60]) != "`\n" {
			return nil, fmt.Errorf("bad ar member header %q", h)
		}
		members[name] = p[60 : 60+size]
		order = append(order, name)
		p = p[60+size:]
		if size%2 == 1 && len(p) > 0 {
			p = p[1:] // members are 2-byte aligned
		}
	}
	if want := []string{"debian-binary", "control.tar.gz", "data.tar.gz"}; !slices.Equal(order, want) {
		return nil, fmt.Errorf("members %v, want %v", order, want)
	}
	if string(members["debian-binary"]) != "2.0\n" {
		return nil, fmt.Errorf("debian-binary %q", members["debian-binary"])
	}
	control, err := readTarGz(members["control.tar.gz"])
	if err != nil {
		return nil, fmt.Errorf("control.tar.gz: %w", err)
	}
	data, err := readTarGz(members["data.tar.gz"])
	if err != nil {
		return nil, fmt.Errorf("data.tar.gz: %w", err)
	}
	pkg := &Package{Control: map[string]string{}, Scripts: map[string]Entry{}, Files: map[string]Entry{}}
	for name, e := range control {
		if name == "control" {
			sc := bufio.NewScanner(bytes.NewReader(e.Data))
			last := ""
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, " ") && last != "" {
					pkg.Control[last] += "\n" + line[1:]
					continue
				}
				if k, v, ok := strings.Cut(line, ":"); ok {
					last = k
					pkg.Control[k] = strings.TrimSpace(v)
				}
			}
			continue
		}
		pkg.Scripts[name] = e
	}
	for name, e := range data {
		pkg.Files["/"+name] = e
	}
	return pkg, nil
}

// readTarGz returns the regular files of a gzip'd tar, by path without a
// leading "./".
func readTarGz(b []byte) (map[string]Entry, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	out := map[string]Entry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(tr, maxMember))
		if err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(h.Name, "./")] = Entry{Mode: os.FileMode(h.Mode).Perm(), Owner: h.Uname + ":" + h.Gname, Data: data}
	}
}

// Check verifies a package holds what a device needs: the control fields,
// every file with its mode and root ownership, a binary for arch, the unit
// pointing at it, the maintainer scripts.
func Check(p *Package, arch string) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if p.Control["Package"] != pkgName || p.Control["Architecture"] != arch || p.Control["Version"] == "" {
		bad("control: Package %q, Architecture %q, Version %q", p.Control["Package"], p.Control["Architecture"], p.Control["Version"])
	}
	want := map[string]os.FileMode{binPath: 0o755, "/usr/lib/systemd/system/" + unitName: 0o644}
	for _, f := range packageFiles {
		want[f.dst] = f.mode
	}
	for path, mode := range want {
		e, ok := p.Files[path]
		switch {
		case !ok:
			bad("missing %s", path)
		case e.Mode != mode || e.Owner != "root:root":
			bad("%s: mode %v owner %s, want %v root:root", path, e.Mode, e.Owner, mode)
		case len(e.Data) == 0:
			bad("%s is empty", path)
		}
	}
	for path := range p.Files {
		if _, ok := want[path]; !ok {
			bad("unexpected file %s", path)
		}
	}
	if e, ok := p.Files[binPath]; ok {
		f, err := elf.NewFile(bytes.NewReader(e.Data))
		if err != nil || f.Machine != elfMachines[arch] {
			bad("%s is not an %s executable (%v)", binPath, arch, err)
		}
	}
	if e, ok := p.Files["/usr/lib/systemd/system/"+unitName]; ok {
		unit := string(e.Data)
		if !strings.Contains(unit, "\nExecStart="+binPath+" run ") || !strings.Contains(unit, "\nUser=farego\n") {
			bad("the unit does not run %s as farego", binPath)
		}
		if !strings.Contains(unit, "\nSupplementaryGroups=dialout farego-ctl\n") {
			bad("the unit does not give the validator group farego-ctl (its control socket's)")
		}
	}
	if e, ok := p.Files["/usr/lib/sysusers.d/farego-validator.conf"]; ok {
		if !strings.Contains(string(e.Data), "\nu farego ") {
			bad("sysusers.d entry does not create user farego")
		}
		if !strings.Contains(string(e.Data), "\ng farego-ctl ") {
			bad("sysusers.d entry does not create group farego-ctl")
		}
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if e, ok := p.Scripts[s]; !ok || e.Mode&0o111 == 0 || !bytes.HasPrefix(e.Data, []byte("#!/bin/sh")) {
			bad("maintainer script %s missing or not executable", s)
		}
	}
	return errors.Join(errs...)
}
