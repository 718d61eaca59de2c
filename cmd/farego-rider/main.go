// Command farego-rider stands in for the rider's phone app: online it
// registers an account, tops it up (as the payment provider would) and
// fetches a credential (the token seed); offline it shows the one-time
// payment code as text, as a QR PNG or as a QR in the terminal.
//
// The rider's state — account secret, token seed, credential, counter — is
// kept in a file only its owner can read (default ~/.farego-rider.json).
// Nothing prints the seed or the secret.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
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
	"syscall"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
)

const usage = `farego-rider: the rider app stand-in.

Usage:
  farego-rider register   --server URL [--profile adult|child|senior|student] [--name NAME]
  farego-rider topup      --amount MINOR [--reference REF] --operator-token TOKEN|@FILE
  farego-rider credential                 fetch a new credential (token seed); needs the server
  farego-rider code       [--png FILE] [--qr] [--watch] [--now T]    offline
  farego-rider account                    balance and recent rides; needs the server

Every subcommand takes --state FILE (default ~/.farego-rider.json, or
$FAREGO_RIDER_STATE). The state file holds the account secret and the token
seed and is written with mode 0600.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// state is the rider's local file.
type state struct {
	Server     string `json:"server"`
	Account    uint64 `json:"account"`
	Secret     string `json:"secret"`
	TokenSeed  string `json:"token_seed,omitempty"`
	Credential string `json:"credential,omitempty"`
	NotAfter   string `json:"not_after,omitempty"`
	Counter    uint16 `json:"counter"`
}

func defaultStatePath() string {
	if p := os.Getenv("FAREGO_RIDER_STATE"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".farego-rider.json"
	}
	return filepath.Join(home, ".farego-rider.json")
}

func loadState(path string) (*state, error) {
	info, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no rider state at %s: run \"farego-rider register\" first", path)
		}
		return nil, err
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %v): chmod 600 it", path, info.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return &s, nil
}

func (s *state) save(path string) error {
	data, _ := json.MarshalIndent(s, "", "  ")
	return durable.WriteFile(path, append(data, '\n'), 0o600)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	statePath := fs.String("state", defaultStatePath(), "rider state file")
	var err error
	switch cmd {
	case "register":
		server := fs.String("server", "http://127.0.0.1:8080", "settlement server URL")
		profile := fs.String("profile", "adult", "rider profile: adult, child, senior, student")
		name := fs.String("name", "", "display name")
		force := fs.Bool("force", false, "replace an existing state file")
		if fs.Parse(args) != nil {
			return 2
		}
		err = register(ctx, *statePath, *server, *profile, *name, *force, stdout)
	case "topup":
		amount := fs.Int64("amount", 0, "amount in minor units (cents)")
		ref := fs.String("reference", "", "payment provider reference (default: generated)")
		tok := fs.String("operator-token", "", "operator token, or @FILE to read it (stands in for the payment provider)")
		if fs.Parse(args) != nil {
			return 2
		}
		err = topUp(ctx, *statePath, *amount, *ref, *tok, stdout)
	case "credential":
		if fs.Parse(args) != nil {
			return 2
		}
		err = fetchCredential(ctx, *statePath, stdout)
	case "code":
		png := fs.String("png", "", "also write the code as a QR PNG to this file")
		qr := fs.Bool("qr", false, "also draw the code as a QR in the terminal")
		watch := fs.Bool("watch", false, "show a fresh code every minute until interrupted")
		now := fs.String("now", "", "code time: unix seconds or RFC 3339 (default: the clock)")
		if fs.Parse(args) != nil {
			return 2
		}
		err = showCode(ctx, *statePath, *png, *qr, *watch, *now, stdout)
	case "account":
		if fs.Parse(args) != nil {
			return 2
		}
		err = showAccount(ctx, *statePath, stdout)
	default:
		fmt.Fprintf(stderr, "farego-rider: unknown subcommand %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "farego-rider %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func register(ctx context.Context, path, server, profile, name string, force bool, stdout io.Writer) error {
	if _, err := os.Stat(path); err == nil && !force {
		return fmt.Errorf("%s already holds a rider; use --force to replace it (the old account's secret is lost)", path)
	}
	var out struct {
		Account struct {
			ID uint64 `json:"id"`
		} `json:"account"`
		Secret string `json:"secret"`
	}
	server = strings.TrimRight(server, "/")
	if err := call(ctx, "POST", server+"/v1/accounts", "", map[string]string{"profile": profile, "name": name}, &out); err != nil {
		return err
	}
	s := &state{Server: server, Account: out.Account.ID, Secret: out.Secret}
	if err := s.save(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registered account %d (%s); state in %s\n", out.Account.ID, profile, path)
	return nil
}

func topUp(ctx context.Context, path string, amount int64, ref, tok string, stdout io.Writer) error {
	s, err := loadState(path)
	if err != nil {
		return err
	}
	if amount <= 0 {
		return errors.New("--amount must be positive (minor units, e.g. 1000 = 10.00)")
	}
	if strings.HasPrefix(tok, "@") {
		b, err := os.ReadFile(tok[1:])
		if err != nil {
			return err
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		return errors.New("--operator-token is required: top-ups come from the payment provider, which holds it")
	}
	if ref == "" {
		ref = fmt.Sprintf("rider-%d-%d", s.Account, time.Now().UnixNano())
	}
	var out struct {
		Balance  int64  `json:"balance"`
		Currency string `json:"currency"`
	}
	if err := call(ctx, "POST", fmt.Sprintf("%s/v1/accounts/%d/topups", s.Server, s.Account), tok,
		map[string]any{"amount": amount, "reference": ref}, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "account %d balance %s\n", s.Account, money(out.Balance, out.Currency))
	return nil
}

func money(minor int64, cur string) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return fmt.Sprintf("%s%d.%02d %s", sign, minor/100, minor%100, cur)
}

func fetchCredential(ctx context.Context, path string, stdout io.Writer) error {
	s, err := loadState(path)
	if err != nil {
		return err
	}
	var out struct {
		Serial     uint32 `json:"serial"`
		NotAfter   string `json:"not_after"`
		Credential string `json:"credential"`
		TokenSeed  string `json:"token_seed"`
	}
	if err := call(ctx, "POST", fmt.Sprintf("%s/v1/accounts/%d/credentials", s.Server, s.Account), s.Secret, nil, &out); err != nil {
		return err
	}
	s.Credential, s.TokenSeed, s.NotAfter, s.Counter = out.Credential, out.TokenSeed, out.NotAfter, 0
	if err := s.save(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "credential %d for account %d, valid until %s; codes now work offline\n", out.Serial, s.Account, out.NotAfter)
	return nil
}

func (s *state) keys() ([]byte, ed25519.PrivateKey, error) {
	if s.Credential == "" || s.TokenSeed == "" {
		return nil, nil, errors.New("no credential yet: run \"farego-rider credential\" while online")
	}
	cred, err := hex.DecodeString(s.Credential)
	if err != nil {
		return nil, nil, fmt.Errorf("state file: credential: %v", err)
	}
	seed, err := hex.DecodeString(s.TokenSeed)
	if err != nil {
		return nil, nil, errors.New("state file: token seed is not hex")
	}
	k, err := paycode.RiderKey(seed)
	if err != nil {
		return nil, nil, err
	}
	return cred, k, nil
}

// nextCode makes the next code at t and saves the advanced counter first, so
// two codes never share a counter even after a crash.
func nextCode(path string, s *state, t time.Time) (string, error) {
	cred, key, err := s.keys()
	if err != nil {
		return "", err
	}
	c, _ := paycode.ParseCredential(cred)
	if t.After(c.ValidUntil()) {
		return "", fmt.Errorf("the credential expired at %s: run \"farego-rider credential\" while online", c.ValidUntil().Format(time.RFC3339))
	}
	s.Counter++
	if err := s.save(path); err != nil {
		return "", err
	}
	b, err := paycode.MakeCode(cred, key, t, s.Counter)
	if err != nil {
		return "", err
	}
	return paycode.EncodeText(b), nil
}

func showCode(ctx context.Context, path, png string, qr, watch bool, nowFlag string, stdout io.Writer) error {
	s, err := loadState(path)
	if err != nil {
		return err
	}
	now := time.Now
	if nowFlag != "" {
		t, err := parseTime(nowFlag)
		if err != nil {
			return err
		}
		now = func() time.Time { return t }
	}
	for {
		text, err := nextCode(path, s, now())
		if err != nil {
			return err
		}
		if watch {
			fmt.Fprint(stdout, "\x1b[2J\x1b[H") // clear the screen
			fmt.Fprintf(stdout, "account %d — code of %s (refreshes every minute, Ctrl-C to stop)\n\n", s.Account, now().Format("15:04:05"))
		}
		fmt.Fprintln(stdout, text)
		if png != "" || qr {
			q, err := qrcode.New(text, qrcode.Medium)
			if err != nil {
				return err
			}
			if png != "" {
				if err := q.WriteFile(-6, png); err != nil {
					return err
				}
			}
			if qr {
				fmt.Fprint(stdout, q.ToSmallString(false))
			}
		}
		if !watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Minute):
		}
	}
}

func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--now: want unix seconds or RFC 3339, got %q", s)
	}
	return t, nil
}

func showAccount(ctx context.Context, path string, stdout io.Writer) error {
	s, err := loadState(path)
	if err != nil {
		return err
	}
	var out struct {
		ID         uint64 `json:"id"`
		Profile    string `json:"profile"`
		Balance    int64  `json:"balance"`
		Currency   string `json:"currency"`
		Denied     bool   `json:"denied"`
		DenyReason string `json:"deny_reason"`
		Rides      []struct {
			Time   string `json:"time"`
			Route  string `json:"route"`
			Charge int64  `json:"charge"`
			Flag   string `json:"flag"`
		} `json:"recent_rides"`
	}
	if err := call(ctx, "GET", fmt.Sprintf("%s/v1/accounts/%d", s.Server, s.Account), s.Secret, nil, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "account %d (%s): balance %s", out.ID, out.Profile, money(out.Balance, out.Currency))
	if out.Denied {
		fmt.Fprintf(stdout, " — BLOCKED (%s)", out.DenyReason)
	}
	fmt.Fprintln(stdout)
	for _, r := range out.Rides {
		fmt.Fprintf(stdout, "  %s  route %-6s %10s  %s\n", r.Time, r.Route, money(-r.Charge, out.Currency), r.Flag)
	}
	return nil
}

// call makes one API request; a connection failure says that codes still
// work offline.
func call(ctx context.Context, method, url, token string, body, out any) error {
	err := cli.CallJSON(ctx, method, url, token, body, out)
	var ae *cli.APIError
	if err != nil && !errors.As(err, &ae) {
		return fmt.Errorf("the server is not reachable (%v); codes still work offline", err)
	}
	return err
}
