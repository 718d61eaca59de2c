// Command farego-settlement runs the settlement server: ledger, HTTP API,
// MQTT ingest of validators' taps, fleet downlinks and, by default, an
// embedded MQTT broker.
//
//	farego-settlement init   --data DIR [--fleet-key FILE] [--fares FILE]
//	farego-settlement run    --data DIR [flags]
//	farego-settlement verify --data DIR [--db DSN]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/cmd/internal/sdnotify"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/broker"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

const usage = `farego-settlement: the farego settlement server.

Usage:
  farego-settlement init   --data DIR [--fleet-key FILE] [--fares FILE]
  farego-settlement run    --data DIR [--http ADDR] [--mqtt ADDR] [--broker URL] [--db DSN] ...
  farego-settlement verify --data DIR [--db DSN]
  farego-settlement mqtt-password --data DIR [--device ID]
  farego-settlement broker --data DIR [--mqtt ADDR] [--mqtt-tls ADDR ...]
  farego-settlement version

Subcommands:
  init     create the key directory (issuer root secret, fleet key, operator
           token, broker secret, keyring) and the ledger; refuses to overwrite
  run      serve: HTTP API, MQTT ingest and downlinks, embedded broker
  verify   check every ledger invariant (balances = postings, no tap charged
           twice, …); exit 1 on a finding
  broker   run only farego's MQTT broker (the embedded one, with its access
           rules), for a server started with --broker
  mqtt-password
           print the MQTT password of the server (or of --device ID) for an
           external broker's password file (mosquitto_passwd)

Run "farego-settlement SUBCOMMAND --help" for the flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "init":
		err = cmdInit(ctx, args[1:], stdout, stderr)
	case "run":
		err = cmdRun(ctx, args[1:], stderr)
	case "verify":
		err = cmdVerify(ctx, args[1:], stdout, stderr)
	case "broker":
		err = cmdBroker(ctx, args[1:], stderr)
	case "mqtt-password":
		err = cmdMQTTPassword(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "farego-settlement", agent.Version)
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "farego-settlement: unknown subcommand %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "farego-settlement %s: %v\n", args[0], err)
		return 1
	}
}

var errUsage = errors.New("usage")

func dataFlag(fs *flag.FlagSet) *string {
	return fs.String("data", "farego-data", "data directory (ledger.db and keys/)")
}

func cmdInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := dataFlag(fs)
	db := fs.String("db", "", "ledger DSN (default sqlite:DATA/ledger.db; postgres://… for PostgreSQL)")
	fleetKey := fs.String("fleet-key", "", "use this fleet key (from farego-provision init-fleet) instead of making one")
	fares := fs.String("fares", "", "upload this fare table (JSON) into the new ledger")
	currency := fs.String("currency", "", "currency of accounts (default EUR)")
	if fs.Parse(args) != nil {
		return errUsage
	}
	if *fares != "" {
		if _, err := fare.Load(*fares); err != nil {
			return err
		}
	}
	kd, err := keys.Init(filepath.Join(*data, "keys"), keys.InitOptions{FleetKey: *fleetKey})
	if err != nil {
		return err
	}
	dsn := *db
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(*data, "ledger.db")
	}
	st, err := ledger.Open(ctx, dsn, &ledger.Options{Currency: *currency})
	if err != nil {
		return err
	}
	defer st.Close()
	if *fares != "" {
		t, _ := fare.Load(*fares)
		if err := st.PutFareTable(ctx, t); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, `initialised %s
  keys:           %s (issuer root secret, fleet key, operator token, broker secret: back them up, keep them private)
  operator token: %s (Authorization: Bearer …)
  fleet key:      %s (its public half goes on every validator)
  ledger:         %s
`, *data, kd.Path(), filepath.Join(kd.Path(), keys.TokenFile), filepath.Join(kd.Path(), keys.FleetPubFile), dsn)
	return nil
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c server.Config
	fs.StringVar(&c.DataDir, "data", "farego-data", "data directory (ledger.db and keys/)")
	fs.StringVar(&c.DB, "db", "", "ledger DSN: sqlite:PATH (default DATA/ledger.db) or postgres://…")
	fs.StringVar(&c.KeysDir, "keys", "", "key directory (default DATA/keys)")
	fs.StringVar(&c.HTTPListen, "http", server.DefaultHTTPListen, "HTTP API listen address")
	fs.StringVar(&c.MQTTListen, "mqtt", server.DefaultMQTTListen, "embedded MQTT broker listen address")
	fs.StringVar(&c.MQTTTLSListen, "mqtt-tls", "", "embedded broker MQTT-over-TLS listen address (e.g. :8883)")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "embedded broker TLS certificate (PEM)")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "embedded broker TLS key (PEM)")
	fs.StringVar(&c.ClientCAFile, "client-ca", "", "embedded broker: require client certificates from this CA (mutual TLS)")
	fs.StringVar(&c.BrokerURL, "broker", "", "use this external MQTT broker (tcp://host:1883, ssl://host:8883) instead of the embedded one")
	fs.StringVar(&c.MQTTUsername, "broker-username", "", "username at the external broker (default farego-server with the derived password)")
	fs.StringVar(&c.MQTTCAFile, "broker-ca", "", "CA of the external TLS broker")
	fs.StringVar(&c.MQTTCertFile, "broker-cert", "", "client certificate at the external broker")
	fs.StringVar(&c.MQTTKeyFile, "broker-key", "", "client key at the external broker")
	fs.StringVar(&c.TopicPrefix, "topic-prefix", "", "MQTT topic prefix (default farego)")
	fs.StringVar(&c.SharedGroup, "shared-group", "", "MQTT shared-subscription group of the settlement instances (default settlement)")
	fs.DurationVar(&c.CredentialTTL, "credential-ttl", 24*time.Hour, "how long an issued credential is valid")
	fs.DurationVar(&c.Policy.MaxAge, "max-age", paycode.DefaultMaxAge, "code max age (online payments, re-verification)")
	fs.DurationVar(&c.Policy.Skew, "skew", paycode.DefaultSkew, "clock skew tolerance")
	readyFile := fs.String("ready-file", "", "when serving, write the listen addresses (JSON) to this file (for scripts: use with port 0)")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "text or json")
	if fs.Parse(args) != nil {
		return errUsage
	}
	if pw := os.Getenv("FAREGO_BROKER_PASSWORD"); pw != "" {
		c.MQTTPassword = pw
	}
	log, err := cli.NewLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	c.Logger = log
	if n, err := strconv.Atoi(os.Getenv("FAREGO_FAULT_EXIT_AFTER_COMMITS")); err == nil && n > 0 {
		// Fault injection for tests: die after the n-th ledger commit,
		// before its ack goes out.
		var commits atomic.Int64
		c.AfterCommit = func() {
			if commits.Add(1) == int64(n) {
				log.Warn("fault injection: exiting between ledger commit and ack")
				os.Exit(3)
			}
		}
	}
	notifier := sdnotify.FromEnv()
	c.Ready = func(a server.Addrs) {
		if *readyFile != "" {
			b, _ := json.Marshal(map[string]string{"http": a.HTTP, "mqtt": a.MQTT, "mqtt_tls": a.MQTTTLS})
			if err := durable.WriteFile(*readyFile, b, 0o644); err != nil {
				log.Error("writing the ready file", "err", err)
			}
		}
		notifier.Notify("READY=1")
	}
	srv, err := server.New(ctx, c)
	if err != nil {
		return err
	}
	go notifier.Watchdog(ctx, nil)
	err = srv.Run(ctx)
	notifier.Notify("STOPPING=1")
	return err
}

func cmdVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := dataFlag(fs)
	db := fs.String("db", "", "ledger DSN (default sqlite:DATA/ledger.db)")
	if fs.Parse(args) != nil {
		return errUsage
	}
	dsn := *db
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(*data, "ledger.db")
		if _, err := os.Stat(filepath.Join(*data, "ledger.db")); err != nil {
			return fmt.Errorf("no ledger at %s", filepath.Join(*data, "ledger.db"))
		}
	}
	st, err := ledger.Open(ctx, dsn, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	stats, err := st.Stats(ctx)
	if err != nil {
		return err
	}
	if err := st.CheckInvariants(ctx); err != nil {
		return fmt.Errorf("ledger invariants violated:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	fmt.Fprintf(stdout, "ledger ok: %d accounts, %d taps (%d flagged), %d postings, %d payments, balances total %d\n",
		stats.Accounts, stats.Taps, stats.FlaggedTaps, stats.Postings, stats.Payments, stats.TotalBalance)
	return nil
}

func cmdMQTTPassword(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mqtt-password", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := dataFlag(fs)
	device := fs.String("device", "", "print this device's password instead of the server's")
	if fs.Parse(args) != nil {
		return errUsage
	}
	kd, err := keys.Open(filepath.Join(*data, "keys"))
	if err != nil {
		return err
	}
	if *device != "" {
		fmt.Fprintf(stdout, "%s %s\n", *device, broker.DevicePassword(kd.BrokerSecret(), *device))
		return nil
	}
	fmt.Fprintf(stdout, "%s %s\n", broker.DefaultServerUsername, broker.ServerPassword(kd.BrokerSecret()))
	return nil
}

func cmdBroker(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := dataFlag(fs)
	var c broker.Config
	fs.StringVar(&c.Listen, "mqtt", server.DefaultMQTTListen, "plain MQTT listen address")
	fs.StringVar(&c.TLSListen, "mqtt-tls", "", "MQTT-over-TLS listen address")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "TLS certificate (PEM)")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "TLS key (PEM)")
	fs.StringVar(&c.ClientCAFile, "client-ca", "", "require client certificates from this CA (mutual TLS)")
	fs.StringVar(&c.TopicPrefix, "topic-prefix", "", "MQTT topic prefix (default farego)")
	readyFile := fs.String("ready-file", "", "write the listen addresses (JSON) to this file once listening")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	if fs.Parse(args) != nil {
		return errUsage
	}
	log, err := cli.NewLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	kd, err := keys.Open(filepath.Join(*data, "keys"))
	if err != nil {
		return err
	}
	c.Secret, c.Logger = kd.BrokerSecret(), log
	b, err := broker.New(c)
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return fmt.Errorf("MQTT broker on %s: %w (use --mqtt to pick another address)", c.Listen, err)
	}
	defer b.Close()
	log.Info("farego MQTT broker running", "mqtt", b.Addr(), "mqtt_tls", b.TLSAddr())
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
