package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/farego/farego/queue"
	"github.com/farego/farego/queue/durable"
)

const resetUsage = `Usage: farego-validator reset-queue --config FILE --i-understand

Gives up the damaged queue files of DATA_DIR/validator.db that nothing could
be read from (validator.db.corrupt-<time>): the validator stays out of
service (queue_damaged) while one is pending, because the taps it held may
never reach the settlement server. Each such file is renamed to
validator.db.corrupt-<time>.reset and kept for forensics; a running
validator notices within seconds and goes back into service. Damaged files
that can still be read are left alone: the validator salvages them itself
at its next start.

Without --i-understand it only lists what it would do.

Flags:
`

func cmdResetQueue(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reset-queue", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), resetUsage); fs.PrintDefaults() }
	configPath := configFlag(fs)
	sure := fs.Bool("i-understand", false, "the taps in the unreadable files are given up: do it")
	if code, ok := parseConfigArgs(fs, configPath, args, stdout, stderr); !ok {
		return code
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "farego-validator reset-queue: %v\n", err)
		return exitUsage
	}
	path := filepath.Join(cfg.path(cfg.DataDir), queueFile)
	damaged, err := damagedFiles(path)
	if err != nil {
		fmt.Fprintf(stderr, "farego-validator reset-queue: %v\n", err)
		return exitFailure
	}
	if len(damaged) == 0 {
		// reset-queue acts on files the validator moved aside; the queue
		// file in place is checked at every start (and by selftest).
		fmt.Fprintf(stdout, "no damaged queue file moved aside: nothing to reset (the validator checks %s at every start and moves a damaged one aside; "+
			"farego-validator selftest checks it now)\n", path)
		return exitOK
	}
	var unreadable []string
	for _, f := range damaged {
		s, err := queue.OpenSalvage(f)
		switch {
		case errors.Is(err, queue.ErrUnsalvageable):
			unreadable = append(unreadable, f)
		case err != nil:
			fmt.Fprintf(stderr, "farego-validator reset-queue: %s: %v\n", f, err)
			return exitFailure
		default:
			fmt.Fprintf(stdout, "%s: readable (%d unsent records); the validator salvages it at its next start\n", f, s.Pending)
			s.Close()
		}
	}
	if len(unreadable) == 0 {
		fmt.Fprintln(stdout, "no unreadable damaged queue file: nothing to reset")
		return exitOK
	}
	if !*sure {
		for _, f := range unreadable {
			fmt.Fprintf(stdout, "%s: nothing can be read from it; would be renamed to %s\n", f, filepath.Base(f+resetSuffix))
		}
		fmt.Fprintln(stderr, "farego-validator reset-queue: --i-understand is required: the taps in these files, if any, will never be sent")
		return exitUsage
	}
	for _, f := range unreadable {
		if err := durable.Rename(f, f+resetSuffix); err != nil {
			fmt.Fprintf(stderr, "farego-validator reset-queue: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s: given up (kept as %s)\n", f, filepath.Base(f+resetSuffix))
	}
	return exitOK
}
