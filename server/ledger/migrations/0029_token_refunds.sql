-- farego ledger schema, version 29: a token's refunds, newest first
-- (RefundsByToken): a leaked till token can refund any of its shop's
-- payments, and the operator lists what it gave back as well as what it
-- took (an attack review: its refunds were found only order by order).
CREATE INDEX IF NOT EXISTS refunds_token ON refunds (token_id, created_ns, account_id, posting_seq);
