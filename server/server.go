package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/broker"
	"github.com/farego/farego/server/console"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/release"
	"github.com/farego/farego/server/wallet"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/wire"
)

// Defaults for Config fields left zero.
const (
	DefaultHTTPListen = "127.0.0.1:8080"
	DefaultMQTTListen = "127.0.0.1:1883"
	ledgerFile        = "ledger.db"
	keysDir           = "keys"
	// ReleasesDir holds the validator releases inside the data directory.
	ReleasesDir = "releases"
)

// Config configures a settlement server. Zero fields mean the defaults.
type Config struct {
	// DataDir holds the SQLite ledger (unless DB says otherwise) and the
	// key directory (unless KeysDir says otherwise).
	DataDir string
	DB      string // ledger DSN: sqlite:PATH or postgres://…; default sqlite:DATA/ledger.db
	KeysDir string // default DATA/keys
	// Releases holds the validator releases (default DATA/releases). The
	// settlement instances behind one load balancer must share it (a
	// directory on storage they all mount): a device downloads its release
	// from whichever instance answers.
	Releases string

	HTTPListen string // default 127.0.0.1:8080
	// MetricsListen, if set, serves GET /metrics on this address alone
	// (the HTTP address answers it 404): the fleet's inventory and figures
	// for the monitoring network, not for whoever reaches the API.
	MetricsListen string
	// AllowedHosts are the host names the HTTP API, wallet, console and
	// /metrics are served under, besides IP addresses and localhost ("*":
	// any): a request naming another host is refused (421), the DNS
	// rebinding guard (hostGuard). Empty: any name on a listener beyond
	// loopback, as before, and from a trusted proxy; none other on
	// loopback.
	AllowedHosts []string
	// HTTPMaxConns and HTTPMaxConnsPerAddress bound the HTTP connections
	// open at once, in all and from one client address (0: the Default*
	// constants; negative: no bound; TrustedProxies have no bound per
	// address). At either bound a new connection takes the place of the
	// oldest doing nothing, of its address or of all, and is closed at
	// once when none is (limitListener).
	HTTPMaxConns, HTTPMaxConnsPerAddress int
	// MQTTMaxPendingPerAddress bounds the embedded broker's connections of
	// one client address not yet logged in (broker.Config.
	// MaxPendingPerAddress: 0 its default, negative none).
	MQTTMaxPendingPerAddress int

	// BrokerURL selects an external MQTT broker (tcp://, ssl://); empty
	// runs the embedded one on MQTTListen (and MQTTTLSListen, if set).
	BrokerURL     string
	MQTTUsername  string // for an external broker; default the server identity derived from the broker secret
	MQTTPassword  string
	MQTTCAFile    string // CA of an external TLS broker
	MQTTCertFile  string // client certificate for an external broker with mutual TLS
	MQTTKeyFile   string
	MQTTListen    string // embedded broker, plain MQTT; default 127.0.0.1:1883
	MQTTTLSListen string // embedded broker, MQTT over TLS (needs TLSCertFile, TLSKeyFile)
	TLSCertFile   string
	TLSKeyFile    string
	ClientCAFile  string // embedded broker: require client certificates from this CA (mutual TLS)

	TopicPrefix   string
	SharedGroup   string // MQTT shared-subscription group of the settlement instances
	CredentialTTL time.Duration
	// CredentialMinimum and AccountsPerMinute are api.Config's (0: the
	// API's defaults; negative: none).
	CredentialMinimum int64
	AccountsPerMinute int
	// MerchantPerMinute and MerchantBurst are api.Config's: a merchant
	// token's payments and refunds (0: the API's defaults; negative: none).
	MerchantPerMinute, MerchantBurst int
	// TrustedProxies is api.Config's: the reverse proxies whose
	// X-Forwarded-For names the client a request is counted against.
	TrustedProxies []netip.Prefix
	Policy         paycode.Policy
	Currency       string // the ledger's (see ledger.Options.Currency); "": the ledger's, EUR for a new one
	// LedgerMustExist refuses a SQLite ledger that is not there instead
	// of creating one (ledger.Options.MustExist): farego-settlement run.
	LedgerMustExist bool
	// KeyActivation is how long after a rotation (through the API, or on
	// its own a month before the newest key's window ends) the new issuer
	// key starts signing: api.Config.KeyActivation (0: 24 h; negative: at
	// once).
	KeyActivation time.Duration
	// PollInterval is how often the fleet documents (and the issuer
	// keyring other instances rotate) are read from the ledger without a
	// change made here (default ingest.DefaultPollInterval, 10 s).
	PollInterval time.Duration
	// DeviceAsideBudget is how many records of one device an hour the
	// server keeps aside (quarantined, held, flagged) before it leaves the
	// device's batches unacked until the budget refills
	// (ingest.Config.AsideBudget: 0, 5,000; negative: none).
	DeviceAsideBudget int
	// DeviceVerifyBudget is how many records of one device an hour the
	// server checks (each a payment code's signatures) before it leaves
	// the device's batches unchecked and unacked until the budget refills
	// (ingest.Config.VerifyBudget: 0, 500,000; negative: none).
	DeviceVerifyBudget int

	Logger *slog.Logger
	// AfterCommit, if set, runs after each batch is committed to the ledger
	// and before its ack is published: a fault-injection point for tests
	// (a crash here must lead to redelivery and still one charge).
	AfterCommit func()
	// Ready, if set, is called once the server serves HTTP and MQTT, with
	// the addresses it listens on.
	Ready func(Addrs)
}

// Addrs are the addresses a running server listens on.
type Addrs struct {
	HTTP    string
	Metrics string // "" unless Config.MetricsListen
	MQTT    string // embedded broker, plain; "" with an external broker
	MQTTTLS string
}

// Server is a settlement server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	keys    *keys.Dir
	ledger  *ledger.Store
	reg     *metrics.Registry
	broker  *broker.Broker
	ingest  *ingest.Ingest
	pub     *ingest.Publisher
	http    *http.Server
	httpLn  net.Listener
	metrics *http.Server // on Config.MetricsListen, if set
	metLn   net.Listener
	devs    *Devices
	console *console.Handler
	api     *api.Handler
	rels    *release.Store
	lag     *metrics.Histogram // farego_settlement_lag_seconds
	started time.Time
	recheck chan struct{} // re-check the held taps now

	deny         denyCache   // the deny list as last read, for the publisher
	denyTooLarge atomic.Bool // the whole deny list no longer fits a downlink (logged once)

	keyringSyncFailing atomic.Bool   // reading the shared keyring fails (logged once)
	keyringForged      atomic.Uint64 // newest unsealed keyring version in the ledger logged

	kept keptReplays // the fleet's replay requests kept for devices (replaykept.go)
}

// serverLogin is the settlement server's own MQTT login: the one given, or
// farego-server with the password derived from the broker secret. Given
// as farego-server with no password (--broker-username farego-server with
// FAREGO_BROKER_PASSWORD unset: a unit file without the Environment= line,
// sudo dropping it), it is the derived one too, which is that user's only
// password: an empty one was refused by the broker as "not Authorized",
// retried for ever.
func serverLogin(user, pass string, secret []byte) (string, string) {
	if user == "" || (user == broker.DefaultServerUsername && pass == "") {
		return broker.DefaultServerUsername, broker.ServerPassword(secret)
	}
	return user, pass
}

// refusedAdvice is what the operator does when an external broker refuses
// the server's login as user.
func refusedAdvice(user string) string {
	if user != broker.DefaultServerUsername {
		return "the broker refuses " + user + "'s password (FAREGO_BROKER_PASSWORD) or certificate: check them against the broker's users"
	}
	return "FAREGO_BROKER_PASSWORD must be what 'farego-settlement mqtt-password --data DATA' prints (or unset), " +
		"and the broker's password file must hold " + user + " (Mosquitto: farego-settlement mqtt-passwd --out FILE, then SIGHUP it)"
}

// ErrNotInitialised is returned by New when the key directory does not exist.
var ErrNotInitialised = errors.New("server: not initialised")

func (c *Config) withDefaults() {
	if c.DataDir == "" {
		c.DataDir = "farego-data"
	}
	if c.DB == "" {
		c.DB = "sqlite:" + filepath.Join(c.DataDir, ledgerFile)
	}
	if c.KeysDir == "" {
		c.KeysDir = filepath.Join(c.DataDir, keysDir)
	}
	if c.HTTPListen == "" {
		c.HTTPListen = DefaultHTTPListen
	}
	if c.MQTTListen == "" {
		c.MQTTListen = DefaultMQTTListen
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	// Read by the API and by the server's own key renewal: set once here.
	if c.CredentialTTL <= 0 {
		c.CredentialTTL = api.DefaultCredentialTTL
	}
	if c.KeyActivation == 0 {
		c.KeyActivation = keys.DefaultKeyActivation
	}
}

// New opens the keys and the ledger and binds the listeners; Run serves.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, reg: metrics.NewRegistry(), started: time.Now(), recheck: make(chan struct{}, 1)}
	if cfg.BrokerURL != "" && (cfg.MQTTCertFile == "") != (cfg.MQTTKeyFile == "") {
		// A key alone was ignored: the broker refused a link without a
		// client certificate as if the certificate were wrong.
		return nil, fmt.Errorf("the external broker's client certificate takes both --broker-cert and --broker-key (given: certificate %q, key %q)",
			cfg.MQTTCertFile, cfg.MQTTKeyFile)
	}
	if _, err := os.Stat(cfg.KeysDir); errors.Is(err, os.ErrNotExist) {
		// Most often a mistyped --data: do not send the operator to init,
		// which would make a second, empty installation there.
		return nil, fmt.Errorf("%w: no key directory %s: check --data (or --keys); farego-settlement init makes a new installation, "+
			"and a lost key directory is restored from its backup", ErrNotInitialised, cfg.KeysDir)
	}
	kd, err := keys.Open(cfg.KeysDir)
	if err != nil {
		return nil, err
	}
	kd.Logger = s.log.With("part", "keys")
	s.keys = kd
	otherKeys := func(err error) error {
		if errors.Is(err, ledger.ErrOtherKeys) {
			return fmt.Errorf("%w: this ledger was made with another key directory than %s (init run again on its database?): "+
				"start every instance with a copy of the key directory of the instance that made the ledger", err, cfg.KeysDir)
		}
		return err
	}
	// KeySet: a ledger of another key directory is refused before it is
	// migrated, not after (the release before could not open it then).
	st, err := ledger.Open(ctx, cfg.DB, &ledger.Options{Logger: s.log.With("part", "ledger"), Currency: cfg.Currency,
		MustExist: cfg.LedgerMustExist, ReuseWindow: reuseWindow(cfg.Policy), KeySet: kd.Fingerprint()})
	if err != nil {
		return nil, otherKeys(err)
	}
	s.ledger = st
	// 'farego-settlement restored' refuses to run while this is held.
	if err := st.Serve(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if _, err := st.BindKeySet(ctx, kd.Fingerprint()); err != nil {
		st.Close()
		return nil, otherKeys(err)
	}
	// The instances share the keyring through the ledger: take a newer
	// one (another instance rotated while this one was down), or store
	// this directory's if it is the newer.
	// Keyrings written into the database by someone else are passed over
	// (logged): the instance starts with its own.
	res, err := kd.Sync(ctx, st)
	if err != nil && !errors.Is(err, keys.ErrForgedKeyring) {
		st.Close()
		return nil, fmt.Errorf("settlement: the issuer keyring: %w", err)
	}
	s.reportForged(res)
	if res.Changed {
		s.log.Info("issuer keyring taken from the ledger (rotated by another instance)", "version", kd.Keyring().Version())
	}
	s.devs = NewDevices(st)
	rels := cfg.Releases
	if rels == "" {
		rels = filepath.Join(cfg.DataDir, ReleasesDir)
	}
	s.rels = release.Open(rels, kd.FleetKey())
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	brokers := []string{cfg.BrokerURL}
	user, pass := serverLogin(cfg.MQTTUsername, cfg.MQTTPassword, kd.BrokerSecret())
	var ingestReady atomic.Pointer[ingest.Ingest]
	if cfg.BrokerURL == "" {
		b, err := broker.New(broker.Config{
			Listen: cfg.MQTTListen, TLSListen: cfg.MQTTTLSListen, TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile,
			ClientCAFile: cfg.ClientCAFile, TopicPrefix: cfg.TopicPrefix, Secret: kd.BrokerSecret(),
			MaxPendingPerAddress: cfg.MQTTMaxPendingPerAddress,
			Devices:              s.devs, Logger: s.log.With("part", "broker"),
			// Devices wait until the ingest has subscribed: a batch
			// published before would wait for the device's ack timeout.
			DevicesReady: func() bool { in := ingestReady.Load(); return in != nil && in.Connected() },
		})
		if err != nil {
			return nil, err
		}
		if err := b.Start(); err != nil {
			return nil, fmt.Errorf("embedded MQTT broker on %s: %w (is another broker running? use --mqtt to pick another address)", cfg.MQTTListen, err)
		}
		s.broker = b
		brokers = []string{"tcp://" + loopback(b.Addr())}
	}
	var tlsCfg *tls.Config
	if cfg.BrokerURL != "" && (cfg.MQTTCAFile != "" || cfg.MQTTCertFile != "") {
		if tlsCfg, err = ingest.LoadTLS(cfg.MQTTCAFile, cfg.MQTTCertFile, cfg.MQTTKeyFile); err != nil {
			return nil, fmt.Errorf("the external broker's TLS: %w", err)
		}
	}
	mq := ingest.MQTTConfig{Brokers: brokers, Username: user, Password: pass, TLS: tlsCfg, Refused: refusedAdvice(user)}
	if cfg.SharedGroup == "" {
		// A group nobody without the broker secret can join (see
		// broker.SharedGroup: Mosquitto does not check subscriptions).
		cfg.SharedGroup = broker.SharedGroup(kd.BrokerSecret())
	}
	if s.ingest, err = ingest.New(ingest.Config{
		MQTTConfig: mq, TopicPrefix: cfg.TopicPrefix, SharedGroup: cfg.SharedGroup, FleetKey: kd.FleetKey(),
		Keyring: kd.Keyring, Policy: cfg.Policy, Logger: s.log.With("part", "ingest"), Metrics: s.ingestMetrics(),
		AsideBudget: cfg.DeviceAsideBudget, VerifyBudget: cfg.DeviceVerifyBudget,
	}, (*store)(s)); err != nil {
		return nil, err
	}
	ingestReady.Store(s.ingest)
	if s.pub, err = ingest.NewPublisher(ingest.PublisherConfig{
		MQTTConfig: mq, TopicPrefix: cfg.TopicPrefix, FleetKey: kd.FleetKey(), Source: s.document, DenyShards: s.denyShards,
		Kinds:        append(slices.Clone(record.DocKinds), wire.DocRelease),
		PollInterval: cfg.PollInterval,
		Logger:       s.log.With("part", "publisher"),
	}); err != nil {
		return nil, err
	}
	h := api.New(api.Config{
		Ledger: st, Keys: kd, CredentialTTL: cfg.CredentialTTL, KeyActivation: cfg.KeyActivation, Policy: cfg.Policy, Notifier: (*notifier)(s),
		CredentialMinimum: cfg.CredentialMinimum, AccountsPerMinute: cfg.AccountsPerMinute,
		MerchantPerMinute: cfg.MerchantPerMinute, MerchantBurst: cfg.MerchantBurst, TrustedProxies: cfg.TrustedProxies,
		DeviceChanged: s.deviceChanged,
		Started:       s.started,
		Replay:        s.ingest.Replay,
		ReplayFleet:   s.replayFleet,
		Assign:        s.ingest.Assign,
		Health: map[string]api.Health{
			"ingest": connected("ingest", s.ingest.Connected),
			// The ledger answers a ping on a full disk or a read-only
			// file; whether batches get committed is another matter.
			"commits":   func(context.Context) error { return s.ingest.Committing() },
			"publisher": connected("publisher", s.pub.Connected),
		},
		Metrics: s.reg, MetricsElsewhere: cfg.MetricsListen != "", Logger: s.log.With("part", "api"), Releases: s.rels,
	})
	s.api = h
	s.registerMetrics()
	s.console = console.New(console.Config{Ledger: st, Keys: kd, API: h, Started: s.started, Metrics: s.reg,
		CutOff: s.cutOff, Logger: s.log.With("part", "console")})
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		return nil, fmt.Errorf("HTTP API on %s: %w (use --http to pick another address)", cfg.HTTPListen, err)
	}
	s.httpLn = newLimitListener(s.httpLn, cfg.HTTPMaxConns, cfg.HTTPMaxConnsPerAddress, cfg.TrustedProxies)
	if l, ok := s.httpLn.(*limitListener); ok {
		l.register(s.reg)
	}
	mux := http.NewServeMux()
	mux.Handle(wallet.DefaultPrefix, wallet.New(wallet.Config{})) // the rider's wallet (web app)
	mux.Handle(console.DefaultPrefix, s.console)                  // the operator's console
	mux.Handle("GET /{$}", indexHandler(cfg.MetricsListen == "")) // a person opening the server's address
	mux.Handle("/", h)
	s.http = newHTTPServer(newHostGuard(mux, cfg.AllowedHosts, s.httpLn.Addr().String(), cfg.TrustedProxies, s.log.With("part", "http")), s.httpLn)
	if cfg.MetricsListen != "" {
		if s.metLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return nil, fmt.Errorf("metrics on %s: %w (use --metrics to pick another address)", cfg.MetricsListen, err)
		}
		s.metLn = newLimitListener(s.metLn, 64, 16, nil)
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", s.reg)
		s.metrics = newHTTPServer(newHostGuard(mm, cfg.AllowedHosts, s.metLn.Addr().String(), nil, s.log.With("part", "metrics")), s.metLn)
	}
	ok = true
	return s, nil
}

// newHTTPServer serves h on ln with the server's bounds on a client:
// headers within 10 s, the request within 30, the answer written within
// 30; and, on a limitListener, connections doing nothing give their place
// to new ones at the bound.
func newHTTPServer(h http.Handler, ln net.Listener) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		MaxHeaderBytes: maxHeaderBytes}
	if l, ok := ln.(*limitListener); ok {
		l.track(srv)
	}
	return srv
}

func connected(name string, f func() bool) api.Health {
	return func(context.Context) error {
		if !f() {
			return fmt.Errorf("%s not connected to the MQTT broker", name)
		}
		return nil
	}
}

// warnExposed logs, at start, what listens beyond this machine unguarded:
// plain MQTT (device passwords and taps in the clear on the network) and
// /metrics on the API's address (every validator, its state and software,
// to whoever reaches the API). Both are a flag away from what an operator
// meant (the defaults listen on loopback only), so they are said once.
func (s *Server) warnExposed(a Addrs) {
	WarnPlainMQTT(s.log, a.MQTT)
	if a.Metrics == "" && !onLoopback(a.HTTP) {
		s.log.Warn("GET /metrics is served on the API's address, reachable from beyond this machine: it names every "+
			"validator, its state and software (set --metrics to the monitoring network's address)", "http", a.HTTP)
	}
}

// WarnPlainMQTT logs a warning when a broker's plain MQTT listener (its
// bound address; "" for none) takes connections from beyond this machine.
func WarnPlainMQTT(log *slog.Logger, addr string) {
	if addr != "" && !onLoopback(addr) {
		log.Warn("the broker takes plain MQTT from beyond this machine: device passwords and taps cross "+
			"the network unencrypted (serve the validators on --mqtt-tls)", "mqtt", addr)
	}
}

// onLoopback reports whether a listen address (host:port) takes
// connections from this machine only: a loopback IP or "localhost".
// ":1883", "0.0.0.0:…", "[::]:…" and any other address do not.
func onLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopback turns ":1883" or "[::]:1883" into an address to dial locally.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || host == "::" || host == "0.0.0.0" {
		return "127.0.0.1:" + port
	}
	return addr
}

// Addrs returns the listen addresses.
func (s *Server) Addrs() Addrs {
	a := Addrs{HTTP: s.httpLn.Addr().String()}
	if s.metLn != nil {
		a.Metrics = s.metLn.Addr().String()
	}
	if s.broker != nil {
		a.MQTT, a.MQTTTLS = s.broker.Addr(), s.broker.TLSAddr()
	}
	return a
}

// Ledger returns the server's ledger (for tools and tests in the same process).
func (s *Server) Ledger() *ledger.Store { return s.ledger }

// Run serves until ctx is done, then shuts down in order: HTTP, ingest and
// publisher (which finish what they hold), broker, ledger.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{"ingest": s.ingest.Run, "publisher": s.pub.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	wg.Go(func() { s.heldLoop(ctx) })
	wg.Go(func() { s.renewLoop(ctx) })
	wg.Go(func() { s.keptReplayLoop(ctx) })
	wg.Go(func() { s.console.Run(ctx) })
	if s.broker != nil {
		wg.Go(func() { s.devs.Sweep(ctx, s.broker) })
	}
	go func() {
		if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	if s.metrics != nil {
		go func() {
			if err := s.metrics.Serve(s.metLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
	}
	s.pub.Changed(record.DocKeyring)
	s.pub.Changed(record.DocFares)
	s.pub.Changed(record.DocDenyList)
	s.pub.Changed(wire.DocRelease)
	a := s.Addrs()
	s.log.Info("settlement server running", "http", a.HTTP, "metrics", a.Metrics, "mqtt", a.MQTT, "mqtt_tls", a.MQTTTLS,
		"ledger", s.ledger.Backend(), "keys", s.keys.Path())
	s.warnExposed(a)
	if s.cfg.Ready != nil {
		s.cfg.Ready(a)
	}
	var err error
	select {
	case <-ctx.Done():
	case <-s.ledger.Lost():
		// restored holds the ledger: nothing may be written beside it,
		// and this process's state (keyring, fare tables, the restore
		// window) is from before it.
		err = errors.New("the ledger was taken by 'farego-settlement restored' while this server's lock was lost: start the server again once it is done")
		s.log.Error("settlement server stopping", "err", err)
	case err = <-errc:
		s.log.Error("settlement server stopping on an error", "err", err)
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	s.http.Shutdown(sctx)
	if s.metrics != nil {
		s.metrics.Shutdown(sctx)
	}
	wg.Wait()
	s.kept.sending.Wait() // the ingest stopped: no more are started
	s.log.Info("settlement server stopped")
	return err
}

// reuseWindow is the ledger's ReuseWindow under the server's code policy:
// the code's maximum age plus the clock skew (ledger.DefaultReuseWindow
// with paycode's defaults). Left at the default, a server run with a
// longer --max-age denied the pass of a rider who showed one code on two
// buses of a transfer that both validators accepted
// (TestReuseWindowFollowsPolicy).
func reuseWindow(p paycode.Policy) time.Duration {
	maxAge, skew := p.MaxAge.Truncate(time.Second), p.Skew.Truncate(time.Second)
	if p.MaxAge <= 0 {
		maxAge = paycode.DefaultMaxAge
	}
	switch {
	case p.Skew == 0:
		skew = paycode.DefaultSkew
	case p.Skew < 0:
		skew = 0
	}
	return maxAge + skew
}

func (s *Server) close() {
	if s.broker != nil {
		s.broker.Close()
	}
	if s.httpLn != nil {
		s.httpLn.Close()
	}
	if s.metLn != nil {
		s.metLn.Close()
	}
	if s.ledger != nil {
		s.ledger.Close()
	}
}

// document is the publisher's source of fleet downlinks.
func (s *Server) document(ctx context.Context, kind string) (uint64, []byte, error) {
	switch kind {
	case record.DocKeyring:
		s.syncKeyring(ctx)
		kr := s.keys.Keyring()
		b, err := kr.MarshalJSON()
		return kr.Version(), b, err
	case record.DocFares:
		t, err := s.ledger.LatestFareTable(ctx)
		if errors.Is(err, ledger.ErrNoFareTable) {
			return 0, nil, nil
		}
		if err != nil {
			return 0, nil, err
		}
		b, err := t.Marshal()
		return t.Version, b, err
	case record.DocDenyList:
		c, err := s.denyList(ctx)
		if err != nil || c.whole == nil {
			return 0, nil, err // too large for one downlink: shards only
		}
		return c.version, c.whole, nil
	case wire.DocRelease:
		return s.rels.Document()
	}
	return 0, nil, fmt.Errorf("unknown downlink kind %q", kind)
}

// indexPage is what a person who opens the server's address sees: where
// the wallet, the console and the API are (it was a JSON 404).
const indexPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>farego settlement server</title></head>
<body>
<h1>farego settlement server</h1>
<ul>
<li><a href="/wallet/">Rider wallet</a>: an account, its balance, rides and payment codes</li>
<li><a href="/console/">Operator console</a>: accounts, devices, taps kept aside, reports (an operator or auditor token)</li>
<li>HTTP API under <code>/v1/</code> (the README's HTTP API section); <a href="/healthz">/healthz</a>%s</li>
</ul>
</body></html>
`

// indexHandler serves indexPage; withMetrics: /metrics is on this address
// (not moved to one of its own by --metrics), and the page links it.
func indexHandler(withMetrics bool) http.Handler {
	link := ""
	if withMetrics {
		link = `, <a href="/metrics">/metrics</a>`
	}
	page := fmt.Sprintf(indexPage, link)
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'") // as the API's: not in another site's frame
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		io.WriteString(w, page)
	})
}
