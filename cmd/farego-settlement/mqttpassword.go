package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/broker"
	"github.com/farego/farego/server/keys"
)

func cmdMQTTPassword(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-settlement mqtt-password", flag.ContinueOnError)
	data := dataFlag(fs)
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	kd, err := keys.Open(filepath.Join(*data, "keys"))
	if err != nil {
		return err
	}
	// The password alone, as FAREGO_BROKER_PASSWORD takes it (the user is
	// always broker.DefaultServerUsername, --broker-username's value).
	fmt.Fprintln(stdout, broker.ServerPassword(kd.BrokerSecret()))
	return nil
}
