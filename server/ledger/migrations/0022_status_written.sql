-- farego ledger schema, version 22: when a device wrote the status recorded
-- (its own clock, unix ns; 0: not known, a status recorded before). An
-- offline status written before it is the device's last will, written when
-- it connected: it marks the device offline and changes nothing else (see
-- UpdateDeviceStatus). last_seen_ns cannot tell: for an online status it is
-- the device's clock when the server processed it, later than the writing
-- when the server works through a backlog. (Not re-runnable: SQLite has no
-- ADD COLUMN IF NOT EXISTS; the tests that make an older ledger drop it.)
ALTER TABLE devices ADD COLUMN written_ns BIGINT NOT NULL DEFAULT 0;
