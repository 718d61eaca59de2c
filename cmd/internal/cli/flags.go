package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/farego/farego/agent"
)

// ErrUsage is a usage error (a bad or missing flag or argument); the
// message has already been written. Exit maps it to status 2.
var ErrUsage = errors.New("cli: usage")

// Usagef writes "prog: message" to w and returns ErrUsage.
func Usagef(w io.Writer, prog, format string, a ...any) error {
	fmt.Fprintf(w, prog+": "+format+"\n", a...)
	return ErrUsage
}

// UsageError is a usage error found after the flags were parsed (a value
// a flag cannot take): Exit writes "prog: message" and exits 2.
func UsageError(format string, a ...any) error {
	return usageError{fmt.Sprintf(format, a...)}
}

type usageError struct{ msg string }

func (e usageError) Error() string        { return e.msg }
func (e usageError) Is(target error) bool { return target == ErrUsage }

// Parse parses args with fs the way every farego command does: -h, -help
// and --help print the flags to stdout and return flag.ErrHelp (exit 0);
// a bad flag prints flag's message and the flags to stderr and returns
// ErrUsage (exit 2). Flags may come after arguments: Go's flag package
// stops at the first argument and would leave the flags after it unread
// (`verify ledger.db --data DIR` checked the default directory); Parse
// reads them all ("--" ends the flags). A command that takes no
// arguments gets a usage error naming the first one; a command that
// takes some uses ParseArgs and finds them in fs.Args().
func Parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	return parse(fs, args, stdout, stderr, false)
}

// ParseArgs is Parse for a command that takes arguments: they are left
// in fs.Args(), for the command to check.
func ParseArgs(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	return parse(fs, args, stdout, stderr, true)
}

func parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, takesArgs bool) error {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	var pos []string
	rest := args
	var err error
	for {
		if err = fs.Parse(rest); err != nil {
			break
		}
		next := fs.Args()
		if len(next) == 0 {
			break
		}
		if used := len(rest) - len(next); used > 0 && rest[used-1] == "--" {
			pos = append(pos, next...) // after "--", all are arguments
			break
		}
		pos, rest = append(pos, next[0]), next[1:]
	}
	if err == nil {
		err = fs.Parse(append([]string{"--"}, pos...)) // fs.Args() = the arguments
	}
	fs.SetOutput(stderr)
	switch {
	case err == nil:
		if !takesArgs && fs.NArg() > 0 {
			return Usagef(stderr, fs.Name(), "unexpected argument %q (this command takes flags only; see --help)", fs.Arg(0))
		}
		return nil
	case errors.Is(err, flag.ErrHelp):
		_, _ = io.Copy(stdout, &buf)
		return flag.ErrHelp
	default:
		_, _ = io.Copy(stderr, &buf)
		return ErrUsage
	}
}

// Required returns a usage error naming the first of the flags that is
// empty (never set, or set to ""), after writing "prog: --NAME is
// required" to stderr.
func Required(fs *flag.FlagSet, stderr io.Writer, names ...string) error {
	for _, n := range names {
		f := fs.Lookup(n)
		if f == nil {
			panic("cli.Required: no flag " + n)
		}
		if f.Value.String() == "" {
			return Usagef(stderr, fs.Name(), "--%s is required (see --help)", n)
		}
	}
	return nil
}

// ErrInterrupted is a one-shot command's error when Ctrl-C (or SIGTERM)
// cut it short, after it said what it had done: Exit gives 130, as a
// shell does for a command that SIGINT ended.
var ErrInterrupted = errors.New("interrupted")

// Exit returns the exit status for a command's error: 0 for nil and
// flag.ErrHelp, 2 for ErrUsage (already reported; a UsageError is written
// here), 130 for ErrInterrupted, else 1, after writing "prog: err" to
// stderr.
func Exit(prog string, err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrInterrupted):
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 130
	case errors.Is(err, ErrUsage):
		if ue := (usageError{}); errors.As(err, &ue) {
			fmt.Fprintf(stderr, "%s%s: %v\n", ErrorPrefix(stderr), prog, err)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "%s%s: %v\n", ErrorPrefix(stderr), prog, err)
		return 1
	}
}

// Version is the software version: agent.Version when the build stamped
// one (make build), else what the Go toolchain recorded (a module version
// for go install, the VCS revision for a build in a checkout), else "dev".
func Version() string {
	if agent.Version != "" && agent.Version != "dev" {
		return agent.Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return versionOf(info)
}

func versionOf(info *debug.BuildInfo) string {
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return rev
}

// IsHelp reports whether arg asks for help.
func IsHelp(arg string) bool {
	switch strings.TrimLeft(arg, "-") {
	case "h", "help":
		return true
	}
	return false
}

// IsVersion reports whether arg asks for the version.
func IsVersion(arg string) bool { return arg == "--version" || arg == "-version" || arg == "version" }

// PrintVersion writes "prog VERSION".
func PrintVersion(w io.Writer, prog string) { fmt.Fprintln(w, prog, Version()) }

// Command is one subcommand: it parses its own flags (with Parse) and
// returns nil, flag.ErrHelp, ErrUsage or a runtime error.
type Command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Dispatch runs the subcommand named by args[0] and returns the exit
// status: usage and 2 without a subcommand or with an unknown one, usage
// and 0 for help, "prog VERSION" and 0 for --version or version, and Exit's
// status for the subcommand's error.
func Dispatch(ctx context.Context, prog, usage string, cmds map[string]Command, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if cmd, ok := cmds[args[0]]; ok {
		return Exit(prog+" "+args[0], cmd(ctx, args[1:], stdout, stderr), stderr)
	}
	switch {
	case IsVersion(args[0]):
		PrintVersion(stdout, prog)
		return 0
	case IsHelp(args[0]):
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "%s: %s\n\n%s", prog, UnknownSubcommand(args[0]), usage)
	return 2
}

// UnknownSubcommand says what is wrong with arg, given where a subcommand
// goes: a flag there ("prog --data x run") is named as a flag that must
// follow its subcommand, not as an unknown subcommand "--data".
func UnknownSubcommand(arg string) string {
	if strings.HasPrefix(arg, "-") && len(arg) > 1 {
		return fmt.Sprintf("flag %q before the subcommand: give the subcommand first, its flags after it", arg)
	}
	return fmt.Sprintf("unknown subcommand %q", arg)
}
