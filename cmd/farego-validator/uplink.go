package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/sync/update"
	"github.com/farego/farego/sync/uplink"
	"github.com/farego/farego/sync/wire"
)

// newUplink builds the MQTT link when [mqtt] is configured (nil when not).
// The agent learns its clock offset from the link, and the status carries
// the agent's state (out of service, clock offset) and the last salvage.
func newUplink(cfg *Config, keys *linkKeys, q *queue.Queue, a *agent.Agent, upd *update.Updater, scannerOut func() string, now func() time.Time, log *slog.Logger, ackClock *atomic.Bool,
	ackLatency *metrics.Histogram) (*uplink.Uplink, error) {
	m := cfg.MQTT
	if m.Broker == "" {
		log.Warn("no mqtt.broker configured: taps stay queued on this device")
		return nil, nil
	}
	devKey, fleet := keys.device, keys.fleet
	var onRelease func(uint64, []byte)
	if upd != nil {
		onRelease = upd.Offer
	}
	return uplink.New(uplink.Config{
		Brokers: m.brokers(), DeviceID: cfg.DeviceID, DeviceKey: devKey, FleetPublicKey: fleet,
		TopicPrefix: m.TopicPrefix, Software: agent.Version, BatchRecords: m.BatchRecords,
		AckTimeout: time.Duration(m.AckTimeout), Heartbeat: time.Duration(m.Heartbeat),
		Username: m.Username, Password: m.Password,
		CAFile: cfg.path(m.CAFile), CertFile: cfg.path(m.CertFile), KeyFile: cfg.path(m.KeyFile),
		Now: now, DenyIndexWait: uplink.DefaultDenyIndexWait,
		OnClock: func(c uplink.ClockSample) {
			ackClock.Store(true)
			a.ClockMeasured(c.Offset, c.Uncertainty)
			ackLatency.Observe(c.RTT.Seconds())
		},
		Status: func(st *wire.Status) {
			st.OutOfService = statusReason(outOfService(a, scannerOut))
			if off, unc, ok := a.ClockOffset(); ok {
				if off.Abs() <= unc {
					// Within its own uncertainty the offset is no
					// offset: a right clock sampled from the server's
					// whole-second HTTP Date read up to 0.5 s off, and
					// the server, taking it as measured, placed the
					// device's taps that much earlier against its
					// assignments (TestAssignmentEndToEnd's
					// route_mismatch missed, one run in four).
					off = 0
				}
				ms := off.Milliseconds()
				st.ClockOffsetMS = &ms
			}
			st.Salvage = lastSalvage(q)
			if upd != nil {
				st.Update = upd.Status()
			}
			as := a.Assignment()
			st.Assignment = &wire.StatusAssignment{Route: as.Route, Vehicle: as.Vehicle, Source: as.Source,
				ServerVersion: as.ServerVersion}
		},
		Assign: func(w *wire.Assignment) error {
			err := a.AssignFromServer(w.Version, w.Route, w.Vehicle)
			if errors.Is(err, agent.ErrStaleVersion) && w.Version == a.Assignment().ServerVersion {
				// The retained assignment, seen again on reconnection.
				log.Debug("assignment from the server already applied", "version", w.Version)
				return nil
			}
			return err
		},
		OnRelease: onRelease,
		Logger:    log.With("part", "uplink"),
	}, q, a)
}

// runUplink runs the link until ctx is done; the returned function waits
// for it to publish its offline status and stop.
func runUplink(ctx context.Context, up *uplink.Uplink, log *slog.Logger) func() {
	if up == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := up.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("uplink stopped", "err", err)
		}
	}()
	return func() { <-done }
}

// outOfService is why the validator takes no taps: the agent's reason, or
// else that no scanner is read (scannerOutOfService).
func outOfService(a *agent.Agent, scannerOut func() string) string {
	if r := a.OutOfService(); r != "" || scannerOut == nil {
		return r
	}
	return scannerOut()
}

// watchScannerService sends the status at once when the validator goes out
// of service for want of a scanner, or back (the server would have heard
// it at the next heartbeat), and logs both.
func watchScannerService(ctx context.Context, scannerOut func() string, up *uplink.Uplink, log *slog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	was := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := scannerOut()
		if (now == "") == (was == "") {
			continue
		}
		if now != "" {
			log.Error("out of service: no scanner is read, so no rider can pay; check its cable and power (ctl status names each scanner and why)",
				"why", now)
		} else {
			log.Info("a scanner is read again: back in service")
		}
		was = now
		if up != nil {
			up.StatusChanged()
		}
	}
}

// statusReason makes the out-of-service text one the status carries:
// printable (a hold's detail names files, which may hold anything) and
// cut to wire.MaxOutOfService bytes (a route that is not covered is
// quoted whole).
func statusReason(s string) string { return record.Printable(s, wire.MaxOutOfService) }
