package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
)

func cmdRegister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, statePath := flags("register")
	server := fs.String("server", "http://127.0.0.1:8080", "settlement server URL")
	profile := fs.String("profile", "adult", "rider profile: adult, child, senior, student")
	name := fs.String("name", "", "display name")
	force := fs.Bool("force", false, "replace an existing state file")
	tok := fs.String("operator-token", "", "operator or payment-provider token, or @FILE to read it: confirms a reduced profile at once "+
		"(without it a child, senior or student profile waits for their confirmation, and credentials carry the adult fare meanwhile)")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if _, err := paycode.ParseProfile(*profile); err != nil {
		return cli.UsageError("--profile %q: want adult, child, senior or student", *profile)
	}
	return register(ctx, *statePath, *server, *profile, *name, *tok, *force, stdout)
}

func register(ctx context.Context, path, server, profile, name, tok string, force bool, stdout io.Writer) error {
	if _, err := os.Stat(path); err == nil && !force {
		return fmt.Errorf("%s already holds a rider; use --force to replace it (the old account's secret is lost)", path)
	}
	tok, err := cli.Token("--operator-token", tok)
	if err != nil {
		return err
	}
	var out struct {
		Account struct {
			ID             uint64 `json:"id"`
			Profile        string `json:"profile"`
			ProfilePending bool   `json:"profile_pending"`
		} `json:"account"`
		Secret string `json:"secret"`
	}
	server = strings.TrimRight(server, "/")
	if err := checkServerURL(server); err != nil {
		return err
	}
	// The account is made on the server before the state is written: find
	// out first whether it can be (a missing directory, a read-only one),
	// or the account would be made with its secret lost.
	if err := checkWritable(path); err != nil {
		return err
	}
	err = cli.CallJSON(ctx, "POST", server+"/v1/accounts", tok, map[string]string{"profile": profile, "name": name}, &out)
	if ae := (*cli.APIError)(nil); err != nil && !errors.As(err, &ae) {
		// No account yet, so no codes to fall back on (call says they
		// still work offline).
		return fmt.Errorf("the server is not reachable (%w): registering needs it", err)
	}
	if err != nil {
		return err
	}
	s := &state{Server: server, Account: out.Account.ID, Secret: out.Secret}
	if err := s.save(path); err != nil {
		return fmt.Errorf("account %d was made, but its state could not be written (%w): its secret is lost; register again", out.Account.ID, err)
	}
	fmt.Fprintf(stdout, "registered account %d (%s); state in %s\n", out.Account.ID, out.Account.Profile, path)
	if out.Account.ProfilePending {
		fmt.Fprintf(stdout, "the %s fare waits for the operator's confirmation; credentials carry the adult fare until then\n",
			out.Account.Profile)
	}
	return nil
}

// checkServerURL refuses a --server that is not an http(s) URL (a bare
// host:port was taken for a URL with no scheme and failed as unreachable),
// or that is the address of the server's wallet or console page (the demo
// prints the wallet's: the API answered 404).
func checkServerURL(server string) error {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cli.UsageError("--server %q is not the server's URL: give it like http://127.0.0.1:8080 or https://fares.example.net", server)
	}
	for _, page := range []string{"/wallet", "/console"} {
		if strings.HasSuffix(u.Path, page) {
			u.Path = strings.TrimSuffix(u.Path, page)
			return cli.UsageError("--server %q is the address of the server's %s page: give the server's own, %s", server, page[1:], u.String())
		}
	}
	return nil
}

// checkWritable reports whether a file can be written at path (its
// directory exists and takes new files), leaving nothing behind.
func checkWritable(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".farego-rider-check-*")
	if err != nil {
		return fmt.Errorf("the state file %s cannot be written: %w", path, err)
	}
	f.Close()
	return os.Remove(f.Name())
}
