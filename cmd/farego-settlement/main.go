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
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/ledger"
)

const usage = `farego-settlement: the farego settlement server.

Usage:
  farego-settlement init   --data DIR [--fleet-key FILE] [--fares FILE]
  farego-settlement run    --data DIR [--http ADDR] [--mqtt ADDR] [--broker URL] [--db DSN] ...
  farego-settlement verify --data DIR [--db DSN]
  farego-settlement token  create|list|revoke|payments|refunds --data DIR ...
  farego-settlement device revoke --data DIR ID
  farego-settlement account show|topup --data DIR ACCOUNT ...
  farego-settlement tap void --data DIR --reason TEXT TAP-ID
  farego-settlement payment refund --data DIR --merchant ID --reason TEXT ORDER [AMOUNT]
  farego-settlement restored --data DIR [--margin N] [--fares FILE]...
  farego-settlement release add|list|rollout --data DIR ...
  farego-settlement mqtt-passwd --data DIR [--db DSN] [--out FILE]
  farego-settlement mqtt-password --data DIR
  farego-settlement broker --data DIR [--mqtt ADDR] [--mqtt-tls ADDR ...]
  farego-settlement version   (or --version)

Subcommands:
  init     create the key directory (issuer root secret, fleet key, operator
           token, broker secret, keyring) and the ledger; refuses to overwrite
  run      serve: HTTP API, MQTT ingest and downlinks, embedded broker
  verify   check every ledger invariant (balances = postings, no tap charged
           twice, …); exit 1 on a finding
  broker   run only farego's MQTT broker (the embedded one, with its access
           rules), for a server started with --broker
  token    create, list and revoke API tokens (operator, payments, merchant,
           auditor); list the online payments a token made
  device   revoke a validator
  account  show an account (balance, passes, rides, postings, shop
           payments); top it up (--reference: once only)
  tap      void a wrongly charged fare (its day rated again without it)
  payment  refund (part of) a shop's online payment to the rider
  release  publish a validator release (signed with the fleet key) and
           roll it out to the fleet
  restored after restoring the ledger from a backup: move the id counters
           past anything handed out since (see the README's restore
           procedure)
  mqtt-passwd
           write a Mosquitto password file: the server and every registered,
           unrevoked device (their passwords are random, kept as hashes)
  mqtt-password
           print the settlement server's own MQTT password, alone (for
           FAREGO_BROKER_PASSWORD, with --broker-username farego-server
           at an external broker)

Run "farego-settlement SUBCOMMAND --help" for the flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startCPUProfile()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Dispatch(ctx, "farego-settlement", usage, map[string]cli.Command{
		"init":   cmdInit,
		"run":    cmdRun,
		"verify": cmdVerify,
		"broker": cmdBroker,
		"mqtt-password": func(_ context.Context, args []string, stdout, stderr io.Writer) error {
			return cmdMQTTPassword(args, stdout, stderr)
		},
		"mqtt-passwd": cmdMQTTPasswd,
		"token":       cmdToken,
		"device":      cmdDevice,
		"account":     cmdAccount,
		"tap":         cmdTap,
		"payment":     cmdPayment,
		"restored":    cmdRestored,
		"release":     cmdRelease,
	}, args, stdout, stderr)
}

func dataFlag(fs *flag.FlagSet) *string {
	return fs.String("data", "farego-data", "data directory (ledger.db and keys/)")
}

func dbFlag(fs *flag.FlagSet) *string {
	return fs.String("db", "", "ledger DSN (default sqlite:DATA/ledger.db; postgres://… for PostgreSQL)")
}

// noLedgerHint says what to do about a ledger that is not there (only init
// makes one: see ledger.Options.MustExist).
func noLedgerHint(err error) error {
	if errors.Is(err, ledger.ErrNoLedger) {
		return fmt.Errorf("%w: check --data (or --db); farego-settlement init makes a new one, "+
			"and a lost one is restored from its backup (see the README's restore procedure)", err)
	}
	return err
}

// beforeSubcommand handles the arguments of a command with subcommands when
// they name none: nothing (the usage on stderr, cli.ErrUsage) or -h/--help
// (the usage on stdout, nil). done: the command returns err.
func beforeSubcommand(args []string, usage string, stdout, stderr io.Writer) (done bool, err error) {
	switch {
	case len(args) == 0:
		fmt.Fprint(stderr, usage)
		return true, cli.ErrUsage
	case args[0] == "-h" || args[0] == "--help":
		fmt.Fprint(stdout, usage)
		return true, nil
	}
	return false, nil
}

// cliActor names who ran a command in the audit trail: "cli:USER@HOST",
// the user being the one sudo was run by (SUDO_USER: the operator's
// commands run as the service's user, sudo -u farego-settlement) or the
// account running it; "cli" alone when neither is known. Every command
// was audited as "cli": with several operators, nobody could tell who
// revoked a device or created a token.
func cliActor() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	if name == "" {
		return "cli"
	}
	if host, err := os.Hostname(); err == nil && host != "" {
		name += "@" + host
	}
	// Printable and bounded as the ledger keeps an actor (128 bytes).
	return "cli:" + strings.TrimSpace(record.Printable(name, 120))
}
