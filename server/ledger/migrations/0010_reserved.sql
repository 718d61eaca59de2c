-- Placeholder on branch field2: version 10 belongs to another branch
-- (ledgerperf). Delete this file when that branch's 0010 is merged.
SELECT 1;
