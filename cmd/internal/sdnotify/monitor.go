package sdnotify

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultStallAfter is the default Monitor.StallAfter.
const DefaultStallAfter = 20 * time.Second

// Monitor keeps the heartbeats of a program's parts (the tap loop, the
// queue, each scanner reader): its Healthy, given to Watchdog, fails while
// a registered part has not beaten for StallAfter, so systemd restarts a
// program whose part is stuck instead of one that merely runs.
type Monitor struct {
	// StallAfter: a part silent for longer is stuck; default
	// DefaultStallAfter. Keep it below WatchdogSec minus half of it (the
	// ping interval), and above every part's beat interval.
	StallAfter time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu    sync.Mutex
	parts map[string]time.Time
}

// Beat records that part is alive; a part is registered by its first beat.
func (m *Monitor) Beat(part string) {
	now := m.now()
	m.mu.Lock()
	if m.parts == nil {
		m.parts = map[string]time.Time{}
	}
	m.parts[part] = now
	m.mu.Unlock()
}

// Beaten reports whether part has beaten since it was registered (or
// last forgotten).
func (m *Monitor) Beaten(part string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.parts[part]
	return ok
}

// Forget stops checking part (it stopped on purpose).
func (m *Monitor) Forget(part string) {
	m.mu.Lock()
	delete(m.parts, part)
	m.mu.Unlock()
}

// Healthy returns nil while every registered part has beaten within
// StallAfter, else an error naming the silent ones.
func (m *Monitor) Healthy() error {
	now := m.now()
	stall := m.StallAfter
	if stall <= 0 {
		stall = DefaultStallAfter
	}
	m.mu.Lock()
	var stuck []string
	for p, t := range m.parts {
		if d := now.Sub(t); d > stall {
			stuck = append(stuck, fmt.Sprintf("%s silent for %s", p, d.Round(time.Second)))
		}
	}
	m.mu.Unlock()
	if len(stuck) == 0 {
		return nil
	}
	slices.Sort(stuck)
	return fmt.Errorf("stuck: %s", strings.Join(stuck, ", "))
}

func (m *Monitor) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}
