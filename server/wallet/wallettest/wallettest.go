// Package wallettest runs the rider's wallet in a real headless Chromium
// for tests (chromedp), saves screenshots as test artifacts and reads QR
// codes back from them with zbarimg. Test support only.
//
// Chromium is Debian's "chromium" package (or CHROMIUM=path). Without it
// the tests skip with a message, unless FAREGO_CI is set: then they fail.
// The browser runs headless with a fresh profile and with everything that
// would call out to the internet turned off (the test machines have none).
//
// Screenshots go to the directory named by FAREGO_ARTIFACTS, else to a
// directory under the system's temporary directory whose path is logged;
// either way they outlive the test.
package wallettest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// stepTimeout bounds one browser step (an evaluation, a screenshot, a
// navigation): a step that hangs fails the test instead of the test binary.
const stepTimeout = 60 * time.Second

// Config configures a browser. The zero value is an English browser with a
// phone-sized window.
type Config struct {
	// Lang is the browser's language (default "en-US"), e.g. "zh-CN".
	Lang string
	// HostRules, if set, is Chromium's --host-resolver-rules, e.g. "MAP
	// wallet.test 127.0.0.1": a name other than localhost for a loopback
	// server (a page that is not a secure context).
	HostRules string
}

// Chromium returns the path of the Chromium binary, skipping the test when
// there is none (failing it under FAREGO_CI).
func Chromium(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("FAREGO_CI") != "" {
		tb.Fatal("chromium is required in CI (Debian package chromium)")
	}
	tb.Skip("chromium not installed (Debian package chromium): skipping the browser test")
	return ""
}

// Browser starts a headless Chromium with a fresh profile and returns the
// context of its first tab. The browser is closed when the test ends.
func Browser(tb testing.TB, cfg Config) context.Context {
	tb.Helper()
	exe := Chromium(tb)
	if cfg.Lang == "" {
		cfg.Lang = "en-US"
	}
	profile, err := os.MkdirTemp("", "farego-chromium-")
	if err != nil {
		tb.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(profile),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(480, 1100),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-client-side-phishing-detection", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater"),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("lang", cfg.Lang),
		chromedp.Flag("accept-lang", cfg.Lang),
	}
	if cfg.HostRules != "" {
		opts = append(opts, chromedp.Flag("host-resolver-rules", cfg.HostRules))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
		os.RemoveAll(profile)
	})
	// Start the browser now, so a failure to start is reported here.
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("starting chromium %s: %v", exe, err)
	}
	return ctx
}

// Eval evaluates a JavaScript expression in the tab, awaiting a promise,
// and decodes its JSON value into T.
func Eval[T any](tb testing.TB, ctx context.Context, expr string) T {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.Fatalf("evaluating %.80q: %v", expr, err)
	}
	return v
}

// WaitFor evaluates expr (a boolean JavaScript expression, which may
// await) every 100 ms until it is true, failing the test after timeout.
func WaitFor(tb testing.TB, ctx context.Context, timeout time.Duration, what, expr string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		sctx, cancel := context.WithTimeout(ctx, stepTimeout)
		ok, err := chromedp.Run(sctx, chromedp.Evaluate[bool](expr, chromedp.EvalAwaitPromise))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, last)
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// JS quotes s as a JavaScript string literal.
func JS(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// ArtifactDir is where the test's screenshots go (created once per test).
func ArtifactDir(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv("FAREGO_ARTIFACTS")
	if base == "" {
		var err error
		if base, err = os.MkdirTemp("", "farego-wallet-artifacts-"); err != nil {
			tb.Fatal(err)
		}
	}
	dir := filepath.Join(base, regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(tb.Name(), "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Screenshot saves a screenshot of the first element matching the CSS
// selector (the whole page for "") as DIR/name.png and returns the path.
func Screenshot(tb testing.TB, ctx context.Context, dir, name, selector string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	var png []byte
	var err error
	if selector == "" {
		png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	} else {
		png, err = chromedp.Run(ctx, chromedp.ScreenshotScale(chromedp.CSS(selector), 2, chromedp.NodeVisible))
	}
	if err != nil {
		tb.Fatalf("screenshot of %q: %v", selector, err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("screenshot: %s", path)
	return path
}

// ZBar returns the path of zbarimg, skipping the test when it is missing
// (failing it under FAREGO_CI).
func ZBar(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("zbarimg")
	if err != nil {
		if os.Getenv("FAREGO_CI") != "" {
			tb.Fatal("zbarimg is required in CI (Debian zbar-tools)")
		}
		tb.Skip("zbarimg not installed (Debian zbar-tools)")
	}
	return p
}

// DecodeQR reads the one QR code in a PNG with zbarimg and returns its
// text (without the line terminator; spaces are kept: Base45 has them).
func DecodeQR(tb testing.TB, png string) string {
	tb.Helper()
	out, err := exec.Command(ZBar(tb), "--raw", "-q", "-Sdisable", "-Sqrcode.enable", png).Output()
	if err != nil {
		tb.Fatalf("zbarimg %s: %v", png, err)
	}
	text := strings.TrimRight(string(out), "\r\n")
	if strings.Contains(text, "\n") {
		tb.Fatalf("zbarimg found several codes in %s", png)
	}
	if text == "" {
		tb.Fatal(fmt.Errorf("zbarimg found no code in %s", png))
	}
	return text
}

// Open loads the wallet at url in the tab and waits until its app has
// started (it marks the body data-ready once init has run).
func Open(tb testing.TB, ctx context.Context, url string) {
	tb.Helper()
	// A new tab is opened by its first action, on its own context: one
	// bounded by a timeout would close the tab when it ends.
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("opening a tab: %v", err)
	}
	nctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(nctx, chromedp.Navigate(url)); err != nil {
		tb.Fatalf("opening %s: %v", url, err)
	}
	WaitFor(tb, ctx, 30*time.Second, "the wallet to start", `document.body && document.body.dataset.ready === "true"`)
}

// Do runs browser actions in the tab, each step bounded, failing the test
// on an error.
func Do(tb testing.TB, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.Fatal(err)
	}
}
