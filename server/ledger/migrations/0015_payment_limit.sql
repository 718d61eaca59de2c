-- farego ledger schema, version 15: a rider's limit for one online payment
-- by code (a shop's scanner names the amount; the rider bounds it, as
-- pay-code apps bound payments made without a password). No row: no limit.
CREATE TABLE IF NOT EXISTS payment_limits (
    account_id BIGINT PRIMARY KEY REFERENCES accounts (id),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    set_ns     BIGINT NOT NULL
);
