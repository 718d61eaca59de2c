// Command farego-provision is the technician's tool: it creates the fleet's
// signing key and MQTT certificate authority once, and a device bundle for
// every validator (identity, certificates, configuration, current keyring
// and fare table, systemd unit), registering the device with the server.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/farego/farego/cmd/internal/cli"
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
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
