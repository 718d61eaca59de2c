package wallet_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/wallet"
	"github.com/farego/farego/server/wallet/wallettest"
)

func serve(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(wallet.DefaultPrefix, wallet.New(wallet.Config{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestFilesAndHeaders(t *testing.T) {
	srv := serve(t)
	for _, c := range []struct{ path, ctype, contains string }{
		{"/wallet/", "text/html; charset=utf-8", `<script type="module" src="app.js">`},
		{"/wallet/index.html", "text/html; charset=utf-8", "<html"},
		{"/wallet/app.js", "text/javascript; charset=utf-8", "import"},
		{"/wallet/style.css", "text/css; charset=utf-8", "#qr"},
		{"/wallet/manifest.webmanifest", "application/manifest+json", `"start_url"`},
		{"/wallet/icon-192.png", "image/png", "\x89PNG"},
		{"/wallet/icon-512.png", "image/png", "\x89PNG"},
		{"/wallet/vendor/qrcode-generator/qrcode.mjs", "text/javascript; charset=utf-8", "Kazuhiko Arase"},
		{"/wallet/vendor/qrcode-generator/LICENSE.txt", "text/plain; charset=utf-8", "MIT"},
		{"/wallet/sw.js", "text/javascript; charset=utf-8", `"version":`},
	} {
		resp, body := get(t, srv.URL+c.path, nil)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", c.path, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"script-src 'self'", "default-src 'none'", "frame-ancestors 'none'", "connect-src 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", c.path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
			t.Errorf("GET %s: CSP %q allows inline or remote code", c.path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("ETag") == "" {
			t.Errorf("GET %s: headers %v", c.path, resp.Header)
		}
		// A revalidation with the ETag is a 304 with no body.
		resp2, body2 := get(t, srv.URL+c.path, map[string]string{"If-None-Match": resp.Header.Get("ETag")})
		if resp2.StatusCode != http.StatusNotModified || len(body2) != 0 {
			t.Errorf("GET %s with its ETag: %d, %d bytes", c.path, resp2.StatusCode, len(body2))
		}
	}
	resp, body := get(t, srv.URL+"/wallet/sw.js", nil)
	if got := resp.Header.Get("Service-Worker-Allowed"); got != "/wallet/" {
		t.Errorf("sw.js Service-Worker-Allowed = %q", got)
	}
	if strings.Contains(string(body), "__BUILD__") {
		t.Error("sw.js still has its build placeholder")
	}
	m := regexp.MustCompile(`const BUILD = (\{.*\});`).FindSubmatch(body)
	if m == nil {
		t.Fatal("sw.js has no BUILD object")
	}
	var build struct {
		Version string   `json:"version"`
		Files   []string `json:"files"`
	}
	if err := json.Unmarshal(m[1], &build); err != nil {
		t.Fatal(err)
	}
	if build.Version == "" || len(build.Files) < 10 {
		t.Fatalf("build = %+v", build)
	}
	// Every file the service worker precaches is served, naming its build;
	// asked for as of this build it is the same file, as of another (a
	// server restarted with a new build during an install) it is 409.
	for _, f := range build.Files {
		u := srv.URL + "/wallet/" + strings.TrimPrefix(f, "./")
		r, plain := get(t, u, nil)
		if r.StatusCode != 200 || r.Header.Get(wallet.BuildHeader) != build.Version {
			t.Errorf("precached %s: %d, build %q, want %s", f, r.StatusCode, r.Header.Get(wallet.BuildHeader), build.Version)
		}
		if r, pinned := get(t, u+"?build="+build.Version, nil); r.StatusCode != 200 || !bytes.Equal(pinned, plain) || r.Header.Get(wallet.BuildHeader) != build.Version {
			t.Errorf("%s?build=%s: %d, build %q", f, build.Version, r.StatusCode, r.Header.Get(wallet.BuildHeader))
		}
		for _, other := range []string{"0123456789abcdef", "", build.Version + "&build=" + build.Version} {
			if r, _ := get(t, u+"?build="+other, nil); r.StatusCode != http.StatusConflict || r.Header.Get(wallet.BuildHeader) != build.Version {
				t.Errorf("%s?build=%s: %d, build %q, want 409 naming %s", f, other, r.StatusCode, r.Header.Get(wallet.BuildHeader), build.Version)
			}
		}
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/wallet/nope.js", 404},
		{"GET", "/wallet/.%2e/go.mod", 404},
		{"GET", "/wallet/static/app.js", 404},
		{"POST", "/wallet/app.js", 405},
		{"HEAD", "/wallet/app.js", 200},
		{"GET", "/wallet", http.StatusTemporaryRedirect}, // ServeMux: to /wallet/
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.status)
		}
	}
}

// The vendored QR encoder is byte for byte the file that make vendor-wallet
// extracts from the pinned npm tarball.
func TestVendoredQREncoderIsPinned(t *testing.T) {
	script, err := os.ReadFile("../../.ci/vendor-wallet")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^file_sha256=([0-9a-f]{64})$`).FindSubmatch(script)
	if m == nil {
		t.Fatal(".ci/vendor-wallet has no file_sha256 pin")
	}
	b, err := os.ReadFile("static/vendor/qrcode-generator/qrcode.mjs")
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != string(m[1]) {
		t.Fatalf("vendored qrcode.mjs has SHA-256 %x, pinned %s: run make vendor-wallet", got, m[1])
	}
}

type vector struct {
	TokenSeed      string `json:"token_seed"`
	RiderPublicKey string `json:"rider_public_key"`
	CodeHex        string `json:"code_hex"`
	CodeTime       uint32 `json:"code_time"`
	Counter        uint16 `json:"counter"`
	Text           string `json:"text"`
}

func loadVector(t *testing.T) vector {
	t.Helper()
	b, err := os.ReadFile("../../testdata/paycode/vector.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// The browser's encoder reproduces the spec's worked vector byte for byte:
// the credential and code layout, Base45, and the rider signature made by
// WebCrypto's Ed25519 with the rider key derived (HKDF-SHA256, in WebCrypto
// too) from the vector's token seed.
func TestBrowserEncoderMatchesVector(t *testing.T) {
	v := loadVector(t)
	srv := serve(t)
	ctx := wallettest.Browser(t, wallettest.Config{})
	wallettest.Open(t, ctx, srv.URL+"/wallet/")
	got := wallettest.Eval[map[string]any](t, ctx, `(async () => {
		const pc = await import("./paycode.js");
		const v = `+mustJSON(v)+`;
		const b64u = (b) => btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
		const ikm = await crypto.subtle.importKey("raw", pc.hexToBytes(v.token_seed), "HKDF", false, ["deriveBits"]);
		const seed = new Uint8Array(await crypto.subtle.deriveBits({name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0),
			info: new TextEncoder().encode("farego rider key v1")}, ikm, 256));
		const key = await crypto.subtle.importKey("jwk", {kty: "OKP", crv: "Ed25519", d: b64u(seed),
			x: b64u(pc.hexToBytes(v.rider_public_key))}, {name: "Ed25519"}, false, ["sign"]);
		const cred = pc.hexToBytes(v.code_hex).slice(0, pc.CREDENTIAL_SIZE);
		const parsed = pc.parseCredential(cred);
		const code = await pc.makeCode(cred, key, v.code_time, v.counter);
		const fresh = await pc.newRiderKey();
		let exported = true;
		try { await crypto.subtle.exportKey("pkcs8", fresh.privateKey); } catch { exported = false; }
		return {text: code.text, hex: pc.bytesToHex(code.bytes), account: parsed.account, serial: parsed.serial,
			profile: parsed.profile, extractable: fresh.privateKey.extractable, exported, pubLen: fresh.publicKey.length};
	})()`)
	if got["text"] != v.Text {
		t.Errorf("browser code text\n got %v\nwant %s", got["text"], v.Text)
	}
	if got["hex"] != v.CodeHex {
		t.Errorf("browser code bytes\n got %v\nwant %s", got["hex"], v.CodeHex)
	}
	if got["account"] != "4242" || got["serial"] != float64(3) || got["profile"] != "child" {
		t.Errorf("parsed credential = %v", got)
	}
	if got["extractable"] != false || got["exported"] != false || got["pubLen"] != float64(32) {
		t.Errorf("a new rider key: extractable=%v exported=%v public key %v bytes; want a non-extractable private key", got["extractable"], got["exported"], got["pubLen"])
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// The QR the wallet draws is in alphanumeric mode (295 characters fit
// version 10, 57 modules, only in that mode) and a real decoder reads the
// exact code back from a screenshot.
func TestBrowserQRDecodes(t *testing.T) {
	v := loadVector(t)
	srv := serve(t)
	ctx := wallettest.Browser(t, wallettest.Config{})
	wallettest.Open(t, ctx, srv.URL+"/wallet/")
	modules := wallettest.Eval[int](t, ctx, `(async () => {
		const {drawQR} = await import("./qr.js");
		document.getElementById("main").hidden = false;
		document.getElementById("code-view").hidden = false;
		return drawQR(document.getElementById("qr"), `+wallettest.JS(v.Text)+`);
	})()`)
	if modules != 57 {
		t.Errorf("QR has %d modules, want 57 (version 10: alphanumeric mode)", modules)
	}
	png := wallettest.Screenshot(t, ctx, wallettest.ArtifactDir(t), "vector-qr", "#qr")
	text := wallettest.DecodeQR(t, png)
	if text != v.Text {
		t.Fatalf("decoded %q, want the vector's text", text)
	}
	if _, err := paycode.ParseText(text); err != nil {
		t.Fatal(err)
	}
}

// English and Chinese have the same messages, and a Chinese browser gets
// the Chinese wallet.
func TestCatalogs(t *testing.T) {
	srv := serve(t)
	ctx := wallettest.Browser(t, wallettest.Config{Lang: "zh-CN"})
	wallettest.Open(t, ctx, srv.URL+"/wallet/")
	got := wallettest.Eval[map[string]any](t, ctx, `(async () => {
		const i = await import("./i18n.js");
		const en = Object.keys(i.catalog.en).sort(), zh = Object.keys(i.catalog["zh-Hans"]).sort();
		const params = (s) => (s.match(/\{\w+\}/g) || []).sort().join();
		const mismatched = en.filter((k) => params(i.catalog.en[k]) !== params(i.catalog["zh-Hans"][k] || ""));
		return {lang: i.lang, htmlLang: document.documentElement.lang, title: document.title,
			onlyEn: en.filter((k) => !zh.includes(k)), onlyZh: zh.filter((k) => !en.includes(k)), mismatched,
			button: document.getElementById("register").textContent,
			unlabelled: [...document.querySelectorAll("input, select")].filter((e) => !document.querySelector("label[for='" + e.id + "']")).map((e) => e.id),
			unnamed: [...document.querySelectorAll("button")].filter((e) => !e.textContent.trim()).map((e) => e.id),
			missing: [...document.querySelectorAll("[data-i18n]")].filter((e) => !(e.dataset.i18n in i.catalog.en)).map((e) => e.dataset.i18n)};
	})()`)
	if got["lang"] != "zh-Hans" || got["htmlLang"] != "zh-Hans-CN" || got["title"] != "farego 钱包" || got["button"] != "创建账户" {
		t.Errorf("a zh-CN browser got %v", got)
	}
	for _, k := range []string{"onlyEn", "onlyZh", "mismatched", "unlabelled", "unnamed", "missing"} {
		if l, _ := got[k].([]any); len(l) != 0 {
			t.Errorf("%s: %v", k, l)
		}
	}
}

// Whatever path, method and If-None-Match a client sends, the handler
// answers with one of its statuses, serves only its own files, and every
// answer carries the CSP.
func FuzzServeHTTP(f *testing.F) {
	h := wallet.New(wallet.Config{})
	for _, s := range []string{"/wallet/", "/wallet/app.js", "/wallet/../x", "/wallet/sw.js", "/other"} {
		f.Add("GET", s, `"abc", W/"def"`)
	}
	f.Add("HEAD", "/wallet/index.html", "*")
	f.Add("POST", "/wallet/", "")
	f.Fuzz(func(t *testing.T, method, path, inm string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.Method, req.URL.Path = method, path
		req.Header.Set("If-None-Match", inm)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case 200, 304, 404, 405:
		default:
			t.Fatalf("%s %q: status %d", method, path, w.Code)
		}
		if w.Header().Get("Content-Security-Policy") != wallet.CSP {
			t.Fatalf("%s %q: no CSP", method, path)
		}
		if w.Code == 200 && !strings.HasPrefix(path, wallet.DefaultPrefix) {
			t.Fatalf("%s %q served outside the wallet", method, path)
		}
	})
}
