// Command mkdeb builds the farego-validator Debian packages (make deb):
// one .deb per architecture from the cross-built binaries, with nfpm
// (github.com/goreleaser/nfpm/v2) used as a library, then reads each package
// back and checks it holds what a technician's device needs.
//
//	go run ./cmd/internal/mkdeb --version 1.4.0 --out dist \
//	    --binary armhf=dist/linux-armv7/farego-validator \
//	    --binary arm64=dist/linux-arm64/farego-validator
//
// A package holds:
//
//	/usr/bin/farego-validator                         the binary (ELF for the package's architecture)
//	/usr/lib/systemd/system/farego-validator.service  the unit (cmd/farego-provision's, ExecStart in /usr/bin)
//	/usr/lib/sysusers.d/farego-validator.conf         the system user and group farego
//	/usr/lib/udev/rules.d/70-farego-gpio.rules        GPIO chips to group farego
//	/usr/lib/udev/rules.d/72-farego-scanners.rules    serial scanners (/dev/scanner-*) to group farego alone
//	/usr/share/doc/farego-validator/examples/         71-farego-scanners.rules, validator.toml (samples)
//
// and maintainer scripts (cmd/farego-validator/packaging/deb) that create the user, reload udev
// and systemd, and never start an unconfigured validator nor delete its
// queue. The files come from the repository (--root, default "."), so the
// package and the provisioning bundle ship the same unit.
//
// # Caveats
//
// The version must be a valid Debian version; anything else (a bare commit
// hash, "dev") is made one: "dev" becomes "0~dev". Packages are
// reproducible for a given version and binaries: every file's time is the
// fixed --mtime (default 2026-01-01).
package main
