-- Placeholder: version 9 is another branch's migration (the versions must
-- run without gaps). Delete this file when that migration is merged.
SELECT 1;
