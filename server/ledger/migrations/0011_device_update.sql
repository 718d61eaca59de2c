-- farego ledger schema, version 11: a device's software update as its
-- last status reported it (wire.UpdateStatus): the version installed and
-- waiting for its health check, and the last update that failed (version,
-- why, and when by the device's clock).
ALTER TABLE devices ADD COLUMN update_pending TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN update_failed TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN update_failed_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN update_failed_ns BIGINT NOT NULL DEFAULT 0;
