package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// binaries collects repeated --binary ARCH=PATH flags.
type binaries map[string]string

func (b binaries) String() string { return fmt.Sprint(map[string]string(b)) }

func (b binaries) Set(v string) error {
	arch, path, ok := strings.Cut(v, "=")
	if !ok || path == "" {
		return errors.New("want ARCH=PATH, e.g. arm64=dist/linux-arm64/farego-validator")
	}
	if _, ok := elfMachines[arch]; !ok {
		return fmt.Errorf("architecture %q: want armhf, arm64 or amd64", arch)
	}
	if _, dup := b[arch]; dup {
		return fmt.Errorf("architecture %s given twice", arch)
	}
	b[arch] = path
	return nil
}

func run(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mkdeb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bins := binaries{}
	version := fs.String("version", "", "package version (required; made a valid Debian version)")
	out := fs.String("out", "dist", "directory for the .deb files")
	root := fs.String("root", ".", "the repository, for the unit, udev rules, sysusers entry, sample config and scripts")
	mtime := fs.String("mtime", "2026-01-01T00:00:00Z", "time stamped on every file (RFC 3339)")
	fs.Var(bins, "binary", "ARCH=PATH of a farego-validator binary (repeat: armhf, arm64)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mkdeb --version V [--out DIR] [--root DIR] --binary ARCH=PATH...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mkdeb: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *version == "" {
		fmt.Fprintln(stderr, "mkdeb: --version is required")
		return exitUsage
	}
	if len(bins) == 0 {
		fmt.Fprintln(stderr, "mkdeb: --binary is required (ARCH=PATH, at least one)")
		return exitUsage
	}
	mt, err := time.Parse(time.RFC3339, *mtime)
	if err != nil {
		fmt.Fprintf(stderr, "mkdeb: --mtime: %v\n", err)
		return exitUsage
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintf(stderr, "mkdeb: --out: %v\n", err)
		return exitFailure
	}
	for _, arch := range sortedKeys(bins) {
		path, err := build(Spec{Root: *root, Out: *out, Version: *version, Arch: arch, Binary: bins[arch], MTime: mt})
		if err != nil {
			fmt.Fprintf(stderr, "mkdeb: %s: %v\n", arch, err)
			return exitFailure
		}
		pkg, err := Inspect(path)
		if err == nil {
			err = Check(pkg, arch)
		}
		if err != nil {
			fmt.Fprintf(stderr, "mkdeb: %s: the package fails its check: %v\n", path, err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s  (%s %s, %d files)\n", path, pkg.Control["Package"], pkg.Control["Version"], len(pkg.Files))
	}
	return exitOK
}
