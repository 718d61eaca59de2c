package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// PKI is a throw-away certificate authority with a server certificate for
// 127.0.0.1/localhost and client certificates, all ECDSA P-256, written as
// PEM files to a test's temporary directory. Its methods may be called from
// several goroutines.
type PKI struct {
	Dir string

	CAFile         string // the CA certificate
	ServerCertFile string // server certificate (IP 127.0.0.1, DNS localhost)
	ServerKeyFile  string
	ClientCertFile string // client certificate with the CN given to NewPKI ("" if none)
	ClientKeyFile  string

	CAPool *x509.CertPool

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey

	mu      sync.Mutex
	clients map[string][2]string // common name → certificate and key files
}

// NewPKI makes a CA, a server certificate and a client certificate whose
// common name is clientCN (a device id, for brokers that map the
// certificate to a username). With clientCN "" it makes no client
// certificate; ClientCert and ClientTLS make more at any time.
func NewPKI(tb testing.TB, clientCN string) *PKI {
	tb.Helper()
	p := &PKI{Dir: tb.TempDir(), clients: map[string][2]string{}}
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: "farego test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		tb.Fatal(err)
	}
	p.caKey = key
	p.CAPool = x509.NewCertPool()
	p.CAPool.AddCert(p.ca)
	p.CAFile = filepath.Join(p.Dir, "ca.pem")
	writePEM(tb, p.CAFile, "CERTIFICATE", der)

	p.ServerCertFile, p.ServerKeyFile = p.issue(tb, "server", "localhost", true)
	if clientCN != "" {
		p.ClientCertFile, p.ClientKeyFile = p.issue(tb, "client", clientCN, false)
	}
	return p
}

// ClientCert returns the certificate and key files of a client certificate
// with common name cn, issued on the first call for that name (apart from
// the one NewPKI made).
func (p *PKI) ClientCert(tb testing.TB, cn string) (certFile, keyFile string) {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.clients[cn]; ok {
		return f[0], f[1]
	}
	certFile, keyFile = p.issue(tb, "client-"+cn, cn, false)
	p.clients[cn] = [2]string{certFile, keyFile}
	return certFile, keyFile
}

// ClientCertificate returns ClientCert(tb, cn) loaded, for a tls.Config.
func (p *PKI) ClientCertificate(tb testing.TB, cn string) tls.Certificate {
	tb.Helper()
	certFile, keyFile := p.ClientCert(tb, cn)
	return loadPair(tb, certFile, keyFile)
}

// ClientTLS returns a client TLS configuration that trusts the CA and
// presents the client certificate for cn, or none if cn is "".
func (p *PKI) ClientTLS(tb testing.TB, cn string) *tls.Config {
	tb.Helper()
	c := &tls.Config{RootCAs: p.CAPool, MinVersion: tls.VersionTLS12}
	if cn != "" {
		c.Certificates = []tls.Certificate{p.ClientCertificate(tb, cn)}
	}
	return c
}

// ServerCertificate returns the server certificate and key, loaded.
func (p *PKI) ServerCertificate(tb testing.TB) tls.Certificate {
	tb.Helper()
	return loadPair(tb, p.ServerCertFile, p.ServerKeyFile)
}

// ServerTLS returns a broker TLS configuration with the server certificate
// that requires and verifies client certificates issued by the CA.
func (p *PKI) ServerTLS(tb testing.TB) *tls.Config {
	tb.Helper()
	return &tls.Config{
		Certificates: []tls.Certificate{p.ServerCertificate(tb)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.CAPool,
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientCertDated returns the files of a new client certificate with
// common name cn valid from notBefore to notAfter (an expired device
// certificate, one about to end).
func (p *PKI) ClientCertDated(tb testing.TB, cn string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	tb.Helper()
	return p.issueDated(tb, "client-"+cn+"-"+serial(tb).String(), cn, false, notBefore, notAfter)
}

// issue makes a certificate signed by the CA and writes it and its key.
func (p *PKI) issue(tb testing.TB, name, cn string, server bool) (certFile, keyFile string) {
	tb.Helper()
	return p.issueDated(tb, name, cn, server, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

func (p *PKI) issueDated(tb testing.TB, name, cn string, server bool, notBefore, notAfter time.Time) (certFile, keyFile string) {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
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
	certFile = filepath.Join(p.Dir, name+".pem")
	keyFile = filepath.Join(p.Dir, name+"-key.pem")
	writePEM(tb, certFile, "CERTIFICATE", der)
	writePEM(tb, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

func loadPair(tb testing.TB, certFile, keyFile string) tls.Certificate {
	tb.Helper()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}
