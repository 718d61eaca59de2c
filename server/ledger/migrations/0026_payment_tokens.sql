-- farego ledger schema, version 26: which API token made each online
-- payment and refund (its id; '' for those made before). A shop has as
-- many tokens as tills; when one leaks and is revoked, its orders and
-- refunds are told apart from the shop's others (PaymentsByToken), where
-- before they were known only by the merchant id all its tokens share (a
-- merchant review). (Not re-runnable: SQLite has no ADD COLUMN IF NOT
-- EXISTS; the tests that make an older ledger drop them.)
ALTER TABLE payments ADD COLUMN token_id TEXT NOT NULL DEFAULT '';
ALTER TABLE refunds ADD COLUMN token_id TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS payments_token ON payments (token_id, id);
