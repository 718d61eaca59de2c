package wallet

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
)

//go:embed static
var static embed.FS

// DefaultPrefix is where farego-settlement serves the wallet.
const DefaultPrefix = "/wallet/"

// CSP is the Content-Security-Policy of every wallet response: everything
// from the wallet's own origin only, no inline or remote script, no
// framing.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; manifest-src 'self'; worker-src 'self'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// buildPlaceholder in sw.js is replaced by the build description (version
// and the files to precache).
const buildPlaceholder = `"__BUILD__"`

// Config configures the wallet handler. The zero value serves it at
// DefaultPrefix.
type Config struct {
	// Prefix is the path the handler is mounted at, with both slashes
	// (default "/wallet/"). The service worker's scope is this prefix.
	Prefix string
	// Files, if set, are the wallet's files instead of the embedded ones
	// (rooted as static/ is): a test serves another build with it.
	Files fs.FS
}

// BuildHeader names the build (Handler.Version) of every wallet file
// served. The service worker checks it on each file it precaches, so a
// server restarted with another build during its install fails the
// install instead of filling one build's cache with another's files.
const BuildHeader = "X-Farego-Wallet-Build"

// Handler serves the wallet's files.
type Handler struct {
	prefix  string
	version string
	files   map[string]*file // by path below the prefix; "" is index.html
}

var _ http.Handler = (*Handler)(nil)

type file struct {
	body  []byte
	ctype string
	etag  string
}

// contentTypes maps the extensions the wallet ships to their media types;
// a file with another extension is a programming error (New panics).
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".webmanifest": "application/manifest+json",
	".png":         "image/png",
	".txt":         "text/plain; charset=utf-8",
}

// New returns the wallet handler. It reads the embedded files once; it
// panics if one has an extension it cannot type (a test rules that out).
func New(cfg Config) *Handler {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	files := cfg.Files
	if files == nil {
		sub, err := fs.Sub(static, "static")
		if err != nil {
			panic(err)
		}
		files = sub
	}
	h := &Handler{prefix: cfg.Prefix, files: map[string]*file{}}
	sum := sha256.New()
	var names []string
	err := fs.WalkDir(files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("wallet: no content type for %s", name)
		}
		h.files[name] = &file{body: body, ctype: ct}
		names = append(names, name)
		fmt.Fprintf(sum, "%s %d\n", name, len(body))
		sum.Write(body)
		return nil
	})
	if err != nil {
		panic(err)
	}
	for name, b := range icons() {
		h.files[name] = &file{body: b, ctype: "image/png"}
		names = append(names, name)
	}
	sort.Strings(names)
	h.version = hex.EncodeToString(sum.Sum(nil)[:8])
	sw, ok := h.files["sw.js"]
	if !ok || !bytes.Contains(sw.body, []byte(buildPlaceholder)) {
		panic("wallet: sw.js lacks its build placeholder")
	}
	precache := append([]string{"./"}, names...)
	build, _ := json.Marshal(map[string]any{"version": h.version, "files": precache})
	sw.body = bytes.Replace(sw.body, []byte(buildPlaceholder), build, 1)
	h.files[""] = h.files["index.html"]
	for _, f := range h.files {
		s := sha256.Sum256(f.body)
		f.etag = `"` + hex.EncodeToString(s[:12]) + `"`
	}
	return h
}

// Version is a hash of the embedded files: it changes with any of them.
func (h *Handler) Version() string { return h.version }

// ServeHTTP serves GET and HEAD of the wallet's files.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
	name, ok := strings.CutPrefix(r.URL.Path, h.prefix)
	f := h.files[name]
	if !ok || f == nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// The service worker precaches FILE?build=V: a server of another build
	// (restarted meanwhile) says so instead of giving its own file, and the
	// install fails, to be tried again. Without the parameter (a browser,
	// or the previous release's worker) the file is served as always.
	if want, ok := r.URL.Query()["build"]; ok && (len(want) != 1 || want[0] != h.version) {
		hd.Set(BuildHeader, h.version)
		http.Error(w, "this server has another build of the wallet ("+h.version+"): reload the wallet", http.StatusConflict)
		return
	}
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", f.etag)
	hd.Set(BuildHeader, h.version)
	if name == "sw.js" {
		hd.Set("Service-Worker-Allowed", h.prefix)
	}
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatch(match, f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Type", f.ctype)
	hd.Set("Content-Length", fmt.Sprint(len(f.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(f.body)
	}
}

// etagMatch reports whether an If-None-Match list names etag (or is "*").
func etagMatch(list, etag string) bool {
	for _, m := range strings.Split(list, ",") {
		m = strings.TrimPrefix(strings.TrimSpace(m), "W/")
		if m == etag || m == "*" {
			return true
		}
	}
	return false
}
