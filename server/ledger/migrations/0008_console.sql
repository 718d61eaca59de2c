-- farego ledger schema, version 8: what the operator's console
-- (server/console) reads, kept cheap on a ledger of millions of taps.
--
-- On a large existing ledger the first start after this migration builds
-- these indexes (about a minute per ten million taps on SQLite).

-- A device's taps, newest first (its page), and the route and vehicle it
-- last served (an index-only lookup per device).
CREATE INDEX taps_device_time ON taps (device_id, at_ns, route, vehicle);
-- Taps by commit time: the settlement lag (committed_ns - at_ns) and which
-- service days changed since the console last summed them (index-only).
CREATE INDEX taps_committed ON taps (committed_ns, at_ns, service_day);
-- A service day's taps, for the revenue summary. Only immutable columns:
-- re-rating a day (which changes charges) never touches this index, so the
-- money path pays one insert for it per tap.
CREATE INDEX taps_day ON taps (service_day);
-- Flagged taps and taps with notes are few: partial indexes.
CREATE INDEX taps_flagged ON taps (at_ns, flag) WHERE flag <> '';
CREATE INDEX taps_noted ON taps (at_ns, notes) WHERE notes <> '';
-- Records kept aside, by reason.
CREATE INDEX quarantine_reason ON quarantine (reason, received_ns);
CREATE INDEX held_taps_reason ON held_taps (reason, received_ns);

-- Each device's last status changes (online, offline, out of service,
-- software and document versions, registration, revocation): at most the
-- newest 50 per device are kept.
CREATE TABLE device_status_history (
    device_id        TEXT NOT NULL,
    at_ns            BIGINT NOT NULL,
    event            TEXT NOT NULL,
    online           BOOLEAN NOT NULL,
    out_of_service   TEXT NOT NULL,
    queue_depth      BIGINT NOT NULL,
    oldest_unsent_ns BIGINT NOT NULL,
    clock_offset_ns  BIGINT NOT NULL,
    software         TEXT NOT NULL,
    versions         TEXT NOT NULL,
    PRIMARY KEY (device_id, at_ns)
);

-- The console's sign-in sessions: the browser holds a random secret, the
-- ledger its SHA-256, so every settlement instance knows every session and
-- signing out ends it everywhere.
CREATE TABLE console_sessions (
    id_hash    BYTEA PRIMARY KEY,
    token_id   TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    expires_ns BIGINT NOT NULL,
    seen_ns    BIGINT NOT NULL,
    ended_ns   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX console_sessions_token ON console_sessions (token_id, created_ns);

-- Revenue summaries by service day and route, recomputed from the taps of
-- each day that changed (see RefreshSummaries). Amounts in minor units.
CREATE TABLE console_days (
    service_day      TEXT NOT NULL,
    route            TEXT NOT NULL,
    taps             BIGINT NOT NULL,
    flagged          BIGINT NOT NULL,
    base_total       BIGINT NOT NULL,
    charge_total     BIGINT NOT NULL,
    transfers        BIGINT NOT NULL,
    transfer_savings BIGINT NOT NULL,
    capped           BIGINT NOT NULL,
    cap_savings      BIGINT NOT NULL,
    corrected        BIGINT NOT NULL,
    corrections      BIGINT NOT NULL,
    computed_ns      BIGINT NOT NULL,
    PRIMARY KEY (service_day, route)
);

-- Settlement lag (committed_ns - at_ns) by ten-minute slot of commit time:
-- a histogram (JSON counts per LagBounds bucket), the sum and the maximum.
CREATE TABLE console_lag (
    slot_ns     BIGINT PRIMARY KEY,
    taps        BIGINT NOT NULL,
    lag_sum_ms  BIGINT NOT NULL,
    lag_max_ms  BIGINT NOT NULL,
    buckets     TEXT NOT NULL,
    computed_ns BIGINT NOT NULL
);

-- Where the summaries stand (commit-time watermarks, unix ns).
CREATE TABLE console_state (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
