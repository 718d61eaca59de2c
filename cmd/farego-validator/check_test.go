package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	vectorDir = "../../testdata/paycode"
	verifyAt  = "1767229250"
)

func vectorText(tb testing.TB) string {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(vectorDir, "vector.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var v struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		tb.Fatal(err)
	}
	return v.Text
}

func runCmd(tb testing.TB, stdin string, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheck(t *testing.T) {
	text := vectorText(t)
	keyring := filepath.Join(vectorDir, "keyring.json")
	empty := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(empty, []byte(`{"version":1,"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	full := `{"accepted":true,"reason":"","account":4242,"serial":3,"profile":1,"code_time":1767229200,"key_id":7}` + "\n"
	for _, tc := range []struct {
		name       string
		stdin      string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"accepted", "", []string{"check", "--keyring", keyring, "--now", verifyAt, text}, 0, full, ""},
		{"RFC 3339 time", "", []string{"check", "--keyring", keyring, "--now", "2026-01-01T01:00:50Z", text}, 0, full, ""},
		{"stdin with CRLF", text + "\r\n", []string{"check", "--keyring", keyring, "--now", verifyAt, "-"}, 0, full, ""},
		{"stdin without newline", text, []string{"check", "--keyring", keyring, "--now", verifyAt, "-"}, 0, full, ""},
		{"expired", "", []string{"check", "--keyring", keyring, "--now", "1767229321", text}, 1,
			`{"accepted":false,"reason":"code_expired","account":4242,"serial":3,"profile":1,"code_time":1767229200,"key_id":7}` + "\n", ""},
		{"shorter max age", "", []string{"check", "--keyring", keyring, "--now", verifyAt, "--max-age", "30s", text}, 1,
			`{"accepted":false,"reason":"code_expired","account":4242,"serial":3,"profile":1,"code_time":1767229200,"key_id":7}` + "\n", ""},
		{"no skew", "", []string{"check", "--keyring", keyring, "--now", "1767229199", "--skew", "0", text}, 1,
			`{"accepted":false,"reason":"code_from_future","account":4242,"serial":3,"profile":1,"code_time":1767229200,"key_id":7}` + "\n", ""},
		{"default skew", "", []string{"check", "--keyring", keyring, "--now", "1767229199", text}, 0, full, ""},
		{"malformed omits fields", "", []string{"check", "--keyring", keyring, "--now", verifyAt, "FG1:NOPE"}, 1,
			`{"accepted":false,"reason":"malformed"}` + "\n", ""},
		{"space kept on stdin", " " + text + "\n", []string{"check", "--keyring", keyring, "--now", verifyAt, "-"}, 1,
			`{"accepted":false,"reason":"malformed"}` + "\n", ""},
		{"unsupported version", "", []string{"check", "--keyring", keyring, "--now", verifyAt, "FG2:" + text[4:]}, 1,
			`{"accepted":false,"reason":"unsupported_version"}` + "\n", ""},
		{"missing keyring flag", "", []string{"check", text}, 2, "", "--keyring is required"},
		{"unreadable keyring", "", []string{"check", "--keyring", "/nonexistent/k.json", text}, 2, "", "no such file"},
		{"bad keyring", "", []string{"check", "--keyring", "check_test.go", text}, 2, "", "invalid keyring"},
		{"no code", "", []string{"check", "--keyring", keyring}, 2, "", "exactly one CODE"},
		// A keyring without keys, or a time a digit off, would blame
		// the rider's code (unknown_issuer_key, code_expired).
		{"empty keyring", "", []string{"check", "--keyring", empty, text}, 2, "", "holds no issuer keys"},
		{"time a digit too long", "", []string{"check", "--keyring", keyring, "--now", "17672292500", text}, 2, "", "the year 2530"},
		{"time a digit short", "", []string{"check", "--keyring", keyring, "--now", "176722925", text}, 2, "", "the year 1975"},
		{"two codes", "", []string{"check", "--keyring", keyring, text, text}, 2, "", "exactly one CODE"},
		{"bad time", "", []string{"check", "--keyring", keyring, "--now", "yesterday", text}, 2, "", "--now"},
		{"empty stdin", "", []string{"check", "--keyring", keyring, "-"}, 2, "", "no input"},
		{"unknown flag", "", []string{"check", "--bogus", text}, 2, "", "flag provided but not defined"},
		{"help", "", []string{"check", "--help"}, 0, "Usage: farego-validator check", ""},
		{"unknown subcommand", "", []string{"frobnicate"}, 2, "", "unknown subcommand"},
		{"no subcommand", "", nil, 2, "", "Usage:"},
		{"top-level help", "", []string{"--help"}, 0, "Subcommands:", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tc.stdin, tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tc.wantCode, stderr)
			}
			if tc.wantStdout != "" && !strings.Contains(stdout, tc.wantStdout) || tc.wantStdout == "" && tc.wantCode != 0 && stdout != "" {
				t.Errorf("stdout = %q, want %q", stdout, tc.wantStdout)
			}
			if tc.wantStderr != "" && !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr = %q, want it to mention %q", stderr, tc.wantStderr)
			}
			if strings.Contains(stderr, text[10:60]) || (tc.wantCode == 2 && strings.Contains(stdout, text[10:60])) {
				t.Errorf("output repeats the payment code")
			}
		})
	}
}
