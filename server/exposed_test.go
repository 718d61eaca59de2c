package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// What the server warns of at start (warnExposed): a listen address that
// takes connections from beyond this machine.
func TestOnLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1883": true, "127.0.0.1:0": true, "127.1.2.3:8080": true, "[::1]:1883": true, "localhost:8080": true,
		":1883": false, "0.0.0.0:1883": false, "[::]:1883": false, "10.0.0.5:1883": false, "[2001:db8::1]:8080": false,
		"example.net:1883": false, "1883": false, "": false,
	} {
		if got := onLoopback(addr); got != want {
			t.Errorf("onLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
	if !onLoopback(DefaultHTTPListen) || !onLoopback(DefaultMQTTListen) {
		t.Errorf("a default listens beyond this machine: --http %s, --mqtt %s", DefaultHTTPListen, DefaultMQTTListen)
	}
}

// The warnings name the address and what to set; on loopback, none.
func TestWarnExposed(t *testing.T) {
	var buf bytes.Buffer
	s := &Server{log: slog.New(slog.NewTextHandler(&buf, nil))}
	s.warnExposed(Addrs{HTTP: "127.0.0.1:8080", MQTT: "127.0.0.1:1883", MQTTTLS: "[::]:8883"})
	s.warnExposed(Addrs{HTTP: "[::]:8080", Metrics: "127.0.0.1:9464"}) // an external broker, /metrics elsewhere
	if buf.Len() != 0 {
		t.Fatalf("warned of a server on loopback (TLS beyond it):\n%s", buf.String())
	}
	s.warnExposed(Addrs{HTTP: "[::]:8080", MQTT: "0.0.0.0:1883"})
	l := buf.String()
	for _, want := range []string{`level=WARN msg="the broker takes plain MQTT from beyond this machine`, "--mqtt-tls",
		"mqtt=0.0.0.0:1883", `level=WARN msg="GET /metrics is served on the API's address`, "--metrics", "http=[::]:8080"} {
		if !strings.Contains(l, want) {
			t.Errorf("the warnings lack %q:\n%s", want, l)
		}
	}
}
