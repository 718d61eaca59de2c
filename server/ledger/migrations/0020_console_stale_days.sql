-- farego ledger schema, version 20: service days whose taps changed
-- without a tap of theirs being committed. The console's summaries find
-- the days to sum again from the taps committed since their last run; a
-- late tap that takes a payment code over from a tap of the next service
-- day refunds that tap, whose day then showed it charged until another
-- tap of it came. The commit marks such a day here (mark: the next value
-- of the counter stale_mark, so a later mark is always larger, also after
-- a row was removed); RefreshSummaries sums it again and removes the row
-- if its mark is still the one it read (a later commit's mark stays).
-- Re-runnable (IF NOT EXISTS, ON CONFLICT DO NOTHING).
CREATE TABLE IF NOT EXISTS console_stale_days (
    service_day TEXT PRIMARY KEY,
    mark        BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('stale_mark', 0) ON CONFLICT (name) DO NOTHING;
