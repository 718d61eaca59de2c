-- farego ledger schema, version 12 (SQLite): the index the rating reads an
-- account-day by carries every column the rating needs (taps.go, readDays:
-- the unflagged taps of the day, their time, profile, base fare, rated
-- fare table, charge, transfer, capped, postings), so a day is read from
-- the index alone instead of one table lookup per tap. Its prefix
-- (account_id, service_day, at_ns) still serves the rider's history.
DROP INDEX taps_account_day;
CREATE INDEX taps_account_day ON taps (account_id, service_day, at_ns, flag, tap_id, profile, base_fare, rated_version,
    charge, transfer, capped, postings);
