package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/sync/keyfile"
)

// Fleet directory files.
const (
	fleetKeyFile = "fleet.key"
	fleetPubFile = "fleet.pub"
	caKeyFile    = "ca.key"
	caCertFile   = "ca.crt"
)

func cmdInitFleet(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-provision init-fleet", flag.ContinueOnError)
	dir := fs.String("dir", "fleet", "directory for the fleet key and the CA (keep it offline and backed up); a directory with a fleet key and no CA (a settlement server's DATA/keys made without --fleet-key) gets its CA")
	name := fs.String("name", "farego fleet CA", "CA common name")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if err := keepsModes("--dir", *dir, "the fleet's private keys",
		"nothing was written: make the fleet on this computer's disk (--dir fleet) and keep its copy on the card as a tarball (tar czf fleet.tar.gz fleet keeps the modes)"); err != nil {
		return err
	}
	exists := func(f string) bool { _, err := os.Stat(filepath.Join(*dir, f)); return err == nil }
	if exists(caKeyFile) && !exists(caCertFile) {
		// A run cut (a power cut, a kill) between the CA's key and its
		// certificate: no device can hold a certificate of it.
		return fmt.Errorf("%s has no %s: an earlier init-fleet stopped before it finished; if no device was provisioned from this directory since, delete %s and run init-fleet again",
			filepath.Join(*dir, caKeyFile), caCertFile, filepath.Join(*dir, caKeyFile))
	}
	for _, f := range []string{caKeyFile, caCertFile} {
		if exists(f) {
			return fmt.Errorf("%s already exists: a fleet is made once (its key is on every validator)", filepath.Join(*dir, f))
		}
	}
	// A fleet key whose public half a cut run never wrote: the half is
	// derived from it (a re-run was refused, "holds part of a fleet").
	if exists(fleetKeyFile) && !exists(fleetPubFile) {
		priv, err := keyfile.ReadPrivate(filepath.Join(*dir, fleetKeyFile))
		if err != nil {
			return fmt.Errorf("%s holds part of a fleet: %w", *dir, err)
		}
		if err := keyfile.WritePublic(filepath.Join(*dir, fleetPubFile), priv.Public().(ed25519.PublicKey)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s had no %s (an earlier run stopped before it): written from %s\n", *dir, fleetPubFile, fleetKeyFile)
	}
	// A fleet key without its CA — the key directory of a settlement
	// server made by init without --fleet-key — gets its CA: devices can
	// then be provisioned with --fleet DIR. (Without this, such a server
	// could never have a validator short of a new init.)
	addCA := exists(fleetKeyFile) || exists(fleetPubFile)
	if addCA {
		if err := checkFleetPair(*dir); err != nil {
			return err
		}
	} else {
		if err := durable.MkdirAll(*dir, 0o700); err != nil {
			return err
		}
		_, fleet, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		if err := keyfile.WritePrivate(filepath.Join(*dir, fleetKeyFile), fleet); err != nil {
			return err
		}
		if err := keyfile.WritePublic(filepath.Join(*dir, fleetPubFile), fleet.Public().(ed25519.PublicKey)); err != nil {
			return err
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: *name, Organization: []string{"farego"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeECKey(filepath.Join(*dir, caKeyFile), caKey); err != nil {
		return err
	}
	if err := durable.Create(filepath.Join(*dir, caCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	if addCA {
		fmt.Fprintf(stdout, "the fleet key in %s has its MQTT CA now: %s and %s; provision devices with --fleet %s\n",
			*dir, caKeyFile, caCertFile, *dir)
		return nil
	}
	fmt.Fprintf(stdout, "fleet created in %s: %s (signs downlinks; keep it secret), %s (goes on every validator), %s and %s (MQTT CA)\n",
		*dir, fleetKeyFile, fleetPubFile, caKeyFile, caCertFile)
	return nil
}

// checkFleetPair makes sure dir holds a fleet key and its public half.
func checkFleetPair(dir string) error {
	priv, err := keyfile.ReadPrivate(filepath.Join(dir, fleetKeyFile))
	if err != nil {
		return fmt.Errorf("%s holds part of a fleet: %w", dir, err)
	}
	pub, err := keyfile.ReadPublic(filepath.Join(dir, fleetPubFile))
	if err != nil {
		return fmt.Errorf("%s holds part of a fleet: %w", dir, err)
	}
	if !pub.Equal(priv.Public()) {
		return fmt.Errorf("%s: %s is not the public half of %s", dir, fleetPubFile, fleetKeyFile)
	}
	return nil
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writeECKey(path string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return durable.Create(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// loadCA reads the fleet's CA certificate and key.
func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("fleet CA: %w (run farego-provision init-fleet --dir %s first; a server initialised without --fleet-key keeps its fleet key in DATA/keys: give that directory)", err, dir)
	}
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return nil, nil, nil, fmt.Errorf("%s: no PEM certificate", caCertFile)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, nil, nil, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, nil, fmt.Errorf("%s: no PEM key", caKeyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, nil, fmt.Errorf("%s is not an ECDSA key", caKeyFile)
	}
	return cert, ek, certPEM, nil
}

// issueClientCert makes a TLS client certificate for device id (CN = id),
// valid from an hour before from for 5 years.
func issueClientCert(caCert *x509.Certificate, caKey *ecdsa.PrivateKey, id string, from time.Time) (certPEM, keyPEM []byte, err error) {
	return issueCert(caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: id, Organization: []string{"farego device"}},
		NotBefore:   from.Add(-time.Hour),
		NotAfter:    from.AddDate(5, 0, 0),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// issueCert signs a certificate made from tmpl (its subject, names,
// expiry and extended key usage) with the fleet CA, for a new P-256 key,
// and returns both as PEM.
func issueCert(caCert *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = randSerial()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), nil
}
