package brokertest

import (
	"fmt"
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestStartMosquitto(t *testing.T) {
	var skipped bool
	t.Run("skipped under qemu", func(t *testing.T) {
		t.Setenv("FAREGO_QEMU", "1")
		defer func() { skipped = t.Skipped() }()
		StartMosquitto(t, MosquittoOptions{Config: func(*Mosquitto) string { t.Error("configured"); return "" }})
		t.Error("not skipped")
	})
	if !skipped {
		t.Error("StartMosquitto did not skip under FAREGO_QEMU")
	}
	t.Run("skipped without mosquitto", func(t *testing.T) {
		t.Setenv("FAREGO_QEMU", "")
		t.Setenv("FAREGO_CI", "")
		t.Setenv("PATH", t.TempDir())
		defer func() { skipped = t.Skipped() }()
		StartMosquitto(t, MosquittoOptions{Config: func(*Mosquitto) string { t.Error("configured"); return "" }})
		t.Error("not skipped")
	})
	if !skipped {
		t.Error("StartMosquitto did not skip without mosquitto")
	}

	users := map[string]string{"u": "p"}
	m := StartMosquitto(t, MosquittoOptions{Listeners: 2, Users: users, Config: func(m *Mosquitto) string {
		return fmt.Sprintf("persistence false\nallow_anonymous false\npassword_file %s\nlistener %s 127.0.0.1\nlistener %s 127.0.0.1\n",
			m.PasswordFile, m.Ports[0], m.Ports[1])
	}})
	if len(m.Addrs) != 2 || len(m.Ports) != 2 || m.Addrs[0] == m.Addrs[1] {
		t.Fatalf("listeners %v, ports %v; want two", m.Addrs, m.Ports)
	}
	for i, addr := range m.Addrs {
		c := connectUser(t, "tcp://"+addr, fmt.Sprint("c", i), "u", "p")
		if tok := c.Publish("t/x", 1, false, "x"); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			t.Errorf("publish on %s: %v", addr, tok.Error())
		}
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("wrong").SetUsername("u").SetPassword("nope").SetAutoReconnect(false)
		if tok := paho.NewClient(o).Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() == nil {
			t.Errorf("wrong password accepted on %s", addr)
		}
	}
}

// TestStartMosquittoPortTaken: a port picked for mosquitto that another
// process takes before mosquitto binds it ("Address already in use", a
// flake of CI) makes StartMosquitto pick again, not fail the test.
func TestStartMosquittoPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	picks := 0
	pickAddr = func(tb testing.TB) string {
		picks++
		if picks == 1 {
			return taken.Addr().String()
		}
		return FreeAddr(tb)
	}
	defer func() { pickAddr = FreeAddr }()
	m := StartMosquitto(t, MosquittoOptions{Config: func(m *Mosquitto) string {
		return fmt.Sprintf("persistence false\nallow_anonymous true\nlistener %s 127.0.0.1\n", m.Ports[0])
	}})
	if picks != 2 || m.Addrs[0] == taken.Addr().String() {
		t.Fatalf("picked %d ports, listening on %s (taken: %s); want a second pick", picks, m.Addrs[0], taken.Addr())
	}
	c := connectUser(t, "tcp://"+m.Addrs[0], "c", "", "")
	c.Disconnect(0)
}

// connectUser connects a paho client with a username and password or fails.
func connectUser(tb testing.TB, url, id, user, pass string) paho.Client {
	tb.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		tb.Fatalf("connect %s to %s: %v", id, url, tok.Error())
	}
	tb.Cleanup(func() { c.Disconnect(100) })
	return c
}
