-- The earliest tap of a payment code keeps it, whatever the arrival order:
-- a code use may move to an earlier tap (tap_id) and count its reuses.
-- Everything else about a code use stays append-only.
DROP TRIGGER code_uses_no_update;
CREATE TRIGGER code_uses_no_update BEFORE UPDATE OF code_key, account_id, serial, payment_id, created_ns ON code_uses
BEGIN SELECT RAISE(ABORT, 'ledger: code_uses are append-only'); END;
CREATE TRIGGER code_uses_holder_is_tap BEFORE UPDATE OF tap_id ON code_uses
WHEN OLD.tap_id IS NULL OR NEW.tap_id IS NULL
BEGIN SELECT RAISE(ABORT, 'ledger: a code paid online stays paid online'); END;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'ledger: audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'ledger: audit_log is append-only'); END;
