-- farego ledger schema, version 31: when the TLS client certificate a
-- device presents to the broker ends, as the device says in its status
-- (unix ns; 0: not reported: a device without a certificate, of a release
-- that does not say, or registered again since). Informational: the
-- broker refuses the device from that day, so the console and /metrics
-- name the devices to provision again before it. (Not re-runnable:
-- SQLite has no ADD COLUMN IF NOT EXISTS; the tests that make an older
-- ledger drop it.)
ALTER TABLE devices ADD COLUMN cert_not_after_ns BIGINT NOT NULL DEFAULT 0;
