package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
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
	force := fs.Bool("force", false, "replace a state file that holds another account, or that is damaged (kept as STATE.damaged, or .damaged.2, …)")
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
	damaged := false
	if _, err := os.Stat(path); err == nil {
		if old, err = loadState(path); errors.Is(err, errDamagedState) && force {
			damaged = true // kept aside once the secret is known good
		} else if err != nil {
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
		// Named one by one, with where to find each; a damaged file is
		// there but says neither ("without a state file" sent the rider
		// looking for one).
		var missing []string
		if server == "" {
			missing = append(missing, "--server URL (the wallet's address without /wallet/)")
		}
		if account == 0 {
			missing = append(missing, "--account N (the number the wallet shows)")
		}
		verb, them := "is", "it"
		if len(missing) == 2 {
			verb, them = "are", "them"
		}
		why := fmt.Sprintf("there is no state file at %s to take %s from", path, them)
		if damaged {
			why = fmt.Sprintf("the state file %s is damaged and cannot say %s", path, them)
		}
		return cli.UsageError("%s %s required: %s", strings.Join(missing, " and "), verb, why)
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
	if damaged {
		kept, err := keepDamaged(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "the damaged state file is kept as %s\n", kept)
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

// maxDamagedKept bounds the damaged state files kept beside one state
// file (STATE.damaged, STATE.damaged.2, …).
const maxDamagedKept = 100

// keepDamaged moves the damaged state file at path aside under the first
// free name of STATE.damaged, STATE.damaged.2, …, and returns it. One kept
// before is never replaced: a file cut short may still hold the secret of
// an account the rider signed in to no other way (signin --force into
// another account, then the new file damaged in its turn), and it was
// replaced by the second damaged file.
func keepDamaged(path string) (string, error) {
	for i := 1; i <= maxDamagedKept; i++ {
		kept := path + damagedSuffix
		if i > 1 {
			kept += "." + strconv.Itoa(i)
		}
		if _, err := os.Lstat(kept); err == nil {
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		return kept, durable.Rename(path, kept)
	}
	return "", fmt.Errorf("%s: %d damaged state files are kept beside it already (%s…): remove those no longer needed",
		path, maxDamagedKept, path+damagedSuffix)
}
