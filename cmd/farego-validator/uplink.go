package main

import (
	"context"
	"log/slog"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/queue"
)

// startUplink starts the MQTT link when [mqtt] is configured and returns a
// function that stops it (nil when there is none).
func startUplink(ctx context.Context, cfg *Config, q *queue.Queue, a *agent.Agent, log *slog.Logger) (func(), error) {
	if cfg.MQTT.Broker == "" {
		log.Warn("no mqtt.broker configured: taps stay queued on this device")
		return nil, nil
	}
	return nil, nil
}
