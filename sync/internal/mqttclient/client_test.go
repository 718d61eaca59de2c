package mqttclient

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/farego/farego/sync/brokertest"
)

func TestValidate(t *testing.T) {
	good := Config{Name: "t", Brokers: []string{"tcp://127.0.0.1:1883", "mqtts://h:8883"}, ClientID: "c", KeepAlive: time.Second}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no broker":         func(c *Config) { c.Brokers = nil },
		"scheme":            func(c *Config) { c.Brokers = []string{"ws://h:1"} },
		"no port":           func(c *Config) { c.Brokers = []string{"tcp://h"} },
		"not a URL":         func(c *Config) { c.Brokers = []string{"tcp://u:s3cret@h:1%zz"} },
		"no client id":      func(c *Config) { c.ClientID = "" },
		"NUL in client id":  func(c *Config) { c.ClientID = "a\x00" },
		"password alone":    func(c *Config) { c.Password = "p" },
		"keep-alive":        func(c *Config) { c.KeepAlive = time.Millisecond },
		"negative timeout":  func(c *Config) { c.ConnectTimeout = -1 },
		"backoff inversion": func(c *Config) { c.MinBackoff, c.MaxBackoff = 2*time.Second, time.Second },
	} {
		c := good
		mod(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error repeats a password: %v", name, err)
		}
	}
}

func TestRedact(t *testing.T) {
	got := Redact([]string{"tcp://user:s3cret@h:1883", "ssl://h:8883", "%zz"})
	want := []string{"tcp://user:xxxxx@h:1883", "ssl://h:8883", "(not a URL)"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Redact[%d] = %q, want %q", i, got[i], want[i])
		}
	}
	if !IsTLS("mqtts://h:1") || IsTLS("tcp://h:1") {
		t.Error("IsTLS")
	}
}

// TestRunReconnects runs a client against a real broker: it subscribes,
// gets its session, reconnects after the broker restarts and stops with
// the error a session gives to Fatal, after a goodbye.
func TestRunReconnects(t *testing.T) {
	b := brokertest.Start(t, nil)
	var goodbyes int
	c := New(Config{
		Name: "test", Brokers: []string{b.URL()}, ClientID: brokertest.UniqueName("mqttclient-"),
		KeepAlive: 5 * time.Second, ConnectTimeout: 5 * time.Second,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Filters: map[string]byte{"t/#": 1},
		Goodbye: func(mqtt.Client) { goodbyes++ },
		Logger:  brokertest.Logger(t),
	})
	sessions := make(chan *Session)
	stop := errors.New("stop here")
	done := make(chan error, 1)
	go func() {
		n := 0
		done <- c.Run(context.Background(), func(ctx context.Context, s *Session) error {
			n++
			sessions <- s
			if n == 2 {
				return Fatal(stop)
			}
			return s.Wait(ctx)
		})
	}()
	first := <-sessions
	if first.Broker() != b.URL() || !first.Client().IsConnectionOpen() {
		t.Fatalf("first session: broker %q, open %v", first.Broker(), first.Client().IsConnectionOpen())
	}
	b.Restart()
	<-sessions
	if err := <-done; !errors.Is(err, stop) {
		t.Fatalf("Run = %v, want the Fatal error", err)
	}
	st := c.Stats()
	// A reconnect attempt may fail while the broker restarts, so the last
	// error is either the loss or a refused dial; the loss is counted once.
	if st.Connects != 2 || st.Connected || st.Losses != 1 || st.LastError == "" || goodbyes != 1 {
		t.Errorf("stats %+v, goodbyes %d; want 2 connections, not connected, a loss, one goodbye", st, goodbyes)
	}
}
