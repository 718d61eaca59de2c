package server

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/farego/farego/agent/metrics"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
)

func secondsDuration(s int64) time.Duration { return time.Duration(s) * time.Second }

func (s *Server) ingestMetrics() ingest.Metrics {
	batches := s.reg.Counter("farego_ingest_batches_total", "Tap batches received and verified.")
	records := s.reg.Counter("farego_ingest_records_total", "Records received in verified batches.")
	taps := s.reg.Counter("farego_ingest_taps_total", "Taps by re-verification verdict (empty: valid).", "verdict")
	acks := s.reg.Counter("farego_ingest_acks_total", "Application-level acks published.")
	statuses := s.reg.Counter("farego_ingest_status_total", "Device status messages recorded.")
	rejects := s.reg.Counter("farego_ingest_rejects_total", "Messages refused, by reason.", "reason")
	return ingest.Metrics{
		Batch:  func(n int) { batches.With().Inc(); records.With().Add(uint64(n)) },
		Tap:    func(v paycode.Reason) { taps.With(string(v)).Inc() },
		Ack:    func() { acks.With().Inc() },
		Status: func() { statuses.With().Inc() },
		Reject: func(r string) { rejects.With(r).Inc() },
	}
}

func (s *Server) registerMetrics() {
	// One scrape reads the ledger's figures once (each gauge would read
	// them again), and never more than once a second.
	type reading struct {
		st  ledger.Stats
		err error
	}
	stats := &metrics.Cache[reading]{TTL: time.Second, Read: func() reading {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := s.ledger.Stats(ctx)
		return reading{st, err}
	}}
	stat := func(f func(st ledgerStats) float64) func() float64 {
		return func() float64 {
			r := stats.Get()
			if r.err != nil {
				return -1
			}
			return f(ledgerStats(r.st))
		}
	}
	s.reg.GaugeFunc("farego_ledger_taps", "Taps in the ledger.", stat(func(st ledgerStats) float64 { return float64(st.Taps) }))
	s.reg.GaugeFunc("farego_ledger_flagged_taps", "Taps stored flagged and uncharged.", stat(func(st ledgerStats) float64 { return float64(st.FlaggedTaps) }))
	s.reg.GaugeFunc("farego_ledger_negative_accounts", "Accounts below their credit line (deny-listed).", stat(func(st ledgerStats) float64 { return float64(st.NegativeAccounts) }))
	s.reg.GaugeFunc("farego_ledger_accounts", "Accounts.", stat(func(st ledgerStats) float64 { return float64(st.Accounts) }))
	s.reg.GaugeFunc("farego_ledger_postings", "Postings in the journal.", stat(func(st ledgerStats) float64 { return float64(st.Postings) }))
	s.reg.GaugeFunc("farego_ledger_payments", "Online payments by code (shops).", stat(func(st ledgerStats) float64 { return float64(st.Payments) }))
	s.reg.GaugeFunc("farego_ledger_refunds", "Refunds of online payments.", stat(func(st ledgerStats) float64 { return float64(st.Refunds) }))
	s.reg.GaugeFunc("farego_denylist_version", "Deny list version.", stat(func(st ledgerStats) float64 { return float64(st.DenyVersion) }))
	s.reg.GaugeFunc("farego_denylist_entries", "Deny list entries.", stat(func(st ledgerStats) float64 { return float64(st.DenyEntries) }))
	bounds := make([]float64, len(ledger.LagBounds))
	for i, b := range ledger.LagBounds {
		bounds[i] = b.Seconds()
	}
	s.lag = s.reg.Histogram("farego_settlement_lag_seconds", "Time from a tap on the validator to its commit in the ledger (new taps).", bounds)
	if s.broker != nil {
		s.reg.GaugeFunc("farego_broker_clients", "Clients connected to the embedded broker.", func() float64 { return float64(s.broker.Stats().Clients) })
		s.reg.GaugeFunc("farego_broker_denied_total", "Publications and subscriptions the broker's ACL refused.", func() float64 { return float64(s.broker.Stats().Denied) })
		s.reg.GaugeFunc("farego_broker_taken_over_total", "Connections closed for a new login with the same client id (a rate of them: two devices share an identity).",
			func() float64 { return float64(s.broker.Stats().TakenOver) })
		s.reg.GaugeFunc("farego_broker_flooded_total", "Device disconnections for flooding (each starts a ban).", func() float64 { return float64(s.broker.Stats().Flooded) })
		s.reg.GaugeFunc("farego_broker_shed_total", "Messages the broker dropped because a client held too much.", func() float64 { return float64(s.broker.Stats().Shed) })
		s.reg.GaugeFunc("farego_broker_server_held_bytes", "Payload bytes the broker holds for the settlement server's clients.", func() float64 { return float64(s.broker.Stats().ServerHeld) })
		s.reg.GaugeFunc("farego_broker_queued_bytes", "Bytes the broker has queued for writing to its connections.", func() float64 { return float64(s.broker.Stats().Queued) })
		if end := s.broker.TLSNotAfter(); !end.IsZero() {
			// For an alert well before the day every device on TLS is refused.
			s.reg.GaugeFunc("farego_broker_tls_cert_expiry_timestamp_seconds", "When the embedded broker's TLS certificate ends (Unix seconds): devices connecting over TLS are refused from then on.",
				func() float64 { return float64(end.Unix()) })
		}
		s.reg.GaugeFunc("farego_broker_stalled_total", "Clients disconnected for not reading (WriteTimeout, or too many bytes queued).", func() float64 { return float64(s.broker.Stats().Stalled) })
	}
	// This instance's own links to the broker (1 connected, 0 not): with
	// an external broker, what tells its outage from the fleet's.
	s.reg.GaugeFunc("farego_ingest_connected", "Whether this instance's ingest is connected to the MQTT broker and subscribed (1) or not (0).",
		func() float64 { return boolGauge(s.ingest.Connected()) })
	s.reg.GaugeFunc("farego_publisher_connected", "Whether this instance's downlink publisher is connected to the MQTT broker (1) or not (0).",
		func() float64 { return boolGauge(s.pub.Connected()) })
	// What /healthz says, for Prometheus: the ledger out of reach (a
	// database down, a SQLite file replaced) or batches failing to commit
	// (a full disk, a read-only ledger) showed on /metrics only as every
	// farego_ledger_* figure at -1, which no shipped alert read.
	health := &metrics.Cache[map[string]error]{TTL: time.Second, Read: func() map[string]error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.api.Checks(ctx)
	}}
	s.reg.GaugeVecFunc("farego_health", "Whether each part /healthz checks is healthy (1) or not (0): ledger (the database answers), "+
		"ingest and publisher (linked to the broker), commits (the last batch committed); the server's log says why.",
		[]string{"check"}, func(emit func(v float64, values ...string)) {
			checks := health.Get()
			for _, name := range slices.Sorted(maps.Keys(checks)) {
				emit(boolGauge(checks[name] == nil), name)
			}
		})
	// The end of the newest issuer key's window: the server renews the
	// keyring 30 days before it (keys.RenewBefore), so an end nearer than
	// that is a renewal that failed; at the end, no credential can be
	// issued and every rider is refused as their passes expire.
	s.reg.GaugeFunc("farego_issuer_key_end_timestamp_seconds", "End of the newest issuer key's window (Unix seconds); renewed on its own 30 days before.",
		func() float64 {
			var end time.Time
			for _, k := range s.keys.Keyring().Keys() {
				if k.NotAfter.After(end) {
					end = k.NotAfter
				}
			}
			return float64(end.Unix())
		})
	// The fingerprint of the fare table's zone rules as this instance reads
	// them: instances (or verify's host) reading other versions of the
	// time zone database put some rides on other service days
	// (FaregoZoneRulesDiffer).
	type zoneRules struct{ zone, rules string }
	zone := &metrics.Cache[zoneRules]{TTL: time.Minute, Read: func() zoneRules {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, t, err := s.ledger.LatestFareTableShared(ctx)
		if err != nil {
			return zoneRules{}
		}
		return zoneRules{t.TimeZone, t.ZoneRules(time.Now())}
	}}
	s.reg.GaugeVecFunc("farego_fare_zone_rules_info", "The newest fare table's time zone and a fingerprint of its rules (offsets and daylight-saving dates, last year to three years on) "+
		"as this instance's time zone database has them: every instance should show the same.",
		[]string{"zone", "rules"}, func(emit func(v float64, values ...string)) {
			if z := zone.Get(); z.zone != "" {
				emit(1, z.zone, z.rules)
			}
		})
	s.reg.GaugeFunc("farego_ingest_queued", "Messages waiting for an ingest worker.", func() float64 { return float64(s.ingest.Stats().Queued) })
	s.reg.GaugeFunc("farego_ingest_queued_bytes", "Bytes of the messages waiting for an ingest worker.", func() float64 { return float64(s.ingest.Stats().QueuedBytes) })
	s.reg.GaugeFunc("farego_ingest_queued_devices", "Devices with messages waiting for an ingest worker.", func() float64 { return float64(s.ingest.Stats().QueuedDevices) })
}

type ledgerStats ledger.Stats

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// cutOff names this instance's links to the broker that are down, for the
// console's banner.
func (s *Server) cutOff() []string {
	var out []string
	if !s.ingest.Connected() {
		out = append(out, "the MQTT broker for taps (ingest: no taps are taken or acked)")
	}
	if !s.pub.Connected() {
		out = append(out, "the MQTT broker for downlinks (publisher: no deny lists, fare tables, keyrings or releases are sent)")
	}
	return out
}
