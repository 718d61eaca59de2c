// Package apitest serves the settlement HTTP API from a real SQLite ledger
// and key directory in a temporary directory, for tests of its clients
// (farego-rider, farego-provision). Test support only.
package apitest

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

// Server is a running API with its ledger and keys.
type Server struct {
	URL       string
	Store     *ledger.Store
	Keys      *keys.Dir
	TokenFile string // the operator token's file
	srv       *httptest.Server
}

// Start serves the API until the test ends (or Close).
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// Options are StartWith's.
type Options struct {
	FleetKey string // the fleet key's file ("" makes one)
	Currency string // the ledger's ("" EUR)
	// Now is the ledger's clock (nil: time.Now).
	Now func() time.Time
}

// StartWith is Start with options.
func StartWith(tb testing.TB, o Options) *Server {
	tb.Helper()
	dir := tb.TempDir()
	store, err := ledger.Open(context.Background(), filepath.Join(dir, "ledger.db"), &ledger.Options{Currency: o.Currency, Now: o.Now})
	if err != nil {
		tb.Fatal(err)
	}
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{FleetKey: o.FleetKey})
	if err != nil {
		store.Close()
		tb.Fatal(err)
	}
	s := &Server{Store: store, Keys: kd, TokenFile: filepath.Join(dir, "keys", keys.TokenFile),
		srv: httptest.NewServer(api.New(api.Config{Ledger: store, Keys: kd}))}
	s.URL = s.srv.URL
	tb.Cleanup(func() {
		s.srv.Close()
		store.Close()
	})
	return s
}

// Close stops serving HTTP (the ledger stays readable), as a server going
// out of reach does.
func (s *Server) Close() { s.srv.Close() }
