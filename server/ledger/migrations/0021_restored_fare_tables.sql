-- farego ledger schema, version 21: fare tables put back after a restore.
-- A table published after the backup a ledger was restored from is in no
-- ledger, yet validators applied it and name it in their taps. Stored again
-- by 'farego-settlement restored --fares', it comes into force at the
-- restore (created_ns), but a validator's claim to have used it is taken
-- from claimable_from_ns on: from when the table before it came into force
-- (or the restored ledger's newest credential, if later), as the ledger
-- cannot tell when it was first published. Re-runnable (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS restored_fare_tables (
    version           BIGINT PRIMARY KEY REFERENCES fare_tables (version),
    claimable_from_ns BIGINT NOT NULL
);
