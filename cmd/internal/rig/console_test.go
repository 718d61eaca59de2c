package rig

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/farego/farego/server/wallet/wallettest"
)

// The operator's console, end to end, in a real headless Chromium against
// the real server and validator processes: sign in; a validator that was
// never heard from taps a rider offline, comes online and its queue
// drains; the tap's revenue appears; a credential denied in the console is
// refused by the validator; a fare table published in the console is
// applied by the validator; a device revoked in the console is cut off; an
// auditor's change and a forged cross-site POST are refused.

// visit loads a page of the console in the tab.
func visit(t *testing.T, b context.Context, url string) {
	t.Helper()
	wallettest.Do(t, b, chromedp.Navigate(url))
}

// waitPage reloads a page until a JavaScript condition holds on it.
func waitPage(t *testing.T, b context.Context, url string, timeout time.Duration, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		visit(t, b, url)
		if wallettest.Eval[bool](t, b, cond) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s on %s", timeout, what, url)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// consoleSignIn signs the tab in with a token.
func consoleSignIn(t *testing.T, b context.Context, base, token string) {
	t.Helper()
	visit(t, b, base+"/console/")
	wallettest.Do(t, b,
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SetValue(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("who")),
	)
}

// confirm clicks the action's button on the page, then the confirmation's,
// and returns the result page's message.
func confirm(t *testing.T, b context.Context, button string) string {
	t.Helper()
	wallettest.Do(t, b, chromedp.Click(button), chromedp.WaitVisible(chromedp.ID("confirm")))
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("confirm-yes")), chromedp.WaitVisible(chromedp.ID("result")))
	msg := wallettest.Eval[string](t, b, `document.getElementById("result-message").textContent`)
	if !wallettest.Eval[bool](t, b, `document.getElementById("result").dataset.ok === "true"`) {
		t.Fatalf("the change failed: %s", msg)
	}
	return msg
}

// apiDevice is a device as GET /v1/devices shows it.
type apiDevice struct {
	ID       string            `json:"id"`
	State    string            `json:"state"`
	Versions map[string]uint64 `json:"versions"`
	Revoked  string            `json:"revoked"`
}

func device(t *testing.T, ctx context.Context, r *Rig, id string) apiDevice {
	t.Helper()
	var out struct {
		Devices []apiDevice `json:"devices"`
	}
	if err := r.API(ctx, "GET", "/v1/devices", nil, &out); err != nil {
		t.Fatal(err)
	}
	for _, d := range out.Devices {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("no device %s", id)
	return apiDevice{}
}

// waitApplied waits until the device has applied a version of a document.
func waitApplied(t *testing.T, ctx context.Context, r *Rig, id, kind string, version uint64) {
	t.Helper()
	if err := WaitFor(ctx, 60*time.Second, fmt.Sprintf("%s to apply %s v%d", id, kind, version), func() bool {
		return device(t, ctx, r, id).Versions[kind] >= version
	}); err != nil {
		t.Fatal(err)
	}
}

func TestConsole(t *testing.T) {
	wallettest.Chromium(t)
	art := wallettest.ArtifactDir(t)
	r, ctx := newRig(t)
	base := "http://" + r.HTTP
	var aud struct {
		Token string `json:"token"`
	}
	if err := r.API(ctx, "POST", "/v1/tokens", map[string]string{"role": "auditor", "name": "board"}, &aud); err != nil {
		t.Fatal(err)
	}

	// A validator whose link is down from the start: never heard from.
	d, err := r.Provision(ctx, "bus-k-front", "42")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetPolicy("passback_window", `"-1s"`); err != nil {
		t.Fatal(err)
	}
	d.Link.Cut()
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	rider, err := r.NewAPIRider(ctx, "adult", 2000)
	if err != nil {
		t.Fatal(err)
	}

	b := wallettest.Browser(t, wallettest.Config{})
	consoleSignIn(t, b, base, r.Token)
	fleetURL := base + "/console/fleet?q=bus-k"
	visit(t, b, fleetURL)
	row := `document.querySelector('tr[data-device="bus-k-front"]')`
	if st := wallettest.Eval[string](t, b, row+`.dataset.state`); st == "online" {
		t.Fatalf("a validator never heard from is %s", st)
	}
	if !wallettest.Eval[bool](t, b, row+`.textContent.includes("never heard from")`) {
		t.Error("the fleet page does not call a silent validator a problem")
	}

	// A tap while the bus is offline, then the link comes back: the
	// console shows the device online with its queue drained.
	scanExpect(t, ctx, d, rider.Code(time.Now()), "ACCEPTED  2.50 EUR")
	d.Link.Restore()
	waitPage(t, b, fleetURL, 60*time.Second, "the device online with an empty queue",
		row+` !== null && `+row+`.dataset.state === "online" && `+row+`.dataset.queue === "0"`)
	wallettest.Screenshot(t, b, art, "1-fleet-phone", "")
	visit(t, b, base+"/console/devices/bus-k-front")
	if !wallettest.Eval[bool](t, b, `document.querySelectorAll('#history b').length > 0 &&
		[...document.querySelectorAll('#history b')].some(e => e.textContent === "online") &&
		document.querySelectorAll('tbody tr[data-tap]').length === 1 && document.querySelector('tbody tr[data-tap]').textContent.includes("42")`) {
		t.Error("the device page lacks the tap or the online event")
	}

	// The tap's revenue and its settlement (the summaries refresh every
	// few seconds, the days' and the lag slots' one after the other: a
	// page loaded in between shows the one and not yet the other).
	wallettest.Do(t, b, chromedp.EmulateViewport(1280, 900))
	waitPage(t, b, base+"/console/money", 60*time.Second, "the tap's revenue on route 42, in the revenue and rate charts",
		`(() => { const r = document.querySelector('#routes tr[data-route="42"]'); return r !== null && r.querySelector('.charged').textContent === "2.50" &&
			document.querySelector('#chart-revenue svg rect.c-charged') !== null && document.querySelector('#chart-rate svg rect') !== null; })()`)
	wallettest.Screenshot(t, b, art, "2-money", "")
	visit(t, b, fleetURL)
	wallettest.Screenshot(t, b, art, "3-fleet", "")

	// Deny the rider's credential in the console: the validator refuses it.
	visit(t, b, fmt.Sprintf("%s/console/accounts/%d", base, rider.ID))
	wallettest.Do(t, b, chromedp.SetValue(`#credentials tr[data-serial="1"] input[name="reason"]`, "lost_phone"))
	msg := confirm(t, b, `#credentials tr[data-serial="1"] button[data-action="deny-credential"]`)
	if !strings.Contains(msg, "credential 1 of account") {
		t.Errorf("deny result: %q", msg)
	}
	var dl struct {
		Version uint64 `json:"version"`
	}
	if err := r.API(ctx, "GET", "/v1/denylist", nil, &dl); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, ctx, r, d.ID, "denylist", dl.Version)
	// The device reports the newest deny-list shard it applied; the shard
	// that names this rider may come a moment after another one of the same
	// version, so scan fresh codes until the validator refuses (bounded).
	var last string
	if err := WaitFor(ctx, 30*time.Second, "the validator to refuse the denied credential", func() bool {
		line, err := d.Scan(ctx, rider.Code(time.Now()))
		last = line
		return err == nil && strings.Contains(line, "(denied)")
	}); err != nil {
		t.Fatalf("%v; the validator last said %q", err, last)
	}

	// Publish a fare table in the console: previewed, then applied by the
	// validator, which charges the new fare.
	visit(t, b, base+"/console/fares")
	v2 := strings.Replace(strings.Replace(testFares, `"version": 1`, `"version": 2`, 1), `"adult": 250`, `"adult": 300`, 1)
	wallettest.Do(t, b, chromedp.SetValue(chromedp.ID("table"), v2))
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("fares-preview")), chromedp.WaitVisible(chromedp.ID("confirm")))
	if !wallettest.Eval[bool](t, b, `[...document.querySelectorAll('#changes tr.changed')].some(r => r.textContent.includes("fare * adult") && r.textContent.includes("3.00"))`) {
		t.Error("the preview does not show the adult fare changing to 3.00")
	}
	wallettest.Screenshot(t, b, art, "4-fares-preview", "")
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("confirm-yes")), chromedp.WaitVisible(chromedp.ID("result")))
	waitApplied(t, ctx, r, d.ID, "fares", 2)
	rider2, err := r.NewAPIRider(ctx, "adult", 2000)
	if err != nil {
		t.Fatal(err)
	}
	scanExpect(t, ctx, d, rider2.Code(time.Now()), "ACCEPTED  3.00 EUR")

	// An auditor sees the pages without a button, and a change it posts
	// anyway (a form made in the page, with its own CSRF token) is refused.
	ab := wallettest.Browser(t, wallettest.Config{})
	consoleSignIn(t, ab, base, aud.Token)
	visit(t, ab, base+"/console/devices/bus-k-front")
	if n := wallettest.Eval[int](t, ab, `document.querySelectorAll('[data-action], form[action*="/act/"]').length`); n != 0 {
		t.Errorf("an auditor sees %d change buttons", n)
	}
	forge := func(tab context.Context, target, action string, fields map[string]string) {
		t.Helper()
		js := `(() => { const f = document.createElement("form"); f.method = "post"; f.action = ` + wallettest.JS(target+"/console/act/"+action) + `;
			const add = (k, v) => { const i = document.createElement("input"); i.type = "hidden"; i.name = k; i.value = v; f.appendChild(i); };`
		for k, v := range fields {
			js += `add(` + wallettest.JS(k) + `, ` + wallettest.JS(v) + `);`
		}
		js += `document.body.appendChild(f); f.submit(); return true; })()`
		wallettest.Eval[bool](t, tab, js)
		time.Sleep(time.Second) // the form's navigation
		wallettest.Do(t, tab, chromedp.WaitReady("body"))
	}
	csrf := wallettest.Eval[string](t, ab, `document.querySelector('input[name="csrf"]').value`)
	forge(ab, base, "revoke_device", map[string]string{"csrf": csrf, "device": "bus-k-front", "confirm": "yes"})
	if text := wallettest.Eval[string](t, ab, `document.body.innerText`); !strings.Contains(text, "changes nothing") {
		t.Errorf("an auditor's revoke: the page says %q", text)
	}
	wallettest.Screenshot(t, ab, art, "5-auditor-refused", "")
	if dv := device(t, ctx, r, d.ID); dv.Revoked != "" {
		t.Fatal("an auditor revoked the device")
	}

	// A forged cross-site POST: a page on another origin of the same site
	// (127.0.0.1, another port: the SameSite=Strict cookie goes along) posts
	// a keyring rotation with the operator's own CSRF token.
	visit(t, b, base+"/console/keys")
	opCSRF := wallettest.Eval[string](t, b, `document.querySelector('input[name="csrf"]').value`)
	var kr struct {
		Version uint64 `json:"version"`
	}
	if err := r.API(ctx, "GET", "/v1/keyring", nil, &kr); err != nil {
		t.Fatal(err)
	}
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/console/act/rotate_keyring">
			<input name="csrf" value="%s"><input name="confirm" value="yes"><button id="go">Win a prize</button></form>`, base, opCSRF)
	}))
	defer evil.Close()
	visit(t, b, evil.URL)
	wallettest.Do(t, b, chromedp.Click(chromedp.ID("go")), chromedp.WaitVisible(chromedp.ID("error")))
	if text := wallettest.Eval[string](t, b, `document.getElementById("error").textContent`); !strings.Contains(text, "did not come from the console") {
		t.Errorf("the forged POST: %q", text)
	}
	wallettest.Screenshot(t, b, art, "6-forged-refused", "")
	var kr2 struct {
		Version uint64 `json:"version"`
	}
	if err := r.API(ctx, "GET", "/v1/keyring", nil, &kr2); err != nil {
		t.Fatal(err)
	}
	if kr2.Version != kr.Version {
		t.Fatalf("the forged POST rotated the keyring (%d → %d)", kr.Version, kr2.Version)
	}

	// Revoke the device in the console: cut off within seconds.
	visit(t, b, base+"/console/devices/bus-k-front")
	if msg := confirm(t, b, `button[data-action="revoke_device"]`); !strings.Contains(msg, "revoked") {
		t.Errorf("revoke result: %q", msg)
	}
	if err := WaitFor(ctx, 30*time.Second, "the device revoked and offline", func() bool {
		dv := device(t, ctx, r, d.ID)
		return dv.State == "revoked" && dv.Revoked != ""
	}); err != nil {
		t.Fatal(err)
	}
	waitPage(t, b, fleetURL, 30*time.Second, "the device shown revoked", row+`.dataset.state === "revoked"`)

	// Every change above is in the audit trail, made via the console.
	visit(t, b, base+"/console/audit")
	text := wallettest.Eval[string](t, b, `document.getElementById("audit").innerText`)
	for _, want := range []string{"revoke_device", "put_fares", "deny", "console_signin"} {
		if !strings.Contains(text, want) {
			t.Errorf("the audit trail lacks %s", want)
		}
	}
	if strings.Contains(text, "rotate_keyring") {
		t.Error("the audit trail shows a keyring rotation: the forged POST went through")
	}
	wallettest.Screenshot(t, b, art, "7-audit", "")
}
