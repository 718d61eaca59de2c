-- Placeholder on branch field2: version 9 belongs to another branch.
-- Delete this file when that branch's 0009 is merged.
SELECT 1;
