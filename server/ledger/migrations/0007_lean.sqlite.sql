-- One index serves both the rating (account, service day) and the rider's
-- history (account, newest first): every tap insert maintains one index
-- fewer.
DROP INDEX taps_account_time;
DROP INDEX taps_account_day;
CREATE INDEX taps_account_day ON taps (account_id, service_day, at_ns);
