// Command farego-validator is the program that runs on the bus validator.
//
//	farego-validator check --keyring FILE [--now T] [--max-age D] [--skew D] CODE
//	farego-validator run --config FILE
//	farego-validator reset-queue --config FILE --i-understand
//	farego-validator ctl [--socket PATH] status|route ROUTE|vehicle NAME
//	farego-validator selftest --config FILE
//
// See the README for the full reference.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/farego/farego/cmd/internal/cli"
)

// Exit codes shared by the subcommands.
const (
	exitOK       = 0
	exitRejected = 1 // check: the code was refused
	exitUsage    = 2 // bad arguments, unreadable keyring or config
	exitFailure  = 1 // run: the agent stopped on an error
)

const usage = `farego-validator: the farego bus validator agent.

Usage:
  farego-validator check --keyring FILE [--now T] [--max-age D] [--skew D] CODE|-
  farego-validator run --config FILE
  farego-validator reset-queue --config FILE --i-understand
  farego-validator ctl [--socket PATH] status|route ROUTE|vehicle NAME
  farego-validator selftest --config FILE
  farego-validator version   (or --version)

Subcommands:
  check        verify one payment code offline and print the decision as JSON
  run          run the validator: scanners, offline decisions, durable queue, sync
  reset-queue  give up damaged queue files nothing can be read from (the
               validator is out of service until then)
  ctl          show the running validator's state, set its route or vehicle
  selftest     check clock, scanners, outputs, documents, queue, disk and broker
  version      print the software version

Run "farego-validator SUBCOMMAND --help" for the subcommand's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "check":
		return cmdCheck(args[1:], stdin, stdout, stderr)
	case "run":
		return cmdRun(ctx, args[1:], stdin, stdout, stderr)
	case "reset-queue":
		return cmdResetQueue(args[1:], stdout, stderr)
	case "ctl":
		return cmdCtl(args[1:], stdout, stderr)
	case "selftest":
		return cmdSelftest(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		cli.PrintVersion(stdout, "farego-validator")
		return exitOK
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "farego-validator: %s\n\n%s", cli.UnknownSubcommand(args[0]), usage)
		return exitUsage
	}
}
