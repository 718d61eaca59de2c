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
	"syscall"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
)

const usage = `farego-rider: the rider app stand-in.

Usage:
  farego-rider register   --server URL [--profile adult|child|senior|student] [--name NAME]
                          [--operator-token TOKEN|@FILE]  (confirms a reduced profile)
  farego-rider signin     --secret SECRET|@FILE [--account N] [--server URL] [--force]
                          an account made in the wallet, or a secret changed there
  farego-rider topup      --amount MINOR [--reference REF] --operator-token TOKEN|@FILE
  farego-rider credential                 fetch a new credential (token seed); needs the server
  farego-rider code       [--png FILE] [--qr] [--watch] [--now T]    offline
  farego-rider account                    balance and recent rides; needs the server

Every subcommand takes --state FILE (default ~/.farego-rider.json, or
$FAREGO_RIDER_STATE). The state file holds the account secret and the token
seed and is written with mode 0600. "farego-rider SUBCOMMAND --help" lists a
subcommand's flags; "farego-rider --version" prints the version.
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
	err = json.Unmarshal(data, &s)
	if err == nil && (s.Account == 0 || s.Secret == "") {
		err = errors.New("no account or no secret in it")
	}
	if err != nil {
		// Empty or cut short: storage that acknowledged a flush it had
		// not made (many phones' and SD cards') lost the last save with
		// the power. Only the account's secret brings the rider back.
		return nil, fmt.Errorf("%w: %s: %w; sign in again with the account's secret: "+
			"farego-rider signin --secret SECRET|@FILE --account N --server URL --force (the damaged file is kept as %s)",
			errDamagedState, path, err, path+damagedSuffix)
	}
	return &s, nil
}

// errDamagedState is a state file that exists and cannot be read as one.
var errDamagedState = errors.New("the rider state file is damaged")

// damagedSuffix names where signin --force keeps a damaged state file.
const damagedSuffix = ".damaged"

func (s *state) save(path string) error {
	data, _ := json.MarshalIndent(s, "", "  ")
	return durable.WriteFile(path, append(data, '\n'), 0o600)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Dispatch(ctx, "farego-rider", usage, map[string]cli.Command{
		"register": cmdRegister, "signin": cmdSignIn, "topup": cmdTopUp, "credential": cmdCredential, "code": cmdCode, "account": cmdAccount,
	}, args, stdout, stderr)
}

// flags returns the flag set of a subcommand, with the --state flag every
// one takes.
func flags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("farego-rider "+name, flag.ContinueOnError)
	return fs, fs.String("state", defaultStatePath(), "rider state file")
}

func (s *state) keys() ([]byte, ed25519.PrivateKey, error) {
	if s.Credential == "" || s.TokenSeed == "" {
		return nil, nil, errors.New("no credential yet: run \"farego-rider credential\" while online")
	}
	cred, err := hex.DecodeString(s.Credential)
	if err != nil {
		return nil, nil, fmt.Errorf("state file: credential: %w", err)
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

// call makes one API request, with the account's secret, to the server
// the state file at path names (account and credential take no --server,
// yet a server that did not answer was "check --server"). A connection
// failure names the state file, and says whether codes work offline: not
// without a credential valid now (it said they did, to a rider fetching
// the first).
func (s *state) call(ctx context.Context, path, method, url string, body, out any) error {
	err := cli.CallJSON(ctx, method, url, s.Secret, body, out)
	var ae *cli.APIError
	if err == nil || errors.As(err, &ae) {
		return err
	}
	return fmt.Errorf("the server is not reachable (%s); %s", s.noAnswer(path, err), s.offline())
}

// noAnswer is err, a request the state file's server did not answer, with
// where that server's address comes from.
func (s *state) noAnswer(path string, err error) string {
	var na *cli.NoAnswer
	if errors.As(err, &na) {
		return na.Hint(fmt.Sprintf("its address is the one %s holds, from register or signin: farego-rider signin --secret SECRET|@FILE --server URL changes it", path))
	}
	return err.Error()
}

// offline says whether the rider can still pay while the server is away.
func (s *state) offline() string {
	if cred, _, err := s.keys(); err == nil {
		if c, err := paycode.ParseCredential(cred); err == nil && time.Now().Before(c.ValidUntil()) {
			return fmt.Sprintf("codes still work offline (credential valid until %s)", c.ValidUntil().Format(time.RFC3339))
		}
	}
	return `no codes offline without a credential valid now: run "farego-rider credential" once the server answers`
}
