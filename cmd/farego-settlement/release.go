package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/release"
	"github.com/farego/farego/sync/wire"
)

const releaseUsage = `Usage:
  farego-settlement release add     --data DIR [--releases DIR] --file BINARY --version X --arch ARCH [--db DSN]
  farego-settlement release list    --data DIR [--releases DIR]
  farego-settlement release rollout --data DIR [--releases DIR] [--db DSN] (--devices ID,ID | --percent N) [--allow-downgrade] VERSION
  farego-settlement release rollout --data DIR --percent 0 VERSION   (stop it)

add: store a validator binary as release X for ARCH (armv7, arm64, …) in
DATA/releases (or --releases, the directory every settlement instance
shares) and sign its manifest (version, arch, size, SHA-256, date)
with the fleet key. The server serves it at GET /v1/releases/X/ARCH.

rollout: tell the fleet to run VERSION: the devices listed and/or N percent
of the fleet (chosen by a stable hash of the device id; raising N keeps
those already in). A running server publishes it within seconds as the
signed, retained fleet downlink PREFIX/fleet/release. Devices refuse an
older version than the one they run unless --allow-downgrade. --percent 0
with no --devices stops it: devices that installed it keep it. It refuses
a release whose stored binary no longer matches its signed manifest
(damaged on disk after add).
`

func cmdRelease(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := beforeSubcommand(args, releaseUsage, stdout, stderr); done {
		return err
	}
	sub := args[0]
	fs := flag.NewFlagSet("farego-settlement release "+sub, flag.ContinueOnError)
	data := dataFlag(fs)
	db := dbFlag(fs)
	releases := fs.String("releases", "", "the releases directory (default DATA/releases; shared by every settlement instance)")
	var file, version, arch, devices *string
	var percent *int
	var downgrade *bool
	switch sub {
	case "add":
		file = fs.String("file", "", "the validator binary (required)")
		version = fs.String("version", "", "its version, e.g. 1.4.0 (required)")
		arch = fs.String("arch", "", "its architecture: armv7, arm64, amd64 (required)")
	case "rollout":
		devices = fs.String("devices", "", "comma-separated device ids to update")
		percent = fs.Int("percent", 0, "percentage of the fleet to update (0-100)")
		downgrade = fs.Bool("allow-downgrade", false, "let devices on a newer version install this one")
	case "list":
	default:
		fmt.Fprint(stderr, releaseUsage)
		return cli.Usagef(stderr, "farego-settlement release", "unknown subcommand %q", sub)
	}
	parse := cli.Parse // only rollout takes an argument (the version)
	if sub == "rollout" {
		parse = cli.ParseArgs
	}
	if err := parse(fs, args[1:], stdout, stderr); err != nil {
		return err
	}
	kd, err := keys.Open(filepath.Join(*data, "keys"))
	if err != nil {
		return err
	}
	dir := *releases
	if dir == "" {
		dir = filepath.Join(*data, server.ReleasesDir)
	}
	store := release.Open(dir, kd.FleetKey())
	switch sub {
	case "list":
		rels, err := store.List()
		if err != nil {
			return err
		}
		ro, err := store.Rollout()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tARCH\tSIZE\tSHA-256\tDATE")
		for _, r := range rels {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Version, r.Arch, r.Size, r.SHA256, r.Date.Format(time.RFC3339))
		}
		tw.Flush()
		if ro != nil {
			fmt.Fprintf(stdout, "\nrollout %d: version %s to %d%% of the fleet and %d listed devices (allow downgrade %t), set %s\n",
				ro.Seq, ro.Version, ro.Percent, len(ro.Devices), ro.AllowDowngrade, ro.At.Format(time.RFC3339))
		}
		return nil
	case "add":
		if err := cli.Required(fs, stderr, "file", "version", "arch"); err != nil {
			return err
		}
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := openLedger(ctx, *data, *db)
		if err != nil {
			return err
		}
		defer st.Close()
		rel, err := store.Add(f, *version, *arch, time.Now())
		if err != nil {
			return err
		}
		if err := st.Audit(ctx, ledger.AuditEntry{Actor: cliActor(), Action: "release_add", Target: rel.Version + "/" + rel.Arch,
			Detail: fmt.Sprintf("size %d sha256 %s", rel.Size, rel.SHA256)}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "release %s for %s: %d bytes, sha256 %s (signed with the fleet key)\n", rel.Version, rel.Arch, rel.Size, rel.SHA256)
		return nil
	}
	// rollout
	if fs.NArg() != 1 {
		return cli.Usagef(stderr, fs.Name(), "give the release version")
	}
	var ids []string
	if *devices != "" {
		for _, id := range strings.Split(*devices, ",") {
			if id = strings.TrimSpace(id); id != "" {
				ids = append(ids, id)
			}
		}
	}
	percentSet := false
	fs.Visit(func(f *flag.Flag) { percentSet = percentSet || f.Name == "percent" })
	if len(ids) == 0 && !percentSet {
		return cli.Usagef(stderr, fs.Name(), "give --devices or --percent (--percent 0 alone stops the rollout)")
	}
	if *percent < 0 || *percent > 100 {
		return cli.Usagef(stderr, fs.Name(), "--percent %d: want 0 to 100", *percent)
	}
	st, err := openLedger(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	// A listed device the ledger does not know is a typo: the rollout
	// would name it and reach nobody by it.
	var notes []string // listed devices that will not install it
	for _, id := range ids {
		d, err := st.Device(ctx, id)
		if errors.Is(err, ledger.ErrNotFound) {
			return fmt.Errorf("--devices: no device %q is registered: nothing rolled out", id)
		} else if err != nil {
			return err
		}
		switch c, ok := wire.CompareVersions(fs.Arg(0), d.Status.Software); {
		case !ok:
		case c == 0:
			notes = append(notes, fmt.Sprintf("%s runs %s already: nothing to install", id, d.Status.Software))
		case c < 0 && !*downgrade:
			notes = append(notes, fmt.Sprintf("warning: %s runs %s, newer than %s: it refuses this rollout and reports the update "+
				"failed (--allow-downgrade to take it back)", id, d.Status.Software, fs.Arg(0)))
		}
	}
	ro, err := store.SetRollout(fs.Arg(0), ids, *percent, *downgrade, time.Now())
	if err != nil {
		return err
	}
	if err := st.Audit(ctx, ledger.AuditEntry{Actor: cliActor(), Action: "release_rollout", Target: ro.Version,
		Detail: fmt.Sprintf("seq %d percent %d devices %d allow_downgrade %t", ro.Seq, ro.Percent, len(ro.Devices), ro.AllowDowngrade)}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rollout %d: version %s to %d%% of the fleet and %d listed devices\n", ro.Seq, ro.Version, ro.Percent, len(ro.Devices))
	if ro.Percent == 0 && len(ro.Devices) == 0 {
		// The API took {"percent": 0}; the CLI refused it, and had no
		// way to stop a rollout gone wrong half way.
		fmt.Fprintf(stdout, "stopped: no device starts installing %s from now on; those that installed it keep it "+
			"(roll out the version before with --allow-downgrade to take them back), one downloading it finishes\n", ro.Version)
	}
	for _, n := range notes {
		fmt.Fprintln(stdout, n)
	}
	// Devices do not report their architecture: say which builds there
	// are, so that an operator who added armv7 alone knows why an arm64
	// bus says "no build for arm64".
	if rels, err := store.List(); err == nil {
		var archs []string
		for _, r := range rels {
			if r.Version == ro.Version {
				archs = append(archs, r.Arch)
			}
		}
		fmt.Fprintf(stdout, "builds of %s: %s (a device of another architecture keeps its version and reports \"no build for\" its own: release add --arch)\n",
			ro.Version, strings.Join(archs, ", "))
	}
	return nil
}
