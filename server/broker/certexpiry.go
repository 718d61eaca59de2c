package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"
)

// CertExpiryWarning is how long before its end the broker's TLS
// certificate is warned about in the log: every device connecting over TLS
// is refused from that instant, the whole fleet at once.
const CertExpiryWarning = 30 * 24 * time.Hour

// certCheckEvery is how often a running broker looks at its certificate's
// dates again (a server runs for months; the warning must come while it
// does, not only at its next start).
const certCheckEvery = 24 * time.Hour

// TLSNotAfter returns the end of the TLS listener's certificate (the
// earliest, if it has several), or the zero time without one.
func (b *Broker) TLSNotAfter() time.Time {
	var end time.Time
	for _, leaf := range b.tlsLeaves() {
		if end.IsZero() || leaf.NotAfter.Before(end) {
			end = leaf.NotAfter
		}
	}
	return end
}

func (b *Broker) tlsLeaves() []*x509.Certificate {
	if b.tls == nil {
		return nil
	}
	var out []*x509.Certificate
	for _, c := range b.tls.tls.Certificates {
		leaf := c.Leaf
		if leaf == nil && len(c.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(c.Certificate[0])
		}
		if leaf != nil {
			out = append(out, leaf)
		}
	}
	return out
}

// checkCertificate logs the TLS certificate's state when it is out of its
// dates or ends within CertExpiryWarning: an error when devices are refused
// now, a warning while there is time to renew it.
func (b *Broker) checkCertificate() {
	now := b.cfg.Now()
	for _, leaf := range b.tlsLeaves() {
		attrs := []any{"subject", leaf.Subject.CommonName, "not_before", leaf.NotBefore.UTC().Format(time.RFC3339),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
			"fix", "issue a new one (farego-provision broker-cert --host …) and restart the server with it"}
		if b.cfg.TLSCertFile != "" {
			attrs = append(attrs, "file", b.cfg.TLSCertFile)
		}
		switch {
		case now.After(leaf.NotAfter):
			b.log.Error("broker: the TLS certificate has expired: every device connecting over TLS is refused", attrs...)
		case now.Before(leaf.NotBefore):
			b.log.Error("broker: the TLS certificate is not valid yet (check this server's clock): every device connecting over TLS is refused", attrs...)
		case leaf.NotAfter.Sub(now) < CertExpiryWarning:
			left := leaf.NotAfter.Sub(now).Truncate(time.Hour)
			b.log.Warn("broker: the TLS certificate expires soon: from then on every device connecting over TLS is refused",
				append([]any{"left", left.String()}, attrs...)...)
		}
	}
}

// watchCertificate checks the certificate now and every certCheckEvery
// until stop is closed.
func (b *Broker) watchCertificate(stop <-chan struct{}) {
	if b.tls == nil {
		return
	}
	b.checkCertificate()
	go func() {
		t := time.NewTicker(certCheckEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				b.checkCertificate()
			}
		}
	}()
}

// refusedClientCert reports the client certificate a TLS handshake refused
// (a device's expired certificate, or one of another CA), or nil.
func refusedClientCert(err error) (*x509.Certificate, error) {
	var v *tls.CertificateVerificationError
	if !errors.As(err, &v) || len(v.UnverifiedCertificates) == 0 {
		return nil, nil
	}
	return v.UnverifiedCertificates[0], v.Err
}
