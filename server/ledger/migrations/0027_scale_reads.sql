-- farego ledger schema, version 27: three reads that grew with the whole
-- ledger (a scale review; EXPLAIN on a seeded ledger of 3 million taps).
-- Re-runnable (IF EXISTS, IF NOT EXISTS).
--
-- On a large existing ledger the first start after this migration builds
-- these indexes: the payments index reads the payments; the two partial
-- ones read the postings and the taps but hold few entries.

-- A rider's payments since a time, newest first (RecentPayments, read on
-- every GET /v1/accounts/{id}, the wallet's refresh): by account_id
-- alone, PostgreSQL chose to read payments_pkey backwards (id order) for a
-- rider with many payments, none recent, and so read every payment of the
-- ledger. This index gives the rider's payments of the time range in the
-- order read; it serves every use of the one it replaces.
CREATE INDEX IF NOT EXISTS payments_account_time ON payments (account_id, created_ns, id);

-- A service day's fare corrections by their tap (RefreshSummaries, which
-- sums today's on every run): without an index by tap (postings_tap went
-- in 0010), both backends read every posting for every day summed. Corrections are few: the
-- money path pays an index entry for them alone.
CREATE INDEX IF NOT EXISTS postings_correction ON postings (tap_id) WHERE kind = 'fare_correction';

-- The newest taps of one flag (the console's flagged taps, ?flag=): by
-- commit time alone, a rare flag had every flagged tap read.
CREATE INDEX IF NOT EXISTS taps_flag_received ON taps (flag, committed_ns, at_ns) WHERE flag <> '';

-- Dropped last: on PostgreSQL, DROP INDEX locks its table against reads
-- until the migration commits, and the index builds above take their time
-- on a large ledger (a review of the change).
DROP INDEX IF EXISTS payments_account;
