-- farego ledger schema, version 17 (SQLite): refunds are append-only, as
-- the journal (0002). Re-runnable.
CREATE TRIGGER IF NOT EXISTS refunds_no_update BEFORE UPDATE ON refunds
BEGIN SELECT RAISE(ABORT, 'ledger: refunds are append-only'); END;
CREATE TRIGGER IF NOT EXISTS refunds_no_delete BEFORE DELETE ON refunds
BEGIN SELECT RAISE(ABORT, 'ledger: refunds are append-only'); END;
