package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/farego/farego/server/broker"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
)

// authTTL is how long the server believes what it read of a device's
// credential (key, broker password hash, certificate, revocation): a
// rotation or revocation made through any settlement instance takes effect
// on this one within it.
const authTTL = 2 * time.Second

// maxCachedDevices bounds the credential cache (it is emptied when full).
const maxCachedDevices = 100_000

// Devices answers who a device is from the ledger, for the embedded broker
// (broker.DeviceAuthority) and the ingest (its key, or its revocation),
// caching each device's credential for authTTL. Use NewDevices.
type Devices struct {
	ledger *ledger.Store
	mu     sync.Mutex
	m      map[string]cachedAuth
	// login is what each connected device logged in with (password hash
	// and certificate pin), to disconnect it when either changes.
	login map[string]string
}

// NewDevices returns a Devices that reads l.
func NewDevices(l *ledger.Store) *Devices { return &Devices{ledger: l} }

var _ broker.DeviceAuthority = (*Devices)(nil)

type cachedAuth struct {
	a   ledger.DeviceAuth
	err error
	at  time.Time
}

// Auth returns a device's credential as the ledger has it, at most authTTL
// old.
func (d *Devices) Auth(ctx context.Context, id string) (ledger.DeviceAuth, error) {
	now := time.Now()
	d.mu.Lock()
	c, ok := d.m[id]
	d.mu.Unlock()
	if ok && now.Sub(c.at) < authTTL {
		return c.a, c.err
	}
	a, err := d.ledger.DeviceAuth(ctx, id)
	if err != nil && !errors.Is(err, ledger.ErrNotFound) {
		return a, err // a store failure is not cached
	}
	d.mu.Lock()
	if d.m == nil || len(d.m) >= maxCachedDevices {
		d.m = map[string]cachedAuth{}
	}
	d.m[id] = cachedAuth{a: a, err: err, at: now}
	d.mu.Unlock()
	return a, err
}

// Forget drops a device from the cache (after a change made here).
func (d *Devices) Forget(id string) {
	d.mu.Lock()
	delete(d.m, id)
	d.mu.Unlock()
}

var (
	errUnknownDevice = errors.New("unknown device")
	errRevoked       = errors.New("device revoked")
)

func (a *Devices) check(id string) (ledger.DeviceAuth, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := a.Auth(ctx, id)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return d, errUnknownDevice
	case err != nil:
		return d, err
	case !d.Revoked.IsZero():
		return d, errRevoked
	}
	return d, nil
}

func (a *Devices) remember(id string, d ledger.DeviceAuth) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.login == nil || len(a.login) >= maxCachedDevices {
		a.login = map[string]string{}
	}
	a.login[id] = loginOf(d)
}

func loginOf(d ledger.DeviceAuth) string { return d.MQTTHash + "|" + fmt.Sprintf("%x", d.CertSHA256) }

// CheckPassword implements broker.DeviceAuthority.
func (a *Devices) CheckPassword(id string, password []byte) error {
	d, err := a.check(id)
	if err != nil {
		return err
	}
	ok, err := broker.CheckPassword(d.MQTTHash, string(password))
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("wrong password")
	}
	a.remember(id, d)
	return nil
}

// CheckCertificate implements broker.DeviceAuthority.
func (a *Devices) CheckCertificate(id string, der []byte) error {
	d, err := a.check(id)
	if err != nil {
		return err
	}
	if d.CertSHA256 == nil {
		return errors.New("no certificate registered for the device")
	}
	if sum := sha256.Sum256(der); !bytes.Equal(sum[:], d.CertSHA256) {
		return errors.New("not the device's registered certificate")
	}
	a.remember(id, d)
	return nil
}

// Sweep disconnects, every authTTL until ctx is done, the devices
// connected to b whose credential was revoked or rotated since they logged
// in (through this instance or another).
func (d *Devices) Sweep(ctx context.Context, b *broker.Broker) {
	t := time.NewTicker(authTTL)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range b.Devices() {
			a, err := d.Auth(ctx, id)
			if err != nil && !errors.Is(err, ledger.ErrNotFound) {
				continue // the ledger is unreachable: keep the connection
			}
			d.mu.Lock()
			login, known := d.login[id]
			d.mu.Unlock()
			if err != nil || !a.Revoked.IsZero() || (known && login != loginOf(a)) {
				b.Disconnect(id)
			}
		}
	}
}

// Key is the ingest's view of a device: its key, ErrUnknownDevice, or its
// key and ErrRevokedDevice.
func (dv *Devices) Key(ctx context.Context, id string) (ed25519.PublicKey, error) {
	d, err := dv.Auth(ctx, id)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return nil, fmt.Errorf("%w: %s", ingest.ErrUnknownDevice, id)
	case err != nil:
		return nil, err
	case !d.Revoked.IsZero():
		return d.PublicKey, fmt.Errorf("%w: %s (since %s)", ingest.ErrRevokedDevice, id, d.Revoked.Format(time.RFC3339))
	}
	return d.PublicKey, nil
}

// deviceChanged is told by the API that a device was registered or revoked
// here: forget what was cached of it and drop its broker connection (the
// sweep does it too, within authTTL, on every instance).
func (s *Server) deviceChanged(id string) {
	s.devs.Forget(id)
	if s.broker != nil {
		s.broker.Disconnect(id)
	}
}
