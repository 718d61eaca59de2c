package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/broker"
)

// cmdMQTTPasswd writes a Mosquitto password file: the settlement server's
// user and every registered, unrevoked device with its password hash (the
// ledger keeps device passwords only as "$7$" hashes, Mosquitto's format).
// Regenerate it and send Mosquitto SIGHUP after registering or revoking a
// device.
func cmdMQTTPasswd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-settlement mqtt-passwd", flag.ContinueOnError)
	data := dataFlag(fs)
	db := dbFlag(fs)
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	kd, st, err := openKeysAndLedger(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	ds, err := st.Devices(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s:%s\n", broker.DefaultServerUsername, broker.HashPassword(broker.ServerPassword(kd.BrokerSecret())))
	n := 0
	for _, d := range ds {
		if !d.Revoked.IsZero() {
			continue
		}
		a, err := st.DeviceAuth(ctx, d.ID)
		if err != nil {
			return err
		}
		if a.MQTTHash == "" {
			continue
		}
		fmt.Fprintf(stdout, "%s:%s\n", d.ID, a.MQTTHash)
		n++
	}
	fmt.Fprintf(stderr, "wrote the server and %d devices (revoked devices left out)\n", n)
	return nil
}
