package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	l, err := NewLogger(&b, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", 1)
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, `"msg":"shown"`) {
		t.Errorf("log output %q", s)
	}
	if _, err := NewLogger(&b, "loud", ""); err == nil {
		t.Error("bad level accepted")
	}
	if _, err := NewLogger(&b, "", "xml"); err == nil {
		t.Error("bad format accepted")
	}
}

func TestVersionOf(t *testing.T) {
	for _, tc := range []struct {
		info debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}, "0123456789ab-dirty"},
		{debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}}}, "abc"},
	} {
		if got := versionOf(&tc.info); got != tc.want {
			t.Errorf("versionOf(%+v) = %q, want %q", tc.info, got, tc.want)
		}
	}
	if Version() == "" {
		t.Error("Version is empty")
	}
}

// TestParseReadsFlagsAfterArguments: Go's flag package stops at the first
// argument, so `token revoke ID --data DIR` used the default directory
// and `verify ledger.db` checked another ledger than the user named. Parse
// reads every flag, refuses arguments where a command takes none, and
// ParseArgs leaves them to the command; "--" ends the flags.
func TestParseReadsFlagsAfterArguments(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string, *bool) {
		fs := flag.NewFlagSet("prog sub", flag.ContinueOnError)
		return fs, fs.String("data", "default", ""), fs.Bool("v", false, "")
	}
	for _, c := range []struct {
		args []string
		data string
		v    bool
		rest []string
	}{
		{[]string{"ID", "--data", "d"}, "d", false, []string{"ID"}},
		{[]string{"--v", "A", "--data=d", "B"}, "d", true, []string{"A", "B"}},
		{[]string{"A", "--", "--data", "x"}, "default", false, []string{"A", "--data", "x"}},
		{[]string{"-", "--v"}, "default", true, []string{"-"}},
		{nil, "default", false, nil},
	} {
		fs, data, v := newFS()
		var errb bytes.Buffer
		if err := ParseArgs(fs, c.args, io.Discard, &errb); err != nil {
			t.Fatalf("ParseArgs(%q): %v %s", c.args, err, errb.String())
		}
		if *data != c.data || *v != c.v || !slices.Equal(fs.Args(), c.rest) {
			t.Errorf("ParseArgs(%q): data %q v %v args %q; want %q %v %q", c.args, *data, *v, fs.Args(), c.data, c.v, c.rest)
		}
	}
	fs, _, _ := newFS()
	var errb bytes.Buffer
	if err := Parse(fs, []string{"--data", "d", "ledger.db"}, io.Discard, &errb); !errors.Is(err, ErrUsage) ||
		!strings.Contains(errb.String(), `"ledger.db"`) {
		t.Errorf("Parse with a stray argument: %v, %q; want a usage error naming it", err, errb.String())
	}
	fs, _, _ = newFS()
	errb.Reset()
	if err := ParseArgs(fs, []string{"ID", "--nope"}, io.Discard, &errb); !errors.Is(err, ErrUsage) || !strings.Contains(errb.String(), "nope") {
		t.Errorf("an unknown flag after an argument: %v, %q", err, errb.String())
	}
}

// TestToken: a token as given, or read from @FILE (trimmed); a missing
// file's error names the flag.
func TestToken(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(f, []byte("fgt_abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{"fgt_x": "fgt_x", "@" + f: "fgt_abc", "": ""} {
		if got, err := Token("--operator-token", in); err != nil || got != want {
			t.Errorf("Token(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := Token("--operator-token", "@"+f+".missing"); err == nil || !strings.Contains(err.Error(), "--operator-token") {
		t.Errorf("a missing token file: %v, want the flag named", err)
	}
}

// TestCallJSONServerDown: a server that does not answer is said as such,
// with the flag to check (it was a bare "connection refused").
func TestCallJSONServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = CallJSON(context.Background(), "GET", "http://"+addr+"/v1/fleet", "", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "is the server at http://"+addr+" running and reachable? check --server") {
		t.Errorf("CallJSON to a closed port: %v", err)
	}
}

// TestGetJSONWaiting: a GET to a server that starts listening a moment
// later (as one started in the background by the line before of a script)
// succeeds; to an address where nothing listens it fails after the wait,
// with the hint.
func TestGetJSONWaiting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there for now
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"fleet_public_key":"ab"}`)
	})}
	started := make(chan error, 1)
	go func() {
		time.Sleep(600 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		started <- err
		if err == nil {
			srv.Serve(ln)
		}
	}()
	t.Cleanup(func() { srv.Close() })
	var progress strings.Builder
	var out struct {
		Key string `json:"fleet_public_key"`
	}
	err = GetJSONWaiting(context.Background(), "http://"+addr+"/v1/fleet", 10*time.Second, &progress, &out)
	if lerr := <-started; lerr != nil {
		t.Skipf("the port was taken meanwhile: %v", lerr)
	}
	if err != nil || out.Key != "ab" {
		t.Fatalf("GetJSONWaiting: %v, %+v", err, out)
	}
	if !strings.Contains(progress.String(), "no answer from http://"+addr+"/v1/fleet yet") {
		t.Errorf("progress: %q", progress.String())
	}
	err = GetJSONWaiting(context.Background(), "http://"+addr+"/v1/fleet", 0, nil, nil)
	if err != nil {
		t.Fatalf("a server that listens: %v", err)
	}
	srv.Close()
	start := time.Now()
	err = GetJSONWaiting(context.Background(), "http://"+addr+"/v1/fleet", 500*time.Millisecond, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "is the server at http://"+addr+" running and reachable?") {
		t.Fatalf("nothing listening: %v", err)
	}
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Errorf("gave up after %v, before its wait", waited)
	}
}
