-- farego ledger schema, version 19 (PostgreSQL): the issuer keyrings are
-- append-only, as the journal (0002). Re-runnable.
DROP TRIGGER IF EXISTS issuer_keyrings_append_only ON issuer_keyrings;
CREATE TRIGGER issuer_keyrings_append_only BEFORE UPDATE OR DELETE ON issuer_keyrings
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
DROP TRIGGER IF EXISTS issuer_keyrings_no_truncate ON issuer_keyrings;
CREATE TRIGGER issuer_keyrings_no_truncate BEFORE TRUNCATE ON issuer_keyrings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
