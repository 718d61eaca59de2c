package rig

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// TestRevokeInitToken: the operator token file init wrote (the one the
// README hands to technicians for provisioning) is revoked with token
// revoke init: the running server refuses the old token within seconds
// and takes the new one from the file, the console session signed in with
// the old one ends, token list names it, and the audit trail has it. It
// could not be revoked at all ("not found: token init").
func TestRevokeInitToken(t *testing.T) {
	r, ctx := newRig(t)
	old := r.Token
	base := "http://" + r.HTTP
	must(t, r.API(ctx, "GET", "/v1/devices", nil, nil))

	// A console session signed in with the old token.
	c, code := consoleHTTPSignIn(t, ctx, base, old)
	if code != http.StatusSeeOther {
		t.Fatalf("console sign-in: %d", code)
	}
	console := func() int {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/console/fleet", nil)
		resp, err := c.Do(req)
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := console(); code != http.StatusOK {
		t.Fatalf("the console signed in: %d", code)
	}

	args := append([]string{"token", "revoke", "--data", r.DataDir()}, r.dbArgs()...)
	out, err := r.command(ctx, "farego-settlement", append(args, "init")...)
	must(t, err)
	if !strings.Contains(out, "token init revoked") || !strings.Contains(out, "1 console sessions") || strings.Contains(out, old) ||
		!strings.Contains(out, "revoke the tokens it made") {
		t.Errorf("token revoke init said: %q", out)
	}
	b, err := os.ReadFile(filepath.Join(r.DataDir(), "keys", "operator.token"))
	must(t, err)
	fresh := strings.TrimSpace(string(b))
	if fresh == old || len(fresh) != 64 || strings.Contains(out, fresh) {
		t.Fatalf("the token file after revoke init: %d hex digits, the old one: %v, printed: %v", len(fresh), fresh == old, strings.Contains(out, fresh))
	}
	if info, err := os.Stat(filepath.Join(r.DataDir(), "keys", "operator.token")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the new token file: %v, %v", info.Mode(), err)
	}
	must(t, WaitFor(ctx, 30*time.Second, "the old operator token refused", func() bool {
		var he *cli.APIError
		err := cli.CallJSON(ctx, "GET", base+"/v1/devices", old, nil, nil)
		return errors.As(err, &he) && he.Status == http.StatusForbidden
	}))
	if err := cli.CallJSON(ctx, "GET", base+"/v1/devices", fresh, nil, nil); err != nil {
		t.Errorf("the new operator token: %v", err)
	}
	if code := console(); code == http.StatusOK {
		t.Errorf("the console session of the old token still opens pages (%d)", code)
	}
	r.Token = fresh
	list, err := r.command(ctx, "farego-settlement", append([]string{"token", "list", "--data", r.DataDir()}, r.dbArgs()...)...)
	must(t, err)
	if !strings.Contains(list, "init") || !strings.Contains(list, "operator.token") {
		t.Errorf("token list does not name init:\n%s", list)
	}
	var audit struct {
		Entries []struct {
			Action string `json:"action"`
			Target string `json:"target"`
		} `json:"entries"`
	}
	must(t, r.API(ctx, "GET", "/v1/audit", nil, &audit))
	found := false
	for _, e := range audit.Entries {
		found = found || (e.Action == "revoke_token" && e.Target == "init")
	}
	if !found {
		t.Errorf("the audit trail has no revoke_token of init: %+v", audit.Entries)
	}
	verifyClean(t, ctx, r)
}

// TestRevokedInitTokenSessionOnAnotherInstance: after token revoke init on
// one instance, the old token still signs in to the console of another
// instance until its key directory gets the new file (as the revocation
// says); once it has it, that session must end with the old token. It
// lived on to its expiry: a console session of the operator token file
// was not tied to the token it was signed in with, so a leaked
// operator.token signed in anywhere the file was not copied yet, or on the
// revoking instance within the second it reads the file, kept operator
// rights through the revocation.
func TestRevokedInitTokenSessionOnAnotherInstance(t *testing.T) {
	dsn := ledgertest.PostgresSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	r := New(dir, binDir, testLog{t})
	r.ExternalBroker, r.DB = true, dsn
	defer r.Close()
	must(t, r.Init(ctx, testFares))
	must(t, r.StartBroker(ctx))
	must(t, r.StartServer(ctx))
	old := r.Token

	// Instance b: its own data directory, holding a copy of the keys.
	dataB := filepath.Join(dir, "server-b")
	must(t, os.MkdirAll(filepath.Join(dataB, "keys"), 0o700))
	entries, err := os.ReadDir(filepath.Join(r.DataDir(), "keys"))
	must(t, err)
	for _, en := range entries {
		if en.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.DataDir(), "keys", en.Name()))
		must(t, err)
		info, err := en.Info()
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dataB, "keys", en.Name()), b, info.Mode().Perm()))
	}
	p, addrs, err := r.startProc(ctx, "server-b", nil, append(append([]string{"run", "--data", dataB, "--http", "127.0.0.1:0",
		"--broker", "tcp://" + r.MQTT, "--log-level", r.logLevel()}, rigServerFlags...), r.dbArgs()...)...)
	must(t, err)
	defer p.stop(syscall.SIGTERM)
	baseB := "http://" + addrs["http"]

	args := append([]string{"token", "revoke", "--data", r.DataDir()}, r.dbArgs()...)
	_, err = r.command(ctx, "farego-settlement", append(args, "init")...)
	must(t, err)
	fresh, err := os.ReadFile(filepath.Join(r.DataDir(), "keys", "operator.token"))
	must(t, err)

	// The leaked token, on instance b before its file is replaced.
	c, code := consoleHTTPSignIn(t, ctx, baseB, old)
	if code != http.StatusSeeOther {
		t.Fatalf("console sign-in on instance b before its file was replaced: %d", code)
	}

	// The operator copies the new file to instance b, as told.
	tmp := filepath.Join(dataB, "keys", "operator.token.new")
	must(t, os.WriteFile(tmp, fresh, 0o600))
	must(t, os.Rename(tmp, filepath.Join(dataB, "keys", "operator.token")))
	must(t, WaitFor(ctx, 30*time.Second, "instance b refusing the old operator token", func() bool {
		var he *cli.APIError
		err := cli.CallJSON(ctx, "GET", baseB+"/v1/devices", old, nil, nil)
		return errors.As(err, &he) && he.Status == http.StatusForbidden
	}))
	req, _ := http.NewRequestWithContext(ctx, "GET", baseB+"/console/fleet", nil)
	resp, err := c.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("a console session signed in with the revoked operator token still opens pages on instance b")
	}
}

// consoleHTTPSignIn signs in to the console at base with token over plain
// HTTP (its form, from its own origin) and returns the client holding the
// session cookie and the sign-in's status (303 when signed in).
func consoleHTTPSignIn(t *testing.T, ctx context.Context, base, token string) (*http.Client, int) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/console/signin", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	must(t, err)
	resp.Body.Close()
	return c, resp.StatusCode
}
