package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/broker"
)

func cmdBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-settlement broker", flag.ContinueOnError)
	data := dataFlag(fs)
	var c broker.Config
	// Every interface: a broker of its own serves the validators (the
	// settlement server's embedded one listens on loopback by default).
	fs.StringVar(&c.Listen, "mqtt", ":1883", "plain MQTT listen address")
	fs.StringVar(&c.TLSListen, "mqtt-tls", "", "MQTT-over-TLS listen address")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "TLS certificate (PEM)")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "TLS key (PEM)")
	fs.StringVar(&c.ClientCAFile, "client-ca", "", "require client certificates from this CA (mutual TLS)")
	fs.StringVar(&c.TopicPrefix, "topic-prefix", "", "MQTT topic prefix (default farego)")
	db := fs.String("db", "", "ledger DSN whose devices may log in (default sqlite:DATA/ledger.db)")
	readyFile := fs.String("ready-file", "", "write the listen addresses (JSON) to this file once listening")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	log, err := cli.NewLogger(stderr, *logLevel, "text")
	if err != nil {
		return cli.Usagef(stderr, "farego-settlement broker", "--log-level: %v", err)
	}
	kd, st, err := openKeysAndLedger(ctx, *data, *db, true)
	if err != nil {
		return err
	}
	defer st.Close()
	devs := server.NewDevices(st)
	c.Secret, c.Logger, c.Devices = kd.BrokerSecret(), log, devs
	b, err := broker.New(c)
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return fmt.Errorf("MQTT broker on %s: %w (use --mqtt to pick another address)", c.Listen, err)
	}
	defer b.Close()
	go devs.Sweep(ctx, b)
	log.Info("farego MQTT broker running", "mqtt", b.Addr(), "mqtt_tls", b.TLSAddr())
	server.WarnPlainMQTT(log, b.Addr())
	if *readyFile != "" {
		j, _ := json.Marshal(map[string]string{"mqtt": b.Addr(), "mqtt_tls": b.TLSAddr()})
		if err := durable.WriteFile(*readyFile, j, 0o644); err != nil {
			return err
		}
	}
	<-ctx.Done()
	log.Info("farego MQTT broker stopping")
	return nil
}
