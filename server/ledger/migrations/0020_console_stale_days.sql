-- farego ledger schema, version 20: service days whose taps changed
-- without a tap of theirs being committed. The console's summaries find
-- the days to sum again from the taps committed since their last run; a
-- late tap that takes a payment code over from a tap of the next service
-- day refunds that tap, whose day then showed it charged until another
-- tap of it came. The commit marks such a day here (mark counts the
-- marks); RefreshSummaries sums it again and removes the mark if it is
-- still the one it read (a later commit's mark stays).
-- Re-runnable (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS console_stale_days (
    service_day TEXT PRIMARY KEY,
    mark        BIGINT NOT NULL
);
