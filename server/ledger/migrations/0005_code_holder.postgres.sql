-- The earliest tap of a payment code keeps it, whatever the arrival order:
-- a code use may move to an earlier tap (tap_id) and count its reuses.
-- Everything else about a code use stays append-only.
DROP TRIGGER code_uses_append_only ON code_uses;
CREATE TRIGGER code_uses_append_only BEFORE UPDATE OF code_key, account_id, serial, payment_id, created_ns OR DELETE
    ON code_uses FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE FUNCTION ledger_code_holder() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.tap_id IS NULL OR NEW.tap_id IS NULL THEN
        RAISE EXCEPTION 'ledger: a code paid online stays paid online';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER code_uses_holder_is_tap BEFORE UPDATE OF tap_id ON code_uses
    FOR EACH ROW EXECUTE FUNCTION ledger_code_holder();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
