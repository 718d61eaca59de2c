package mqttclient

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// A connection opened for an attempt is closed when the attempt's context
// ends, until Release.
func TestOpenWatchesContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	u, _ := url.Parse("tcp://" + ln.Addr().String())
	for _, release := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		d := newDialer(ctx, nil, 10*time.Second)
		c, err := d.Open(u, mqtt.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Broker() != "tcp://"+ln.Addr().String() {
			t.Errorf("Broker() = %q", d.Broker())
		}
		if release {
			d.Release()
		}
		cancel()
		// Closed: wait for it, within a bound a busy machine does not
		// reach. Kept open: watch it for 2 s.
		wait := 30 * time.Second
		if release {
			wait = 2 * time.Second
		}
		c.SetReadDeadline(time.Now().Add(wait))
		_, err = c.Read(make([]byte, 1))
		closed := err != nil && !isTimeout(err)
		if closed == release {
			t.Errorf("release=%v: connection closed=%v after the context ended (err %v)", release, closed, err)
		}
		c.Close()
	}
	if _, err := newDialer(context.Background(), nil, time.Second).Open(&url.URL{Scheme: "ws", Host: "x"}, mqtt.ClientOptions{}); err == nil {
		t.Error("ws:// accepted")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
