-- farego ledger schema, version 33: a replay of the whole archive the
-- operator asked the fleet for (after a restore, POST /v1/devices/replay)
-- is kept for each device a while (replay_until_ns) and sent when the
-- device is next heard online, a few times at the most (replay_sends, the
-- last at replay_sent_ns), with its request id (replay_id): a device
-- offline at the request, or whose link had dropped unseen, was never
-- asked, and the taps acked since the backup stayed out of the ledger
-- (an operator's restore drill). The device carries a request out once
-- whatever the copies. (Not re-runnable: SQLite has no ADD COLUMN IF NOT
-- EXISTS; the tests that make an older ledger drop them.)
ALTER TABLE devices ADD COLUMN replay_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN replay_until_ns BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN replay_sent_ns BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN replay_sends BIGINT NOT NULL DEFAULT 0;
