package mqttclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// LoadTLS is the TLS configuration of an MQTT client from files, the
// device's uplink's and the server's link to an external broker: base
// (cloned; nil: a fresh one, TLS 1.2 at least) with the brokers' CA
// certificates from caFile (PEM; empty: base's roots, or the system's)
// and the client certificate of certFile and keyFile (empty: none) added.
// Its errors say which of the files could not be used.
func LoadTLS(base *tls.Config, caFile, certFile, keyFile string) (*tls.Config, error) {
	var t *tls.Config
	if base != nil {
		t = base.Clone()
	} else {
		t = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if caFile != "" {
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("the brokers' CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("the brokers' CA certificate %s holds no PEM certificate", caFile)
		}
		t.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("a client certificate takes both its certificate file and its key file (given: certificate %q, key %q)",
			certFile, keyFile)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			// tls's errors name neither file ("private key does not match public key").
			return nil, fmt.Errorf("client certificate %s with key %s: %w", certFile, keyFile, err)
		}
		t.Certificates = append(t.Certificates, cert)
	}
	return t, nil
}
