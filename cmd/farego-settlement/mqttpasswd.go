package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/server/broker"
)

// cmdMQTTPasswd writes a Mosquitto password file: the settlement server's
// user and every registered, unrevoked device with its password hash (the
// ledger keeps device passwords only as "$7$" hashes, Mosquitto's format).
// Regenerate it and send Mosquitto SIGHUP after registering or revoking a
// device.
//
// With --out FILE the file is replaced whole or not at all (a temporary
// file beside it, renamed over it), keeping its mode and owner (a new one
// is 0600, the caller's): written with the shell's "> FILE", a failure (the database out of reach) left
// Mosquitto's live password file empty or cut short, and the reload that
// follows refused every device and the settlement server itself.
func cmdMQTTPasswd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-settlement mqtt-passwd", flag.ContinueOnError)
	data := dataFlag(fs)
	db := dbFlag(fs)
	out := fs.String("out", "", "replace this password file atomically, keeping its mode and owner; a new one is 0600, yours: give it to Mosquitto's user once (default: standard output)")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	kd, st, err := openKeysAndLedger(ctx, *data, *db, false)
	if err != nil {
		return err
	}
	defer st.Close()
	ds, err := st.Devices(ctx)
	if err != nil {
		return err
	}
	// Nothing is written until every line is: an error leaves no partial file.
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s:%s\n", broker.DefaultServerUsername, broker.HashPassword(broker.ServerPassword(kd.BrokerSecret())))
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
		fmt.Fprintf(&b, "%s:%s\n", d.ID, a.MQTTHash)
		n++
	}
	if *out == "" {
		if _, err := stdout.Write(b.Bytes()); err != nil {
			return err
		}
	} else if created, err := replacePasswordFile(*out, b.Bytes()); err != nil {
		return fmt.Errorf("%s: %w (the file is unchanged)", *out, err)
	} else if created {
		fmt.Fprintf(stderr, "%s is new: mode %04o, yours; give it to Mosquitto's user (chown mosquitto: %s), "+
			"or to its group (chgrp mosquitto %s && chmod 0640 %s): later runs keep its mode and owner\n",
			*out, newPasswordFileMode, *out, *out, *out)
	}
	fmt.Fprintf(stderr, "wrote the server and %d devices (revoked devices left out)\n", n)
	return nil
}

// newPasswordFileMode is a new password file's: it holds the devices' and
// the server's password hashes, for Mosquitto alone (0644, the shell's
// redirection's, let every local account take them away to guess at).
const newPasswordFileMode = 0o600

// replacePasswordFile replaces path with data atomically and durably. An
// existing file keeps its mode and owner (Mosquitto reads it as its own
// user: a root-owned 0600 file fails its reload); a new one is
// newPasswordFileMode, the caller's (created reports it, to say that
// Mosquitto's user must be given it).
func replacePasswordFile(path string, data []byte) (created bool, err error) {
	mode := fs.FileMode(newPasswordFileMode)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	} else if !os.IsNotExist(err) {
		return false, err
	} else {
		created = true
	}
	return created, durable.WriteFileKeepOwner(path, data, mode)
}
