-- farego ledger schema, version 19 (SQLite): the issuer keyrings are
-- append-only, as the journal (0002). Re-runnable.
CREATE TRIGGER IF NOT EXISTS issuer_keyrings_no_update BEFORE UPDATE ON issuer_keyrings
BEGIN SELECT RAISE(ABORT, 'ledger: issuer keyrings are append-only'); END;
CREATE TRIGGER IF NOT EXISTS issuer_keyrings_no_delete BEFORE DELETE ON issuer_keyrings
BEGIN SELECT RAISE(ABORT, 'ledger: issuer keyrings are append-only'); END;
