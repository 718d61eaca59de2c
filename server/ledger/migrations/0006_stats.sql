-- Ledger-wide figures kept as they change, so that a metrics scrape reads
-- a handful of small rows instead of counting millions of taps. Each write
-- transaction adds its changes to one of a few shards (picked at random),
-- so concurrent writers rarely wait for each other on these rows; a
-- figure is the sum of its shards. CheckInvariants recounts them.
CREATE TABLE ledger_stats (
    name  TEXT NOT NULL,
    shard BIGINT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (name, shard)
);
INSERT INTO ledger_stats (name, shard, value)
    SELECT 'accounts', 0, COUNT(*) FROM accounts UNION ALL
    SELECT 'balance', 0, CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM accounts UNION ALL
    SELECT 'taps', 0, COUNT(*) FROM taps UNION ALL
    SELECT 'flagged_taps', 0, COUNT(*) FROM taps WHERE flag <> '' UNION ALL
    SELECT 'postings', 0, COUNT(*) FROM postings UNION ALL
    SELECT 'payments', 0, COUNT(*) FROM payments UNION ALL
    SELECT 'devices', 0, COUNT(*) FROM devices;
-- The accounts below their credit line, found without a scan.
CREATE INDEX accounts_negative ON accounts (id) WHERE neg_denied;
