-- Refuse UPDATE, DELETE and TRUNCATE on the journal tables (PostgreSQL
-- dialect; the SQLite file does the same with RAISE(ABORT)).
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger: % is append-only', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER topups_append_only BEFORE UPDATE OR DELETE ON topups
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER topups_no_truncate BEFORE TRUNCATE ON topups
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER payments_append_only BEFORE UPDATE OR DELETE ON payments
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER payments_no_truncate BEFORE TRUNCATE ON payments
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER code_uses_append_only BEFORE UPDATE OR DELETE ON code_uses
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER code_uses_no_truncate BEFORE TRUNCATE ON code_uses
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER taps_no_delete BEFORE DELETE ON taps
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER taps_no_truncate BEFORE TRUNCATE ON taps
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
