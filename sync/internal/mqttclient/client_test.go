package mqttclient

import (
	"context"
	"errors"
	"log/slog"
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

// TestRefusedLoginAdvised: a broker that takes the client and then, after
// a reload (another password file), refuses its login. The log said
// "connection lost; reconnecting" and then nothing above debug level for
// as long as the refusals lasted: an operator could not tell a broker
// that is down from one that refuses the settlement server. The first
// refusal of the outage is logged as an error, with what to do.
func TestRefusedLoginAdvised(t *testing.T) {
	b := brokertest.Start(t, nil)
	var logs brokertest.SyncBuffer
	id := brokertest.UniqueName("mqttclient-")
	c := New(Config{
		Name: "test", Brokers: []string{b.URL()}, ClientID: id,
		KeepAlive: 5 * time.Second, ConnectTimeout: 5 * time.Second,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Refused: "check the password",
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	sessions := make(chan *Session, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, func(ctx context.Context, s *Session) error {
			select {
			case sessions <- s:
			default:
			}
			return s.Wait(ctx)
		})
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-sessions:
	case <-time.After(10 * time.Second):
		t.Fatal("no session")
	}
	b.Refuse(id, true)
	b.KillClient(id)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), `advice="check the password"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no advice logged for the refused login:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // more refused attempts (backoff at most 50 ms)
	if st := c.Stats(); st.ConnectFailures < 2 {
		t.Errorf("%d refused attempts; want several", st.ConnectFailures)
	}
	if n := strings.Count(logs.String(), "refuses the login"); n != 1 {
		t.Errorf("the refusal logged %d times, want once an outage:\n%s", n, logs.String())
	}
}
