package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// waitTimeout bounds every wait for an event in these tests. It is
// generous: other engineers run tests on the same 2-core machine.
const waitTimeout = 90 * time.Second

// TestMain fails the run if goroutines of paho, mochi or this package are
// still running once every test is done.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(15 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func leakedGoroutines(grace time.Duration) string {
	deadline := time.Now().Add(grace)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "eclipse/paho") || strings.Contains(g, "mochi-mqtt") ||
				strings.Contains(g, "server/broker.(*") || strings.Contains(g, "sync/ingest.(*") ||
				strings.Contains(g, "sync/uplink.(*") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLogger writes to the test log when verbose (until the test ends).
func testLogger(tb testing.TB) *slog.Logger {
	w := &tbWriter{tb: tb}
	tb.Cleanup(func() { w.done.Store(true) })
	level := slog.LevelInfo
	if os.Getenv("FAREGO_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type tbWriter struct {
	tb   testing.TB
	done atomic.Bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	if !w.done.Load() && testing.Verbose() {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// uniqueName returns prefix + 8 random hex digits.
func uniqueName(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func newSecret(tb testing.TB) []byte {
	tb.Helper()
	s := make([]byte, 32)
	if _, err := rand.Read(s); err != nil {
		tb.Fatal(err)
	}
	return s
}

// startBroker starts a broker on 127.0.0.1:0 (zero fields of cfg get test
// values) and closes it when the test ends.
func startBroker(tb testing.TB, cfg Config) *Broker {
	tb.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Secret == nil {
		cfg.Secret = newSecret(tb)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	b, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := b.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

// url returns the plain listener's URL.
func (b *Broker) url() string { return "tcp://" + b.Addr() }

// dial connects a paho client (no automatic reconnection) and returns it
// with the connection error. lost, if not nil, is closed when the
// connection is lost.
func dial(tb testing.TB, url, user, pass string, tc *tls.Config, opts ...func(*mqtt.ClientOptions)) (mqtt.Client, <-chan struct{}, error) {
	tb.Helper()
	lost := make(chan struct{})
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(uniqueName("c-")).
		SetUsername(user).SetPassword(pass).SetTLSConfig(tc).
		SetProtocolVersion(4).SetAutoReconnect(false).SetOrderMatters(false).
		SetConnectTimeout(30 * time.Second).
		SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
	for _, f := range opts {
		f(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		tb.Fatal("connect: no answer")
	}
	if err := tok.Error(); err != nil {
		return nil, nil, err
	}
	tb.Cleanup(func() { c.Disconnect(250) })
	return c, lost, nil
}

// mustDial is dial that fails the test on an error.
func mustDial(tb testing.TB, url, user, pass string, tc *tls.Config, opts ...func(*mqtt.ClientOptions)) (mqtt.Client, <-chan struct{}) {
	tb.Helper()
	c, lost, err := dial(tb, url, user, pass, tc, opts...)
	if err != nil {
		tb.Fatalf("connect as %q: %v", user, err)
	}
	return c, lost
}

// subscribe subscribes and returns the SUBACK code and a channel of the
// messages received (topic and payload).
func subscribe(tb testing.TB, c mqtt.Client, filter string) (byte, chan [2]string) {
	tb.Helper()
	ch := make(chan [2]string, 100)
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { ch <- [2]string{m.Topic(), string(m.Payload())} })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		tb.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	for _, code := range tok.(*mqtt.SubscribeToken).Result() { // one filter (paho keys shared ones without $share/GROUP)
		return code, ch
	}
	tb.Fatalf("subscribe %s: no result", filter)
	return 0, nil
}

// publish publishes at QoS 1 and waits for the token.
func publish(tb testing.TB, c mqtt.Client, topic, payload string, retained bool) error {
	tb.Helper()
	tok := c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(waitTimeout) {
		tb.Fatalf("publish %s: no answer", topic)
	}
	return tok.Error()
}

// next waits for the next message.
func next(tb testing.TB, ch chan [2]string) [2]string {
	tb.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitTimeout):
		tb.Fatal("no message")
		return [2]string{}
	}
}

// pki is a throw-away CA with a broker certificate for 127.0.0.1 and
// client certificates, written as PEM files.
type pki struct {
	dir              string
	caFile           string
	serverCert       string
	serverKey        string
	pool             *x509.CertPool
	ca               *x509.Certificate
	caKey            *ecdsa.PrivateKey
	clientCerts      map[string]tls.Certificate
	clientCertFiles  map[string][2]string
	serverCertObject tls.Certificate
}

func newPKI(tb testing.TB) *pki {
	tb.Helper()
	p := &pki{dir: tb.TempDir(), clientCerts: map[string]tls.Certificate{}, clientCertFiles: map[string][2]string{}}
	key := newECKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "farego test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey = key
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.caFile = filepath.Join(p.dir, "ca.pem")
	writePEM(tb, p.caFile, "CERTIFICATE", der)
	p.serverCert, p.serverKey = p.issue(tb, "broker", "localhost", true)
	p.serverCertObject, err = tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// client returns a client certificate with common name cn.
func (p *pki) client(tb testing.TB, cn string) tls.Certificate {
	tb.Helper()
	if c, ok := p.clientCerts[cn]; ok {
		return c
	}
	certFile, keyFile := p.issue(tb, "client-"+cn, cn, false)
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	p.clientCerts[cn], p.clientCertFiles[cn] = c, [2]string{certFile, keyFile}
	return c
}

// clientTLS returns a client TLS configuration trusting the CA, with a
// certificate for cn ("" for none).
func (p *pki) clientTLS(tb testing.TB, cn string) *tls.Config {
	tb.Helper()
	t := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}
	if cn != "" {
		t.Certificates = []tls.Certificate{p.client(tb, cn)}
	}
	return t
}

func (p *pki) issue(tb testing.TB, name, cn string, server bool) (certFile, keyFile string) {
	tb.Helper()
	key := newECKey(tb)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	writePEM(tb, certFile, "CERTIFICATE", der)
	writePEM(tb, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

func newECKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}
