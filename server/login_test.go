package server

import (
	"testing"

	"github.com/farego/farego/server/broker"
)

// The README's external-broker command names --broker-username
// farego-server and takes the password from FAREGO_BROKER_PASSWORD; with
// the variable unset the server logged in with an empty password and was
// refused for ever, where leaving the username out worked.
func TestServerLoginDerivesFaregoServerPassword(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	derived := broker.ServerPassword(secret)
	for _, c := range []struct{ user, pass, wantUser, wantPass string }{
		{"", "", broker.DefaultServerUsername, derived},
		{broker.DefaultServerUsername, "", broker.DefaultServerUsername, derived},
		{broker.DefaultServerUsername, "given", broker.DefaultServerUsername, "given"},
		{"someone", "", "someone", ""}, // a certificate login, say
		{"someone", "pw", "someone", "pw"},
	} {
		if u, p := serverLogin(c.user, c.pass, secret); u != c.wantUser || p != c.wantPass {
			t.Errorf("serverLogin(%q, %q) = %q, %q; want %q, %q", c.user, c.pass, u, p, c.wantUser, c.wantPass)
		}
	}
}
