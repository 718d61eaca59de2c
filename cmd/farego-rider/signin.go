package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/farego/farego/cmd/internal/cli"
)

// cmdSignIn takes an account that exists (made in the wallet, or this
// one's after its secret was changed there) into the state file: the
// secret is checked with the server first, and the credential of another
// secret is dropped (changing the secret denies it).
func cmdSignIn(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, statePath := flags("signin")
	server := fs.String("server", "", "settlement server URL (default: the state file's)")
	account := fs.Uint64("account", 0, "account number (default: the state file's)")
	secret := fs.String("secret", "", "the account secret, or @FILE to read it (required)")
	force := fs.Bool("force", false, "replace a state file that holds another account")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if err := cli.Required(fs, stderr, "secret"); err != nil {
		return err
	}
	return signIn(ctx, *statePath, *server, *account, *secret, *force, stdout)
}

func signIn(ctx context.Context, path, server string, account uint64, secret string, force bool, stdout io.Writer) error {
	var old *state
	if _, err := os.Stat(path); err == nil {
		if old, err = loadState(path); err != nil {
			return err
		}
	}
	if old != nil {
		if server == "" {
			server = old.Server
		}
		if account == 0 {
			account = old.Account
		}
		if account != old.Account && !force {
			return fmt.Errorf("%s holds account %d; use --force to replace it with account %d", path, old.Account, account)
		}
	}
	if server == "" || account == 0 {
		return cli.UsageError("--server and --account are required without a state file (%s)", path)
	}
	server = strings.TrimRight(server, "/")
	if err := checkServerURL(server); err != nil {
		return err
	}
	secret, err := cli.Token("--secret", secret)
	if err != nil {
		return err
	}
	var seen struct {
		Viewer string `json:"viewer"`
	}
	// A server that does not answer is named with --server (cli.NoAnswer).
	err = cli.CallJSON(ctx, "GET", fmt.Sprintf("%s/v1/accounts/%d", server, account), secret, nil, &seen)
	if ae := (*cli.APIError)(nil); errors.As(err, &ae) && ae.Status == http.StatusForbidden {
		return fmt.Errorf("account %d does not open with that secret", account)
	}
	if err != nil {
		return err
	}
	// A staff token opens GET /v1/accounts/{id} too (operators and
	// auditors read accounts): it "signed in", went into the rider's state
	// file, and failed only at the next step. (A server from before
	// "viewer" says nothing: taken as the rider.)
	if seen.Viewer != "" && seen.Viewer != "rider" {
		return cli.UsageError("--secret is an API token (the server reads it as an %s's), not account %d's secret: "+
			"a rider signs in with the secret the account was made with", seen.Viewer, account)
	}
	s := &state{Server: server, Account: account, Secret: secret}
	if old != nil && old.Account == account && old.Secret == secret {
		s = old // the same secret: its credential still holds
		s.Server = server
	}
	if err := s.save(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed in to account %d; state in %s\n", account, path)
	if s.Credential == "" {
		fmt.Fprintln(stdout, `next: "farego-rider credential" for a pass`)
	}
	return nil
}
