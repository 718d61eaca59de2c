package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
)

// TestExternalBrokerHalfAClientCertificate: --broker-key without
// --broker-cert was ignored without a word (the server went on to the
// broker with no client certificate, to be refused there as if the
// certificate were wrong), and --broker-cert without --broker-key said
// "client certificate: open : no such file or directory". Both are
// refused at start, naming what is missing; nothing is connected to.
func TestExternalBrokerHalfAClientCertificate(t *testing.T) {
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	pem := filepath.Join(dir, "client.pem")
	if err := os.WriteFile(pem, []byte("not read"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  func(*server.Config)
		want string
	}{
		{"key alone", func(c *server.Config) { c.MQTTKeyFile = pem }, "--broker-cert"},
		{"certificate alone", func(c *server.Config) { c.MQTTCertFile = pem }, "--broker-key"},
	} {
		cfg := server.Config{DataDir: dir, BrokerURL: "ssl://127.0.0.1:1", HTTPListen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0"}
		c.cfg(&cfg)
		ctx, cancel := context.WithCancel(context.Background())
		srv, err := server.New(ctx, cfg)
		if err == nil {
			cancel()
			_ = srv.Run(ctx)
			t.Errorf("%s: the server started", c.name)
			continue
		}
		cancel()
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want it to name %s", c.name, err, c.want)
		}
	}
}
