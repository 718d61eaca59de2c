package main

import (
	"context"
	"time"

	"github.com/farego/farego/cmd/internal/sdnotify"
	"github.com/farego/farego/queue"
)

// The parts whose heartbeats keep the systemd watchdog pinged (besides
// "scanner NAME" for each serial or evdev scanner reader).
const (
	partTapLoop = "tap loop"
	partQueue   = "queue"
)

// queueBeatInterval is how often the queue is read to prove it answers.
const queueBeatInterval = 2 * time.Second

// minStallAfter is the least silence that counts as stuck: above every
// part's beat interval (a scanner reader's reconnection backoff is at
// most 5 s).
const minStallAfter = 10 * time.Second

// newWatchdogMonitor returns the monitor of the validator's parts: a part
// silent for half the watchdog interval (at least minStallAfter) is stuck,
// and the pings stop.
func newWatchdogMonitor(n *sdnotify.Notifier) *sdnotify.Monitor {
	return &sdnotify.Monitor{StallAfter: max(n.WatchdogInterval()/2, minStallAfter)}
}

// beatQueue reads the queue's figures (a bbolt read transaction and a
// stat of its file) every queueBeatInterval and beats while that works,
// until ctx is done. A read blocked behind a stuck remap or a hung disk
// stops the beats.
func beatQueue(ctx context.Context, q *queue.Queue, mon *sdnotify.Monitor) {
	t := time.NewTicker(queueBeatInterval)
	defer t.Stop()
	for {
		if _, err := q.Stats(); err == nil {
			mon.Beat(partQueue)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
