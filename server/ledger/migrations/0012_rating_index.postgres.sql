-- farego ledger schema, version 12 (PostgreSQL): nothing. On SQLite the
-- rating's index now covers the columns it reads; PostgreSQL would read
-- the table all the same (an index-only scan needs pages all-visible,
-- which the taps just written and re-rated are not).
SELECT 1;
