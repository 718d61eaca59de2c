package main

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
)

// Files broker-cert writes.
const (
	brokerCertFile = "broker.crt"
	brokerKeyFile  = "broker.key"
)

// cmdBrokerCert issues the MQTT broker's TLS server certificate from the
// fleet CA, the CA every device bundle trusts (ca.crt): for the embedded
// broker (farego-settlement run --mqtt-tls --tls-cert --tls-key) or an
// external one (Mosquitto certfile/keyfile).
func cmdBrokerCert(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-provision broker-cert", flag.ContinueOnError)
	fleet := fs.String("fleet", "fleet", "fleet directory (from init-fleet)")
	hosts := fs.String("host", "", "the broker's host names and IP addresses devices connect to, comma-separated (required)")
	out := fs.String("out", "broker", "where to write broker.crt and broker.key")
	days := fs.Int("days", 825, "validity in days (1 to 3650)")
	force := fs.Bool("force", false, "replace a certificate already in --out (renewal)")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if err := cli.Required(fs, stderr, "host"); err != nil {
		return err
	}
	if *days < 1 || *days > 3650 {
		return cli.Usagef(stderr, fs.Name(), "--days %d: want 1 to 3650", *days)
	}
	var dns []string
	var ips []net.IP
	for _, h := range strings.Split(*hosts, ",") {
		h = strings.TrimSpace(h)
		switch {
		case h == "":
			return cli.Usagef(stderr, fs.Name(), "--host: an empty name in %q", *hosts)
		case net.ParseIP(h) != nil:
			ips = append(ips, net.ParseIP(h))
		case validHostName(h):
			dns = append(dns, strings.ToLower(h))
		default:
			return cli.Usagef(stderr, fs.Name(), "--host: %q is neither a host name nor an IP address", h)
		}
	}
	certPath, keyPath := filepath.Join(*out, brokerCertFile), filepath.Join(*out, brokerKeyFile)
	if !*force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s already exists; use --force to replace it (renewal)", p)
			}
		}
	}
	if err := keepsModes("--out", *out, "the broker's private key",
		"nothing was written: write it to a local directory (--out broker) and carry it to the broker's host as a tarball (tar czf broker.tar.gz broker keeps the modes)"); err != nil {
		return err
	}
	caCert, caKey, _, err := loadCA(*fleet)
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := issueServerCert(caCert, caKey, dns, ips, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	if err := durable.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	// The new pair whole beside the old one, then both renamed and the
	// directory fsynced once: a power cut leaves the old pair or the new
	// one. Written one after the other, a renewal (--force) cut between
	// them left the new key with the old certificate, which the broker
	// refuses ("private key does not match public key"), the old key gone.
	keyNew, certNew := filepath.Join(*out, "."+brokerKeyFile+".new"), filepath.Join(*out, "."+brokerCertFile+".new")
	if err := durable.WriteFile(keyNew, keyPEM, 0o600); err != nil {
		return err
	}
	if err := durable.WriteFile(certNew, certPEM, 0o644); err != nil {
		return err
	}
	if err := os.Rename(keyNew, keyPath); err != nil {
		return err
	}
	if err := cutHere("broker key in place"); err != nil {
		return err
	}
	if err := os.Rename(certNew, certPath); err != nil {
		return err
	}
	if err := durable.SyncDir(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "broker certificate for %s, valid %d days, signed by the fleet CA: %s (key %s, keep it private)\n",
		*hosts, *days, certPath, keyPath)
	return nil
}

// validHostName reports whether h is a DNS name (labels of letters,
// digits and hyphens; a leading "*." for a wildcard).
func validHostName(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// issueServerCert makes a TLS server certificate for the names and
// addresses, signed by the fleet CA.
func issueServerCert(caCert *x509.Certificate, caKey *ecdsa.PrivateKey, dns []string, ips []net.IP, valid time.Duration) (certPEM, keyPEM []byte, err error) {
	cn := ""
	if len(dns) > 0 {
		cn = dns[0]
	} else {
		cn = ips[0].String()
	}
	return issueCert(caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"farego broker"}},
		DNSNames:    dns,
		IPAddresses: ips,
		NotAfter:    time.Now().Add(valid),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}
