// Command farego-provision is the technician's tool: it creates the fleet's
// signing key and MQTT certificate authority once, and a device bundle for
// every validator (identity, certificates, configuration, current keyring
// and fare table, systemd unit), registering the device with the server.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
)

const usage = `farego-provision: provision the fleet and its validators.

Usage:
  farego-provision init-fleet --dir DIR
  farego-provision device --fleet DIR --id ID --route ROUTE --server URL --operator-token TOKEN|@FILE [flags]
  farego-provision broker-cert --fleet DIR --host NAME[,NAME|IP…] [--out DIR] [--days N] [--force]

Subcommands:
  init-fleet  create the operator's fleet signing key and the MQTT certificate
              authority (refuses to overwrite)
  device      make a device's key pair and client certificate, register its
              public key with the settlement server, and write the device
              bundle (directory and tarball)
  broker-cert the MQTT broker's TLS server certificate, signed by the fleet
              CA the devices trust (for --mqtt-tls or an external broker)

Run "farego-provision SUBCOMMAND --help" for the flags; "farego-provision
--version" prints the version.
`

func main() {
	// Ctrl-C ends it by SIGINT (after a bundle being written is whole),
	// so that a shell loop over devices stops there.
	ctx, exit := cli.SignalContext()
	exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Dispatch(ctx, "farego-provision", usage, map[string]cli.Command{
		"init-fleet": func(_ context.Context, args []string, stdout, stderr io.Writer) error {
			return cmdInitFleet(args, stdout, stderr)
		},
		"device": cmdDevice,
		"broker-cert": func(_ context.Context, args []string, stdout, stderr io.Writer) error {
			return cmdBrokerCert(args, stdout, stderr)
		},
	}, args, stdout, stderr)
}

// keepsModes refuses, before anything is written, a directory (given as
// flag, which may not exist yet) on a filesystem that keeps no file modes:
// FAT or exFAT, as on the USB sticks and SD cards technicians carry. There
// keys could not be kept to their owner: the kernel's vfat and fusefat
// refuse the chmod (the tool stopped half way on "function not
// implemented"), exfat-fuse takes it and keeps 0777 (a key others can read,
// which the server and the validator refuse). keys names what would be
// written; todo says what to do instead.
func keepsModes(flag, dir, keys, todo string) error {
	d := filepath.Clean(dir)
	for {
		if _, err := os.Stat(d); err == nil || !errors.Is(err, os.ErrNotExist) || filepath.Dir(d) == d {
			break
		}
		d = filepath.Dir(d)
	}
	err := durable.CheckModes(d)
	if errors.Is(err, durable.ErrNoModes) {
		return fmt.Errorf("%s %s: %w (FAT or exFAT, as on USB sticks and SD cards), where %s cannot be kept from other users; %s", flag, dir, err, keys, todo)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, dir, err)
	}
	return nil
}
