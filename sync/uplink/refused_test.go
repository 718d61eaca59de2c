package uplink

import (
	"testing"

	"github.com/farego/farego/sync/brokertest"
)

// TestRevokedWhileConnectedLogged: a validator connected when the
// operator revokes it (farego-settlement device revoke) or provisions its
// id again (--force) is cut off and then refused at every reconnection.
// Its log said "connection lost; reconnecting" and then nothing above
// debug level for as long as it ran (a refusal after a lost connection
// was not logged), while its taps piled up: the technician could not tell
// a revoked device from a broker out of reach. The first refusal is
// logged, once, saying what it means.
func TestRevokedWhileConnectedLogged(t *testing.T) {
	b := brokertest.Start(t, nil)
	f := newFixture(t, b)
	f.cfg.ClientID = DefaultClientIDPrefix + f.id
	u := f.start()
	waitFor(t, "the uplink connected", func() bool { return u.Stats().Connected })
	b.Refuse(f.cfg.ClientID, true)
	b.KillClient(f.cfg.ClientID)
	waitFor(t, "refused reconnections", func() bool { return u.Stats().ConnectFailures >= 3 })
	if !f.logs.contains("refuses the login") || !f.logs.contains("revoked") {
		t.Fatalf("a refused reconnection is not logged, nor what it means:\n%s", f.logs.buf.String())
	}
	if n := f.logs.count("refuses the login"); n != 1 {
		t.Errorf("the refusal logged %d times, want once an outage", n)
	}
	if err := u.stop(); err != nil {
		t.Fatal(err)
	}
}
