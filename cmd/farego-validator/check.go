package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
)

const checkUsage = `Usage: farego-validator check --keyring FILE [--now T] [--max-age D] [--skew D] CODE|-

Verifies one payment code offline against the keyring, exactly as the
validator does (without deny list, duplicate or passback checks, which need
the device's state), and prints one JSON object:

  {"accepted": bool, "reason": "...", "account": N, "serial": N,
   "profile": N, "code_time": N, "key_id": N}

Fields that could not be read are omitted. CODE is the code text, or "-" to
read one line from standard input (CR/LF stripped, nothing else: Base45 has
spaces). Exit status: 0 accepted, 1 rejected, 2 usage or keyring error.

Flags:
`

// checkResult is check's output; the field names are a contract other tools rely on.
type checkResult struct {
	Accepted bool    `json:"accepted"`
	Reason   string  `json:"reason"`
	Account  *uint64 `json:"account,omitempty"`
	Serial   *uint32 `json:"serial,omitempty"`
	Profile  *uint8  `json:"profile,omitempty"`
	CodeTime *uint32 `json:"code_time,omitempty"`
	KeyID    *uint32 `json:"key_id,omitempty"`
}

// maxCodeLine bounds what check reads from standard input.
const maxCodeLine = 4096

func cmdCheck(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), checkUsage); fs.PrintDefaults() }
	keyringPath := fs.String("keyring", "", "issuer keyring file (JSON) (required)")
	nowFlag := fs.String("now", "", "verification time: unix seconds or RFC 3339 (default: the system clock)")
	maxAge := fs.Duration("max-age", paycode.DefaultMaxAge, "how long after its code time a code is accepted")
	skew := fs.Duration("skew", paycode.DefaultSkew, "clock tolerance (0 for none)")
	if err := cli.ParseArgs(fs, args, stdout, stderr); err != nil {
		return cli.Exit("farego-validator check", err, stderr)
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "farego-validator check: "+format+"\n", a...)
		return exitUsage
	}
	if *keyringPath == "" {
		return fail("--keyring is required")
	}
	if fs.NArg() != 1 {
		return fail("want exactly one CODE argument (or - for standard input), got %d", fs.NArg())
	}
	if *maxAge <= 0 {
		return fail("--max-age must be positive, got %s", *maxAge)
	}
	if *skew < 0 {
		return fail("--skew must not be negative, got %s", *skew)
	}
	now := time.Now()
	if *nowFlag != "" {
		t, err := parseTime(*nowFlag)
		if err != nil {
			return fail("--now: %v", err)
		}
		// A digit too many is a time millions of years away: every
		// code "expired", and the technician blames the code.
		if t.Year() < 2000 || t.Year() > 2200 {
			return fail("--now %s is the year %d: give unix seconds (10 digits) or RFC 3339", *nowFlag, t.Year())
		}
		now = t
	}
	kr, err := paycode.LoadKeyring(*keyringPath)
	if err != nil {
		return fail("%v", err)
	}
	if len(kr.Keys()) == 0 {
		// Every code would be "unknown_issuer_key": the file, not the
		// code, is wrong.
		return fail("%s holds no issuer keys (version %d): every code would be refused; use the keyring the fleet's validators have", *keyringPath, kr.Version())
	}
	text := fs.Arg(0)
	if text == "-" {
		text, err = readCodeLine(stdin)
		if err != nil {
			return fail("reading the code from standard input: %v", err)
		}
	}
	p := paycode.Policy{MaxAge: *maxAge, Skew: *skew}
	if *skew == 0 {
		p.Skew = -1 // the library's "none"; zero there means the default
	}
	d := paycode.Verify(text, now, kr, p)
	res := checkResult{Accepted: d.Accepted, Reason: string(d.Reason)}
	if c := d.Code; c != nil {
		profile := uint8(c.Profile)
		res.Account, res.Serial, res.Profile, res.CodeTime, res.KeyID = &c.Account, &c.Serial, &profile, &c.Time, &c.KeyID
	}
	out, _ := json.Marshal(res)
	fmt.Fprintf(stdout, "%s\n", out)
	if !d.Accepted {
		return exitRejected
	}
	return exitOK
}

// readCodeLine reads one line, stripping only its CR/LF terminator.
func readCodeLine(r io.Reader) (string, error) {
	br := bufio.NewReaderSize(r, maxCodeLine+2)
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", fmt.Errorf("line longer than %d bytes", maxCodeLine)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if len(line) == 0 && errors.Is(err, io.EOF) {
		return "", errors.New("no input")
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// parseTime reads unix seconds or RFC 3339.
func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want unix seconds or RFC 3339 (2026-01-01T01:00:50Z), got %q", s)
	}
	return t, nil
}
