-- farego ledger schema, version 19 (PostgreSQL): the issuer keyrings and
-- the fare tables are append-only, as the journal (0002): a stored fare
-- table version never changes (the taps it rated name it). Re-runnable.
DROP TRIGGER IF EXISTS issuer_keyrings_append_only ON issuer_keyrings;
CREATE TRIGGER issuer_keyrings_append_only BEFORE UPDATE OR DELETE ON issuer_keyrings
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
DROP TRIGGER IF EXISTS issuer_keyrings_no_truncate ON issuer_keyrings;
CREATE TRIGGER issuer_keyrings_no_truncate BEFORE TRUNCATE ON issuer_keyrings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
DROP TRIGGER IF EXISTS fare_tables_append_only ON fare_tables;
CREATE TRIGGER fare_tables_append_only BEFORE UPDATE OR DELETE ON fare_tables
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
DROP TRIGGER IF EXISTS fare_tables_no_truncate ON fare_tables;
CREATE TRIGGER fare_tables_no_truncate BEFORE TRUNCATE ON fare_tables
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
