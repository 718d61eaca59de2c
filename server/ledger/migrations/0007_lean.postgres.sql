-- One index serves both the rating (account, service day) and the rider's
-- history (account, newest first): every tap insert maintains one index
-- fewer.
DROP INDEX taps_account_time;
DROP INDEX taps_account_day;
CREATE INDEX taps_account_day ON taps (account_id, service_day, at_ns);
-- A tap's postings and its code use are written in the transaction that
-- writes the tap; PostgreSQL's per-row foreign-key check of them (a share
-- lock on the tap's row, with its WAL) cost a fifth of a settlement batch.
-- CheckInvariants finds a posting or a code use without its tap.
ALTER TABLE postings DROP CONSTRAINT postings_tap_id_fkey;
ALTER TABLE code_uses DROP CONSTRAINT code_uses_tap_id_fkey;
