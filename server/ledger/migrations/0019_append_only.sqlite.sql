-- farego ledger schema, version 19 (SQLite): the issuer keyrings and the
-- fare tables are append-only, as the journal (0002): a stored fare table
-- version never changes (the taps it rated name it). Re-runnable.
CREATE TRIGGER IF NOT EXISTS issuer_keyrings_no_update BEFORE UPDATE ON issuer_keyrings
BEGIN SELECT RAISE(ABORT, 'ledger: issuer keyrings are append-only'); END;
CREATE TRIGGER IF NOT EXISTS issuer_keyrings_no_delete BEFORE DELETE ON issuer_keyrings
BEGIN SELECT RAISE(ABORT, 'ledger: issuer keyrings are append-only'); END;
CREATE TRIGGER IF NOT EXISTS fare_tables_no_update BEFORE UPDATE ON fare_tables
BEGIN SELECT RAISE(ABORT, 'ledger: fare tables are append-only'); END;
CREATE TRIGGER IF NOT EXISTS fare_tables_no_delete BEFORE DELETE ON fare_tables
BEGIN SELECT RAISE(ABORT, 'ledger: fare tables are append-only'); END;
