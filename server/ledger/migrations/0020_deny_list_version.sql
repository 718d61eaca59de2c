-- farego ledger schema, version 20: the deny list has a version from the
-- start. A new ledger's list was version 0, which is no document: no
-- validator of a fresh fleet ever received one, and each reported (and
-- its selftest warned of) "no deny list" until the first entry was made.
-- Version 1 is the empty list. Re-runnable (it moves only a 0).
UPDATE counters SET value = 1 WHERE name = 'deny_version' AND value = 0;
