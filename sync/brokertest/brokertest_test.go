package brokertest

import (
	"crypto/tls"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// connect connects a paho client (no automatic reconnection) or fails.
func connect(tb testing.TB, url, id string, tlsConfig *tls.Config, will bool) paho.Client {
	tb.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetTLSConfig(tlsConfig).SetAutoReconnect(false)
	if will {
		o.SetWill("t/will", "gone", 1, true)
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		tb.Fatalf("connect %s: %v", id, tok.Error())
	}
	tb.Cleanup(func() { c.Disconnect(100) })
	return c
}

func TestRestartSamePortKeepsRetained(t *testing.T) {
	b := Start(t, nil)
	addr := b.Addr()
	c := connect(t, b.URL(), "a", nil, false)
	if tok := c.Publish("t/r", 1, true, "kept"); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	b.Stop()
	if b.Running() {
		t.Fatal("Running after Stop")
	}
	b.Restart()
	if b.Addr() != addr {
		t.Errorf("address after restart %s, want %s", b.Addr(), addr)
	}
	if got, ok := b.Retained("t/r"); !ok || string(got) != "kept" {
		t.Errorf("retained after restart = %q, %t; want kept", got, ok)
	}
	connect(t, b.URL(), "b", nil, false)
}

func TestKillClientPublishesWill(t *testing.T) {
	b := Start(t, nil)
	connect(t, b.URL(), "victim", nil, true)
	deadline := time.Now().Add(time.Minute)
	for !b.KillClient("victim") {
		if time.Now().After(deadline) {
			t.Fatal("client never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		if got, ok := b.Retained("t/will"); ok && string(got) == "gone" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no will published")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRefuseAndUsers(t *testing.T) {
	b := Start(t, &Options{Users: map[string]string{"u": "p"}})
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("x").SetUsername("u").SetPassword("wrong").SetAutoReconnect(false)
	if tok := paho.NewClient(o).Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() == nil {
		t.Error("wrong password accepted")
	}
	b.Refuse("y", true)
	o = paho.NewClientOptions().AddBroker(b.URL()).SetClientID("y").SetUsername("u").SetPassword("p").SetAutoReconnect(false)
	if tok := paho.NewClient(o).Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() == nil {
		t.Error("refused client accepted")
	}
}

func TestMutualTLS(t *testing.T) {
	pki := NewPKI(t, "dev-1")
	b := Start(t, &Options{TLS: pki.ServerTLS(t)})
	cert, err := tls.LoadX509KeyPair(pki.ClientCertFile, pki.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	connect(t, b.URL(), "tls", &tls.Config{RootCAs: pki.CAPool, Certificates: []tls.Certificate{cert}}, false)
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("nocert").SetTLSConfig(&tls.Config{RootCAs: pki.CAPool}).SetAutoReconnect(false)
	if tok := paho.NewClient(o).Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() == nil {
		t.Error("client without a certificate accepted")
	}
}
