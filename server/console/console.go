package console

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ratelog"
)

// Defaults for Config fields left zero.
const (
	DefaultPrefix          = "/console/"
	DefaultSessionTTL      = 8 * time.Hour
	DefaultIdleTimeout     = time.Hour
	DefaultRefreshInterval = 5 * time.Second
	// DefaultPageTimeout bounds the ledger reads of a page: below the
	// HTTP server's 30 s WriteTimeout, past which the answer is lost and
	// the browser shows an empty response.
	DefaultPageTimeout = 20 * time.Second
	// DefaultSignInsPerMinute and DefaultSignInBurst bound the sign-ins
	// of one token (its sessions: ledger.MaxSessionsPerToken at once). A
	// person signs in a few times a day; a script looping on one token
	// (an auditor's, on a wall display) made 220 a second, each a write
	// the fleet's taps wait behind, an audit entry kept for good and a
	// session row kept a day, which every later sign-in walked: after an
	// hour of it one sign-in held the ledger's writer for a second.
	DefaultSignInsPerMinute = 10
	DefaultSignInBurst      = ledger.MaxSessionsPerToken
)

// CSP is the Content-Security-Policy of every console response: no script
// at all, styles and images from the console's origin only, forms posted
// only to it, no framing.
const CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

//go:embed monitoring/dashboard.json monitoring/alerts.yml
var monitoringFS embed.FS

// Config configures the console. Ledger, Keys and API are required; zero
// fields otherwise mean the documented defaults.
type Config struct {
	Ledger *ledger.Store
	Keys   *keys.Dir
	// API makes every change (api.Handler.ServeAs): the console has no
	// business rules of its own.
	API *api.Handler
	// Prefix is where the console is mounted, with both slashes (default
	// "/console/").
	Prefix string
	// Started is when the server started: a device not heard from since
	// is shown as unknown (default: when New ran).
	Started time.Time
	// SessionTTL is a session's lifetime (default 8 h); IdleTimeout ends
	// a session not used for that long (default 1 h).
	SessionTTL, IdleTimeout time.Duration
	// RefreshInterval is the least time between two refreshes of the
	// summaries (default 5 s; a refresh that took d waits at least 10 d).
	RefreshInterval time.Duration
	// PageTimeout bounds how long a page (a GET) waits for the ledger
	// (default 20 s): a ledger that is locked or overloaded gets an error
	// page saying so, not a page that hangs until the connection is cut.
	PageTimeout time.Duration
	// SignInsPerMinute and SignInBurst bound the sign-ins of one token on
	// this instance (defaults DefaultSignInsPerMinute and
	// DefaultSignInBurst; below zero: no limit): one over is refused
	// (429, Retry-After) before anything is written.
	SignInsPerMinute, SignInBurst int
	// Metrics, if set, gets the fleet's gauges (farego_device_*,
	// farego_devices, farego_downlink_version, farego_ledger_quarantined,
	// farego_ledger_held).
	Metrics *metrics.Registry
	// CutOff, if set, names what this instance has lost its link to
	// (empty: nothing): every signed-in page says so above its title, for
	// a server cut off from the broker sees every validator go offline
	// and takes no taps, which the fleet's figures alone do not tell.
	CutOff func() []string
	Logger *slog.Logger
	Now    func() time.Time
}

// Handler serves the console. Use New.
type Handler struct {
	cfg   Config
	log   *slog.Logger
	mux   *http.ServeMux
	pages map[string]*template.Template // times in UTC
	// zones are the templates of other time zones, by name (pagesIn).
	zonesMu  sync.Mutex
	zones    map[string]map[string]*template.Template
	lastZone atomic.Pointer[time.Location] // the zone read last (zone)
	css      []byte
	fleet    *metrics.Cache[fleetReading] // the fleet for the metrics
	aside    *metrics.Cache[asideReading] // the records kept aside, for the metrics
	// refusals lets the log lines of requests refused before a session
	// through once a minute per client address (refused).
	refusals *ratelog.Limiter
	signIns  *api.TokenLimiter // sign-ins per token (Config.SignInsPerMinute)
}

var _ http.Handler = (*Handler)(nil)

// New returns the console handler. It panics if an embedded template does
// not parse (a test rules that out).
func New(cfg Config) *Handler {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Started.IsZero() {
		cfg.Started = cfg.Now()
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.PageTimeout <= 0 {
		cfg.PageTimeout = DefaultPageTimeout
	}
	if cfg.SignInsPerMinute == 0 {
		cfg.SignInsPerMinute = DefaultSignInsPerMinute
	}
	if cfg.SignInBurst == 0 {
		cfg.SignInBurst = DefaultSignInBurst
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), pages: parseTemplates(cfg.Ledger.Currency(), time.UTC),
		refusals: ratelog.New(cfg.Now, ratelog.DefaultEvery),
		signIns:  api.NewTokenLimiter(cfg.SignInsPerMinute, cfg.SignInBurst, cfg.Now)}
	h.fleet = &metrics.Cache[fleetReading]{TTL: metricsCacheTTL, Read: h.readFleetForMetrics}
	h.aside = &metrics.Cache[asideReading]{TTL: metricsCacheTTL, Read: h.readAside}
	css, err := staticFS.ReadFile("static/console.css")
	if err != nil {
		panic(err)
	}
	h.css = css
	h.routes()
	if cfg.Metrics != nil {
		h.registerMetrics(cfg.Metrics)
	}
	return h
}

func (h *Handler) routes() {
	p := h.cfg.Prefix
	h.mux.HandleFunc("GET "+p+"static/console.css", h.static)
	h.mux.HandleFunc("GET "+p+"monitoring/{file}", h.monitoring)
	h.mux.HandleFunc("GET "+p+"signin", h.signInPage)
	h.mux.HandleFunc("POST "+p+"signin", h.signIn)
	h.mux.HandleFunc("POST "+p+"signout", h.session(h.signOut))
	h.mux.HandleFunc("GET "+p+"{$}", h.session(h.overview))
	h.mux.HandleFunc("GET "+p+"fleet", h.session(h.fleetPage))
	h.mux.HandleFunc("GET "+p+"devices/{id}", h.session(h.devicePage))
	h.mux.HandleFunc("GET "+p+"money", h.session(h.moneyPage))
	h.mux.HandleFunc("GET "+p+"shops", h.session(h.shopsPage))
	h.mux.HandleFunc("GET "+p+"flagged", h.session(h.flaggedPage))
	h.mux.HandleFunc("GET "+p+"aside", h.session(h.asidePage))
	h.mux.HandleFunc("GET "+p+"accounts", h.session(h.accountSearch))
	h.mux.HandleFunc("GET "+p+"accounts/{id}", h.session(h.accountPage))
	h.mux.HandleFunc("GET "+p+"denylist", h.session(h.denyListPage))
	h.mux.HandleFunc("GET "+p+"fares", h.session(h.faresPage))
	h.mux.HandleFunc("GET "+p+"keys", h.session(h.keysPage))
	h.mux.HandleFunc("GET "+p+"tokens", h.session(h.tokensPage))
	h.mux.HandleFunc("GET "+p+"tokens/{id}/payments", h.session(h.tokenPaymentsPage))
	h.mux.HandleFunc("GET "+p+"audit", h.session(h.auditPage))
	h.mux.HandleFunc("POST "+p+"act/{action}", h.session(h.act))
	h.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
		h.errorPage(w, r, nil, http.StatusNotFound, "Not found", "There is no such page in the console.")
	})
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
	hd.Set("Cache-Control", "no-store")
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		// Only pages: a change (POST) is left to finish, so that its
		// outcome is never cut off half-known.
		ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PageTimeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) static(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(h.css)
}

// monitoring serves the Grafana dashboard and the Prometheus rules
// shipped with the console (no session needed: they hold no data).
func (h *Handler) monitoring(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	b, err := fs.ReadFile(monitoringFS, "monitoring/"+name)
	if err != nil || strings.Contains(name, "/") {
		http.NotFound(w, r)
		return
	}
	ct := "application/json"
	if strings.HasSuffix(name, ".yml") {
		ct = "application/yaml"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", `attachment; filename="farego-`+name+`"`)
	w.Write(b)
}

// Run refreshes the summaries the money pages read until ctx is done: at
// most every RefreshInterval, and at least ten times as long apart as a
// refresh takes. A failing refresh is logged once, and its recovery.
func (h *Handler) Run(ctx context.Context) error {
	failures := 0
	for {
		start := time.Now()
		st, err := h.cfg.Ledger.RefreshSummaries(ctx)
		took := time.Since(start)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			if failures == 0 {
				h.log.Warn("console: refreshing the summaries failed; retrying", "err", err)
			}
			failures++
		default:
			if failures > 0 {
				h.log.Info("console: summaries refreshed again", "failures", failures)
				failures = 0
			}
			if st.Days > 0 {
				h.log.Debug("console: summaries refreshed", "days", st.Days, "slots", st.Slots, "seconds", took.Seconds())
			}
		}
		wait := max(h.cfg.RefreshInterval, 10*took)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
