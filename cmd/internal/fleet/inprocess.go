package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
)

// DefaultFares is the fare table StartServer puts in force when its
// config names none: a flat adult fare of 2.50 EUR, free transfers within
// 30 minutes, a daily cap of 7.00.
const DefaultFares = `{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}},` +
	`"transfer":{"window":"30m","fare":0},"daily_cap":{"adult":700}}`

// InProcess is a settlement server running in this process.
type InProcess struct {
	Server         // how a Fleet reaches it
	Count  Counter // the taps in its ledger, read from the ledger itself
	Srv    *server.Server
	stop   func()
}

// Stop stops the server and waits for it.
func (p *InProcess) Stop() { p.stop() }

// StartServer initialises keys in dir/keys and runs a settlement server
// in-process on loopback ports (embedded broker; ledger db, default
// SQLite in dir), without a credential minimum (some simulated riders have
// little money), with fares (default DefaultFares) in force. Its limit on
// anonymous sign-ups is the default one: the fleet signs its riders up
// with the operator's token, as against any server.
func StartServer(ctx context.Context, dir, db, fares string, log *slog.Logger) (*InProcess, error) {
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{})
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if fares == "" {
		fares = DefaultFares
	}
	ready := make(chan server.Addrs, 1)
	srv, err := server.New(ctx, server.Config{DataDir: dir, DB: db, HTTPListen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0",
		CredentialMinimum: -1, Logger: log, Ready: func(a server.Addrs) { ready <- a }})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	var a server.Addrs
	select {
	case a = <-ready:
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("fleet: settlement server: %w", err)
	}
	p := &InProcess{Srv: srv, stop: func() { cancel(); <-done }}
	tok, err := os.ReadFile(filepath.Join(dir, "keys", keys.TokenFile))
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.Server = Server{API: "http://" + a.HTTP, Broker: "tcp://" + a.MQTT, Token: strings.TrimSpace(string(tok)), FleetKey: kd.FleetPublic()}
	p.Count = func(ctx context.Context) (int64, error) {
		st, err := srv.Ledger().Stats(ctx)
		return st.Taps, err
	}
	if err := cli.CallJSON(ctx, "PUT", p.API+"/v1/fares", p.Token, json.RawMessage(fares), nil); err != nil {
		p.Stop()
		return nil, fmt.Errorf("fleet: fare table: %w", err)
	}
	return p, nil
}
