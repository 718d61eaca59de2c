package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/cmd/internal/sdnotify"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/sync/ingest"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-settlement run", flag.ContinueOnError)
	var c server.Config
	fs.StringVar(&c.DataDir, "data", "farego-data", "data directory (ledger.db and keys/)")
	fs.StringVar(&c.DB, "db", "", "ledger DSN: sqlite:PATH (default DATA/ledger.db) or postgres://…")
	fs.StringVar(&c.KeysDir, "keys", "", "key directory (default DATA/keys)")
	fs.StringVar(&c.HTTPListen, "http", server.DefaultHTTPListen, "HTTP API listen address")
	fs.StringVar(&c.MetricsListen, "metrics", "", "serve Prometheus /metrics on this address alone (e.g. 10.0.0.5:9464 on the monitoring network); default: on the HTTP address")
	fs.IntVar(&c.HTTPMaxConns, "http-max-conns", 0, "HTTP connections open at once (0: 16384, or a quarter of the open-files limit if that is less; -1: no limit); at the limit a new one takes the place of the oldest doing nothing (no request yet, or idle between requests)")
	fs.IntVar(&c.HTTPMaxConnsPerAddress, "http-max-conns-per-address", 0, "HTTP connections open at once from one client address, an IPv6 client's /64 (0: 128; -1: no limit); a --trusted-proxy has no limit")
	fs.IntVar(&c.MQTTMaxPendingPerAddress, "mqtt-max-pending-per-address", 0, "embedded broker: connections of one client address not logged in yet (0: 32; -1: no limit; raise it behind a TCP load balancer)")
	fs.StringVar(&c.MQTTListen, "mqtt", server.DefaultMQTTListen, "embedded MQTT broker listen address")
	fs.StringVar(&c.MQTTTLSListen, "mqtt-tls", "", "embedded broker MQTT-over-TLS listen address (e.g. :8883)")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "embedded broker TLS certificate (PEM)")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "embedded broker TLS key (PEM)")
	fs.StringVar(&c.ClientCAFile, "client-ca", "", "embedded broker: require client certificates from this CA (mutual TLS)")
	fs.StringVar(&c.BrokerURL, "broker", "", "use this external MQTT broker (tcp://host:1883, ssl://host:8883) instead of the embedded one")
	fs.StringVar(&c.MQTTUsername, "broker-username", "", "username at the external broker (default farego-server with the derived password)")
	fs.StringVar(&c.MQTTCAFile, "broker-ca", "", "CA of the external TLS broker")
	fs.StringVar(&c.MQTTCertFile, "broker-cert", "", "client certificate at the external broker")
	fs.StringVar(&c.MQTTKeyFile, "broker-key", "", "client key at the external broker")
	fs.StringVar(&c.TopicPrefix, "topic-prefix", "", "MQTT topic prefix (default farego)")
	fs.StringVar(&c.SharedGroup, "shared-group", "", "MQTT shared-subscription group of the settlement instances (default: derived from the broker secret, the same for every instance)")
	fs.StringVar(&c.Releases, "releases", "", "the validator releases directory (default DATA/releases); several instances share one (storage they all mount)")
	fs.DurationVar(&c.CredentialTTL, "credential-ttl", 24*time.Hour, "how long an issued credential is valid")
	keyActivation := fs.Duration("key-activation", keys.DefaultKeyActivation, "how long after a rotation the new issuer key starts signing (the keyring reaches offline validators first); 0s: at once")
	fs.Int64Var(&c.CredentialMinimum, "credential-minimum", 0, "least balance + credit line (minor units) for an offline credential; 0: the fare table's daily cap (or one base fare), -1: none")
	fs.IntVar(&c.DeviceVerifyBudget, "device-verify-budget", ingest.DefaultVerifyBudget, "records of one device an hour (and at once) the server checks — each a payment code's signatures — before it leaves the device's batches unchecked and unacked until the budget refills (-1: no budget)")
	fs.IntVar(&c.DeviceAsideBudget, "device-aside-budget", ingest.DefaultAsideBudget, "records of one device an hour (and at once) the server keeps aside — quarantined, held or flagged — or stores as new taps charged nothing (transfers, past the daily cap, free profiles), before it stops taking the device's batches until the budget refills (-1: no budget)")
	fs.IntVar(&c.AccountsPerMinute, "accounts-per-minute", 0, "anonymous account creations per client address and minute (0: 6, burst 10; -1: no limit)")
	fs.IntVar(&c.MerchantPerMinute, "merchant-per-minute", 0, "online payments and refunds per merchant API token (one till) and minute (0: 120, burst 20; -1: no limit)")
	fs.IntVar(&c.MerchantBurst, "merchant-burst", 0, "the burst --merchant-per-minute allows a merchant token (0: 20; -1: no limit)")
	fs.Func("trusted-proxy", "a reverse proxy in front of the HTTP API (an address or CIDR; repeat it, or separate with commas): its requests count against the client its X-Forwarded-For names", func(v string) error {
		for f := range strings.SplitSeq(v, ",") {
			p, err := parsePrefix(strings.TrimSpace(f))
			if err != nil {
				return err
			}
			c.TrustedProxies = append(c.TrustedProxies, p)
		}
		return nil
	})
	fs.Func("allowed-hosts", "the host names browsers and clients reach the HTTP API, wallet, console and /metrics by (repeat it, or separate with commas; IP addresses and localhost always; *: any): a request naming another is refused, against DNS rebinding (default: any name on an address beyond loopback, none on loopback but from a --trusted-proxy)", func(v string) error {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" && strings.TrimSpace(v) != "" {
				// Said of the whole value: `--allowed-hosts ""` named
				// neither the comma too many nor where.
				return fmt.Errorf("--allowed-hosts %q: an empty name between commas: remove the comma too many", v)
			}
			if f == "" || strings.ContainsAny(f, ":/ ") { // IP addresses are allowed anyway
				return fmt.Errorf("--allowed-hosts %q: a host name (farego.example.net), without scheme or port", f)
			}
			// Names are compared whole, as browsers send them: a pattern
			// or a name in Unicode would match no request, and every
			// rider opening the server by it would get 421.
			if f != "*" && strings.Contains(f, "*") {
				return fmt.Errorf("--allowed-hosts %q: no patterns: name each host (farego.example.net,www.farego.example.net), or * for any", f)
			}
			if strings.ContainsFunc(f, func(r rune) bool { return r > unicode.MaxASCII }) {
				return fmt.Errorf("--allowed-hosts %q: give an international name in the ASCII form browsers send (xn--…)", f)
			}
			c.AllowedHosts = append(c.AllowedHosts, f)
		}
		return nil
	})
	fs.DurationVar(&c.Policy.MaxAge, "max-age", paycode.DefaultMaxAge, "code max age (online payments, re-verification)")
	fs.DurationVar(&c.Policy.Skew, "skew", paycode.DefaultSkew, "clock skew tolerance")
	readyFile := fs.String("ready-file", "", "when serving, write the listen addresses (JSON) to this file (for scripts: use with port 0)")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if c.Policy.MaxAge < 0 || c.Policy.Skew < 0 {
		return cli.Usagef(stderr, "farego-settlement run", "--max-age and --skew must not be negative (0: the defaults, %v and %v)",
			paycode.DefaultMaxAge, paycode.DefaultSkew)
	}
	if c.Policy.MaxAge > paycode.MaxPolicyAge || c.Policy.Skew > paycode.MaxPolicySkew {
		return cli.Usagef(stderr, "farego-settlement run", "--max-age %v and --skew %v: at most %v and %v (a code pays for its age plus the skew)",
			c.Policy.MaxAge, c.Policy.Skew, paycode.MaxPolicyAge, paycode.MaxPolicySkew)
	}
	if c.HTTPMaxConns < -1 || c.HTTPMaxConns > 0 && c.HTTPMaxConns < 16 {
		return cli.Usagef(stderr, "farego-settlement run", "--http-max-conns %d: connections, at least 16 (0: the default, %d or a quarter of the open-files limit; -1: no limit)",
			c.HTTPMaxConns, server.DefaultHTTPMaxConns)
	}
	if c.HTTPMaxConnsPerAddress < -1 {
		return cli.Usagef(stderr, "farego-settlement run", "--http-max-conns-per-address %d: connections, at least 1 (0: the default, %d; -1: no limit)",
			c.HTTPMaxConnsPerAddress, server.DefaultHTTPMaxConnsPerAddress)
	}
	if c.DeviceAsideBudget == 0 || c.DeviceAsideBudget < -1 {
		return cli.Usagef(stderr, "farego-settlement run", "--device-aside-budget %d: records an hour, at least 1 (-1: no budget)", c.DeviceAsideBudget)
	}
	if c.DeviceVerifyBudget == 0 || c.DeviceVerifyBudget < -1 {
		return cli.Usagef(stderr, "farego-settlement run", "--device-verify-budget %d: records an hour, at least 1 (-1: no budget)", c.DeviceVerifyBudget)
	}
	if c.CredentialTTL <= 0 {
		return cli.Usagef(stderr, "farego-settlement run", "--credential-ttl %v: a credential must be valid for some time (default 24h)",
			c.CredentialTTL)
	}
	if c.MetricsListen != "" && c.MetricsListen == c.HTTPListen && !anyPort(c.MetricsListen) {
		return cli.Usagef(stderr, "farego-settlement run", "--metrics %s is the --http address: give it an address of its own, or leave --metrics out to serve /metrics on --http",
			c.MetricsListen)
	}
	switch {
	case *keyActivation < 0 || *keyActivation > api.MaxKeyActivation:
		return cli.Usagef(stderr, "farego-settlement run", "--key-activation %v: from 0s (at once) to %v", *keyActivation, api.MaxKeyActivation)
	case *keyActivation == 0:
		c.KeyActivation = -1 // at once
	default:
		c.KeyActivation = *keyActivation
	}
	if pw := os.Getenv("FAREGO_BROKER_PASSWORD"); pw != "" {
		c.MQTTPassword = pw
	}
	log, err := cli.NewLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return cli.Usagef(stderr, "farego-settlement run", "--log-level/--log-format: %v", err)
	}
	c.Logger = log
	c.AfterCommit = exitAfterCommits(log)
	if *readyFile != "" {
		// One an earlier run left (it is never removed) said ready before
		// this server listened, or when it could not (the port held by
		// that earlier server): the README's by-hand block went on.
		if err := os.Remove(*readyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--ready-file: %w", err)
		}
	}
	notifier := sdnotify.FromEnv()
	c.Ready = func(a server.Addrs) {
		if *readyFile != "" {
			addrs := map[string]string{"http": a.HTTP, "mqtt": a.MQTT, "mqtt_tls": a.MQTTTLS}
			if a.Metrics != "" { // --metrics: its port, for a script that gave port 0
				addrs["metrics"] = a.Metrics
			}
			b, _ := json.Marshal(addrs)
			if err := durable.WriteFile(*readyFile, b, 0o644); err != nil {
				log.Error("writing the ready file", "err", err)
			}
		}
		notifier.Notify("READY=1")
	}
	c.LedgerMustExist = true // only init makes one
	srv, err := server.New(ctx, c)
	if err != nil {
		return noLedgerHint(err)
	}
	go notifier.Watchdog(ctx, nil, nil)
	err = srv.Run(ctx)
	notifier.Notify("STOPPING=1")
	return err
}

// parsePrefix reads an address (a prefix of its own) or a CIDR prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not an address or CIDR prefix", s)
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR prefix", s)
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// anyPort reports whether addr asks the kernel for a port (":0"): two
// such listeners get two ports, so --http and --metrics may both say it
// (a script reads the ports from --ready-file).
func anyPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}
