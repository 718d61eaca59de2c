-- farego ledger schema, version 16: refunds of online payments. A shop (or
-- the operator) gives back all or part of a payment by code: each refund is
-- a posting on the payment (kind payment, amount > 0: the money back to the
-- rider) and a row here naming it, keyed by the merchant's own refund id so
-- that a retry is the same refund. A payment's refunds never exceed its
-- amount (CheckInvariants); the table is append-only (version 17).
-- Re-runnable (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS refunds (
    merchant_id TEXT NOT NULL,
    refund_id   TEXT NOT NULL,
    payment_id  BIGINT NOT NULL REFERENCES payments (id),
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    posting_seq BIGINT NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    reason      TEXT NOT NULL,
    created_ns  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, refund_id)
);
CREATE INDEX IF NOT EXISTS refunds_payment ON refunds (payment_id);
-- One refund a posting: a refund names the posting that gave the money back.
CREATE UNIQUE INDEX IF NOT EXISTS refunds_posting ON refunds (account_id, posting_seq);
