-- farego ledger schema, version 28: the merchant settlement report
-- (MerchantSettlement: GET /v1/merchants/settlement, the console's shops
-- page) sums each service day's payments and refunds by merchant, by
-- their creation time. No index had it first (payments_account_time is by
-- rider, the refunds' by payment and by posting): both backends read
-- every payment and refund of the ledger for each day. These give a day's
-- rows as one range, with what is summed in the index (read index-only).
-- Re-runnable (IF NOT EXISTS).
--
-- On a large existing ledger the first start after this migration builds
-- them: it reads the payments and the refunds once.
CREATE INDEX IF NOT EXISTS payments_time ON payments (created_ns, merchant_id, amount);
CREATE INDEX IF NOT EXISTS refunds_time ON refunds (created_ns, merchant_id, amount);
