package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/sync/brokertest"
)

// TestTLSCertificateExpiryLogged: the broker's own TLS certificate, expired
// or ending within CertExpiryWarning, is named in the log at start (every
// device connecting over TLS is refused from its end, the fleet at once,
// and the server said nothing: the operator saw every bus go offline).
func TestTLSCertificateExpiryLogged(t *testing.T) {
	p := brokertest.NewPKI(t, "") // certificates valid for 24 h
	for _, tc := range []struct {
		name  string
		shift time.Duration
		want  string
	}{
		{"expires soon", 0, `level=WARN msg="broker: the TLS certificate expires soon`},
		{"expired", 48 * time.Hour, `level=ERROR msg="broker: the TLS certificate has expired`},
		{"not valid yet", -48 * time.Hour, `level=ERROR msg="broker: the TLS certificate is not valid yet`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log brokertest.SyncBuffer
			b := startBroker(t, Config{
				TLSListen: "127.0.0.1:0", TLSCertFile: p.ServerCertFile, TLSKeyFile: p.ServerKeyFile,
				Logger: slog.New(slog.NewTextHandler(&log, nil)),
				Now:    func() time.Time { return time.Now().Add(tc.shift) },
			})
			if got := log.String(); !strings.Contains(got, tc.want) || !strings.Contains(got, "broker-cert") {
				t.Errorf("log lacks %q with the fix:\n%s", tc.want, got)
			}
			if end := b.TLSNotAfter(); end.IsZero() {
				t.Error("TLSNotAfter is zero with a TLS certificate")
			}
		})
	}
	var log brokertest.SyncBuffer
	startBroker(t, Config{TLSListen: "127.0.0.1:0", TLSCertFile: p.ServerCertFile, TLSKeyFile: p.ServerKeyFile,
		Logger: slog.New(slog.NewTextHandler(&log, nil)), Now: func() time.Time { return time.Now().Add(-time.Minute) }})
	if got := log.String(); strings.Contains(got, "TLS certificate") && !strings.Contains(got, "expires soon") {
		t.Errorf("unexpected certificate complaint:\n%s", got)
	}
}

// TestExpiredClientCertificateLogged: a device whose client certificate
// expired is refused by the TLS handshake and named in the broker's log
// (at most once a minute), with what to do; it was only at debug level, so
// the server showed the bus offline and nothing else.
func TestExpiredClientCertificateLogged(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	var log brokertest.SyncBuffer
	secret := newSecret(t)
	tc := p.ServerTLS(t)
	tc.Time = func() time.Time { return time.Now().Add(48 * time.Hour) } // the device's 24 h certificate has ended
	b := startBroker(t, Config{
		Secret: secret, TLSListen: "127.0.0.1:0", TLS: tc,
		Devices: testDevices{secret: secret},
		Logger:  slog.New(slog.NewTextHandler(&log, nil)),
	})
	client := p.ClientTLS(t, "bus-7")
	client.Time = func() time.Time { return time.Now().Add(-time.Minute) }
	for range 3 {
		if _, _, err := dial(t, "ssl://"+b.TLSAddr(), "", "", client, asDevice("bus-7")); err == nil {
			t.Fatal("an expired client certificate logged in")
		}
	}
	want := `level=WARN msg="broker: a client certificate has expired: the device cannot connect" listener=mqtts identity=bus-7`
	waitFor(t, "the refusal logged", func() bool { return strings.Contains(log.String(), want) })
	if got := log.String(); strings.Count(got, "client certificate") != 1 || !strings.Contains(got, "farego-provision device --force") {
		t.Errorf("want one line naming bus-7 and the fix:\n%s", got)
	}
}

// TestForeignClientCertificatesLogBounded: anyone reaching the TLS port
// can present a certificate of their own making, with any name: the
// refusal names it, and each new name got a line of its own (a 16 KiB
// name, a 16 KiB line; one address, one line per name it made up). The
// name is cut, and a certificate of another CA is logged once a minute an
// address, whatever its name.
func TestForeignClientCertificatesLogBounded(t *testing.T) {
	p := brokertest.NewPKI(t, "")
	var log brokertest.SyncBuffer
	secret := newSecret(t)
	b := startBroker(t, Config{
		Secret: secret, TLSListen: "127.0.0.1:0", TLS: p.ServerTLS(t),
		Devices: testDevices{secret: secret},
		Logger:  slog.New(slog.NewTextHandler(&log, nil)),
	})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const names = 5
	for i := range names {
		cn := fmt.Sprintf("bus-%d-", i) + strings.Repeat("x", 16<<10)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
		conn, err := tls.Dial("tcp", b.TLSAddr(), &tls.Config{InsecureSkipVerify: true,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }})
		if err != nil {
			continue // refused in the handshake
		}
		conn.Read(make([]byte, 1)) // the server's alert
		conn.Close()
	}
	waitFor(t, "the refusal logged", func() bool { return strings.Contains(log.String(), "client certificate") })
	// Each refusal is logged before its connection is given back: all
	// five are in the log by now if they are to be.
	waitFor(t, "the connections given back", func() bool { return b.open.Load() == 0 })
	got := log.String()
	if n := strings.Count(got, "client certificate"); n != 1 {
		t.Errorf("%d lines for %d made-up names from one address, want 1", n, names)
	}
	for _, line := range strings.Split(got, "\n") {
		if len(line) > 2048 {
			t.Errorf("a log line of %d bytes: %.200s…", len(line), line)
		}
	}
}
