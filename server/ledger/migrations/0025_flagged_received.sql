-- farego ledger schema, version 25: the console's flagged and noted taps
-- by when the server received them (commit time), not by the tap time a
-- validator wrote. A validator whose clock jumped years ahead, or a stolen
-- one recording codes it saw with such a time (they fail only on time and
-- are stored flagged), held the top of "newest flagged taps" for good and
-- hid today's; taps a bus kept offline for days, flagged when they came
-- in, were not among the last day's (a console review).
--
-- On a large existing ledger the first start after this migration builds
-- these indexes (partial: flagged and noted taps are few).
CREATE INDEX IF NOT EXISTS taps_flagged_received ON taps (committed_ns, flag) WHERE flag <> '';
CREATE INDEX IF NOT EXISTS taps_noted_received ON taps (committed_ns, notes) WHERE notes <> '';
DROP INDEX IF EXISTS taps_flagged;
DROP INDEX IF EXISTS taps_noted;
