package uplink

import (
	"crypto/ed25519"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/farego/farego/sync/brokertest"
)

func TestMutualTLS(t *testing.T) {
	pki := brokertest.NewPKI(t, "device")
	b := brokertest.Start(t, &brokertest.Options{TLS: pki.ServerTLS(t)})

	t.Run("client certificate", func(t *testing.T) {
		f := newFixture(t, b)
		f.cfg.CAFile, f.cfg.CertFile, f.cfg.KeyFile = pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile
		srv := newTestServer(t, serverOptions{
			url: b.URL(),
			tls: pki.ClientTLS(t, "settlement"),
		}, f.prefix, f.fleet, map[string]ed25519.PublicKey{f.id: pubOf(f.dev)})
		appendTaps(t, f.q, f.taps, 40)
		f.start()
		waitFor(t, "the queue to drain over TLS", func() bool { return queueCount(t, f.q) == 0 })
		srv.check(t, f.id, 40)
	})

	// Every other case must be refused, again and again, and never connect.
	for _, tc := range []struct {
		name string
		set  func(*Config)
	}{
		{"no client certificate", func(c *Config) { c.CAFile = pki.CAFile }},
		{"server not trusted", func(c *Config) {
			other := brokertest.NewPKI(t, "device")
			c.CAFile, c.CertFile, c.KeyFile = other.CAFile, pki.ClientCertFile, pki.ClientKeyFile
		}},
		{"client certificate from another CA", func(c *Config) {
			other := brokertest.NewPKI(t, "device")
			c.CAFile, c.CertFile, c.KeyFile = pki.CAFile, other.ClientCertFile, other.ClientKeyFile
		}},
		{"plain MQTT to a TLS port", func(c *Config) { c.Brokers = []string{"tcp://" + b.Addr()} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, b)
			tc.set(&f.cfg)
			u := f.start()
			waitFor(t, "refused attempts", func() bool { return u.Stats().ConnectFailures >= 2 })
			if st := u.Stats(); st.Connects != 0 || st.LastError == "" {
				t.Errorf("Stats = %+v, want no connection and an error", st)
			}
		})
	}
}

func TestTLSConfigFiles(t *testing.T) {
	pki := brokertest.NewPKI(t, "device")
	f := newFixture(t, nil)
	base := f.cfg
	base.Brokers = []string{"ssl://127.0.0.1:8883"}
	for _, tc := range []struct {
		name    string
		set     func(*Config)
		wantErr string // "" for success
	}{
		{"CA and client certificate", func(c *Config) {
			c.CAFile, c.CertFile, c.KeyFile = pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile
		}, ""},
		{"system roots", func(c *Config) {}, ""},
		{"base tls.Config", func(c *Config) { c.TLS = &tls.Config{ServerName: "broker.example"} }, ""},
		{"missing CA file", func(c *Config) { c.CAFile = pki.Dir + "/nope.pem" }, "the brokers' CA certificate: open "},
		{"CA file without certificates", func(c *Config) { c.CAFile = pki.ClientKeyFile }, "no PEM certificate"},
		{"key without certificate", func(c *Config) { c.KeyFile = pki.ClientKeyFile }, "CertFile and KeyFile"},
		{"mismatched key", func(c *Config) { c.CertFile, c.KeyFile = pki.ClientCertFile, pki.ServerKeyFile }, "client certificate"},
		{"TLS settings with a plain broker", func(c *Config) {
			c.Brokers = []string{"tcp://127.0.0.1:1883"}
			c.CAFile = pki.CAFile
		}, "not TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.set(&cfg)
			u, err := New(cfg, f.q, f.state)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New = %v", err)
				}
				if u.tls == nil || u.tls.MinVersion < tls.VersionTLS12 && cfg.TLS == nil {
					t.Errorf("TLS config = %+v", u.tls)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New = %v, want an error about %q", err, tc.wantErr)
			}
		})
	}
}
