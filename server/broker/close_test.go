package broker

import (
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Close returns while devices keep connecting and leaving. mochi-mqtt's own
// client shutdown can deadlock exactly then (a recursive read lock with a
// writer waiting between); the listener avoids that path. The window is
// narrow, so this guards against regressions rather than reproducing it.
func TestCloseWhileClientsComeAndGo(t *testing.T) {
	for round := range 5 {
		secret := newSecret(t)
		b := startBroker(t, Config{Secret: secret})
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := uniqueName("churn-")
				for {
					select {
					case <-stop:
						return
					default:
					}
					c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.url()).SetClientID(id).
						SetUsername(id).SetPassword(devicePassword(secret, id)).SetAutoReconnect(false).
						SetConnectTimeout(2 * time.Second).SetWriteTimeout(2 * time.Second))
					if tok := c.Connect(); tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
						c.Disconnect(0)
					}
				}
			}()
		}
		time.Sleep(100 * time.Millisecond)
		closed := make(chan struct{})
		go func() { b.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: Close did not return within a minute while clients churned", round)
		}
		close(stop)
		wg.Wait()
	}
}
