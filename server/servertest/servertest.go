// Package servertest runs a real settlement server for tests: keys made in
// a temporary directory, its SQLite ledger and embedded broker there, HTTP
// and MQTT on loopback ports the kernel picks. Test support only.
package servertest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
)

// Start runs a settlement server until the test ends and returns the
// addresses it listens on.
func Start(tb testing.TB) server.Addrs {
	tb.Helper()
	dir := tb.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		tb.Fatal(err)
	}
	return Run(tb, dir)
}

// Run runs a settlement server on dir, whose key directory (dir/keys) is
// made, until the test ends, and returns its addresses once it serves.
func Run(tb testing.TB, dir string) server.Addrs {
	tb.Helper()
	return RunConfig(tb, server.Config{DataDir: dir})
}

// RunConfig is Run with cfg (its DataDir made, with keys), on loopback
// ports the kernel picks.
func RunConfig(tb testing.TB, cfg server.Config) server.Addrs {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Addrs, 1)
	cfg.HTTPListen, cfg.MQTTListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Ready = func(a server.Addrs) { ready <- a }
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case a := <-ready:
		return a
	case err := <-done:
		tb.Fatalf("server: %v", err)
	case <-time.After(60 * time.Second):
		tb.Fatal("the server did not start")
	}
	return server.Addrs{}
}
