-- farego ledger schema, version 17 (PostgreSQL): refunds are append-only,
-- as the journal (0002). Re-runnable.
DROP TRIGGER IF EXISTS refunds_append_only ON refunds;
CREATE TRIGGER refunds_append_only BEFORE UPDATE OR DELETE ON refunds
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
DROP TRIGGER IF EXISTS refunds_no_truncate ON refunds;
CREATE TRIGGER refunds_no_truncate BEFORE TRUNCATE ON refunds
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
