package broker

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// syncBuffer is a log sink tests read while the broker writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRefusedLoginLogBounded: a client that is not logged in chooses its
// username and client id, up to 64 KiB each; a refused login's log line
// carries them cut short (saying how long they were), so a flood of such
// logins cannot fill the disk with the broker's log.
func TestRefusedLoginLogBounded(t *testing.T) {
	var log syncBuffer
	b := startBroker(t, Config{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	const logins, size = 12, 60000
	for i := range logins {
		user := fmt.Sprintf("%d%s", i, strings.Repeat("u", size))
		id := fmt.Sprintf("%d%s", i, strings.Repeat("c", size))
		if _, _, err := dial(t, b.url(), user, "wrong", nil, func(o *mqtt.ClientOptions) { o.SetClientID(id) }); err == nil {
			t.Fatal("a bad login was accepted")
		}
	}
	waitFor(t, "the refused logins in the log", func() bool {
		return strings.Count(log.String(), "connection refused") == logins
	})
	out := log.String()
	if len(out) > logins*1024 {
		t.Errorf("%d refused logins wrote %d bytes of log", logins, len(out))
	}
	if !strings.Contains(out, fmt.Sprintf("(%d bytes)", size+1)) {
		t.Errorf("the log does not say how long the username was:\n%.2000s", out)
	}
}
