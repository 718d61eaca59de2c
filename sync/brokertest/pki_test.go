package brokertest

import (
	"crypto/x509"
	"net"
	"testing"
)

// verify checks that the certificate of pair files verifies against the
// CA for usage (and, for a server certificate, host) and returns it.
func verify(tb testing.TB, p *PKI, certFile, keyFile string, usage x509.ExtKeyUsage, host string) *x509.Certificate {
	tb.Helper()
	pair := loadPair(tb, certFile, keyFile)
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.CAPool, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		tb.Errorf("%s: %v", certFile, err)
	}
	return cert
}

func TestPKI(t *testing.T) {
	p := NewPKI(t, "dev-1")
	if got := verify(t, p, p.ClientCertFile, p.ClientKeyFile, x509.ExtKeyUsageClientAuth, ""); got.Subject.CommonName != "dev-1" {
		t.Errorf("client CN = %q, want dev-1", got.Subject.CommonName)
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		verify(t, p, p.ServerCertFile, p.ServerKeyFile, x509.ExtKeyUsageServerAuth, host)
	}
	if got := verify(t, p, p.ServerCertFile, p.ServerKeyFile, x509.ExtKeyUsageServerAuth, ""); len(got.IPAddresses) != 1 || !got.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("server IP addresses = %v, want 127.0.0.1", got.IPAddresses)
	}

	certFile, keyFile := p.ClientCert(t, "settlement")
	if got := verify(t, p, certFile, keyFile, x509.ExtKeyUsageClientAuth, ""); got.Subject.CommonName != "settlement" {
		t.Errorf("ClientCert CN = %q, want settlement", got.Subject.CommonName)
	}
	if c2, k2 := p.ClientCert(t, "settlement"); c2 != certFile || k2 != keyFile {
		t.Errorf("second ClientCert = %s, %s; want the first one's %s, %s", c2, k2, certFile, keyFile)
	}
	a, b := p.ClientCertificate(t, "bus-7"), p.ClientCertificate(t, "bus-7")
	if string(a.Certificate[0]) != string(b.Certificate[0]) {
		t.Error("ClientCertificate issued a new certificate for the same name")
	}

	c := p.ClientTLS(t, "")
	if len(c.Certificates) != 0 || c.RootCAs != p.CAPool {
		t.Errorf("ClientTLS(\"\") = %d certificates, RootCAs %p; want none and the CA pool", len(c.Certificates), c.RootCAs)
	}
	if c := p.ClientTLS(t, "bus-7"); len(c.Certificates) != 1 || string(c.Certificates[0].Certificate[0]) != string(a.Certificate[0]) {
		t.Error("ClientTLS(bus-7) does not present bus-7's certificate")
	}

	other := NewPKI(t, "")
	if other.ClientCertFile != "" || other.ClientKeyFile != "" {
		t.Errorf("NewPKI with no client CN made %s, %s", other.ClientCertFile, other.ClientKeyFile)
	}
	cert, err := x509.ParseCertificate(other.ServerCertificate(t).Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.CAPool, DNSName: "localhost"}); err == nil {
		t.Error("a server certificate of another PKI verifies against this CA")
	}
}
